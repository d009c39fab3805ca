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

from bench import dominance, report
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
                    "--rl-step-from", str(out_dir / "absent.json"), "--out", str(out_dir / "dominance.json")])
    return out_dir


def test_dominance_quick_json(quick_dominance):
    rep = json.loads((quick_dominance / "dominance.json").read_text())
    _check_report(rep, "dominance")
    sweep = rep["results"]["sweep"]
    assert [(r["n_particles"], r["solver"]) for r in sweep] == [(8, "exact"), (8, "sinkhorn"), (32, "exact"),
                                                                (32, "sinkhorn")]
    assert all(r["median_s"] > 0 and r["batch"] == 4 * r["n_particles"] for r in sweep)
    assert {r["solver"] for r in rep["results"]["rl_shape"]} == {"exact", "sinkhorn"}
    assert all(r["batch"] == 8 for r in rep["results"]["rl_shape"])
    assert "sinkhorn_over_exact_rl_shape" in rep["ratios"]
    assert not any(k.endswith("_share_of_rl_step") for k in rep["ratios"])  # no RAD step result to compare with


def test_dominance_share_uses_a_matching_rad_step(tmp_path):
    step = {"date": "d", "results": {"rad": {"samples_per_step": 8, "step_seconds_mean": 2.0}}}
    (tmp_path / "rloo_vs_trl.json").write_text(json.dumps(step))
    rep = dominance.main(["--sizes", "8", "--repeats", "1", "--max-iter", "50", "--rl-batch", "8",
                          "--rl-step-from", str(tmp_path / "rloo_vs_trl.json"), "--out", str(tmp_path / "d.json")])
    rl = {r["solver"]: r["median_s"] for r in rep["results"]["rl_shape"]}
    for solver in ("exact", "sinkhorn"):
        assert rep["ratios"][f"{solver}_share_of_rl_step"]["value"] == pytest.approx(rl[solver] / 2.0)
    step["results"]["rad"]["samples_per_step"] = 16  # another batch: no share
    (tmp_path / "rloo_vs_trl.json").write_text(json.dumps(step))
    rep = dominance.main(["--sizes", "8", "--repeats", "1", "--max-iter", "50", "--rl-batch", "8",
                          "--rl-step-from", str(tmp_path / "rloo_vs_trl.json"), "--out", str(tmp_path / "d.json")])
    assert "exact_share_of_rl_step" not in rep["ratios"]


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
    text = report.markdown(tmp_path)
    assert "older version of the benchmarks (re-run them): generation" in text
    assert "## generation" not in text and "## dominance:" in text


def test_committed_results_are_well_formed():
    for name in report.BENCHMARKS:
        path = ROOT / "bench" / "results" / f"{name}.json"
        if path.is_file():
            _check_report(json.loads(path.read_text()), name)


def test_entry_point_arguments_cover_every_benchmark(tmp_path):
    assert set(FULL) == set(QUICK) == set(report.BENCHMARKS)
    args = benchmark_args("scaling", True, tmp_path, "runs/tiny", ["--steps", "3"])
    assert args[-2:] == ["--steps", "3"] and args[args.index("--run-dir") + 1] == "runs/tiny"
    assert "--run-dir" not in benchmark_args("dominance", False, tmp_path, "runs/tiny", [])
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
