"""Dataset registry and `NAME[:PROPORTION]` specs.

A spec names a registered dataset or a local file, optionally followed by a
sub-sampling amount:

- ``pku-saferlhf/train`` - everything;
- ``pku-saferlhf/train:0.5`` - a proportion in (0, 1] (``:1`` means all);
- ``embedded/sft-train:1000`` - an integer >= 2 is a row count (clamped, with a
  warning, to the rows available);
- ``data/z.parquet:0.25`` - a local JSONL / JSON / parquet / CSV file or a directory written by
  ``datasets``' ``save_to_disk`` (its ``train`` split); its kind is inferred from its columns unless the
  caller passes ``kind=``.

A spec may also be a :class:`rad.data.sources.DataSource` (a mapping in a config): a hub id or local path
with a split and a column mapping, its amount in ``sample``.

Sub-sampling happens after validation and the contradiction filter. It takes
the first rows of a permutation drawn from ``random.Random(f"{seed}:{name}")``
(SHA-512 string seeding: identical in every process), keeping file order, so
the same seed gives the same subset everywhere and a smaller proportion is a
subset of a larger one. A list of specs is concatenated in order; all must
resolve to the same kind.

Requesting ``kind="prompt"`` from a dataset of another kind projects it onto
unique prompts (how RL reads its prompts from a preference set).

Registered names: ``pku-saferlhf/{train,test}``, ``beavertails/{train,test}``
(BeaverTails' 30k splits; one labelled response per row, kind ``labelled``),
``alpaca``, ``harmbench`` (the behaviours CSV, read from
``DATA_ROOT/harmbench/harmbench_behaviors_text_all.csv``) and the embedded world
``embedded/{pref-train,pref-test,sft-train,sft-test,prompts-train,prompts-test,redteam}``,
materialised once under ``DATA_ROOT/world`` and then read like any local file.
Add your own with `register_dataset`.
"""

from __future__ import annotations

import logging
import os
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Union

from rad.data.formats import first_prompt_rows, project_to_prompts
from rad.data.loaders import BUILDERS, Prepared, builder_for, prepare_rows, read_hub_rows, read_path_rows
from rad.data.schema import KINDS, infer_kind, validate
from rad.data.sources import DataSource, map_columns
from rad.data.world import DEFAULT_HARM_PROFILE, FILE_NAMES, SPLIT_KINDS, materialize_world
from rad.errors import ConfigError, DataError

logger = logging.getLogger("rad.data")

HARMBENCH_FILE = "harmbench_behaviors_text_all.csv"
HARMBENCH_URL = (
    "https://raw.githubusercontent.com/centerforaisafety/HarmBench/main/data/behavior_datasets/" + HARMBENCH_FILE
)


@dataclass(frozen=True)
class LoadContext:
    """What a dataset loader may use: the data root and the embedded world's seed and harm profile."""

    data_root: Path
    world_seed: int = 0
    world_harm_profile: str = DEFAULT_HARM_PROFILE

    @property
    def hf_cache_dir(self) -> Path:
        """Where `datasets` keeps its Arrow cache for files read under this root."""
        return self.data_root / "hf-cache"


LoaderResult = Union[list[dict[str, Any]], str, Path]
LoaderFn = Callable[[LoadContext], LoaderResult]


@dataclass(frozen=True)
class DatasetEntry:
    """A registered dataset: its record kind and a loader returning raw rows or a file path."""

    name: str
    kind: str
    loader: LoaderFn
    description: str = ""


_REGISTRY: dict[str, DatasetEntry] = {}


