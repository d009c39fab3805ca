"""The report document: sections of text, tables and figures rendered to Markdown and HTML.

Tables arrive as display-ready ``pandas.DataFrame``s of strings (the numbers
themselves go to CSV / JSON next to the report, unrounded); this module only
lays them out. No template engine or markdown dependency: both renderers are a
few lines and escape what they must.
"""

from __future__ import annotations

import csv
import html
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd


def pct(x: float, digits: int = 1) -> str:
    """A fraction in [0, 1] as a percentage; '-' for NaN (an empty subset)."""
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.{digits}f}%"


def num(x: float, signed: bool = False, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def mean_std(mean: float, std: float, digits: int = 1) -> str:
    return f"{mean:.{digits}f} \u00b1 {std:.{digits}f}"


@dataclass
class _Block:
    kind: str  # "heading", "text", "table", "figure"
    text: str = ""
    table: pd.DataFrame | None = None
    path: str = ""


@dataclass
class Report:
    title: str
    blocks: list[_Block] = field(default_factory=list)

    def heading(self, text: str) -> None:
        self.blocks.append(_Block("heading", text))

    def text(self, text: str) -> None:
        self.blocks.append(_Block("text", text))

    def table(self, df: pd.DataFrame, caption: str = "") -> None:
        self.blocks.append(_Block("table", caption, table=df))

    def figure(self, path: str, caption: str) -> None:
        self.blocks.append(_Block("figure", caption, path=path))

    # -- rendering -------------------------------------------------------------------------------
    @staticmethod
    def _md_cell(value: object) -> str:
        return str(value).replace("|", "\\|").replace("\n", "<br>")

    def markdown(self) -> str:
        lines = [f"# {self.title}", ""]
        for b in self.blocks:
            if b.kind == "heading":
                lines += [f"## {b.text}", ""]
            elif b.kind == "text":
                lines += [b.text, ""]
            elif b.kind == "table":
                df = b.table
                if b.text:
                    lines += [f"*{b.text}*", ""]
                lines.append("| " + " | ".join(self._md_cell(c) for c in df.columns) + " |")
                lines.append("|" + "|".join(" --- " for _ in df.columns) + "|")
                for row in df.itertuples(index=False):
                    lines.append("| " + " | ".join(self._md_cell(v) for v in row) + " |")
                lines.append("")
            else:
                lines += [f"![{b.text}]({b.path})", "", f"*{b.text}*", ""]
        return "\n".join(lines)

    def html(self) -> str:
        e = html.escape
        parts = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'>", f"<title>{e(self.title)}</title>",
                 "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
                 "table{border-collapse:collapse;margin:0.5em 0 1.5em}th,td{border:1px solid #bbb;"
                 "padding:3px 8px;text-align:right}th{background:#eee}td:first-child,th:first-child"
                 "{text-align:left}img{max-width:100%}figcaption{font-style:italic}</style></head><body>",
                 f"<h1>{e(self.title)}</h1>"]
        for b in self.blocks:
            if b.kind == "heading":
                parts.append(f"<h2>{e(b.text)}</h2>")
            elif b.kind == "text":
                parts.append(f"<p>{e(b.text)}</p>")
            elif b.kind == "table":
                df = b.table
                rows = ["<tr>" + "".join(f"<th>{e(str(c))}</th>" for c in df.columns) + "</tr>"]
                rows += ["<tr>" + "".join(f"<td>{e(str(v))}</td>" for v in row) + "</tr>"
                         for row in df.itertuples(index=False)]
                caption = f"<caption>{e(b.text)}</caption>" if b.text else ""
                parts.append(f"<table>{caption}{''.join(rows)}</table>")
            else:
                parts.append(f"<figure><img src='{e(b.path)}' alt='{e(b.text)}'>"
                             f"<figcaption>{e(b.text)}</figcaption></figure>")
        parts.append("</body></html>")
        return "\n".join(parts)

    def write(self, out_dir: Path, html_too: bool = True) -> list[Path]:
        written = [_write(out_dir / "report.md", self.markdown())]
        if html_too:
            written.append(_write(out_dir / "report.html", self.html()))
        return written


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def write_csv(df: pd.DataFrame, path: Path) -> Path:
    """CSV with every text field quoted: model output may hold a bare carriage return or other control
    characters, which minimal quoting leaves unquoted and CSV readers then split into extra rows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False, quoting=csv.QUOTE_NONNUMERIC)
    return path
