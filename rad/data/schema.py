"""Canonical record kinds, their column schemas, and validation.

Every dataset, whatever its source format, is mapped onto one of these kinds
(see `rad.data.formats`) and then validated here. Validation also normalises
values to plain Python types (numpy / pandas scalars -> int / bool / str) so the
records stay simple and picklable for Ray.

Kinds:
- ``preference`` (PKU-SafeRLHF): ``prompt, response_0, response_1`` (str),
  ``better_response_id, safer_response_id`` (0/1), ``is_response_0_safe,
  is_response_1_safe`` (bool); optional harm categories (dict or str) and severity
  levels (int >= 0).
- ``labelled`` (BeaverTails, one response per row): ``prompt, response`` (str),
  ``is_safe`` (bool); optional ``category`` (dict or str), ``severity_level``.
- ``prompt``: ``prompt``; optional ``category``, ``id``.
- ``sft``: ``prompt, response``.
- ``pairs``: ``prompt, chosen, rejected``.
- ``redteam``: ``prompt``; optional ``category``, ``id``, ``context``.

Columns not in a schema are kept as they are (e.g. the hidden ground-truth
columns of the embedded world). Row indices in error messages are 0-based.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

from rad.errors import ConfigError, DataError


class _Mismatch(Exception):
    """Raised by a type checker; carries the 'must be ...' phrase."""


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_missing(value: Any) -> bool:
    # pandas/CSV readers turn empty cells into NaN; treat them as absent values.
    return value is None or (isinstance(value, float) and math.isnan(value))


def _as_str(value: Any) -> str:
    if isinstance(value, str):
        return str(value)
    raise _Mismatch("must be a string")


def _as_binary(value: Any) -> int:
    # Real datasets store ids as int64; parquet/pandas round-trips may give 0.0/1.0.
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, numbers.Integral) and int(value) in (0, 1):
        return int(value)
    if isinstance(value, numbers.Real) and float(value) in (0.0, 1.0):
        return int(value)
    raise _Mismatch("must be 0 or 1")


def _as_bool(value: Any) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, numbers.Integral) and int(value) in (0, 1):
        return bool(int(value))
    raise _Mismatch("must be a boolean (true/false or 0/1)")


def _as_level(value: Any) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise _Mismatch("must be an integer >= 0")
    if isinstance(value, numbers.Integral) and int(value) >= 0:
        return int(value)
    if isinstance(value, numbers.Real) and float(value).is_integer() and value >= 0:
        return int(value)
    raise _Mismatch("must be an integer >= 0")


def _as_category(value: Any) -> dict[str, Any] | str | list[str]:
    # PKU-SafeRLHF / BeaverTails store {category: bool}; other sources a label.
    if isinstance(value, str):
        return str(value)
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, flag in value.items():
            if isinstance(flag, (bool, np.bool_)):
                out[str(key)] = bool(flag)
            elif _is_missing(flag):
                out[str(key)] = None
            elif isinstance(flag, numbers.Integral):
                out[str(key)] = int(flag)
            else:
                raise _Mismatch("must be a dict of category -> bool, or a string")
        return out
    if isinstance(value, (list, tuple, np.ndarray)) and all(isinstance(v, str) for v in value):
        return [str(v) for v in value]
    raise _Mismatch("must be a dict of category -> bool, a string or a list of strings")


_CHECKERS = {
    "str": _as_str,
    "binary": _as_binary,
    "bool": _as_bool,
    "level": _as_level,
    "category": _as_category,
}


@dataclass(frozen=True)
class Column:
    """One column: its name, value type (a key of the checker table) and whether required."""

    name: str
    type: str
    required: bool = True


@dataclass(frozen=True)
class Schema:
    """The columns of one record kind."""

    kind: str
    columns: tuple[Column, ...]

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.required)

    @property
    def optional(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if not c.required)


def _cols(required: dict[str, str], optional: dict[str, str] | None = None) -> tuple[Column, ...]:
    cols = [Column(n, t, True) for n, t in required.items()]
    cols += [Column(n, t, False) for n, t in (optional or {}).items()]
    return tuple(cols)


SCHEMAS: dict[str, Schema] = {
    "preference": Schema(
        "preference",
        _cols(
            {
                "prompt": "str",
                "response_0": "str",
                "response_1": "str",
                "better_response_id": "binary",
                "safer_response_id": "binary",
                "is_response_0_safe": "bool",
                "is_response_1_safe": "bool",
            },
            {
                "response_0_harm_category": "category",
                "response_1_harm_category": "category",
                "response_0_severity_level": "level",
                "response_1_severity_level": "level",
            },
        ),
    ),
    "labelled": Schema(
        "labelled",
        _cols(
            {"prompt": "str", "response": "str", "is_safe": "bool"},
            {"category": "category", "severity_level": "level"},
        ),
    ),
    "prompt": Schema("prompt", _cols({"prompt": "str"}, {"category": "category", "id": "str"})),
    "sft": Schema("sft", _cols({"prompt": "str", "response": "str"})),
    "pairs": Schema("pairs", _cols({"prompt": "str", "chosen": "str", "rejected": "str"})),
    "redteam": Schema(
        "redteam",
        _cols({"prompt": "str"}, {"category": "category", "id": "str", "context": "str"}),
    ),
}

KINDS: tuple[str, ...] = tuple(SCHEMAS)


def get_schema(kind: str) -> Schema:
    """The schema of `kind`; an unknown kind raises ConfigError listing the known ones."""
    try:
        return SCHEMAS[kind]
    except KeyError:
        raise ConfigError(f"unknown record kind {kind!r}; known kinds: {', '.join(KINDS)}") from None


def check_columns(
    records: list[dict[str, Any]], columns: Iterable[Column], source: str, what: str
) -> list[dict[str, Any]]:
    """Check and normalise `columns` of every record.

    Returns new dicts (other columns copied unchanged); the input is not modified. `what` names the
    format in the missing-column message (e.g. "kind 'preference'").
    """
    columns = tuple(columns)
    required = [c.name for c in columns if c.required]
    out: list[dict[str, Any]] = []
    for row, record in enumerate(records):
        if not isinstance(record, dict):
            raise DataError(f"{source}: row {row}: expected a mapping of column -> value, got {_describe(record)}")
        new = dict(record)
        for col in columns:
            value = record.get(col.name)
            if col.name not in record or _is_missing(value):
                if col.required:
                    found = ", ".join(sorted(map(str, record))) or "none"
                    state = "has no value in" if col.name in record else "is missing from"
                    raise DataError(
                        f"{source}: row {row}: required column {col.name!r} {state} the row "
                        f"({what} needs {', '.join(required)}; found columns: {found})"
                    )
                if col.name in record:
                    new[col.name] = None
                continue
            try:
                new[col.name] = _CHECKERS[col.type](value)
            except _Mismatch as exc:
                raise DataError(f"{source}: row {row}: column {col.name!r} {exc}, got {_describe(value)}") from None
        out.append(new)
    return out


def validate(records: list[dict[str, Any]], kind: str, source: str) -> list[dict[str, Any]]:
    """Validate canonical `records` of `kind`; return them with normalised values.

    Raises DataError naming `source` (a file or dataset name), the 0-based row,
    the column and what was expected.
    """
    schema = get_schema(kind)
    return check_columns(records, schema.columns, source, f"kind {kind!r}")


def infer_kind(columns: Iterable[str]) -> str | None:
    """Guess the record kind from column names (canonical or known source formats).

    Returns None when nothing matches; callers then ask for an explicit kind.
    """
    cols = set(columns)
    if {"response_0", "response_1"} <= cols:
        return "preference"
    if {"chosen", "rejected"} <= cols:
        return "pairs"
    if "Behavior" in cols:
        return "redteam"
    if {"instruction", "output"} <= cols:
        return "sft"
    if {"prompt", "response", "is_safe"} <= cols:
        return "labelled"
    if {"prompt", "response"} <= cols:
        return "sft"
    if "prompt" in cols:
        return "prompt"
    return None
