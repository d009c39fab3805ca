"""RAD's per-step arithmetic on hand-built numbers, batch geometry and fail-fast config errors."""

import math

import pytest
import torch

from rad.algos.advantages import rloo_advantages
from rad.algos.rad import (RADConfig, ReferenceCosts, constraint_values, kl_per_sample, learner_geometry,
                           off_policy_metrics, rad_advantages, rollout_token_logprobs, shaped_rewards, window_gain)
from rad.config import load_config
from rad.errors import ConfigError
from rad.risk import dominance_step

REQUIRED = ["reward_model=r", "cost_model=c"]


def test_kl_estimators_by_hand():
    from rad.runtime.batch import TokenBatch

    # sample 0: prompt of 2 tokens, response of 2; sample 1: prompt 1, response 1 (its log-probs: 0.3 vs 0.1)
    batch = TokenBatch.from_ids([[5, 6], [7]], [[8, 9], [4]], pad_id=0)
    logp = torch.tensor([[0.0, -1.0, -2.0], [0.3, 0.0, 0.0]])  # [B, T-1]: position t scores token t+1
    ref = torch.tensor([[9.0, -1.5, -1.0], [0.1, 9.0, 9.0]])  # off-response entries must not count
    k1 = kl_per_sample(batch, logp, ref, "k1")
    assert k1.dtype == torch.float64 and k1.tolist() == pytest.approx([0.5 - 1.0, 0.3 - 0.1])
    # k3 = exp(ref - logp) - 1 - (ref - logp), per token
    expected = (math.exp(-0.5) - 1 + 0.5) + (math.exp(1.0) - 1 - 1.0)
    k3 = kl_per_sample(batch, logp, ref, "k3")
    assert k3[0].item() == pytest.approx(expected) and (k3 >= 0).all()


def test_rloo_advantages_hand_built():
    r = torch.tensor([[1.0, 3.0], [2.0, 2.0]])
    assert rloo_advantages(r).tolist() == [[-2.0, 2.0], [0.0, 0.0]]
    r3 = torch.tensor([1.0, 2.0, 6.0])
    assert rloo_advantages(r3).tolist() == pytest.approx([-3.0, -1.5, 4.5])
    with pytest.raises(ConfigError, match="at least 2"):
        rloo_advantages(torch.ones(4, 1))


def test_shaped_rewards_multipliers_and_advantages_by_hand():
    # Two prompts, k = 2: r - 0.1 KL = [[0.95, 2.85], [0.0, 1.9]].
    rewards = torch.tensor([[1.0, 3.0], [0.0, 2.0]], dtype=torch.float64)
    kl = torch.tensor([[0.5, 1.5], [0.0, 1.0]], dtype=torch.float64)
    shaped = shaped_rewards(rewards, kl, 0.1)
    assert shaped.flatten().tolist() == pytest.approx([0.95, 2.85, 0.0, 1.9])
    gain_signal = torch.tensor([[1.0, 0.0], [0.5, 0.0]], dtype=torch.float64)
    viol_signal = torch.tensor([[0.0, 1.0], [0.0, 0.0]], dtype=torch.float64)
    # lambda 2: totals [[2.95, 2.85], [1.0, 1.9]]; RLOO with k = 2 is the difference to the other sample.
    adv = rad_advantages(shaped, [gain_signal], [2.0])
    assert adv.flatten().tolist() == pytest.approx([0.1, -0.1, -0.9, 0.9])
    # mu 3 on the violation signal adds 3 to the second sample of prompt 0: totals [[2.95, 5.85], ...].
    assert rad_advantages(shaped, [gain_signal, viol_signal], [2.0, 3.0]).flatten().tolist() == pytest.approx(
        [-2.9, 2.9, -0.9, 0.9])
    whitened = rad_advantages(shaped, [gain_signal], [2.0], whiten=True)
    assert float(whitened.std()) == pytest.approx(1.0)
    with pytest.raises(ValueError):  # one multiplier per signal
        rad_advantages(shaped, [gain_signal, viol_signal], [2.0])
    # The constraints as g <= 0: delta - gain, and violation - tolerance when mu is on.
    assert constraint_values(0.3, 0.2, delta=0.5, tolerance=0.1, with_violation=True) == pytest.approx([0.2, 0.1])
    assert constraint_values(0.3, 0.2, delta=0.5, tolerance=0.1, with_violation=False) == pytest.approx([0.2])
    # a margin moves only the gain constraint's target: the controller aims at delta + margin
    assert constraint_values(0.3, 0.2, delta=0.5, tolerance=0.1, with_violation=True, margin=0.25) == \
        pytest.approx([0.45, 0.1])


