"""Fixtures of the runtime tests: a single-rank rendezvous environment and random token samples."""

import pytest
import torch


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
