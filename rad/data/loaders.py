"""Read datasets from local files or the Hugging Face hub into canonical records.

Local JSONL / JSON / parquet / CSV files go through `datasets.load_dataset`
with the generic "json" / "parquet" / "csv" builders - the same code path as a
hub dataset, so a local mirror of PKU-SafeRLHF behaves exactly like the hub one.
The result is always a plain `list[dict]` (picklable, cheap to ship to Ray
workers) after mapping to the kind's canonical columns, validation and, for
preference data, the contradiction filter.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rad.data.filters import describe_skipped, kept_preference_rows
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


#: Files `datasets`' ``save_to_disk`` writes at the top of a Dataset / DatasetDict directory.
SAVED_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


def read_path_rows(path: str | Path, split: str = "train", cache_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Raw rows of a local data file, or of ``split`` of a ``save_to_disk`` directory."""
    return read_disk_rows(path, split) if Path(path).is_dir() else read_local_rows(path, cache_dir)


def read_disk_rows(path: str | Path, split: str = "train") -> list[dict[str, Any]]:
    """Raw rows of a directory written by ``datasets``' ``save_to_disk`` (a Dataset, or ``split`` of a DatasetDict)."""
    import datasets

    path = Path(path)
    if not any((path / marker).is_file() for marker in SAVED_MARKERS):
        raise DataError(f"{path}: a directory, but not one written by datasets' save_to_disk (none of "
                        f"{', '.join(SAVED_MARKERS)}); expected such a directory or a {'/'.join(BUILDERS)} file")
    try:
        saved = datasets.load_from_disk(str(path))
    except Exception as exc:  # a damaged or foreign directory
        raise DataError(f"{path}: could not be read with datasets.load_from_disk: {exc}") from exc
    if isinstance(saved, datasets.DatasetDict):
        if split not in saved:
            raise DataError(f"{path}: no split {split!r}; the saved DatasetDict has {', '.join(saved)}")
        saved = saved[split]
    return saved.to_list()


def read_local_rows(path: str | Path, cache_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Raw rows of a local file, read through `datasets.load_dataset(builder, data_files=...)`."""
    import datasets  # heavy import, deferred so `rad.data` stays cheap to import

    path = Path(path)
    builder = builder_for(path)
    if not path.is_file():
        raise DataError(f"{path}: no such data file")
    if path.suffix.lower() != ".parquet" and not path.read_bytes().strip():
        raise DataError(f"{path}: the file is empty; expected {_EXPECTED[path.suffix.lower()]}")
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
                        f"{exc.object[max(0, exc.start - 10): exc.start + 10]!r}); "
                        "re-encode the file as UTF-8") from None
    except Exception as exc:  # datasets wraps parser errors in several exception types
        reason = _unreadable_reason(path)
        if reason:
            raise DataError(f"{path}: {reason}; expected {_EXPECTED[path.suffix.lower()]}") from None
        raise DataError(f"{path}: could not be read as {builder}: {exc}") from exc


_EXPECTED = {".jsonl": "one JSON object per line", ".json": "a JSON list of objects (or one object per line)",
             ".csv": "a header line and one line per row", ".parquet": "a parquet table"}


def _unreadable_reason(path: Path) -> str | None:
    """Where a text data file `datasets` could not parse goes wrong (file line, 1-based), or None."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return None
    text = path.read_text(encoding="utf-8", errors="replace")
    if suffix == ".csv":
        lines = [line for line in text.splitlines() if line.strip()]
        return "it has a header line but no rows" if len(lines) == 1 else None
    try:
        document = json.loads(text)
        # one JSON document: not a line problem
        return "it holds no records" if isinstance(document, (list, dict)) and not document else None
    except ValueError:
        pass
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError as exc:
            return f"line {number} is not valid JSON ({exc.msg} at column {exc.colno}: {line[:80]!r})"
        if not isinstance(value, dict):
            return f"line {number} is a JSON {type(value).__name__}, not an object: {line[:80]!r}"
    return None


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


@dataclass
class Prepared:
    """Canonical records of one source, the source's own (0-based) row of each, and the rows skipped, by reason."""

    records: list[dict[str, Any]]
    kind: str
    rows: list[int]
    skipped: Counter = field(default_factory=Counter)


def prepare_rows(
    rows: list[dict[str, Any]], kind: str | None, source: str, filter_contradictions: bool = True
) -> Prepared:
    """Map raw rows onto `kind` (inferred from the columns when None), validate, filter.

    Preference rows go through the contradiction filter unless `filter_contradictions` is False; a
    source whose every row is skipped (or that has none) is a DataError.
    """
    if not rows:
        raise DataError(f"{source}: no rows; expected {kind or 'data'} records")
    if kind is None:
        columns = sorted(rows[0]) if rows else []
        kind = infer_kind(columns)
        if kind is None:
            raise DataError(
                f"{source}: cannot tell the record kind from columns {columns}; "
                f"pass kind= (one of {', '.join(KINDS)})"
            )
    records = to_canonical(rows, kind, source)
    if kind != "preference" or not filter_contradictions:
        return Prepared(records, kind, list(range(len(records))))
    kept, skipped = kept_preference_rows(records, source)
    if not kept:
        raise DataError(f"{source}: every one of its {len(records)} preference rows was skipped "
                        f"({describe_skipped(skipped)}); expected rows with two different responses where the "
                        "safer response (safer_response_id) is labelled safe or the other one unsafe")
    return Prepared([records[i] for i in kept], kind, kept, skipped)


def prepare_records(
    rows: list[dict[str, Any]], kind: str | None, source: str, filter_contradictions: bool = True
) -> tuple[list[dict[str, Any]], str]:
    """(records, kind) of :func:`prepare_rows`."""
    prepared = prepare_rows(rows, kind, source, filter_contradictions)
    return prepared.records, prepared.kind


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