def register_dataset(
    name: str, kind: str, loader_fn: LoaderFn | None = None, *, description: str = "", overwrite: bool = False
) -> Any:
    """Register `loader_fn` under `name`; usable directly or as a decorator.

    The loader receives a `LoadContext` and returns raw rows (any source format
    of `kind`, e.g. Alpaca columns for "sft") or a path to a local file. Rows are
    then mapped, validated, filtered and sub-sampled like every other dataset.

        @register_dataset("my-prefs", kind="preference")
        def _load(ctx):
            return ctx.data_root / "my_prefs.jsonl"
    """
    if kind not in KINDS:
        raise ConfigError(f"dataset {name!r}: unknown kind {kind!r}; known kinds: {', '.join(KINDS)}")
    if ":" in name:
        raise ConfigError(f"dataset name {name!r} must not contain ':' (it separates the proportion)")

    def decorator(fn: LoaderFn) -> LoaderFn:
        if name in _REGISTRY and not overwrite:
            raise ConfigError(f"dataset {name!r} is already registered; pass overwrite=True to replace it")
        _REGISTRY[name] = DatasetEntry(name, kind, fn, description)
        return fn

    return decorator if loader_fn is None else decorator(loader_fn)


def registered_names() -> list[str]:
    """Sorted names of every registered dataset."""
    return sorted(_REGISTRY)


def _unknown(name: str) -> ConfigError:
    return ConfigError(
        f"unknown dataset {name!r}; registered datasets: {', '.join(registered_names())} "
        f"(or give a path to a {'/'.join(sorted(BUILDERS))} file or a save_to_disk directory, or a mapping "
        "{path: HUB_ID_OR_PATH, columns: {...}} for a dataset that is not registered)"
    )


def get_entry(name: str) -> DatasetEntry:
    """The registry entry of `name`; ConfigError listing the registered names otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise _unknown(name) from None


@dataclass(frozen=True)
class DatasetSpec:
    """A parsed spec: a name or path, and at most one of a proportion or a row count."""

    name: str
    proportion: float | None = None
    count: int | None = None


_NUMBER = re.compile(r"^[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?$")


def parse_spec(spec: str) -> DatasetSpec:
    """Parse ``NAME[:PROPORTION|:COUNT]`` (see the module docstring)."""
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"dataset spec must be a non-empty string, got {spec!r}")
    spec = spec.strip()
    name, sep, amount = spec.rpartition(":")
    if not sep or not _NUMBER.match(amount):
        return DatasetSpec(spec)
    if not name:
        raise ConfigError(f"dataset spec {spec!r} has no dataset name before ':'")
    if amount.isdigit() and int(amount) >= 2:
        return DatasetSpec(name, count=int(amount))
    value = float(amount)
    if not 0.0 < value <= 1.0:
        raise ConfigError(
            f"dataset spec {spec!r}: proportion must be in (0, 1] (or an integer row count >= 2), got {amount}"
        )
    return DatasetSpec(name, proportion=value)


def default_data_root() -> Path:
    """$RAD_DATA_ROOT, else the rad cache ($RAD_CACHE or ~/.cache/rad)."""
    from rad.cache import cache_root

    return Path(os.environ.get("RAD_DATA_ROOT") or cache_root())


def subsample(records: list[dict[str, Any]], spec: DatasetSpec, seed: int) -> list[dict[str, Any]]:
    """The deterministic subset of `records` that `spec` asks for (file order kept)."""
    return [records[i] for i in subsample_rows(len(records), spec, seed)]


def subsample_rows(n: int, spec: DatasetSpec, seed: int) -> list[int]:
    """The indices (in order) of the subset of `n` records that `spec` asks for."""
    if spec.count is not None:
        k = spec.count
        if k > n:
            logger.warning("%s: asked for %d rows but only %d are available; using all", spec.name, k, n)
            k = n
    elif spec.proportion is not None:
        k = min(n, max(1, round(spec.proportion * n))) if n else 0
    else:
        return list(range(n))
    order = list(range(n))
    random.Random(f"{seed}:{spec.name}").shuffle(order)
    return sorted(order[:k])


def _is_local_path(name: str) -> bool:
    return Path(name).suffix.lower() in BUILDERS or Path(name).exists()


def check_spec(spec: str | DataSource, key: str) -> None:
    """Raise ConfigError naming ``key`` unless ``spec`` parses and names a registered dataset or an existing
    local file or directory (cheap: nothing is read; for validating configs before work starts); a
    :class:`DataSource` names an existing local path or a hub id."""
    if isinstance(spec, DataSource):
        if spec.is_local and not Path(spec.path).expanduser().exists():
            raise ConfigError(f"{key}.path: no such data file or directory {spec.path}")
        if spec.is_local and Path(spec.path).is_file():
            builder_for(spec.path)
        return
    try:
        name = parse_spec(spec).name
    except ConfigError as exc:
        raise ConfigError(f"{key}: {exc}") from None
    if name in _REGISTRY:
        return
    if not _is_local_path(name):
        raise ConfigError(f"{key}: {_unknown(name)}")
    if Path(name).is_dir():
        return
    builder_for(name)  # an unsupported suffix is a DataError naming the file
    if not Path(name).is_file():
        raise ConfigError(f"{key}: {spec!r}: no such data file {name}")


def _read(spec: DatasetSpec, data: DataSource | None, ctx: LoadContext) -> tuple[list[dict[str, Any]], str, str]:
    """Raw rows of one spec (columns mapped), their source's name, and its kind ('' = tell from the columns)."""
    if data is not None:
        if data.is_local:
            rows = read_path_rows(Path(data.path).expanduser(), data.split, ctx.hf_cache_dir)
        else:
            rows = read_hub_rows(data.path, data.split, data.subset or None, data.data_dir or None, ctx.hf_cache_dir)
        return map_columns(rows, data.columns, data.name), data.name, data.kind
    if spec.name in _REGISTRY:
        entry = _REGISTRY[spec.name]
        result = entry.loader(ctx)
        if isinstance(result, (str, Path)):
            return read_path_rows(result, cache_dir=ctx.hf_cache_dir), f"{spec.name} ({result})", entry.kind
        return list(result), spec.name, entry.kind
    if _is_local_path(spec.name):
        return read_path_rows(spec.name, cache_dir=ctx.hf_cache_dir), spec.name, ""
    raise _unknown(spec.name)


