"""The DeepSpeed learner on CPU (gloo): ZeRO stages agree, gradient accumulation, HF save."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from rad.runtime.learner import DeepSpeedLearner, deepspeed_config, lr_lambda
from rad.settings import LearnerConfig


def _model():
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                        num_attention_heads=1, num_key_value_heads=1, max_position_embeddings=32))


def _losses(cfg, batches):
    learner = DeepSpeedLearner(_model(), cfg, total_steps=len(batches))
    losses = []
    for x in batches:
        out = learner(input_ids=x, labels=x)
        learner.backward(out.loss)
        learner.step()
        losses.append(out.loss.item())
    return losses, learner


def test_zero_stages_give_the_same_trajectory():
    g = torch.Generator().manual_seed(1)
    batches = [torch.randint(0, 64, (4, 12), generator=g) for _ in range(4)]
    runs = {stage: _losses(LearnerConfig(zero_stage=stage, micro_batch_size=4, lr=1e-2, scheduler="constant",
                                         warmup_ratio=0.0), batches)
            for stage in (0, 2, 3)}
    reference = runs[0][0]
    assert reference[-1] < reference[0]
    for stage in (2, 3):
        assert runs[stage][0] == pytest.approx(reference, rel=1e-5, abs=1e-6), stage
    s0, s3 = runs[0][1].full_state_dict(), runs[3][1].full_state_dict()
    for name in s0:
        torch.testing.assert_close(s3[name], s0[name], rtol=1e-4, atol=1e-5)  # reduction order differs


def test_gradient_accumulation_steps_at_the_boundary():
    cfg = LearnerConfig(micro_batch_size=2, grad_accum=3, lr=1e-2)
    learner = DeepSpeedLearner(_model(), cfg, total_steps=2)
    before = {k: v.clone() for k, v in learner.full_state_dict().items()}
    x = torch.randint(0, 64, (2, 8))
    flags = []
    for _ in range(3):
        learner.backward(learner(input_ids=x, labels=x).loss)
        flags.append(learner.step())
        if not flags[-1]:
            after = learner.full_state_dict()
            assert all(torch.equal(after[k], before[k]) for k in before)
    assert flags == [False, False, True] and learner.global_step == 1
    assert deepspeed_config(cfg, world_size=1)["train_batch_size"] == 6


def test_save_pretrained_round_trip(tmp_path):
    _, learner = _losses(LearnerConfig(zero_stage=3, micro_batch_size=2), [torch.randint(0, 64, (2, 8))])
    learner.save_pretrained(tmp_path / "m")
    loaded = LlamaForCausalLM.from_pretrained(tmp_path / "m")
    state = learner.full_state_dict()
    for name, tensor in loaded.state_dict().items():
        torch.testing.assert_close(tensor, state[name])


def test_lr_schedule_shapes():
    cos = lr_lambda("cosine", warmup_steps=2, total_steps=10)
    assert [cos(0), cos(1)] == [0.5, 1.0]
    assert cos(2) == pytest.approx(1.0) and cos(10) == pytest.approx(0.0, abs=1e-12)
    lin = lr_lambda("linear", 0, 4)
    assert [lin(s) for s in range(5)] == [1.0, 0.75, 0.5, 0.25, 0.0]
    assert lr_lambda("constant", 0, 4)(3) == 1.0
