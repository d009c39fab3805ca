"""Atomic checkpoint directories, trainer state with RNG, metric sinks, phase timers."""

import json
import random

import pytest
import torch

from rad.runtime.checkpoint import (atomic_dir, checkpoint_dir, latest_checkpoint, list_checkpoints,
                                    prune_checkpoints, read_trainer_state, write_trainer_state)
from rad.runtime.metrics import WANDB_ID_FILE, MetricsLogger, PhaseTimer, read_metrics, wandb_run_id
from rad.settings import LoggingConfig


def test_atomic_dir_publishes_only_on_success(tmp_path):
    target = tmp_path / "ck"
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "half").write_text("x")
            raise RuntimeError("killed while saving")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []  # no temp leftovers
    with atomic_dir(target) as tmp:
        (tmp / "a").write_text("1")
    with atomic_dir(target) as tmp:  # replacing an existing checkpoint
        (tmp / "b").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["b"]
    assert [p.name for p in tmp_path.iterdir()] == ["ck"]


def test_trainer_state_restores_rng(tmp_path):
    random.seed(3)
    torch.manual_seed(3)
    write_trainer_state(tmp_path, {"step": 5})
    expected = (random.random(), torch.rand(3))
    random.seed(99)
    torch.manual_seed(99)
    assert read_trainer_state(tmp_path) == {"step": 5}
    got = (random.random(), torch.rand(3))
    assert got[0] == expected[0] and torch.equal(got[1], expected[1])


def test_latest_ignores_incomplete_and_prunes(tmp_path):
    for step in (10, 2, 30):
        d = checkpoint_dir(tmp_path, step)
        d.mkdir(parents=True)
        (d / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoints" / "step-40").mkdir()  # no state file: incomplete
    (tmp_path / "checkpoints" / ".step-50.tmp-x").mkdir()
    assert latest_checkpoint(tmp_path).name == "step-30"
    prune_checkpoints(tmp_path, keep=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [10, 30]


def test_metrics_logger_jsonl_and_tensorboard(tmp_path):
    with MetricsLogger(tmp_path, LoggingConfig()) as logger:
        logger.log({"train/loss": torch.tensor(1.5), "objective/kl": 0.25, "note": "skip me"}, step=1)
        logger.log({"train/loss": float("nan")}, step=2)
    rows = read_metrics(tmp_path)
    assert rows[0]["step"] == 1 and rows[0]["train/loss"] == 1.5 and rows[0]["objective/kl"] == 0.25
    assert "note" not in rows[0]
    assert rows[1]["train/loss"] == "nan"  # JSON has no NaN literal
    events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])


def test_phase_timer_accumulates():
    timer = PhaseTimer()
    for _ in range(2):
        with timer.phase("generation"):
            sum(range(10000))
    m = timer.metrics()
    assert set(m) == {"timing/generation"} and m["timing/generation"] > 0
    assert timer.metrics() == {}


def test_a_resumed_logger_drops_the_rows_logged_after_its_checkpoint(tmp_path):
    cfg = LoggingConfig(tensorboard=False)
    with MetricsLogger(tmp_path, cfg) as logger:
        for step in (1, 2):
            logger.log({"loss": float(step)}, step=step)
        at_checkpoint = logger.position()  # what a checkpoint at step 2 records
        logger.log({"loss": 3.0}, step=3)  # then the run is killed
    with MetricsLogger(tmp_path, cfg, resume=(2, at_checkpoint)) as logger:
        logger.log({"loss": 3.5}, step=3)
    assert [(r["step"], r["loss"]) for r in read_metrics(tmp_path)] == [(1, 1.0), (2, 2.0), (3, 3.5)]
    with MetricsLogger(tmp_path, cfg, resume=(0, 0)):  # resumed without a checkpoint: from the start
        pass
    assert read_metrics(tmp_path) == []


def test_the_wandb_run_id_is_kept_in_the_run_directory(tmp_path):
    """A resumed run finds the W&B id its first start recorded (wandb.init(id=..., resume="allow") then continues
    that W&B run); another run directory gets another id."""
    run_id = wandb_run_id(tmp_path / "run")
    assert (tmp_path / "run" / WANDB_ID_FILE).read_text().strip() == run_id
    assert len(run_id) == 8 and set(run_id) <= set("0123456789abcdef")  # W&B ids: lowercase letters and digits
    assert wandb_run_id(tmp_path / "run") == run_id
    assert wandb_run_id(tmp_path / "other") != run_id


def test_a_resumed_run_logs_into_its_wandb_run(tmp_path, monkeypatch):
    """With wandb installed (the tracking extra), offline: the second logger of a run directory resumes the first's
    W&B run."""
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = LoggingConfig(tensorboard=False, wandb=True)
    ids = []
    for step in (1, 2):
        with MetricsLogger(tmp_path, cfg) as logger:
            ids.append(logger._wandb.id)
            logger.log({"x": step}, step)
    assert ids[0] == ids[1] == (tmp_path / WANDB_ID_FILE).read_text().strip()
