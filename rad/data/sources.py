"""A dataset given in the config by hub id or local path, with its columns mapped onto rad's.

Wherever a config takes a list of dataset specs (``data.train``, ``data.prompts``, ``eval.prompts``...), an
item is either a string spec (``pku-saferlhf/train:0.5``, ``data/x.jsonl``, see :mod:`rad.data.registry`) or
a mapping read into :class:`DataSource`::

    data:
      train:
        - path: PKU-Alignment/PKU-SafeRLHF      # a hub id, or a .jsonl/.json/.parquet/.csv file,
          split: train                          #   or a directory written by datasets' save_to_disk
          columns: {prompt: question}           # rad column -> the source's column
        - path: Anthropic/hh-rlhf               # chosen/rejected transcripts, split into prompt and responses
          data_dir: harmless-base
          sample: 1000

``columns`` renames the source's columns to rad's (the columns of :data:`rad.data.schema.SCHEMAS`:
``prompt``, ``chosen``/``rejected``, ``response_0``/``response_1`` with ``better_response_id`` /
``safer_response_id`` and the safety labels ``is_response_0_safe`` / ``is_response_1_safe``, ``response`` /
``is_safe``...); unmapped columns keep their names. A mapped column the data does not have is a one-line
:class:`DataError` naming the source, the mapping key and the columns present. Conversation layouts (HH-RLHF
transcripts, lists of chat messages) are then flattened by :mod:`rad.data.formats`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from rad.config import field
from rad.data.schema import KINDS, SCHEMAS
from rad.errors import ConfigError, DataError

#: Every column name a mapping may produce.
RAD_COLUMNS: tuple[str, ...] = tuple(dict.fromkeys(c.name for s in SCHEMAS.values() for c in s.columns))

SPECS_HELP = ("; each item a spec string (NAME[:AMOUNT] of a registered dataset or a local file) or a mapping "
              "{path, split, subset, data_dir, kind, columns, sample} for a hub id or local path "
              "(see rad/data/sources.py)")


@dataclass
class DataSource:
    """A dataset by hub id or local path, its columns mapped onto rad's (see the module docstring)."""

    path: str = field("", help="hub id (org/name) or local path: a .jsonl/.json/.parquet/.csv file or a "
                               "directory written by datasets' save_to_disk")
    split: str = field("train", help="split of a hub dataset or of a save_to_disk DatasetDict")
    subset: str = field("", help="hub dataset configuration name ('' = its default)")
    data_dir: str = field("", help="hub dataset data_dir (e.g. harmless-base of Anthropic/hh-rlhf)")
    kind: str = field("", choices=("", *KINDS), help="record kind; '' = told by the mapped columns")
    columns: dict[str, str] = field(default_factory=dict,
                                    help="rad column -> the source's column, e.g. {prompt: question}; "
                                         "unmapped columns keep their names")
    sample: float = field(1.0, gt=0, help="a proportion in (0, 1] or a row count >= 2 (the AMOUNT of a "
                                          "string spec NAME:AMOUNT)")

    def validate(self) -> None:
        if not self.path.strip():
            raise ConfigError("path: expected a hub id or a local file or directory, got ''")
        for rad_name, source_name in self.columns.items():
            if rad_name not in RAD_COLUMNS:
                raise ConfigError(f"columns.{rad_name}: not a rad column; map onto one of {', '.join(RAD_COLUMNS)}")
            if not isinstance(source_name, str) or not source_name:
                raise ConfigError(f"columns.{rad_name}: expected the source's column name, got {source_name!r}")
        if self.sample > 1 and not float(self.sample).is_integer():
            raise ConfigError(f"sample: expected a proportion in (0, 1] or a whole row count >= 2, got {self.sample}")

    @property
    def name(self) -> str:
        """What the source is called in messages, origins and the sub-sampling seed."""
        if self.is_local:
            return self.path
        extra = "".join(f" {k}={v}" for k, v in (("subset", self.subset), ("data_dir", self.data_dir)) if v)
        return f"{self.path}:{self.split}{extra}"

    @property
    def is_local(self) -> bool:
        """A local file or directory (anything that exists, or is spelled as a path or with a data suffix)."""
        from rad.data.loaders import BUILDERS

        path = Path(self.path).expanduser()
        return (path.exists() or self.path.startswith((".", "/", "~"))
                or path.suffix.lower() in BUILDERS)


#: The type of a config's list of dataset specs.
DataSpecs = list[Union[str, DataSource]]


def spec_name(spec: str | DataSource) -> str:
    """A spec string as it is, a data source by its :attr:`DataSource.name` (for messages and reports)."""
    return spec if isinstance(spec, str) else spec.name


def map_columns(rows: list[dict[str, Any]], columns: dict[str, str], source: str) -> list[dict[str, Any]]:
    """``rows`` with the source's columns renamed to rad's as ``columns`` maps them (rad name -> source name)."""
    if not columns or not rows:
        return rows
    present = list(rows[0])
    for rad_name, source_name in columns.items():
        if source_name not in rows[0]:
            raise DataError(f"{source}: columns.{rad_name} names column {source_name!r}, which the data does not "
                            f"have (columns present: {', '.join(map(str, present))})")
    renamed = set(columns.values())
    return [{**{k: v for k, v in row.items() if k not in renamed},
             **{rad_name: row.get(source_name) for rad_name, source_name in columns.items()}} for row in rows]
