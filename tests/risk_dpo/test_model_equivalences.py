"""Equivalences of the losses on a real (tiny) policy/reference pair: values and parameter gradients."""

from __future__ import annotations

import pytest
import torch

from rad.data.encode import collate_lm, encode_pair
from risk_dpo.losses import LossParams, PairBatch, get_loss
from risk_dpo.token_stats import sequence_stats


def _loss_and_grads(policy, ref, batch, name: str, params: LossParams):
    spec = get_loss(name)
    policy.zero_grad(set_to_none=True)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    embeds = None
    if spec.needs_embeds:
        embeds = policy.get_input_embeddings()(ids)
        logits = policy(inputs_embeds=embeds, attention_mask=mask).logits
    else:
        logits = policy(input_ids=ids, attention_mask=mask).logits
    with torch.no_grad():
        ref_logits = ref(input_ids=ids, attention_mask=mask).logits
    stats = sequence_stats(logits, batch["labels"], ref_logits=ref_logits, need_kl=True,
                           need_risk=spec.needs_risk, risk=params.risk, mu=params.mu)
    b = ids.shape[0] // 2
    losses, metrics = spec.fn(PairBatch(stats.select(slice(0, b)), stats.select(slice(b, None)), embeds, True),
                              params)
    losses.mean().backward()
    grads = [p.grad.detach().clone() for p in policy.parameters() if p.grad is not None]
    return losses.detach(), grads, metrics


@pytest.fixture(scope="module")
def batch(tokenizer, safety_pairs):
    pairs = safety_pairs[:3]
    enc = [encode_pair(tokenizer, p["prompt"], p[k], 64) for k in ("chosen", "rejected") for p in pairs]
    return collate_lm(enc, tokenizer.pad_token_id)


@pytest.fixture(scope="module")
def eager_policy(reference_and_policy):
    ref, policy = reference_and_policy
    policy.set_attn_implementation("eager")  # the WDPO path (double backward) needs eager attention
    return ref, policy


@pytest.mark.parametrize("left,right", [
    (("ra_dpo1", LossParams(risk="cvar", mu=1.0)), ("tdpo1", LossParams())),
    (("ra_dpo2", LossParams(risk="cvar", mu=1.0, alpha=0.7)), ("tdpo2", LossParams(alpha=0.7))),
    (("tdpo2", LossParams(alpha=0.0)), ("dpo", LossParams())),
    (("ra_dpo2", LossParams(alpha=0.0, risk="erm", mu=3.0)), ("dpo", LossParams())),
    (("kldpo", LossParams(tau=1e9)), ("dpo", LossParams())),
    (("wdpo", LossParams(rho=0.0)), ("dpo", LossParams())),
])
def test_loss_equivalences_values_and_gradients(eager_policy, batch, left, right):
    ref, policy = eager_policy
    loss_a, grads_a, _ = _loss_and_grads(policy, ref, batch, *left)
    loss_b, grads_b, _ = _loss_and_grads(policy, ref, batch, *right)
    assert not torch.allclose(loss_b, torch.full_like(loss_b, loss_b[0].item()))  # a non-degenerate batch
    torch.testing.assert_close(loss_a, loss_b, rtol=1e-5, atol=1e-6)
    assert len(grads_a) == len(grads_b) > 0
    for ga, gb in zip(grads_a, grads_b):
        torch.testing.assert_close(ga, gb, rtol=1e-4, atol=1e-6)


def test_risk_terms_differ_from_the_kl_below_full_mass(eager_policy, batch):
    ref, policy = eager_policy
    _, _, m = _loss_and_grads(policy, ref, batch, "ra_dpo2", LossParams(risk="cvar", mu=0.9))
    assert torch.all(m["risk_ratio/chosen"] > m["kl/chosen"])
    assert torch.all(m["risk_ratio/rejected"] > m["kl/rejected"])
    wd_loss, _, wm = _loss_and_grads(policy, ref, batch, "wdpo", LossParams(rho=1.0))
    dpo_loss, _, _ = _loss_and_grads(policy, ref, batch, "dpo", LossParams())
    assert torch.all(wm["wdpo/grad_penalty"] > 0)
    torch.testing.assert_close(wd_loss, dpo_loss + wm["wdpo/grad_penalty"])
