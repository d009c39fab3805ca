"""Smoke run of the cheap benchmarks: the dominance micro-benchmark and the Markdown table built from JSON.

The Ray / TRL benchmarks are not run here (minutes each); their ``--quick`` mode is
``python -m bench all --quick``.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench import dominance, memory, report
from bench.__main__ import FULL, QUICK, RL_BENCHMARKS, benchmark_args
from bench.common import REPORT_KEYS

ROOT = Path(__file__).resolve().parents[2]
META_KEYS = {"benchmark", "command", "date", "cpu_model", "cpu_cores", "load_average_before", "load_average_after",
             "versions", "settings", "results", "ratios"}
assert META_KEYS == set(REPORT_KEYS)


def _check_report(rep: dict, name: str) -> None:
    assert META_KEYS <= set(rep), META_KEYS - set(rep)
    assert rep["benchmark"] == name and rep["command"].startswith(f"python -m bench.{name}")
    assert rep["cpu_cores"] >= 1 and rep["cpu_model"]
    assert len(rep["load_average_before"]) == 3 and len(rep["load_average_after"]) == 3
    assert {"torch", "transformers", "deepspeed", "ray", "trl", "vllm"} <= set(rep["versions"])
    assert rep["versions"]["torch"]
    assert rep["ratios"]
    for key, r in rep["ratios"].items():
        assert isinstance(r["value"], float) and math.isfinite(r["value"]) and r["value"] > 0, (key, r)
        assert r["means"], key


@pytest.fixture(scope="module")
def quick_dominance(tmp_path_factory) -> Path:
    out_dir = tmp_path_factory.mktemp("bench")
    dominance.main(["--sizes", "8", "32", "--repeats", "1", "--max-iter", "50", "--rl-batch", "8",
                    "--replicates", "3", "--rl-step-from", str(out_dir / "absent.json"), "--out", str(out_dir / "dominance.json")])
    return out_dir


def test_dominance_quick_json(quick_dominance):
    rep = json.loads((quick_dominance / "dominance.json").read_text())
    _check_report(rep, "dominance")
    methods = ["exact", "semi_dual", "scaling", "log"]
    sweep = rep["results"]["sweep"]
    assert [(r["n_particles"], r["method"]) for r in sweep] == [(n, m) for n in (8, 32) for m in methods]
    assert all(r["median_s"] > 0 and r["batch"] == 4 * r["n_particles"] for r in sweep)
    rl = {r["method"]: r for r in rep["results"]["rl_shape"]}
    assert list(rl) == methods and all(r["batch"] == 8 and r["repeats"] == 3 for r in rl.values())
    assert rep["results"]["rl_costs"].startswith("synthetic")
    # every entropic method solved the same problems: the same gain (exact's is the sorted one)
    assert rl["semi_dual"]["gain"] == pytest.approx(rl["log"]["gain"], abs=1e-6)
    assert rl["scaling"]["gain"] == pytest.approx(rl["log"]["gain"], abs=1e-9)
    assert rl["exact"]["n_iter_max"] == 0 and rl["log"]["n_iter_max"] >= 1
    assert {"sinkhorn_over_exact_rl_shape", "log_over_semi_dual_rl_shape", "log_over_scaling_n32"} <= set(rep["ratios"])
    assert not any(k.endswith("_share_of_rl_step") for k in rep["ratios"])  # no RAD step result to compare with


def test_dominance_share_uses_a_matching_rad_step(tmp_path):
    step = {"date": "d", "results": {"rad": {"samples_per_step": 8, "step_seconds_mean": 2.0,
                                             "phase_seconds_mean": {"dominance": 0.01}}}}
    (tmp_path / "rloo_vs_trl.json").write_text(json.dumps(step))
    args = ["--sizes", "8", "--repeats", "1", "--max-iter", "50", "--rl-batch", "8", "--replicates", "2",
            "--rl-step-from", str(tmp_path / "rloo_vs_trl.json"), "--out", str(tmp_path / "d.json")]
    rep = dominance.main(args)
    rl = {r["method"]: r["mean_s"] for r in rep["results"]["rl_shape"]}
    for method in ("exact", "semi_dual", "log"):
        assert rep["ratios"][f"{method}_share_of_rl_step"]["value"] == pytest.approx(rl[method] / 2.0)
    assert rep["ratios"]["in_loop_share_of_rl_step"]["value"] == pytest.approx(0.005)
    step["results"]["rad"]["samples_per_step"] = 16  # another batch: no share
    (tmp_path / "rloo_vs_trl.json").write_text(json.dumps(step))
    rep = dominance.main(args)
    assert "exact_share_of_rl_step" not in rep["ratios"]


def test_dominance_rl_shape_reads_a_runs_cached_reference_costs(tmp_path):
    import torch

    run = tmp_path / "run"
    (run / "rad").mkdir(parents=True)
    costs = torch.arange(48, dtype=torch.float64).view(12, 4) / 8  # [prompts, samples], as RAD caches them
    torch.save({"mode": "matched", "costs": costs, "prompts": [f"p{i}" for i in range(12)]},
               run / "rad" / "reference_particles.pt")
    rep = dominance.main(["--sizes", "8", "--repeats", "1", "--rl-batch", "8", "--replicates", "4",
                          "--run-dir", str(run), "--rl-step-from", str(tmp_path / "absent.json"),
                          "--out", str(tmp_path / "d.json")])
    assert rep["results"]["rl_costs"] == f"learned cost model: {run / 'rad' / 'reference_particles.pt'}"
    # the last pair is blocks 3 and 4 (costs 3-3.875 vs 4-4.875): every reference cost is higher
    rl = {r["method"]: r for r in rep["results"]["rl_shape"]}
    assert rl["exact"]["gain_exact"] == pytest.approx(1.0)
    with pytest.raises(SystemExit, match="no rad/reference_particles.pt"):
        dominance.main(["--sizes", "8", "--run-dir", str(tmp_path), "--out", str(tmp_path / "e.json")])


def test_memory_quick_json(tmp_path):
    """Every option measured on the same pass (same log-probs) and, on a batch that packs, each saves memory."""
    rep = memory.main([*QUICK["memory"], "--out", str(tmp_path / "memory.json")])
    _check_report(json.loads((tmp_path / "memory.json").read_text()), "memory")
    rows = rep["results"]["rows"]
    assert [r["config"] for r in rows] == list(memory.CONFIGS)
    assert all(r["peak_mib"] > 0 for r in rows)
    assert [r["logprob_sum"] for r in rows] == pytest.approx([rows[0]["logprob_sum"]] * len(rows), rel=1e-5)
    assert set(rep["ratios"]) == {f"{c}_tiny_r32" for c in memory.CONFIGS[1:]}
    assert all(r["value"] > 1 for r in rep["ratios"].values()), rep["ratios"]
    assert "| tiny | " in memory.markdown(rep)


def test_peak_bytes_sees_a_temporary_and_not_what_was_live_before():
    before = torch.zeros(1 << 20)  # 4 MiB live before: not counted

    def make_and_drop():
        tmp = torch.ones(1 << 18)  # 1 MiB, freed inside
        return float(tmp.sum() + before[0])

    assert (1 << 20) <= memory.peak_bytes(make_and_drop) < (1 << 20) + (1 << 16)


def test_markdown_table_from_json(quick_dominance):
    path = report.write(quick_dominance)
    text = path.read_text()
    rep = json.loads((quick_dominance / "dominance.json").read_text())
    ratios_at = text.index("## Ratios")
    section_at = text.index("## dominance:")
    assert ratios_at < section_at  # ratios up front
    for key, r in rep["ratios"].items():
        assert f"| dominance | `{key}` |" in text
    assert rep["command"] in text and "| RL step (cvar:0.9) |" in text
    assert "rloo_vs_trl" not in text.split("## Ratios")[1]  # only benchmarks that have a JSON


def test_markdown_table_leaves_out_old_format_results(quick_dominance, tmp_path):
    (tmp_path / "dominance.json").write_text((quick_dominance / "dominance.json").read_text())
    (tmp_path / "generation.json").write_text(json.dumps({"command": "old", "results": []}))
    renamed = json.loads((quick_dominance / "dominance.json").read_text())
    for row in renamed["results"]["rl_shape"]:  # a complete report whose rows use a field name since changed
        row["solver"] = row.pop("method")
    (tmp_path / "dominance.json").write_text(json.dumps(renamed))
    text = report.markdown(tmp_path)
    assert "older version of the benchmarks (re-run them): generation, dominance" in text
    assert "## generation" not in text and "## dominance:" not in text and "| dominance |" not in text


def test_committed_results_are_well_formed():
    for name in report.BENCHMARKS:
        path = ROOT / "bench" / "results" / f"{name}.json"
        if path.is_file():
            _check_report(json.loads(path.read_text()), name)


def test_entry_point_arguments_cover_every_benchmark(tmp_path):
    assert set(FULL) == set(QUICK) == set(report.BENCHMARKS)
    args = benchmark_args("scaling", True, tmp_path, "runs/tiny", ["--steps", "3"])
    assert args[-2:] == ["--steps", "3"] and args[args.index("--run-dir") + 1] == "runs/tiny"
    dom = benchmark_args("dominance", False, tmp_path, "runs/tiny", [])  # its RL-shape costs come from the run
    assert dom[dom.index("--run-dir") + 1] == "runs/tiny"
    assert "--run-dir" not in benchmark_args("generation", False, tmp_path, "runs/tiny", [])
    inside = benchmark_args("dominance", False, ROOT / "bench" / "results", None, [])
    assert inside[inside.index("--out") + 1] == "bench/results/dominance.json"  # relative: commands stay portable
    assert set(RL_BENCHMARKS) < set(report.BENCHMARKS)


@pytest.mark.slow  # a fresh interpreter importing torch, POT and rad: seconds on a quiet machine, a minute when loaded
def test_python_m_bench_quick_dominance(tmp_path):
    done = subprocess.run([sys.executable, "-m", "bench", "dominance", "--quick", "--out-dir", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    _check_report(json.loads((tmp_path / "dominance.json").read_text()), "dominance")
    assert (tmp_path / "README.md").read_text().startswith("# Benchmark results")