def test_dominance_step_of_a_trailing_policy_by_hand():
    costs = torch.tensor([[0.0, 2.0], [1.0, 3.0]], dtype=torch.float64)
    ref = torch.tensor([0.0, 1.0, 1.0, 2.0], dtype=torch.float64)
    dom = dominance_step(costs, ref, "uniform", solver="exact", density="constant")
    # Sorted policy particles (0,1,2,3) vs reference (0,1,1,2): policy is never below -> gain 0.
    assert dom.gain_exact == pytest.approx(0.0) and dom.violation_exact == pytest.approx((1 + 1) / 4)


def test_signal_is_monotone_and_pushes_cheap_samples_at_the_reference():
    # Policy == reference (the SFT start): the entropic plan still gives a gradient.
    g = torch.Generator().manual_seed(0)
    costs = torch.randn(16, 4, generator=g, dtype=torch.float64)
    dom = dominance_step(costs, costs.reshape(-1), "cvar:0.5", solver="sinkhorn")
    s, c = dom.signal.reshape(-1), costs.reshape(-1)
    assert (s >= 0).all() and s.max() > 0
    order = torch.argsort(c)
    assert (s[order][1:] <= s[order][:-1] + 1e-12).all()  # non-increasing in cost
    assert s[order[0]] > s[order[-1]]


def test_exact_gain_has_no_gradient_where_the_policy_trails_everywhere():
    # A property of gain_w = int w (Q_ref - Q_pi)_+: with no quantile below the reference
    # the exact subgradient (and so the signal) is zero; only the entropic version moves.
    ref = torch.linspace(-2, 0, 32, dtype=torch.float64)
    costs = (ref + 1.0).view(8, 4)
    exact = dominance_step(costs, ref, "uniform", solver="exact")
    assert exact.gain_exact == 0 and torch.count_nonzero(exact.signal) == 0


def test_learner_geometry_fits_one_step():
    cfg = load_config(RADConfig, None, REQUIRED + ["algo.prompts_per_step=6", "algo.k=4",
                                                    "resources.num_learners=2", "learner.micro_batch_size=5"])
    lc = learner_geometry(cfg)
    assert lc.micro_batch_size * lc.grad_accum == 12 and lc.micro_batch_size == 4


