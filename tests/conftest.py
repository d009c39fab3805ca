"""Session-wide fixtures: the embedded world, the tiny model, a short SFT, one local Ray cluster, learner helpers.

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


@pytest.fixture
def single_rank_env(monkeypatch):
    # init() writes the rendezvous variables; registering them here restores them after the test.
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.setenv(key, "0")


def random_samples(vocab: int, n: int = 6, seed: int = 0) -> list[dict]:
    """Prompts of 2-9 and responses of 1-14 tokens (ids >= 3) with an advantage each: widths differ, rows pad and pack."""
    g = torch.Generator().manual_seed(seed)

    def ids(lo, hi):
        return torch.randint(3, vocab, (int(torch.randint(lo, hi, (1,), generator=g)),), generator=g).tolist()

    return [{"prompt_ids": ids(2, 10), "response_ids": ids(1, 15), "advantage": float(torch.randn(1, generator=g))}
            for _ in range(n)]


@pytest.fixture(scope="session")
def make_samples():
    """:func:`random_samples`, for tests that need token samples."""
    return random_samples


def random_batch(vocab_size: int, n: int = 6, seed: int = 0, pad_id: int = 0):
    """:func:`random_samples` as the runtime's typed batch, with their ``advantages`` as a per-sample field."""
    from rad.runtime.batch import TokenBatch

    samples = random_samples(vocab_size, n, seed)
    batch = TokenBatch.from_ids([s["prompt_ids"] for s in samples], [s["response_ids"] for s in samples], pad_id)
    return batch.with_fields(advantages=torch.tensor([s["advantage"] for s in samples], dtype=torch.float64))


@pytest.fixture(scope="session")
def make_batch():
    """:func:`random_batch`, for tests that feed the roles."""
    return random_batch


def step_with_gradients(rank, call):
    """``call()`` (one train step of a DeepSpeedRank) and the full gradients it stepped on, at any ZeRO stage.

    Read before the optimizer step at the accumulation boundary (DeepSpeed shows
    no gradients in between): the sum over micro batches, each scaled by 1/grad_accum.
    """
    from deepspeed.utils import safe_get_full_grad

    grads, step = [], rank.learner.step

    def reading_step():
        if rank.learner.engine.is_gradient_accumulation_boundary():
            grads.append({n: safe_get_full_grad(p).clone() for n, p in rank.learner.module.named_parameters()})
        return step()

    rank.learner.step = reading_step
    try:
        result = call()
    finally:
        rank.learner.step = step
    (only,) = grads
    return result, only


@pytest.fixture(scope="session")
def with_gradients():
    """:func:`step_with_gradients`, for tests that compare the gradients of train steps."""
    return step_with_gradients


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