def _load_one(spec: DatasetSpec, kind: str | None, ctx: LoadContext,
              data: DataSource | None = None) -> tuple[Prepared, str]:
    """Canonical records of one spec (before sub-sampling), with their rows in the source, and the source."""
    rows, source, file_kind = _read(spec, data, ctx)
    if not file_kind:
        inferred = infer_kind(rows[0]) if rows else None
        file_kind = inferred if kind in (None, "prompt") else kind
        if file_kind is None:
            file_kind = kind
    if file_kind is None:
        raise DataError(f"{source}: cannot tell the record kind from its columns; pass kind= ({', '.join(KINDS)})")
    got = prepare_rows(rows, file_kind, source)
    if kind is None or kind == got.kind:
        return got, source
    if kind == "prompt":
        rows_kept = [got.rows[i] for i in first_prompt_rows(got.records, source)]
        return Prepared(project_to_prompts(got.records, source), "prompt", rows_kept, got.skipped), source
    # e.g. BeaverTails ("labelled") read as "sft": valid when the columns are there.
    return Prepared(validate(got.records, kind, source), kind, got.rows, got.skipped), source


@dataclass
class LoadedData:
    """Records of a list of specs, where each came from (``"<file or dataset> row <0-based row>"``), and the
    rows the contradiction filter skipped, by reason (over the whole sources, before sub-sampling)."""

    records: list[dict[str, Any]] = field(default_factory=list)
    origins: list[str] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)

    def head(self, n: int) -> "LoadedData":
        """The first ``n`` records (the same skip counts)."""
        return LoadedData(self.records[:n], self.origins[:n], self.skipped)


Specs = Union[str, DataSource, list[Union[str, DataSource]], tuple[Union[str, DataSource], ...]]


def _parse(item: str | DataSource | dict) -> tuple[DatasetSpec, DataSource | None]:
    """A spec string parsed, or a data source (a mapping read as one) with its amount as a spec."""
    if isinstance(item, dict):
        from rad.config import from_dict

        item = from_dict(DataSource, item, prefix="data source")
    if not isinstance(item, DataSource):
        return parse_spec(item), None
    if item.sample > 1:
        return DatasetSpec(item.name, count=int(item.sample)), item
    return DatasetSpec(item.name, proportion=item.sample if item.sample < 1 else None), item


