"""Smoke run of the cheap benchmarks: the dominance micro-benchmark and the Markdown table built from JSON;
the one-GPU check on CPU at a tiny size, and the wheel split / reassembly that brings its packages to a GPU machine.

The Ray / TRL benchmarks are not run here (minutes each); their ``--quick`` mode is
``python -m bench all --quick``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench import dominance, gpu_check, length_grouping, memory, report
from bench.__main__ import FULL, QUICK, RL_BENCHMARKS, benchmark_args
from bench.common import REPORT_KEYS, pythonpath_with_root

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
                    "--replicates", "3", "--rl-step-from", str(out_dir / "absent.json"),
                    "--out", str(out_dir / "dominance.json")])
    return out_dir


def test_dominance_quick_json(quick_dominance):
    rep = json.loads((quick_dominance / "dominance.json").read_text())
    _check_report(rep, "dominance")
    methods = ["exact", "newton", "semi_dual", "scaling", "log"]
    sweep = rep["results"]["sweep"]
    assert [(r["n_particles"], r["method"]) for r in sweep] == [(n, m) for n in (8, 32) for m in methods]
    assert all(r["median_s"] > 0 and r["batch"] == 4 * r["n_particles"] for r in sweep)
    rl = {r["method"]: r for r in rep["results"]["rl_shape"]}
    assert list(rl) == methods and all(r["batch"] == 8 and r["repeats"] == 3 for r in rl.values())
    assert rep["results"]["rl_costs"].startswith("synthetic")
    # every entropic method solved the same problems: the same gain (exact's is the sorted one)
    assert rl["semi_dual"]["gain"] == pytest.approx(rl["log"]["gain"], abs=1e-6)
    assert rl["newton"]["gain"] == pytest.approx(rl["semi_dual"]["gain"], abs=1e-6)
    assert rl["newton"]["methods_used"] == ["newton"] and rl["semi_dual"]["methods_used"] == ["semi_dual"]
    assert rep["results"]["newton_vs_semi_dual_max_gap"]["particle_grad"] < 1e-6
    assert rl["scaling"]["gain"] == pytest.approx(rl["log"]["gain"], abs=1e-9)
    assert rl["exact"]["n_iter_max"] == 0 and rl["log"]["n_iter_max"] >= 1
    assert {"sinkhorn_over_exact_rl_shape", "semi_dual_over_newton_rl_shape", "log_over_semi_dual_rl_shape",
            "log_over_scaling_n32"} <= set(rep["ratios"])
    assert not any(k.endswith("_share_of_rl_step") for k in rep["ratios"])  # no RAD step result to compare with


def test_dominance_share_uses_a_matching_rad_step(tmp_path):
    step = {"date": "d", "results": {"rad": {"samples_per_step": 8, "step_seconds_mean": 2.0,
                                             "phase_seconds_mean": {"dominance": 0.01}}}}
    (tmp_path / "rloo_vs_trl.json").write_text(json.dumps(step))
    args = ["--sizes", "8", "--repeats", "1", "--max-iter", "50", "--rl-batch", "8", "--replicates", "2",
            "--rl-step-from", str(tmp_path / "rloo_vs_trl.json"), "--out", str(tmp_path / "d.json")]
    rep = dominance.main(args)
    rl = {r["method"]: r["mean_s"] for r in rep["results"]["rl_shape"]}
    for method in ("exact", "newton", "semi_dual", "log"):
        assert rep["ratios"][f"{method}_share_of_rl_step"]["value"] == pytest.approx(rl[method] / 2.0)
    assert rep["ratios"]["in_loop_share_of_rl_step"]["value"] == pytest.approx(0.005)
    step["results"]["rad"]["samples_per_step"] = 16  # another batch: no share
    (tmp_path / "rloo_vs_trl.json").write_text(json.dumps(step))
    rep = dominance.main(args)
    assert "exact_share_of_rl_step" not in rep["ratios"]


def test_dominance_share_of_a_rad_runs_own_steps(tmp_path):
    # a RAD run's metrics.jsonl: 8 samples per step (samples/s x step s), eval rows without timings are skipped
    rows = [{"step": i, "timing/step": 2.0 + i, "timing/dominance": 0.01 * (i + 1),
             "throughput/samples_per_s": 8 / (2.0 + i), "rad/sinkhorn_iters": 10 * (i + 1)} for i in range(3)]
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("\n".join(json.dumps(r) for r in [*rows, {"eval/reward": 1.0}]))

    def run(batch):
        return dominance.main(["--sizes", "8", "--repeats", "1", "--max-iter", "50", "--rl-batch", str(batch),
                               "--replicates", "2", "--rl-step-from", str(metrics), "--out", str(tmp_path / "d.json")])

    rep = run(8)
    newton = next(r["mean_s"] for r in rep["results"]["rl_shape"] if r["method"] == "newton")
    assert rep["ratios"]["newton_share_of_rl_step"]["value"] == pytest.approx(newton / 3.0)
    assert rep["ratios"]["in_loop_share_of_rl_step"]["value"] == pytest.approx(0.02 / 3.0)
    assert rep["results"]["rad_step"]["in_loop_sinkhorn_iters"] == [20, 30]
    assert "newton_share_of_rl_step" not in run(16)["ratios"]  # another batch: no share


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


def test_length_grouping_quick_json(tmp_path, single_rank_env):
    """Both learners take the same first step; grouping pads less, in as many micro batches none larger."""
    rep = length_grouping.main([*QUICK["length_grouping"], "--out", str(tmp_path / "length_grouping.json")])
    _check_report(json.loads((tmp_path / "length_grouping.json").read_text()), "length_grouping")
    off, on = rep["results"]["rows"]
    assert (off["config"], on["config"]) == length_grouping.CONFIGS
    assert on["first_loss"] == pytest.approx(off["first_loss"], rel=1e-5)
    assert on["micro_batches"] == off["micro_batches"] and on["largest_micro_batch"] <= off["largest_micro_batch"]
    assert on["padded_tokens"] < off["padded_tokens"] and rep["ratios"]["padded_tokens_tiny"]["value"] > 1
    assert set(rep["ratios"]) == {"padded_tokens_tiny", "step_time_tiny"}
    assert "| tiny | 8 / 2 | " in length_grouping.markdown(rep)


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
    for key, _r in rep["ratios"].items():
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
    for name in report.REPORTED:
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


# -- the one-GPU check (bench/gpu_check.py), on CPU ---------------------------------------------


@pytest.mark.slow  # starts a Ray cluster and two trainers: about a minute on 2 cores
def test_gpu_check_runs_on_cpu_at_a_tiny_size(tmp_path):
    # RAD's two runs (PPO-Lag's are the same check on its trainer, whose path tests/safe_rlhf_baseline covers):
    # an engine to sync and compare, and the learner generating itself
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "PYTHONPATH": pythonpath_with_root(dict(os.environ))}
    done = subprocess.run([sys.executable, "-m", "bench.gpu_check", "--device", "cpu", "--size", "tiny", "--steps",
                           "1", "--budget-s", "0", "--runs", "rad_separate", "rad_hybrid", "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    assert "gpu_check PASS" in done.stdout.splitlines()[-1]
    rep = json.loads(out.read_text())
    _check_report(rep, "gpu_check")
    runs = rep["results"]["runs"]
    assert set(runs) == {"rad_separate", "rad_hybrid"}
    assert rep["settings"]["models"]["policy_parameters"] > rep["settings"]["models"]["score_backbone_parameters"]
    for key, run in runs.items():
        assert run["steps"] == 1 and len(run["sync_checks"]) == 1, key
        assert {"timing/generation", "timing/learner", "timing/weight_sync", "timing/step",
                "throughput/tokens_per_s"} <= set(run["steps_metrics"][0]), key
        check = run["sync_checks"][0]
        assert check["tensors_changed"] > 0, key  # the step moved the policy, and then:
        if key.endswith("separate"):  # every learner tensor reached the engine unchanged
            assert run["transport"] == "broadcast" and [e["equal"] for e in check["engines"]] == [True], key
            assert check["engines"][0]["tensors_compared"] == check["engines"][0]["learner_tensors"] > 0
        else:  # hybrid: the learner generates with its own module; no engine copy to compare
            assert run["hybrid"] and check["engines"] == [], key
        for role, stats in run["memory"].items():
            assert all(m["device"] == "cpu" and m["peak_rss_mb"] > 0 for m in stats), (key, role)
    roles = {"learner", "reference", "scorer"}
    assert set(runs["rad_separate"]["memory"]) == roles | {"rollout"}
    assert set(runs["rad_hybrid"]["memory"]) == roles  # no engine actors
    assert rep["results"]["passed"] and rep["results"]["problems"] == []
    assert "| rad_separate | 1 |" in gpu_check.markdown(rep)


def _cfg(algo: str, overrides: list[str]):
    from rad.algos.rad import RADConfig
    from rad.config import load_config
    from safe_rlhf_baseline.config import PPOLagConfig

    return load_config(RADConfig if algo == "rad" else PPOLagConfig, None, overrides + ["output_dir=unused"])


@pytest.mark.parametrize("algo", ["rad", "ppo_lag"])
def test_gpu_check_cuda_config_differs_from_cpu_only_in_gpu_shares(algo):
    import argparse

    models = {"policy": "p", "reward": "r", "cost": "c"}
    gpu, cpu = (gpu_check.run_overrides(argparse.Namespace(device=d, size="0.5b", weight_sync=None), models,
                                        algo, hybrid=False) for d in ("cuda", "cpu"))
    differ = {a.split("=")[0] for a in set(gpu) ^ set(cpu)}
    assert differ == {"resources.gpus_per_learner", "resources.gpus_per_reference", "resources.gpus_per_scorer",
                      "rollout.num_gpus_per_engine"}
    cfg = _cfg(algo, gpu)  # the GPU run's config is valid
    res, ro = cfg.resources, cfg.rollout
    assert ro.weight_sync == "auto" and ro.engine == "hf"  # auto: ipc on the shared GPU (resolve_transport)
    trained = 1 if algo == "rad" else 3  # the policy, or PPO's actor and two critics
    total = trained * res.gpus_per_learner + res.gpus_per_reference + res.gpus_per_scorer + ro.num_gpus_per_engine
    assert min(res.gpus_per_learner, res.gpus_per_reference, res.gpus_per_scorer, ro.num_gpus_per_engine) > 0
    assert total <= 1.0  # every role fits on the one GPU
    assert _cfg(algo, cpu).resources.gpus_per_learner == 0


def test_gpu_check_verdict_names_what_failed():
    good_engine = {"tensors_compared": 3, "learner_tensors": 3, "differ": [], "equal": True}
    run = {"steps": 2, "sync_checks": [{"engines": [good_engine], "tensors_changed": 3}] * 2,
           "memory": {"scorer": [{"device": "cuda:0"}], "rollout": [{"device": "cuda:0"}]}}
    assert gpu_check.run_problems(run, "cuda", 2) == []
    bad = {**good_engine, "differ": ["lm_head.weight"], "equal": False}
    broken = {**run, "steps": 1, "sync_checks": [{"engines": [good_engine, bad], "tensors_changed": 0}],
              "memory": {"scorer": [{"device": "cpu"}], "rollout": [{"device": "cuda:0"}]}}
    problems = gpu_check.run_problems(broken, "cuda", 2)
    assert len(problems) == 4
    assert problems[0] == "1 of 2 steps" and "lm_head.weight" in problems[1]
    assert "did not change" in problems[2] and problems[3] == "roles not on cuda: scorer on cpu"
    assert gpu_check.run_problems({"error": "RadError: x"}, "cuda", 2) == ["failed: RadError: x"]


# -- bench/gpu_wheels.sh: split, carry, reassemble, verify (on dummy files; nothing is downloaded) ----


def _wheels(tmp_path) -> dict[str, bytes]:
    import random

    rng = random.Random(0)
    sizes = {"big-1.0-cp312-cp312-manylinux_2_17_x86_64.whl": 2_500_000, "a-1-py3-none-any.whl": 700_000,
             "b-1-py3-none-any.whl": 300_000, "c-1-py3-none-any.whl": 900_000}
    files = {name: rng.randbytes(n) for name, n in sizes.items()}
    (tmp_path / "src" / "wheels").mkdir(parents=True)
    for name, data in files.items():
        (tmp_path / "src" / "wheels" / name).write_bytes(data)
    subprocess.run("sha256sum -- *.whl > SHA256SUMS", shell=True, check=True, cwd=tmp_path / "src" / "wheels")
    return files


def _wheels_sh(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ROOT / "bench" / "gpu_wheels.sh"), *args], capture_output=True, text=True,
                          env={**os.environ, "PART_SIZE": "1m"}, timeout=120)


def test_gpu_wheels_split_parts_reassemble_to_the_same_bytes(tmp_path):
    files = _wheels(tmp_path)
    done = _wheels_sh("split", str(tmp_path / "src"))
    assert done.returncode == 0, done.stderr
    parts = sorted((tmp_path / "src" / "parts").iterdir())
    assert len(parts) >= 4  # 4.4 MB in parts of at most 1 MiB
    for part in parts:  # each part fits the transfer size (plus its small checksum list)
        payload = sum(f.stat().st_size for f in part.iterdir() if f.name != "SHA256SUMS")
        assert 0 < payload <= 2 ** 20 and (part / "SHA256SUMS").is_file()
    pieces = sorted(f.name for p in parts for f in p.iterdir() if ".whl.part-" in f.name)
    assert pieces == [f"big-1.0-cp312-cp312-manylinux_2_17_x86_64.whl.part-a{c}" for c in "abc"]
    # the parts arrive one by one on the other machine, in any order, then reassemble there
    there = tmp_path / "there"
    for part in reversed(parts):
        shutil.copytree(part, there / "parts" / part.name)
    done = _wheels_sh("assemble", str(there))
    assert done.returncode == 0, done.stderr
    assert {f.name: f.read_bytes() for f in (there / "wheels").glob("*.whl")} == files


def test_gpu_wheels_assemble_refuses_a_missing_or_damaged_part(tmp_path):
    _wheels(tmp_path)
    assert _wheels_sh("split", str(tmp_path / "src")).returncode == 0
    parts = tmp_path / "src" / "parts"
    piece = next(parts.glob("*/big-*.part-ab"))
    missing = tmp_path / "missing"
    shutil.copytree(parts, missing / "parts")
    (missing / "parts" / piece.parent.name / piece.name).unlink()
    done = _wheels_sh("assemble", str(missing))
    assert done.returncode != 0 and "did not arrive whole" in done.stderr
    damaged = tmp_path / "damaged"
    shutil.copytree(parts, damaged / "parts")
    target = damaged / "parts" / piece.parent.name / piece.name
    data = bytearray(target.read_bytes())
    data[1000] ^= 1
    target.write_bytes(bytes(data))
    done = _wheels_sh("assemble", str(damaged))
    assert done.returncode != 0 and "big-1.0" in done.stdout + done.stderr
    assert _wheels_sh("assemble", str(tmp_path / "nothing")).returncode != 0


# -- growth curves (bench/growth.py) ---------------------------------------------------------------


@pytest.mark.slow  # a Ray cluster, a TRL probe and four interleaved RAD / TRL runs of the tiny model: minutes
def test_python_m_bench_quick_growth_writes_cells_ratios_and_plot(tmp_path):
    # a fresh shell's environment: an earlier in-process learner may have left torch.distributed's rendezvous
    # variables behind, and TRL (accelerate) would then try to join a process group
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    done = subprocess.run([sys.executable, "-m", "bench", "growth", "--quick", "--out-dir", str(tmp_path)],
                          cwd=ROOT, env={**env, "PYTHONPATH": pythonpath_with_root(dict(os.environ))},
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    rep = json.loads((tmp_path / "growth.json").read_text())
    _check_report(rep, "growth")
    (size,) = rep["results"]["sizes"]
    assert size["size"] == "tiny" and size["parameters"] > 0
    # the thread probe ran TRL alone, its steps alternating 1 and 2 threads; the faster setting ran every cell
    probe = size["thread_probe"]
    assert [r["torch_threads"] for r in probe["rows"]] == [1, 2, 1, 2] and probe["response_length"] == 16
    speed = {p["trl_threads"]: p["samples_per_s"] for p in probe["by_threads"]}
    kept = size["trl_threads"]
    assert probe["kept"] == kept and speed[kept] == max(speed.values())
    cells = {(c["response_length"], c["options"]): c for c in size["cells"]}
    assert set(cells) == {(8, "off"), (8, "on"), (16, "off"), (16, "on")}
    for (length, option), c in cells.items():
        rad, trl = c["rad"], c["trl"]
        assert c["trl_threads"] == trl["torch_threads"] == kept
        assert rad["tokens_per_step"] == trl["tokens_per_step"] == 2 * 2 * length  # same work on both
        assert rad["samples_per_s"] > 0 and trl["tokens_per_s"] > 0
        assert sum(trl["phase_shares"].values()) == pytest.approx(1.0, abs=0.05)
        assert trl["memory"]["peak_pss_total_bytes"] > 0
        pss = rad["memory"]["peak_pss_bytes"]
        assert set(pss) == ({"policy_learner", "reference", "scorer"} | ({"rollout"} if option == "off" else set()))
        assert all(v > 0 for v in pss.values()) and all(v > 0 for v in rad["memory"]["peak_rss_bytes"].values())
        key = f"rad_over_trl_samples_per_s_tiny_r{length}" + ("_options_on" if option == "on" else "")
        assert rep["ratios"][key]["value"] == c["rad_over_trl_samples_per_s"]
    assert cells[(8, "on")]["rad_overrides"] == rep["settings"]["memory_options_on"]["rad"]
    assert cells[(8, "on")]["trl_gradient_checkpointing"] and not cells[(8, "off")]["trl_gradient_checkpointing"]
    png = tmp_path / rep["results"]["plot"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    readme = (tmp_path / "README.md").read_text()
    assert "## growth:" in readme and "](growth.png)" in readme and "| tiny | " in readme


def test_growth_with_an_earlier_report_keeps_its_sizes_and_when_they_were_measured(tmp_path):
    from bench import growth

    committed = json.loads((ROOT / "bench/results/growth.json").read_text())
    # a report of one run, as bench.growth writes it without --with: tiny and small, no per-size record
    sizes = [{k: v for k, v in s.items() if k != "measured"} for s in committed["results"]["sizes"]
             if s["size"] in ("tiny", "small")]
    committed = {**committed, "results": {**committed["results"], "sizes": sizes}}
    path = tmp_path / "earlier.json"
    path.write_text(json.dumps(committed))
    # the sizes this run measures again are dropped from the earlier report; the others carry its date and command
    (kept,) = growth.earlier_sizes(path, ["tiny", "medium"])
    assert kept["size"] == "small" and kept["measured"]["date"] == committed["date"]
    assert kept["measured"]["command"] == committed["command"] and kept["cells"]
    # a merged report's table names both runs
    (tiny,) = growth.earlier_sizes(path, ["small"])
    tiny["measured"] = {**tiny["measured"], "date": "2030-01-01T00:00:00+00:00", "command": "python -m bench.growth X"}
    merged = {**committed, "results": {**committed["results"], "sizes": [tiny, kept]}}
    text = growth.markdown(merged)
    assert "Sizes measured in different runs" in text and "tiny on 2030-01-01" in text
    assert committed["date"][:16] in text
    assert "measured in different runs" not in growth.markdown(committed)
    path.write_text('{"results": {}}')
    with pytest.raises(SystemExit, match=r"--with .*earlier.json: expected a growth JSON"):
        growth.earlier_sizes(path, ["tiny"])
