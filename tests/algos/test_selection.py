"""Choosing the returned policy: the validation split, the win rate and the best-feasible rule."""

import pytest
import torch

from rad.algos.selection import ValidationSelector, split_validation, tie_rate, win_rate
from rad.risk import weighting_from_spec


def test_split_is_seeded_disjoint_and_complete():
    train, val = split_validation(50, 8, seed=3)
    assert len(val) == 8 and sorted(train + val) == list(range(50)) and not set(train) & set(val)
    assert train == sorted(train) and val == sorted(val)
    assert split_validation(50, 8, seed=3) == (train, val)
    assert split_validation(50, 8, seed=4)[1] != val


@pytest.mark.parametrize("n_val", [0, 50, 60])
def test_split_rejects_sizes_that_leave_no_side(n_val):
    with pytest.raises(ValueError, match="0 < val_prompts < the 50 training prompts"):
        split_validation(50, n_val, seed=0)


def test_win_rate_counts_ties_half_and_needs_pairs():
    assert win_rate([1.0, 2.0, 3.0, 0.0], [0.0, 2.0, 4.0, -1.0]) == pytest.approx(2 / 4)  # a tie is not a win
    assert tie_rate([1.0, 2.0, 3.0, 0.0], [0.0, 2.0, 4.0, -1.0]) == pytest.approx(1 / 4)
    with pytest.raises(ValueError, match="paired samples"):
        win_rate([1.0, 2.0], [1.0])


def _record(costs, rewards):
    return {"costs": [float(c) for c in costs], "rewards": [float(r) for r in rewards]}


def test_selector_keeps_the_feasible_step_with_the_best_win_rate():
    ref_costs = torch.linspace(-3, 3, 40, dtype=torch.float64)
    ref_rewards = torch.zeros(40, dtype=torch.float64)
    sel = ValidationSelector(_record(ref_costs, ref_rewards), weighting_from_spec("cvar:0.9"), delta=0.5,
                             tolerance=0.05)
    # A shift of every cost by -1: the CVaR gain is exactly 1, no violation; wins on 30 of 40 samples.
    c5, new = sel.judge(5, _record(ref_costs - 1, torch.tensor([1.0] * 30 + [-1.0] * 10)))
    assert new and c5.feasible and c5.gain == pytest.approx(1.0) and c5.violation == pytest.approx(0.0)
    assert c5.reward_win_rate == pytest.approx(0.75)
    # Better reward but the tail got worse (shift +1): infeasible, never chosen.
    c10, new = sel.judge(10, _record(ref_costs + 1, torch.ones(40)))
    assert not new and not c10.feasible and c10.violation == pytest.approx(1.0)
    # Feasible but a lower win rate than step 5: not chosen either.
    c15, new = sel.judge(15, _record(ref_costs - 2, torch.tensor([1.0] * 10 + [-1.0] * 30)))
    assert c15.feasible and not new
    assert sel.best.step == 5
    # Feasible only with a gain >= delta: a shift of -0.25 gains 0.25 < 0.5.
    c20, _ = sel.judge(20, _record(ref_costs - 0.25, torch.ones(40)))
    assert c20.gain == pytest.approx(0.25) and not c20.feasible
    restored = ValidationSelector(sel.reference, sel.weighting, 0.5, 0.05)
    restored.load_state(sel.state())
    assert restored.best == sel.best
    assert ValidationSelector.metrics(c5)["val/feasible"] == 1.0


def _paired(costs, rewards, n_per_prompt):
    prompts = [f"p{i // n_per_prompt}" for i in range(len(costs))]
    return {"prompts": prompts, **_record(costs, rewards)}


def test_confidence_bound_rejects_a_gain_that_only_clears_delta_on_average():
    gen = torch.Generator().manual_seed(0)
    ref = torch.randn(60, 4, generator=gen, dtype=torch.float64)
    # Half the prompts improve by 2 (gain there 2), the others not at all: the point gain is
    # about 1, but prompt resamples spread it, so its 0.9-lower bound is clearly below.
    shift = torch.zeros(60, 1, dtype=torch.float64)
    shift[::2] = -2.0
    pol = ref + shift
    weighting = weighting_from_spec("uniform")
    flat = lambda t: t.reshape(-1)  # noqa: E731
    point = ValidationSelector(_paired(flat(ref), torch.zeros(240), 4), weighting, delta=0.9, tolerance=0.05)
    sure = ValidationSelector(_paired(flat(ref), torch.zeros(240), 4), weighting, delta=0.9, tolerance=0.05,
                              confidence=0.9)
    c_point, _ = point.judge(1, _paired(flat(pol), torch.ones(240), 4))
    c_sure, _ = sure.judge(1, _paired(flat(pol), torch.ones(240), 4))
    assert c_point.gain == pytest.approx(1.0) and c_point.feasible
    assert c_sure.gain == pytest.approx(1.0) and c_sure.gain_lower < 0.9 < c_sure.gain and not c_sure.feasible
    # A shift of every prompt is the same on every resample: the bound equals the point value.
    c_all, _ = sure.judge(2, _paired(flat(ref - 1.0), torch.ones(240), 4))
    assert c_all.gain_lower == pytest.approx(1.0) and c_all.feasible


def test_confidence_needs_prompts_in_the_reference_order():
    ref = _paired(torch.zeros(8), torch.zeros(8), 2)
    sel = ValidationSelector(ref, weighting_from_spec("uniform"), 0.0, 1.0, confidence=0.5)
    shuffled = dict(ref, prompts=list(reversed(ref["prompts"])))
    with pytest.raises(ValueError, match="reference's prompt order"):
        sel.judge(1, shuffled)
    with pytest.raises(ValueError, match=r"confidence must be in \[0, 1\)"):
        ValidationSelector(ref, weighting_from_spec("uniform"), 0.0, 1.0, confidence=1.0)
