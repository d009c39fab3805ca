"""Session-wide fixtures: the embedded world, the tiny model, a short SFT, one local Ray cluster.

Everything expensive is built once per session, and the world / tiny model / SFT
checkpoint are also cached across sessions under ``$RAD_CACHE`` (keyed by their
inputs), so a second ``make test`` on the same machine skips the builds.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA (no GPU on this machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def world_config():
    from rad.settings import WorldConfig

    return WorldConfig(seed=0)


@pytest.fixture(scope="session")
def world_dir(world_config) -> Path:
    from rad.algos.assets import world_root

    return world_root(world_config)


@pytest.fixture(scope="session")
def world(world_config):
    from rad.data.world import build_world

    return build_world(seed=world_config.seed)


@pytest.fixture(scope="session")
def tiny_model_dir(world_config) -> Path:
    from rad.algos.assets import tiny_model_dir as build

    return build(world_config, size="tiny", seed=0)


@pytest.fixture(scope="session")
def sft_model_dir(world_config, tiny_model_dir) -> Path:
    """The tiny model after one short SFT epoch: a policy that answers in the world's language.

    Cached next to the tiny model it starts from; the training run goes to a
    temporary directory and is renamed into place when complete.
    """
    from rad.algos.sft import SFTConfig, run_sft
    from rad.runtime.checkpoint import atomic_dir
    from rad.settings import LearnerConfig, LoggingConfig

    target = tiny_model_dir.parent / f"{tiny_model_dir.name}-sft-tests-v1"
    if (target / "config.json").is_file():
        return target
    with atomic_dir(target) as tmp:
        cfg = SFTConfig(output_dir=str(tmp / "run"), world=world_config,
                        learner=LearnerConfig(lr=3e-3, micro_batch_size=16),
                        logging=LoggingConfig(tensorboard=False, progress=False), num_samples=0)
        cfg.schedule.epochs = 1
        cfg.data.max_eval_rows = 64
        run_sft(cfg)
        for f in (tmp / "run" / "model").iterdir():
            shutil.move(str(f), tmp / f.name)
        shutil.rmtree(tmp / "run")
    return target


@pytest.fixture(scope="session")
def score_dirs(sft_model_dir, tmp_path_factory) -> dict[str, str]:
    """Reward and cost models with seeded, untrained heads on the SFT backbone.

    Real score models with arbitrary but fixed scores: enough to exercise every
    path that scores text (RL steps, the arena) without training one.
    """
    from rad.models.loading import load_tokenizer
    from rad.models.score_model import build_score_model, save_score_model

    root = tmp_path_factory.mktemp("scores")
    tok = load_tokenizer(sft_model_dir, padding_side="right")
    out = {}
    for kind, seed in (("reward", 1), ("cost", 2)):
        model = build_score_model(sft_model_dir, kind=kind, tokenizer=tok, seed=seed)
        out[kind] = str(save_score_model(model, root / kind, tok))
    return out


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster for the whole session (logical CPUs > cores so several actors fit)."""
    import ray

    from rad.runtime.local_ray import init_local_ray

    if not ray.is_initialized():
        init_local_ray(num_cpus=8, include_dashboard=False, log_to_driver=False, configure_logging=False,
                       runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}})
    yield ray
    ray.shutdown()
