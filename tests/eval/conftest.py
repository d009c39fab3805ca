"""Fixtures of the eval tests: untrained (seeded) score heads on the SFT backbone and one small arena run."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def score_dirs(sft_model_dir, tmp_path_factory):
    """Reward and cost models with seeded, untrained heads: real models, arbitrary but fixed scores."""
    from rad.models.loading import load_tokenizer
    from rad.models.score_model import build_score_model, save_score_model

    root = tmp_path_factory.mktemp("eval-scores")
    tok = load_tokenizer(sft_model_dir, padding_side="right")
    out = {}
    for kind, seed in (("reward", 1), ("cost", 2)):
        model = build_score_model(sft_model_dir, kind=kind, tokenizer=tok, seed=seed)
        out[kind] = str(save_score_model(model, root / kind, tok))
    return out


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
