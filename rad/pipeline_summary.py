"""The readable end of ``rad train``: each stage, its key numbers and where its outputs are.

:func:`format_summary` turns the summary :func:`rad.pipeline.run_pipeline` returns (and writes to
``<output_dir>/summary.json``) into a few lines per stage; ``rad train --json`` prints the JSON
instead. A number a stage did not report (an older run, another stage config) is left out, not
guessed.
"""

from __future__ import annotations

import math
import textwrap
from typing import Any, Mapping

#: Per stage: (label, key path in the stage's summary, key path of the number it is compared with or "").
KEY_NUMBERS: dict[str, list[tuple[str, str, str]]] = {
    "sft": [("steps", "steps", ""), ("eval loss", "final_eval_loss", "initial_eval_loss")],
    "reward": [("steps", "steps", ""), ("held-out pair accuracy", "heldout/accuracy", ""),
               ("pairs", "heldout/pairs", "")],
    "cost": [("steps", "steps", ""), ("held-out pair accuracy", "heldout/accuracy", ""),
             ("safe/unsafe sign accuracy", "heldout/sign_accuracy", ""), ("pairs", "heldout/pairs", "")],
    "rad": [("steps", "steps", ""), ("held-out gain", "heldout/gain", ""), ("delta", "heldout/delta", ""),
            ("violation", "heldout/violation", ""), ("reward win rate vs SFT", "heldout/reward_win_rate", ""),
            ("cost CVaR-0.9", "heldout/cost_cvar_0.9_policy", "heldout/cost_cvar_0.9_reference"),
            ("hidden-harm CVaR-0.9", "heldout/true_harm_cvar_0.9_policy", "heldout/true_harm_cvar_0.9_reference"),
            ("safe fraction", "heldout/safe_fraction_policy", "heldout/safe_fraction_reference")],
    "ppo_lag": [("steps", "steps", ""), ("held-out mean cost", "heldout/cost_mean_policy",
                                         "heldout/cost_mean_reference"),
                ("threshold", "heldout/threshold", ""), ("reward win rate vs SFT", "heldout/reward_win_rate", ""),
                ("safe fraction", "heldout/safe_fraction_policy", "heldout/safe_fraction_reference")],
}
#: Keys of a stage's summary that name its outputs, in the order shown.
OUTPUT_KEYS = ("model_dir", "samples", "histogram", "report", "results", "figures")
#: Line width of the numbers (paths are never broken).
WIDTH = 110


def _get(record: Mapping[str, Any], path: str) -> Any:
    node: Any = record
    for part in path.split("/"):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int) or float(value).is_integer() and abs(value) >= 1:
        return str(int(value))
    if not math.isfinite(value):
        return str(value)
    return f"{value:.3f}" if abs(value) < 1000 else f"{value:.4g}"


def stage_numbers(name: str, record: Mapping[str, Any]) -> list[str]:
    """``label value`` (``label value (before/reference)``) of the stage's key numbers it reported."""
    out = []
    for label, path, other in KEY_NUMBERS.get(name, []):
        value = _get(record, path)
        if value is None:
            continue
        against = _get(record, other) if other else None
        if against is None:
            out.append(f"{label} {_number(value)}")
        elif other.endswith("_reference"):
            out.append(f"{label} {_number(value)} (SFT {_number(against)})")
        else:
            out.append(f"{label} {_number(against)} -> {_number(value)}")
    if name == "eval":
        competitions = record.get("competitions") or {}
        for pair, head in competitions.items():
            if isinstance(head, Mapping) and "reward_win_rate" in head:
                out.append(f"{pair}: reward win rate {_number(head['reward_win_rate'])}")
        if record.get("warnings"):
            out.append(f"{len(record['warnings'])} warning(s), see the report")
    return out


def stage_outputs(record: Mapping[str, Any]) -> list[str]:
    paths: list[str] = []
    for key in OUTPUT_KEYS:
        value = record.get(key)
        if isinstance(value, list):
            paths.extend(str(v) for v in value if key != "figures")
            if key == "figures" and value:
                paths.append(f"{len(value)} figure(s) under {str(value[0]).rsplit('/', 1)[0]}/")
        elif value:
            paths.append(str(value))
    return paths


def format_summary(summary: Mapping[str, Any]) -> str:
    """The lines ``rad train`` prints at its end (see the module docstring)."""
    out_dir = summary.get("output_dir", "")
    stages = summary.get("stages", {})
    lines = [f"rad train: {len(stages)} stage(s) in {out_dir}, {summary.get('total_seconds', 0):.0f} s of stage time"]
    width = max((len(n) for n in stages), default=0)
    for name, record in stages.items():
        if not isinstance(record, Mapping):
            continue
        numbers = stage_numbers(name, record)
        took = f" [{record['seconds']:.0f} s]" if isinstance(record.get("seconds"), (int, float)) else ""
        lines.extend(textwrap.wrap(f"{', '.join(numbers) or 'done'}{took}", WIDTH,
                                   initial_indent=f"  {name:<{width}}  ", subsequent_indent=" " * (width + 4),
                                   break_on_hyphens=False))
        outputs = stage_outputs(record)
        if record.get("upstream"):
            outputs.append(f"(shared upstream run {record['upstream']})")
        if outputs:
            lines.append(f"  {'':<{width}}  -> {', '.join(outputs)}")
    lines.append(f"Every number and path: {out_dir}/summary.json (or rad train --json)")
    return "\n".join(lines)
