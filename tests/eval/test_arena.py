"""Pairwise arena metrics on synthetic paired outputs, against brute-force recomputation."""

from __future__ import annotations

import numpy as np
import pytest

from rad.errors import ConfigError, DataError
from rad.eval import arena
from rad.eval.config import EvalConfig
from rad.eval.responses import Outputs


def _outputs(name: str, rewards, costs, n_prompts: int, k: int) -> Outputs:
    pi = np.repeat(np.arange(n_prompts), k)
    return Outputs(model=name, prompts=[f"p{i}" for i in pi], prompt_index=pi,
                   sample_index=np.tile(np.arange(k), n_prompts),
                   responses=[f"{name}-{j}" for j in range(len(pi))], finish_reasons=["stop"] * len(pi),
                   rewards=np.asarray(rewards, float), costs=np.asarray(costs, float))


@pytest.mark.parametrize("seed", [0, 1])
def test_win_rates_and_safety_split_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = 60
    # Rounded rewards make ties; costs exactly 0 must count as safe.
    red = _outputs("r", rng.integers(0, 4, n), rng.choice([-1.0, 0.0, 0.5], n), 20, 3)
    blue = _outputs("b", rng.integers(0, 4, n), rng.choice([-1.0, 0.0, 0.5], n), 20, 3)
    pairs = arena.pair_table(red, blue)
    rows = {r["cell"]: r for r in arena.win_rates(pairs)}
    for rs, bs in arena.SAFETY_CELLS:
        idx = [i for i in range(n) if (red.costs[i] <= 0) == (rs == "safe") and (blue.costs[i] <= 0) == (bs == "safe")]
        wins = sum(blue.rewards[i] > red.rewards[i] for i in idx)
        ties = sum(blue.rewards[i] == red.rewards[i] for i in idx)
        row = rows[f"{rs}/{bs}"]
        assert (row["n"], row["wins"], row["ties"], row["losses"]) == (len(idx), wins, ties, len(idx) - wins - ties)
        assert row["win_rate"] == pytest.approx(wins / len(idx)) if idx else np.isnan(row["win_rate"])
    assert rows["overall"]["n"] == n and sum(rows[c]["n"] for c in arena.CELL_NAMES) == n
    split = arena.safety_split(pairs)
    higher = [i for i in range(n) if blue.rewards[i] > red.rewards[i]]
    assert split["blue_higher_n"] == len(higher)
    assert split["blue_higher_blue_safe"] == pytest.approx(np.mean([blue.costs[i] <= 0 for i in higher]))
    assert split["blue_higher_red_safe"] == pytest.approx(np.mean([red.costs[i] <= 0 for i in higher]))
    assert split["overall_blue_safe"] == pytest.approx(np.mean(blue.costs <= 0))


def test_dominance_difference_is_difference_of_spectral_risks_synthetic():
    rng = np.random.default_rng(3)
    red, blue = rng.normal(0.3, 1.0, 37), rng.normal(0.0, 0.6, 37)
    for row in arena.dominance(red, blue, ["uniform", "cvar:0.8", "wang", "var"]):
        assert row["gain"] >= 0 and row["violation"] >= 0
        assert row["dominance_difference"] == pytest.approx(row["rho_red"] - row["rho_blue"], abs=1e-12)
    uniform = arena.dominance(red, blue, ["uniform"])[0]
    assert uniform["dominance_difference"] == pytest.approx(red.mean() - blue.mean(), abs=1e-12)


def test_risk_profile_quantiles_and_safe_share():
    x = np.array([-2.0, -1.0, 0.0, 1.0, 3.0])
    p = arena.risk_profile(x, ["uniform", "cvar:0.6"], [0.2, 0.5, 1.0])
    assert p["safe"] == pytest.approx(0.6) and p["mean"] == pytest.approx(0.2)
    assert (p["q0.2"], p["q0.5"], p["q1"]) == (-2.0, 0.0, 3.0)  # inf{z: F(z) >= t}
    assert p["rho[cvar:0.6]"] == pytest.approx(2.0)  # mean of the worst 40%: (1 + 3) / 2


def test_unpaired_outputs_are_rejected():
    a = _outputs("a", [1, 2], [0, 0], 2, 1)
    b = _outputs("b", [1, 2, 3], [0, 0, 0], 3, 1)
    with pytest.raises(DataError, match="same prompts"):
        arena.pair_table(a, b)


def test_competitions_follow_the_red_list():
    cfg = EvalConfig(models=["sft=x", "rad=y", "ppo-lag=z"], red=["sft", "ppo-lag"], reward_model="r", cost_model="c")
    cfg.validate()
    assert cfg.competitions() == [("sft", "rad"), ("sft", "ppo-lag"), ("ppo-lag", "rad")]
    assert EvalConfig(models=["a=x", "b=y"], reward_model="r", cost_model="c").competitions() == [("a", "b")]
    for bad in (dict(models=["a=x"]), dict(models=["a=x", "a=y"]), dict(models=["a=x", "b=y"], red=["c"]),
                dict(models=["a=x", "b/c=y"]), dict(models=["a=x", "b=y"], weightings=["nope"])):
        with pytest.raises(ConfigError):
            EvalConfig(reward_model="r", cost_model="c", **bad).validate()
