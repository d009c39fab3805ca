"""Loss registry: hand-computed values, equivalences, stop-gradients, KLDPO gathering, WDPO penalty."""

from __future__ import annotations

import math

import pytest
import torch
import torch.multiprocessing as mp

from rad.errors import ConfigError
from risk_dpo.losses import (LossParams, PairBatch, gather_detached, get_loss, loss_names, register_loss,
                             tilting_weights)
from risk_dpo.token_stats import SequenceStats


def _stats(logps, ref_logps, kl=None, risk=None, grad=False):
    def t(x):
        return None if x is None else torch.tensor(x, dtype=torch.float64, requires_grad=grad)

    return SequenceStats(logps=t(logps), ref_logps=t(ref_logps), tokens=torch.ones(len(logps)), kl=t(kl),
                         risk=t(risk))


def _logsig(x: float) -> float:
    return -math.log1p(math.exp(-x))


def _pairs(grad=False):
    chosen = _stats([-3.0, -5.0], [-3.5, -4.0], kl=[0.2, 0.5], risk=[0.3, 0.9], grad=grad)
    rejected = _stats([-6.0, -2.0], [-5.0, -2.5], kl=[0.4, 0.1], risk=[0.7, 0.2], grad=grad)
    return PairBatch(chosen, rejected)


def test_registry_names_and_errors():
    assert set(loss_names()) >= {"dpo", "tdpo1", "tdpo2", "ra_dpo1", "ra_dpo2", "kldpo", "wdpo"}
    assert get_loss("ra_dpo2").needs_risk and get_loss("tdpo1").needs_kl and get_loss("wdpo").needs_embeds
    with pytest.raises(ConfigError, match="registered losses"):
        get_loss("ipo")
    with pytest.raises(ConfigError, match="already registered"):
        register_loss("dpo")(lambda b, p: None)


def test_hand_computed_values():
    p = LossParams(beta=0.5, alpha=0.3)
    batch = _pairs()
    # logratios: chosen (0.5, -1.0), rejected (-1.0, 0.5)  =>  u = 0.5 * (1.5, -1.5)
    u = [0.75, -0.75]
    expected = {
        "dpo": [-_logsig(x) for x in u],
        "tdpo1": [-_logsig(u[0] - 0.5 * (0.4 - 0.2)), -_logsig(u[1] - 0.5 * (0.1 - 0.5))],
        "tdpo2": [-_logsig(u[0] - 0.3 * 0.5 * (0.4 - 0.2)), -_logsig(u[1] - 0.3 * 0.5 * (0.1 - 0.5))],
        "ra_dpo1": [-_logsig(u[0] - 0.5 * (0.7 - 0.3)), -_logsig(u[1] - 0.5 * (0.2 - 0.9))],
        "ra_dpo2": [-_logsig(u[0] - 0.3 * 0.5 * (0.7 - 0.3)), -_logsig(u[1] - 0.3 * 0.5 * (0.2 - 0.9))],
    }
    for name, values in expected.items():
        losses, metrics = get_loss(name).fn(batch, p)
        assert losses.tolist() == pytest.approx(values, abs=1e-12), name
    _, m = get_loss("ra_dpo2").fn(batch, p)
    assert m["rewards/chosen"].tolist() == pytest.approx([0.25, -0.5])
    assert m["rewards/rejected"].tolist() == pytest.approx([-0.5, 0.25])
    assert m["rewards/accuracies"].tolist() == [1.0, 0.0]
    assert m["rewards/margins"].tolist() == pytest.approx([0.75, -0.75])
    assert m["kl/chosen"].tolist() == [0.2, 0.5] and m["risk_ratio/rejected"].tolist() == [0.7, 0.2]
    assert m["logps/chosen"].tolist() == [-3.0, -5.0] and m["logps/ref_rejected"].tolist() == [-5.0, -2.5]


def test_equivalences_on_statistics():
    batch = _pairs()
    dpo, _ = get_loss("dpo").fn(batch, LossParams())
    for name in ("tdpo2", "ra_dpo2"):
        zero_alpha, _ = get_loss(name).fn(batch, LossParams(alpha=0.0))
        torch.testing.assert_close(zero_alpha, dpo)
    # When the risk ratio is the KL (full-mass CVaR), Ra-DPO is TDPO.
    as_kl = PairBatch(_stats([-3.0, -5.0], [-3.5, -4.0], kl=[0.2, 0.5], risk=[0.2, 0.5]),
                      _stats([-6.0, -2.0], [-5.0, -2.5], kl=[0.4, 0.1], risk=[0.4, 0.1]))
    for ra, td in (("ra_dpo1", "tdpo1"), ("ra_dpo2", "tdpo2")):
        torch.testing.assert_close(get_loss(ra).fn(as_kl, LossParams())[0], get_loss(td).fn(as_kl, LossParams())[0])
    kl, _ = get_loss("kldpo").fn(batch, LossParams(tau=1e12))
    torch.testing.assert_close(kl, dpo)


def test_second_versions_stop_the_gradient_of_the_chosen_divergence():
    for name, field in (("tdpo2", "kl"), ("ra_dpo2", "risk"), ("tdpo1", "kl"), ("ra_dpo1", "risk")):
        batch = _pairs(grad=True)
        losses, _ = get_loss(name).fn(batch, LossParams(alpha=0.5))
        g_w, g_l = torch.autograd.grad(losses.sum(), [getattr(batch.chosen, field), getattr(batch.rejected, field)],
                                       allow_unused=True)
        assert g_l is not None and torch.all(g_l.abs() > 0)
        if name.endswith("2"):
            assert g_w is None or torch.all(g_w == 0)
        else:
            assert torch.all(g_w.abs() > 0)


