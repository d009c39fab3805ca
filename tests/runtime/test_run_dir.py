"""Run directories: one run at a time, the record of what ran, reruns that may only continue it; keyed caches."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest
import torch
import yaml

from rad.algos.online import reference_sample_inputs
from rad.algos.rad import RADConfig, run_rad
from rad.algos.sft import SFTConfig
from rad.config import load_config
from rad.errors import ConfigError
from rad.runtime.provenance import record_inputs, stale_reason
from rad.runtime.run_dir import open_run, run_lock

_HOLD = """
import pathlib, sys, time
from rad.runtime.run_dir import run_lock
with run_lock(sys.argv[1]):
    pathlib.Path(sys.argv[2]).write_text("held")
    time.sleep(120)
"""


def test_a_second_run_names_the_holder_and_a_dead_holders_lock_is_taken_over(tmp_path, caplog):
    run, ready = tmp_path / "run", tmp_path / "ready"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(run), str(ready)], env=os.environ.copy())
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert holder.poll() is None and time.monotonic() < deadline, "the holding process did not start"
            time.sleep(0.05)
        with pytest.raises(ConfigError, match=rf"^output_dir: {run} is in use by another run \(pid {holder.pid} on "
                                              rf"{socket.gethostname()}, started 20.*: '.*-c .*'\)"):
            with run_lock(run):
                pass
    finally:
        holder.kill()  # kill -9: the holder cannot clean up
        holder.wait()
    with run_lock(run):
        pass
    assert f"taking over the lock left by a run that is gone (pid {holder.pid} on" in caplog.text
    caplog.clear()
    with run_lock(run):  # a clean exit leaves no holder behind
        pass
    assert "taking over" not in caplog.text


def _sft(run, *overrides, model):
    return load_config(SFTConfig, None, [f"output_dir={run}", f"model.name_or_path={model}", *overrides])


def test_a_rerun_continues_only_the_recorded_config(tmp_path, monkeypatch):
    run = tmp_path / "sft"
    base = tmp_path / "base"
    base.mkdir()
    with open_run(_sft(run, "learner.lr=0.003", model=base)) as finished:
        assert finished is None
    record = (run / "config.yaml").read_text()
    assert yaml.safe_load(record)["learner"]["lr"] == 0.003

    # Keys that change results are refused, by name; the record is never rewritten.
    with pytest.raises(ConfigError, match=r"^learner.lr, seed: .* holds a run made with different values "
                                          r"\(learner.lr: 0.003 -> 0.001, seed: 0 -> 1\)"):
        with open_run(_sft(run, "learner.lr=1e-3", "seed=1", model=base)):
            pass
    with pytest.raises(ConfigError, match=r"^resources.num_learners: "):
        with open_run(_sft(run, "learner.lr=0.003", "resources.num_learners=2", model=base)):
            pass
    with pytest.raises(ConfigError, match=r"^resume: false asks for a new run, but .* already holds one"):
        with open_run(_sft(run, "learner.lr=0.003", "resume=false", model=base)):
            pass
    assert (run / "config.yaml").read_text() == record

    # Logging, checkpoint cadence and placement may change, and so may the spelling of a path (output_dir and a
    # model directory, relative here); the invocation is logged beside the record.
    monkeypatch.chdir(tmp_path)
    with open_run(_sft("sft", "learner.lr=0.003", "logging.log_every=5", "schedule.save_every=3",
                       "resources.cpus_per_learner=2", model="base")) as finished:
        assert finished is None
    assert (run / "config.yaml").read_text() == record
    runs = [json.loads(line) for line in (run / "runs.jsonl").read_text().splitlines()]
    assert len(runs) == 2 and runs[0]["changed"] == {}
    assert runs[1]["changed"] == {"logging.log_every": [1, 5], "resources.cpus_per_learner": [1.0, 2.0],
                                  "schedule.save_every": [0, 3]}

    # A finished run returns its recorded summary instead of training again.
    (run / "model").mkdir()
    (run / "model" / "config.json").write_text("{}")
    (run / "summary.json").write_text(json.dumps({"steps": 7}))
    with open_run(_sft(run, "learner.lr=0.003", model=base)) as finished:
        assert finished == {"steps": 7}


def test_rl_into_a_run_of_another_cost_model_is_refused_before_any_actor_starts(tmp_path, score_dirs):
    # The reproduction: a finished run's directory without its checkpoints, models and summary.
    run = tmp_path / "rl"
    base = [f"output_dir={run}", f"reward_model={score_dirs['reward']}"]
    with open_run(load_config(RADConfig, None, [*base, f"cost_model={score_dirs['cost']}"])):
        pass
    with pytest.raises(ConfigError, match=r"^cost_model: .* holds a run made with different values \(cost_model: "):
        run_rad(load_config(RADConfig, None, [*base, f"cost_model={score_dirs['reward']}"]))


def test_reference_caches_are_keyed_on_their_models_and_settings(tmp_path, sft_model_dir, score_dirs):
    """Without the record (config.yaml deleted too), the cache's own inputs still tell a stale one."""
    def inputs(cost_model, *overrides):
        cfg = load_config(RADConfig, None, [f"reward_model={score_dirs['reward']}", f"cost_model={cost_model}",
                                            *overrides])
        return reference_sample_inputs(cfg, str(sft_model_dir), ["p1", "p2"], 4, 1_000_003)

    path = tmp_path / "reference_particles.pt"
    assert stale_reason(path, inputs(score_dirs["cost"])) == "is missing"
    torch.save({"costs": torch.zeros(2, 4)}, path)
    assert stale_reason(path, inputs(score_dirs["cost"])).startswith("records no inputs")
    record_inputs(path, inputs(score_dirs["cost"]))
    assert stale_reason(path, inputs(score_dirs["cost"])) is None
    assert stale_reason(path, inputs(score_dirs["reward"])).startswith(
        "was computed from different inputs (cost_model: ")
    assert "seed: 1000003 -> 1000004" in stale_reason(path, inputs(score_dirs["cost"], "seed=1"))
    assert "sampling: " in stale_reason(path, inputs(score_dirs["cost"], "rollout.sampling.max_new_tokens=7"))
    # Retraining the cost model in place (new files' mtimes) makes the cache stale too.
    weights = next(p for p in os.scandir(score_dirs["cost"]) if p.name.endswith(".safetensors"))
    st = os.stat(weights.path)
    os.utime(weights.path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    try:
        assert "cost_model: " in stale_reason(path, inputs(score_dirs["cost"]))
    finally:
        os.utime(weights.path, ns=(st.st_atime_ns, st.st_mtime_ns))