def load_dataset_spec(
    spec: Specs,
    kind: str | None = None,
    seed: int = 0,
    data_root: str | Path | None = None,
    world_seed: int = 0,
    world_harm_profile: str = DEFAULT_HARM_PROFILE,
) -> list[dict[str, Any]]:
    """Load one spec or a list of specs into canonical records of one kind.

    `kind` is required only for local files whose columns do not tell it;
    `seed` drives sub-sampling; `data_root` (default `default_data_root()`)
    holds the embedded world, HarmBench's CSV and the `datasets` cache;
    `world_seed` and `world_harm_profile` select the embedded world.
    """
    return load_dataset(spec, kind, seed, data_root, world_seed, world_harm_profile).records


def load_dataset(
    spec: Specs,
    kind: str | None = None,
    seed: int = 0,
    data_root: str | Path | None = None,
    world_seed: int = 0,
    world_harm_profile: str = DEFAULT_HARM_PROFILE,
) -> LoadedData:
    """:func:`load_dataset_spec` with each record's origin and the skipped-row counts."""
    if kind is not None and kind not in KINDS:
        raise ConfigError(f"unknown record kind {kind!r}; known kinds: {', '.join(KINDS)}")
    specs = [spec] if isinstance(spec, (str, DataSource, dict)) else list(spec)
    if not specs:
        raise ConfigError("no dataset spec given")
    ctx = LoadContext(Path(data_root) if data_root is not None else default_data_root(), world_seed,
                      world_harm_profile)
    out = LoadedData()
    kinds: dict[str, str] = {}
    for item in specs:
        parsed, data = _parse(item)
        text = item if isinstance(item, str) else parsed.name
        got, source = _load_one(parsed, kind, ctx, data)
        kinds[text] = got.kind
        picked = subsample_rows(len(got.records), parsed, seed)
        logger.info("%s: %d of %d %s records", text, len(picked), len(got.records), got.kind)
        out.records += [got.records[i] for i in picked]
        out.origins += [f"{source} row {got.rows[i]}" for i in picked]
        out.skipped.update(got.skipped)
    if len(set(kinds.values())) > 1:
        listed = ", ".join(f"{s} ({k})" for s, k in kinds.items())
        raise ConfigError(f"dataset specs resolve to different kinds: {listed}; pass one kind= for all of them")
    return out


# -- built-in datasets --------------------------------------------------------


def _hub(hub_id: str, split: str) -> LoaderFn:
    def load(ctx: LoadContext) -> LoaderResult:
        return read_hub_rows(hub_id, split, cache_dir=ctx.hf_cache_dir)

    return load


def _embedded(split: str) -> LoaderFn:
    def load(ctx: LoadContext) -> LoaderResult:
        world = materialize_world(ctx.data_root / "world", ctx.world_seed, harm_profile=ctx.world_harm_profile)
        return world / FILE_NAMES[split]

    return load


def _harmbench(ctx: LoadContext) -> LoaderResult:
    path = ctx.data_root / "harmbench" / HARMBENCH_FILE
    if not path.is_file():
        raise DataError(f"{path}: HarmBench behaviours CSV not found; download {HARMBENCH_URL} to that path")
    return path


for _split in ("train", "test"):
    register_dataset(
        f"pku-saferlhf/{_split}", "preference", _hub("PKU-Alignment/PKU-SafeRLHF", _split),
        description="PKU-Alignment/PKU-SafeRLHF (hub)",
    )
    register_dataset(
        f"beavertails/{_split}", "labelled", _hub("PKU-Alignment/BeaverTails", f"30k_{_split}"),
        description=f"PKU-Alignment/BeaverTails split 30k_{_split} (hub)",
    )
register_dataset("alpaca", "sft", _hub("tatsu-lab/alpaca", "train"), description="tatsu-lab/alpaca (hub)")
register_dataset("harmbench", "redteam", _harmbench, description=f"HarmBench behaviours CSV ({HARMBENCH_FILE})")
for _split, _kind in SPLIT_KINDS.items():
    register_dataset(f"embedded/{_split}", _kind, _embedded(_split), description="the embedded world")
