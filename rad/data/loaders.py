"""Read datasets from local files or the Hugging Face hub into canonical records.

Local JSONL / JSON / parquet / CSV files go through `datasets.load_dataset`
with the generic "json" / "parquet" / "csv" builders - the same code path as a
hub dataset, so a local mirror of PKU-SafeRLHF behaves exactly like the hub one.
The result is always a plain `list[dict]` (picklable, cheap to ship to Ray
workers) after mapping to the kind's canonical columns, validation and, for
preference data, the contradiction filter.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from rad.data.filters import filter_preferences
from rad.data.formats import to_canonical
from rad.data.schema import KINDS, infer_kind
from rad.errors import DataError

logger = logging.getLogger("rad.data")

# File suffix -> `datasets` builder name.
BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


def builder_for(path: str | Path) -> str:
    """The `datasets` builder for a file, from its suffix; DataError if unsupported."""
    suffix = Path(path).suffix.lower()
    try:
        return BUILDERS[suffix]
    except KeyError:
        raise DataError(
            f"{path}: unsupported file type {suffix or '(none)'!r}; expected one of {', '.join(BUILDERS)}"
        ) from None


def read_local_rows(path: str | Path, cache_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Raw rows of a local file, read through `datasets.load_dataset(builder, data_files=...)`."""
    import datasets  # heavy import, deferred so `rad.data` stays cheap to import

    path = Path(path)
    builder = builder_for(path)
    if not path.is_file():
        raise DataError(f"{path}: no such data file")
    try:
        ds = datasets.load_dataset(
            builder,
            data_files=str(path),
            split="train",
            cache_dir=None if cache_dir is None else str(cache_dir),
        )
        return ds.to_list()  # inside the try: Arrow decodes the strings here, and a non-UTF-8 file fails here
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start} of a value: "
                        f"{exc.object[max(0, exc.start - 10): exc.start + 10]!r}); re-encode the file as UTF-8") from None
    except Exception as exc:  # datasets wraps parser errors in several exception types
        raise DataError(f"{path}: could not be read as {builder}: {exc}") from exc


def read_hub_rows(
    hub_id: str,
    split: str,
    name: str | None = None,
    data_dir: str | None = None,
    cache_dir: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Raw rows of a hub dataset split via `datasets.load_dataset(hub_id, name, split=...)`."""
    import datasets

    try:
        ds = datasets.load_dataset(
            hub_id,
            name,
            split=split,
            data_dir=data_dir,
            cache_dir=None if cache_dir is None else str(cache_dir),
        )
    except Exception as exc:  # network, auth and missing-split errors all land here
        raise DataError(f"hub dataset {hub_id!r} (split {split!r}) could not be loaded: {exc}") from exc
    return ds.to_list()


def prepare_records(
    rows: list[dict[str, Any]], kind: str | None, source: str, filter_contradictions: bool = True
) -> tuple[list[dict[str, Any]], str]:
    """Map raw rows onto `kind` (inferred from the columns when None), validate, filter.

    Returns (records, kind). Preference rows go through the contradiction filter
    unless `filter_contradictions` is False.
    """
    if kind is None:
        columns = sorted(rows[0]) if rows else []
        kind = infer_kind(columns)
        if kind is None:
            raise DataError(
                f"{source}: cannot tell the record kind from columns {columns}; "
                f"pass kind= (one of {', '.join(KINDS)})"
            )
    records = to_canonical(rows, kind, source)
    if kind == "preference" and filter_contradictions:
        records, _ = filter_preferences(records, source)
    return records, kind


def load_local(
    path: str | Path,
    kind: str | None = None,
    cache_dir: str | Path | None = None,
    filter_contradictions: bool = True,
) -> list[dict[str, Any]]:
    """Canonical records of a local JSONL / JSON / parquet / CSV file."""
    rows = read_local_rows(path, cache_dir)
    records, _ = prepare_records(rows, kind, str(path), filter_contradictions)
    return records


def load_hub(
    hub_id: str,
    split: str,
    kind: str,
    name: str | None = None,
    data_dir: str | None = None,
    cache_dir: str | Path | None = None,
    filter_contradictions: bool = True,
) -> list[dict[str, Any]]:
    """Canonical records of a hub dataset split."""
    rows = read_hub_rows(hub_id, split, name, data_dir, cache_dir)
    records, _ = prepare_records(rows, kind, f"{hub_id}:{split}", filter_contradictions)
    return records
