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


def _penalised_loss(module, x, rho=5.0):
    """LM loss plus rho * ||d loss / d input embeddings||^2 (a double backward)."""
    embeds = module.get_input_embeddings()(x)
    loss = module(inputs_embeds=embeds, labels=x).loss
    (grad,) = torch.autograd.grad(loss, embeds, create_graph=True)
    return loss + rho * grad.pow(2).sum(), None


@pytest.mark.parametrize("zero_stage", [0, 2])
def test_forward_loss_double_backward_equals_plain_adamw(zero_stage):
    """A gradient-penalty loss through ``forward_loss`` (grad_accum 2) takes the plain torch AdamW steps."""
    g = torch.Generator().manual_seed(2)
    batches = [torch.randint(0, 64, (2, 10), generator=g) for _ in range(4)]
    cfg = LearnerConfig(zero_stage=zero_stage, micro_batch_size=2, grad_accum=2, lr=1e-2, grad_clip=0.0,
                        scheduler="constant", warmup_ratio=0.0)
    models = [_model(), _model()]
    for m in models:
        m.set_attn_implementation("eager")  # fused SDPA has no double backward
    learner, plain = DeepSpeedLearner(models[0], cfg, total_steps=2), models[1]
    opt = torch.optim.AdamW(plain.parameters(), lr=1e-2, betas=(0.9, 0.95), weight_decay=0.0)
    for i, x in enumerate(batches):
        loss, _ = learner.forward_loss(lambda module: _penalised_loss(module, x))
        learner.backward(loss)
        learner.step()
        (_penalised_loss(plain, x)[0] / 2).backward()
        if i % 2 == 1:
            opt.step()
            opt.zero_grad()
    assert learner.global_step == 2
    got = learner.full_state_dict()
    for name, tensor in plain.state_dict().items():
        torch.testing.assert_close(got[name], tensor, rtol=0, atol=1e-6)
    assert any(not torch.equal(v, _model().state_dict()[k]) for k, v in plain.state_dict().items())
