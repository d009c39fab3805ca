"""DeepSpeedRank, the base of every trained role: rendezvous, engine from build_model, step micro batches."""

import pytest
import torch

from rad.runtime.batch import TokenBatch
from rad.runtime.deepspeed_rank import DeepSpeedRank
from rad.runtime.distributed import free_port
from rad.settings import LearnerConfig


class _LinearRank(DeepSpeedRank):
    def build_model(self) -> torch.nn.Module:
        return torch.nn.Linear(3, 1)


def test_init_builds_the_engine_on_the_subclass_model(single_rank_env):
    rank = _LinearRank(LearnerConfig(micro_batch_size=2, grad_accum=2, lr=1e-2), total_steps=1)
    ip, port = rank.address()
    assert isinstance(ip, str) and 0 < port < 65536
    rank.init(0, 1, "127.0.0.1", free_port(), seed=3)
    torch.manual_seed(3)
    expected = torch.nn.Linear(3, 1).state_dict()  # init seeds before build_model
    state = rank.state_dict()
    assert set(state) == {"weight", "bias"}
    for name, tensor in expected.items():
        torch.testing.assert_close(state[name], tensor)
    four = TokenBatch.from_ids([[1]] * 4, [[2, 3]] * 4, pad_id=0)
    assert [len(mb) for mb in rank.step_micro_batches(four, "toy")] == [2, 2]
    five = TokenBatch.from_ids([[1]] * 5, [[2, 3]] * 5, pad_id=0)
    with pytest.raises(ValueError, match="toy rank 0: 5 samples make 3 micro batches, but learner.grad_accum=2"):
        rank.step_micro_batches(five, "toy")


def test_a_rank_without_a_model_says_so(single_rank_env):
    with pytest.raises(NotImplementedError, match="DeepSpeedRank must define build_model"):
        DeepSpeedRank(LearnerConfig(), total_steps=1).init(0, 1, "127.0.0.1", free_port())