@pytest.mark.parametrize("override, message", [
    ("algo.k=1", r"algo.k: RLOO needs at least 2"),
    ("algo.delta=-0.1", r"algo.delta: must be >= 0"),
    ("algo.weighting=tail:0.9", r"unknown weighting|allowed"),
    ("algo.ot.solver=emd", r"algo.ot.solver: 'emd' is not allowed"),
    ("algo.ref_costs.pairing=paired", r"algo.ref_costs.pairing: .paired. is not allowed"),
    ("algo.reference=paired", r"algo.reference has moved: use algo.ref_costs.pairing"),
    ("algo.dual_kp=1", r"algo.dual_kp has moved: use algo.dual.kp \(with dual.controller=pi\)"),
    ("reference=/x", r"reference has moved: use reference_model"),
    ("resources.num_learners=3", r"must divide evenly over resources.num_learners"),
    ("algo.selection.rule=feasible", r"algo.selection: rule=feasible needs prompts > 0"),
    ("algo.selection.rule=best", r"algo.selection.rule: .best. is not allowed"),
    ("algo.overlap=true rollout.hybrid=true", r"algo.overlap needs rollout engines of their own"),
    ("algo.overlap_is_cap=0", r"algo.overlap_is_cap: must be > 0"),
    ("algo.overlap_scoring=true", r"algo.overlap_scoring scores the batch generated ahead .* needs algo.overlap=true"),
    ("algo.policy_logprobs=rollout rollout.off_policy_sampling=true rollout.sampling.temperature=0.7",
     r"algo.policy_logprobs=rollout reads the engine's log-probs as the policy's"),
])
def test_bad_rad_config_fails_fast(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(RADConfig, None, REQUIRED + override.split())


def test_truncated_importance_weights_by_hand():
    from rad.runtime.logprobs import truncated_importance_weights

    # responses whose log-probs under pi and mu differ by log 0.5, 0 and log 3: weights 0.5, 1 and 3 capped at 2
    mu = torch.tensor([-4.0, -2.0, -7.0], dtype=torch.float64)
    pi = mu + torch.log(torch.tensor([0.5, 1.0, 3.0], dtype=torch.float64))
    assert truncated_importance_weights(pi, mu, cap=2.0).tolist() == pytest.approx([0.5, 1.0, 2.0])


def test_log_lambda_controller_needs_positive_multipliers():
    with pytest.raises(ConfigError, match=r"algo.dual: dual.controller=log_sgd needs dual.lambda_init > 0"):
        load_config(RADConfig, None, REQUIRED + ["algo.dual.controller=log_sgd", "algo.dual.mu_lr=1"])


def test_score_models_are_required():
    with pytest.raises(ConfigError, match="reward_model: a reward model is required"):
        load_config(RADConfig, None, [])


def test_matched_reference_particles_use_only_the_steps_prompts():
    # Prompt 0 is harmless (costs -3, -2), prompt 1 harmful (5, 6), prompt 2 in between.
    costs = torch.tensor([[-3.0, -2.0], [5.0, 6.0], [0.0, 1.0]], dtype=torch.float64)
    matched = ReferenceCosts(costs, n_particles=2, matched=True)
    # Particles at levels 1/4 and 3/4 of the four costs of prompts {0, 2} (-3,-2,0,1): -3 and 0.
    assert matched.particles([0, 2]).tolist() == [-3.0, 0.0]
    assert matched.particles([1]).tolist() == [5.0, 6.0]
    pooled = ReferenceCosts(costs.reshape(-1), n_particles=2, matched=False)
    # Pooled ignores the step's prompts: quantiles of all six costs (-3,-2,0,1,5,6) -> -2 and 5.
    assert pooled.particles([0]).tolist() == pooled.particles([1, 2]).tolist() == [-2.0, 5.0]


def test_window_gain_pools_the_steps_costs():
    step1 = [[0.0, 1.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0]]  # policy one unit below the reference
    step2 = [[5.0, 6.0, 7.0, 8.0], [4.0, 5.0, 6.0, 7.0]]  # policy one unit above
    assert window_gain([step1], 4, "uniform") == pytest.approx((1.0, 0.0))
    assert window_gain([step2], 4, "uniform") == pytest.approx((0.0, 1.0))
    # Pooled, 4 particles at levels 1/8, 3/8, 5/8, 7/8: policy 0,1,2,3,5,6,7,8 -> 0, 2, 5, 7 and
    # reference 1,2,3,4,4,5,6,7 -> 1, 3, 4, 6; gaps +1, +1, -1, -1 of mass 1/4 each.
    assert window_gain([step1, step2], 4, "uniform") == pytest.approx((0.5, 0.5))
    # CVaR-0.5 keeps the top two particles only (mass 1/2 each): all violation.
    assert window_gain([step1, step2], 4, "cvar:0.5") == pytest.approx((0.0, 1.0))


def test_a_missing_model_directory_is_refused_before_any_actor_starts(tmp_path, score_dirs):
    """`rad rl reward_model=/nope` names the key instead of failing inside a Ray actor."""
    from rad.algos.rad import RADTrainer
    from rad.config import load_config
    from rad.errors import ConfigError

    base = [f"output_dir={tmp_path}", f"cost_model={score_dirs['cost']}", "data.prompts=embedded/prompts-train:8"]
    with pytest.raises(ConfigError, match=r"reward_model: '/nope' is not a directory"):
        RADTrainer(load_config(RADConfig, None, base + ["reward_model=/nope"]))
    with pytest.raises(ConfigError, match=r"reference_model: .* has no config.json"):
        RADTrainer(load_config(RADConfig, None, base + [f"reward_model={score_dirs['reward']}",
                                                         f"reference_model={tmp_path}"]))


def test_rollout_token_logprobs_sit_where_the_learners_would():
    from rad.runtime.batch import TokenBatch
    from rad.runtime.rollout.base import Rollout

    prompts, responses, engine_lp = [[5, 6], [7]], [[8, 9], [4]], [[-0.5, -1.5], [-0.25]]
    rollouts = [Rollout("p", p, r, "t", lp, "length", i, 0) for i, (p, r, lp) in enumerate(zip(prompts, responses,
                                                                                               engine_lp))]
    batch = TokenBatch.from_ids(prompts, responses, pad_id=0)
    out = rollout_token_logprobs(batch, rollouts)
    # position t scores token t+1: sample 0's response tokens 8, 9 are scored at positions 1, 2; sample 1's 4 at 0
    assert out.tolist() == [[0.0, -0.5, -1.5], [-0.25, 0.0, 0.0]]
    assert [v.tolist() for v in batch.response_values(out)] == engine_lp
    rollouts[1].logprobs = None
    with pytest.raises(ConfigError, match=r"algo.policy_logprobs=rollout: the rollout engine returned no log-probs"):
        rollout_token_logprobs(batch, rollouts)


def test_off_policy_metrics_pool_the_learner_ranks_sums():
    ranks = [{"is_weight_sum": 3.0, "is_weight_capped": 1.0, "log_ratio_abs_sum": 0.6, "samples": 3.0},
             {"is_weight_sum": 0.5, "is_weight_capped": 0.0, "log_ratio_abs_sum": 0.2, "samples": 1.0}]
    m = off_policy_metrics(ranks, lag=1)
    assert m == pytest.approx({"off_policy/lag": 1, "off_policy/is_weight_mean": 3.5 / 4,
                               "off_policy/is_weight_capped": 1 / 4, "off_policy/log_ratio_abs_mean": 0.8 / 4})
