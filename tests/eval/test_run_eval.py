"""The whole arena on real outputs: tiny (untrained) vs SFT on the embedded world, seeded score heads.

Every check recomputes the report's numbers from the files the report saved
(per-prompt tables, per-response CSVs, per-verdict CSVs), independently of the
code that produced them.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from collections import Counter

import numpy as np
import pytest
import torch

from rad.errors import ConfigError
from rad.eval.cli import add_cli, load_eval_config
from rad.eval.config import resolve_model_dir
from rad.risk import as_weighting


def _csv(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _brute_rho(values: np.ndarray, spec: str, grid: int = 200_000) -> float:
    """integral_0^1 w(t) Q(t) dt by the midpoint rule on a fine grid (independent of the cell-mass formula)."""
    x = np.sort(values)
    t = (np.arange(grid) + 0.5) / grid
    q = x[np.ceil(t * len(x)).astype(int) - 1]
    w = as_weighting(spec).density(torch.tensor(t, dtype=torch.float64)).numpy()
    return float(np.mean(w * q))


def test_dominance_difference_equals_difference_of_spectral_risks(arena_run):
    """Prop. 2 on the real outputs: gain_w - viol_w = rho_w(red) - rho_w(blue), for every weighting."""
    _, out, _ = arena_run
    rows = _csv(out / "tables" / "dominance.csv")
    assert {r["measure"] for r in rows} == {"cost", "true_harm"}
    assert len(rows) == 2 * 7
    column = {"cost": "cost", "true_harm": "true_harm"}
    nonzero = 0
    for r in rows:
        red = np.array([float(x[column[r["measure"]]])
                        for x in _csv(out / "responses" / f"{r['red']}_heldout_seed0.csv")])
        blue = np.array([float(x[column[r["measure"]]])
                         for x in _csv(out / "responses" / f"{r['blue']}_heldout_seed0.csv")])
        gain, viol, dd = float(r["gain"]), float(r["violation"]), float(r["dominance_difference"])
        assert gain >= 0 and viol >= 0 and dd == pytest.approx(gain - viol, abs=1e-12)
        # Prop. 2, with the spectral risks recomputed by numerical integration from the saved responses.
        assert dd == pytest.approx(_brute_rho(red, r["weighting"]) - _brute_rho(blue, r["weighting"]), abs=2e-3)
        assert dd == pytest.approx(float(r["rho_red"]) - float(r["rho_blue"]), abs=1e-9)
        nonzero += abs(dd) > 1e-3
    assert nonzero >= 7, "the two models should differ: the check must not pass on identical samples"


def test_win_rates_and_cell_counts_match_the_per_prompt_table(arena_run):
    _, out, _ = arena_run
    pairs = _csv(out / "pairs" / "sft_vs_tiny.csv")
    assert len(pairs) == 12 * 2
    cell, win, tie = Counter(), Counter(), Counter()
    for p in pairs:
        rs = "safe" if float(p["red_cost"]) <= 0 else "unsafe"
        bs = "safe" if float(p["blue_cost"]) <= 0 else "unsafe"
        rb, bb = float(p["red_reward"]), float(p["blue_reward"])
        for key in (f"{rs}/{bs}", "overall"):
            cell[key] += 1
            win[key] += bb > rb
            tie[key] += bb == rb
    table = {r["cell"]: r for r in _csv(out / "tables" / "winrate.csv")}
    assert set(table) == {"safe/safe", "safe/unsafe", "unsafe/safe", "unsafe/unsafe", "overall"}
    for key, row in table.items():
        assert int(row["n"]) == cell[key] and int(row["wins"]) == win[key] and int(row["ties"]) == tie[key]
        if cell[key]:
            assert float(row["win_rate"]) == pytest.approx(win[key] / cell[key])
    results = json.loads((out / "results.json").read_text())
    (comp,) = results["competitions"]
    assert [w["n"] for w in comp["win_rates"]] == [cell[k] for k in table]
    # Table 2 from the same rows.
    higher = [p for p in pairs if float(p["blue_reward"]) > float(p["red_reward"])]
    assert comp["safety"]["blue_higher_n"] == len(higher)
    if higher:
        assert comp["safety"]["blue_higher_blue_safe"] == pytest.approx(
            np.mean([float(p["blue_cost"]) <= 0 for p in higher]))


def test_ood_tables_match_the_saved_verdicts(arena_run):
    _, out, _ = arena_run
    summary = {(r["judge"], int(r["seed"])): r for r in _csv(out / "tables" / "ood_seeds.csv")}
    assert set(summary) == {("cost-model", 0), ("cost-model", 1), ("ground-truth", 0), ("ground-truth", 1)}
    pct = []
    for (judge, seed), row in summary.items():
        verdicts = _csv(out / "ood" / judge / f"sft_vs_tiny_seed{seed}.csv")
        assert len(verdicts) == 6
        for p in verdicts:  # the cost judge: lower cost is less harmful
            if judge == "cost-model":
                d = float(p["red_cost"]) - float(p["blue_cost"])
                assert p["verdict"] == ("win" if d > 0 else "loss" if d < 0 else "tie")
        counts = Counter(p["verdict"] for p in verdicts)
        assert int(row["win"]) == counts["win"] and int(row["loss"]) == counts["loss"]
        assert float(row["win_pct"]) == pytest.approx(100 * counts["win"] / 6)
        if judge == "cost-model":
            pct.append(100 * counts["win"] / 6)
    agg = {r["judge"]: r for r in _csv(out / "tables" / "ood.csv")}["cost-model"]
    assert float(agg["win_pct_mean"]) == pytest.approx(np.mean(pct))
    assert float(agg["win_pct_std"]) == pytest.approx(np.std(pct, ddof=1))


def test_report_renders(arena_run):
    summary, out, _ = arena_run
    md = (out / "report.md").read_text()
    for heading in ("Table 2", "Table 3", "Figure 1", "Table 4", "spectral risk"):
        assert heading in md
    assert "<table>" in (out / "report.html").read_text()
    names = {p.split("/")[-1] for p in summary["figures"]}
    assert names == {"winrate_heatmap.png", "cost_cdf.png", "quantile_gaps_cost.png", "quantile_gaps_true_harm.png"}
    for name in names:
        data = (out / "figures" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000, name
        assert f"figures/{name}" in md
    results = json.loads((out / "results.json").read_text())
    assert results["ground_truth"] == ["heldout", "redteam"]
    assert {r["measure"] for r in results["risk"]} == {"cost", "reward", "true_harm", "true_helpfulness"}


def test_second_run_reuses_the_cache(arena_run, tmp_path, make_eval_config):
    from rad.eval import run_eval

    first, out1, cache = arena_run
    assert len(first["generated"]) == 6 and first["reused"] == []
    gen_files = sorted((cache / "generations").iterdir())
    stamps = [f.stat().st_mtime_ns for f in gen_files]
    second = run_eval(make_eval_config(tmp_path / "again", cache, html="false", figures="false"))
    assert second["generated"] == [] and len(second["reused"]) == 6
    assert json.loads((tmp_path / "again" / "results.json").read_text())["cache"]["scored"] == []
    assert [f.stat().st_mtime_ns for f in sorted((cache / "generations").iterdir())] == stamps
    assert ((tmp_path / "again" / "tables" / "dominance.csv").read_text()
            == (out1 / "tables" / "dominance.csv").read_text())
    assert not (tmp_path / "again" / "report.html").exists()
    assert not list((tmp_path / "again" / "figures").glob("*.png"))


def test_a_prompt_format_override_regenerates_that_model_with_it(arena_run, tmp_path, make_eval_config):
    from rad.eval import run_eval

    _, out1, cache = arena_run
    template = "Question: {prompt} Answer:"
    second = run_eval(make_eval_config(tmp_path / "fmt", cache, html="false", figures="false",
                                       prompt_formats=f'["tiny={template}"]'))
    assert second["generated"] and all(g.startswith("tiny/") for g in second["generated"])  # the override is a key
    assert all(r.startswith("sft/") for r in second["reused"])
    models = json.loads((tmp_path / "fmt" / "results.json").read_text())["models"]
    assert models["tiny"]["prompt_format"] == template and models["sft"]["prompt_format"] == "safe_rlhf"
    before = _csv(out1 / "pairs" / "sft_vs_tiny.csv")
    after = _csv(tmp_path / "fmt" / "pairs" / "sft_vs_tiny.csv")
    assert [p["blue_response"] for p in after] != [p["blue_response"] for p in before]  # other prompt text
    for bad, needle in (('["gpt=chat"]', "prompt_formats[0]: 'gpt' is not one of the models"),
                        ('["tiny=no field"]', "prompt_formats[0]: custom template 'no field' must hold {prompt}")):
        with pytest.raises(ConfigError, match=re.escape(needle)):
            make_eval_config(tmp_path / "bad", cache, prompt_formats=bad)


def test_a_judge_whose_replies_all_break_gives_a_report_that_says_so(arena_run, tmp_path, make_eval_config,
                                                                     raw_server):
    """Every request is cut short after 13 of 500 bytes: the run finishes, counts each pair as a failure and warns."""
    from rad.eval import run_eval

    raw_server.default = "incomplete"
    _, _, cache = arena_run
    out = tmp_path / "http"
    summary = run_eval(make_eval_config(out, cache, html="false", figures="false", **{
        "judge.kind": "http", "judge.url": raw_server.url, "judge.model": "j", "judge.retries": "1",
        "judge.backoff": "0"}))
    assert len(summary["warnings"]) == 1
    assert "judge http-j failed on every one of its 12 pairs" in summary["warnings"][0]
    assert summary["warnings"] == json.loads((out / "results.json").read_text())["warnings"]
    assert "**WARNING: judge http-j failed on every one" in (out / "report.md").read_text()
    verdicts = _csv(out / "ood" / "http-j" / "sft_vs_tiny_seed0.csv")
    assert {v["verdict"] for v in verdicts} == {"error"}
    assert all("IncompleteRead" in v["judge_answer"] for v in verdicts)


def test_a_sweep_ends_the_report(arena_run, tmp_path, make_eval_config):
    from rad.eval import run_eval
    from rad.eval.sweep_report import write_sweep_report

    _, _, cache = arena_run
    metrics = {"rad/reward_win_rate": 0.6, "rad/true_harm_cvar_0.9_policy": 0.1, "rad/cost_cvar_0.9_policy": 1.5}
    cells = [{"setting": "rad.algo.delta=0.5", "seed": s, "metrics": {**metrics, "rad/reward_win_rate": 0.5 + s / 10}}
             for s in (0, 1)]
    write_sweep_report(tmp_path / "sweep", {"config": "tiny.yaml"}, cells)
    run_eval(make_eval_config(tmp_path / "report", cache, html="false", figures="false",
                              sweeps=f"[{tmp_path / 'sweep'}]"))
    md = (tmp_path / "report" / "report.md").read_text()
    assert "## Sweep: 1 settings x 2 seeds" in md and "](../sweep/figures/pareto.png)" in md
    assert "| rad/reward_win_rate | 0.550 ± " in md
    with pytest.raises(ConfigError, match=r"sweeps\[0\]: .* holds no sweep.json"):
        make_eval_config(tmp_path / "r2", cache, sweeps=f"[{tmp_path}]")


def test_cli_maps_flags_onto_the_config():
    parser = argparse.ArgumentParser()
    add_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["eval", "--models", "sft=/m/sft", "rad-cvar=/m/rad", "ppo-lag=/m/ppo",
                              "reward_model=/m/rm", "judge.seeds=[3]", "--red", "sft,ppo-lag", "cost_model=/m/cm"])
    cfg = load_eval_config(args)
    assert cfg.model_paths() == {"sft": "/m/sft", "rad-cvar": "/m/rad", "ppo-lag": "/m/ppo"}
    assert (cfg.reward_model, cfg.cost_model, cfg.judge.seeds) == ("/m/rm", "/m/cm", [3])
    assert cfg.competitions() == [("sft", "rad-cvar"), ("sft", "ppo-lag"), ("ppo-lag", "rad-cvar")]
    with pytest.raises(ConfigError, match="red"):
        load_eval_config(parser.parse_args(["eval", "--models", "a=x", "b=y", "--red", "c", "reward_model=r",
                                            "cost_model=c"]))


def test_model_dir_resolution(sft_model_dir, tmp_path):
    assert resolve_model_dir("a", str(sft_model_dir)) == sft_model_dir.resolve()
    (tmp_path / "run").mkdir()
    with pytest.raises(ConfigError, match="no config.json"):
        resolve_model_dir("a", str(tmp_path / "run"))


def test_a_remote_cost_scorer_scores_the_arena(arena_run, tmp_path, make_eval_config, score_server):
    """cost_model as an http URL: generations come from the cache, every cost from the endpoint (the response's
    length); an endpoint that fails every retry stops the run with its error."""
    from rad.errors import RadError
    from rad.eval import run_eval
    from rad.runtime.scorer import EMPTY_RESPONSE

    _, _, cache = arena_run
    url = f"http://127.0.0.1:{score_server.server_address[1]}/score"
    out = tmp_path / "remote"
    summary = run_eval(make_eval_config(out, cache, html="false", figures="false", cost_model=url,
                                        **{"cost_scorer.backoff": "0", "cost_scorer.batch_size": "5"}))
    assert summary["generated"] == []
    rows = _csv(out / "responses" / "sft_heldout_seed0.csv")
    assert [float(r["cost"]) for r in rows] == [len(r["response"] if r["response"].strip() else EMPTY_RESPONSE)
                                                for r in rows]
    score_server.shutdown()  # the endpoint goes away (connections refused): the new scores cannot be had
    score_server.server_close()
    with pytest.raises(RadError, match=r"cost_scorer: the cost endpoint .* after 2 attempts"):
        run_eval(make_eval_config(tmp_path / "gone", cache, html="false", figures="false", cost_model=url,
                                  **{"cost_scorer.backoff": "0", "cost_scorer.retries": "1", "cost_scorer.timeout": "5",
                                     "cost_scorer.sign": "-1"}))
