"""Fixtures of the risk_dpo tests: a policy that differs from its reference, and a few real pairs."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from rad.models.loading import load_tokenizer

    return load_tokenizer(tiny_model_dir)


@pytest.fixture(scope="module")
def reference_and_policy(tiny_model_dir):
    """The tiny model as reference and a perturbed copy as policy (so log-ratios are not zero)."""
    from rad.models.loading import load_causal_lm

    ref = load_causal_lm(tiny_model_dir, dtype=torch.float32)
    policy = load_causal_lm(tiny_model_dir, dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return ref.requires_grad_(False), policy


@pytest.fixture(scope="module")
def safety_pairs(world_config):
    from risk_dpo.pairs import load_pairs

    pairs, _ = load_pairs(["embedded/pref-train:24"], "safety", world_config, seed=0)
    return pairs
