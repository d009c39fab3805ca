"""Resolve what a stage needs before it starts: the data root and the model directory.

``model.name_or_path: tiny`` means "the project's own tiny model": its tokenizer is
trained on the embedded world's corpus and the weights are initialised from the
seed, built once and cached under ``$RAD_CACHE`` (default ``~/.cache/rad``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rad.cache import cache_root
from rad.data.sources import DataSpecs
from rad.settings import TINY, ModelConfig, WorldConfig


def data_root(world: WorldConfig) -> Path:
    from rad.data.registry import default_data_root

    return Path(world.data_root) if world.data_root else default_data_root()


def world_root(world: WorldConfig) -> Path:
    """Directory of the materialised embedded world (written once per seed and harm profile)."""
    from rad.data.world import materialize_world

    return materialize_world(data_root(world) / "world", seed=world.seed, harm_profile=world.harm_profile)


def load_records(specs: DataSpecs | str, kind: str, world: WorldConfig, seed: int) -> list[dict[str, Any]]:
    """Records of ``kind`` for dataset specs, with the embedded world of ``world``."""
    return load_data(specs, kind, world, seed).records


def load_data(specs: DataSpecs | str, kind: str, world: WorldConfig, seed: int):
    """:func:`load_records` with each record's origin and the skipped-row counts
    (a :class:`rad.data.registry.LoadedData`)."""
    from rad.data.registry import LoadedData, load_dataset

    if not specs:
        return LoadedData()
    return load_dataset(specs, kind=kind, seed=seed, data_root=data_root(world), world_seed=world.seed,
                        world_harm_profile=world.harm_profile)


def tiny_model_dir(world: WorldConfig, size: str = "tiny", seed: int = 0) -> Path:
    """The tiny model, its tokenizer trained on the default (binary) world of ``world.seed``.

    Every harm profile writes with the same vocabulary, so one tiny model serves them all.
    """
    from rad.data.world import build_world
    from rad.models.tiny import get_tiny_model_dir

    return get_tiny_model_dir(cache_root() / "models", lambda: build_world(seed=world.seed).corpus_texts(),
                              seed=seed, size=size)


def model_dir(model: ModelConfig, world: WorldConfig, seed: int = 0) -> str:
    """A loadable directory or hub id for ``model``."""
    if model.name_or_path == TINY:
        return str(tiny_model_dir(world, model.tiny_size, seed))
    return model.name_or_path


def resolve_dtype(name: str):
    """A dtype name; ``auto`` = bfloat16 on CUDA with bf16 support, else float32 (see rad.runtime.distributed)."""
    from rad.runtime.distributed import resolve_dtype as resolve

    return resolve(name)


def load_policy(model: ModelConfig, world: WorldConfig, seed: int = 0):
    """(model, tokenizer, path) of a causal LM as configured."""
    from rad.models.loading import load_causal_lm, load_tokenizer

    path = model_dir(model, world, seed)
    tokenizer = load_tokenizer(model.tokenizer or path, trust_remote_code=model.trust_remote_code,
                               prompt_format=model.prompt_format, format_key="model.prompt_format")
    lm = load_causal_lm(path, dtype=resolve_dtype(model.dtype), trust_remote_code=model.trust_remote_code,
                        allow_pickle=model.allow_pickle_weights, tokenizer=tokenizer)
    return lm, tokenizer, path
