"""Fixtures of the eval tests: one small arena config (score heads come from tests/conftest.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def make_eval_config(tiny_model_dir, sft_model_dir, score_dirs):
    """A small but complete arena config: tiny (untrained) vs SFT, held-out and red-team prompts, 2 OOD seeds."""
    from rad.config import load_config
    from rad.eval import EvalConfig

    def make(out_dir, cache_dir, **extra):
        base = {
            "output_dir": out_dir, "cache_dir": cache_dir, "reward_model": score_dirs["reward"],
            "cost_model": score_dirs["cost"], "prompts": "embedded/prompts-test:12", "redteam": "embedded/redteam:6",
            "samples_per_prompt": 2, "sampling.max_new_tokens": 16, "judge.seeds": "[0, 1]", "html": "true",
        }
        base.update(extra)
        overrides = [f"models=[sft={sft_model_dir}, tiny={tiny_model_dir}]", "red=[sft]"]
        return load_config(EvalConfig, None, overrides + [f"{k}={v}" for k, v in base.items()])

    return make


@pytest.fixture(scope="session")
def arena_run(tmp_path_factory, make_eval_config):
    """(summary, output dir, cache dir) of one run_eval call."""
    from rad.eval import run_eval

    root = tmp_path_factory.mktemp("arena")
    out, cache = root / "report", root / "cache"
    return run_eval(make_eval_config(out, cache)), out, cache