def test_kldpo_weights_by_hand():
    losses = torch.tensor([0.2, 1.0, 0.6], dtype=torch.float64)
    tau = 0.5
    raw = [math.exp((x - 0.6) / tau) for x in losses.tolist()]
    expected = [r / (sum(raw) / 3) for r in raw]
    assert tilting_weights(losses, losses, tau).tolist() == pytest.approx(expected)
    capped = [min(r, 1.5) for r in raw]
    assert tilting_weights(losses, losses, tau, max_weight=1.5).tolist() == pytest.approx(
        [c / (sum(capped) / 3) for c in capped])
    # Tiny temperatures put all weight on the worst pair without overflowing.
    assert tilting_weights(losses, losses, 1e-6).tolist() == pytest.approx([0.0, 3.0, 0.0])
    batch = _pairs(grad=True)
    weighted, m = get_loss("kldpo").fn(batch, LossParams(tau=tau))
    base = m["kldpo/dpo_loss"]
    w = tilting_weights(base, base, tau)
    assert float(weighted.detach().mean()) == pytest.approx(float((w * base).sum() / w.sum()))
    g = torch.autograd.grad(weighted.sum(), batch.chosen.logps)[0]
    # The weights are constants: the gradient is w_i times DPO's gradient.
    fresh = _pairs(grad=True)
    base_fresh, _ = get_loss("dpo").fn(fresh, LossParams())
    g_base = torch.autograd.grad(base_fresh.sum(), fresh.chosen.logps)[0]
    torch.testing.assert_close(g, w * g_base)


def _gather_worker(rank: int, world: int, init_file: str, queue) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    local = torch.tensor([1.0, 2.0, 3.0][: 2 + rank]) + 10 * rank  # ranks hold 2 and 3 pairs
    gathered = gather_detached(local)
    w = tilting_weights(local, gathered, tau=0.7)
    queue.put((rank, gathered.tolist(), (w * local).mean().item(), len(local)))
    torch.distributed.destroy_process_group()


def test_kldpo_gathers_losses_across_workers(tmp_path):
    # spawn, not fork: a forked child inherits this process's torch.distributed group
    # (earlier tests initialise one) and cannot make its own.
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_gather_worker, args=(r, 2, str(tmp_path / "init"), queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = sorted(queue.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(timeout=30)
    all_losses = [1.0, 2.0, 11.0, 12.0, 13.0]
    assert results[0][1] == results[1][1] == all_losses
    # Data-parallel averaging of per-rank means of w*l is sum w l / sum w over every pair
    # (here with equal per-rank batch weighting: the ranks' means are combined as DeepSpeed does).
    t = torch.tensor(all_losses, dtype=torch.float64)
    w = torch.exp((t - t.mean()) / 0.7)
    w = w / w.mean()
    per_rank = [(w[:2] * t[:2]).mean().item(), (w[2:] * t[2:]).mean().item()]
    assert [r[2] for r in results] == pytest.approx(per_rank, rel=1e-5)
    assert gather_detached(torch.tensor([4.0, 5.0])).tolist() == [4.0, 5.0]  # single process: identity


def test_wdpo_penalty_closed_form_and_rho_zero():
    torch.manual_seed(0)
    b, length, h = 3, 4, 5
    embeds = torch.randn(2 * b, length, h, dtype=torch.float64, requires_grad=True)
    a = torch.randn(2 * b, length, h, dtype=torch.float64)
    logps = (embeds * a).flatten(1).sum(-1)  # a "model" linear in its input embeddings
    ref = torch.randn(2 * b, dtype=torch.float64)
    ones = torch.ones(b)

    def batch():
        return PairBatch(SequenceStats(logps[:b], ref[:b], ones), SequenceStats(logps[b:], ref[b:], ones),
                         inputs_embeds=embeds, create_graph=True)

    beta, rho = 0.3, 0.2
    losses, m = get_loss("wdpo").fn(batch(), LossParams(beta=beta, rho=rho))
    u = beta * ((logps[:b] - ref[:b]) - (logps[b:] - ref[b:]))
    s = torch.sigmoid(-u)
    closed = (beta * s) ** 2 * (a[:b].pow(2).flatten(1).sum(-1) + a[b:].pow(2).flatten(1).sum(-1))
    torch.testing.assert_close(m["wdpo/grad_penalty"], closed.detach())
    dpo, _ = get_loss("dpo").fn(batch(), LossParams(beta=beta))
    torch.testing.assert_close(losses, dpo + rho * closed)
    zero, _ = get_loss("wdpo").fn(batch(), LossParams(beta=beta, rho=0.0))
    torch.testing.assert_close(zero, dpo)
    # create_graph: the penalty is differentiable (WDPO trains on it).
    (g,) = torch.autograd.grad(losses.sum(), embeds)
    assert torch.isfinite(g).all()
    with pytest.raises(ValueError, match="embeddings"):
        get_loss("wdpo").fn(PairBatch(batch().chosen, batch().rejected), LossParams())
