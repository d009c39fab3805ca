"""Metric sinks (JSONL, TensorBoard, optional W&B / MLflow) and phase timers.

Metric names follow what practitioners know from TRL / Safe RLHF
(``train/loss``, ``eval/loss``, ``objective/kl``, ``timing/step``...).
"""

from __future__ import annotations

import json
import math
import secrets
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

from rad.settings import LoggingConfig


def _scalar(value: Any) -> float | None:
    try:
        value = float(value.item() if hasattr(value, "item") else value)
    except (TypeError, ValueError):
        return None
    return value


class MetricsLogger:
    """Writes every metric dict to all configured sinks.

    The JSONL file (``metrics.jsonl``) is appended line by line and flushed, so a
    killed run keeps everything logged so far and a resumed run continues the file.
    A resumed run passes ``resume=(step, offset)`` of its checkpoint (``offset``:
    :meth:`position` when the checkpoint was written): the rows logged after that
    checkpoint, which the resumed run logs again, are cut from the JSONL file and
    TensorBoard drops its events after ``step``; ``resume=(0, 0)`` starts both afresh.
    """

    def __init__(self, run_dir: str | Path, cfg: LoggingConfig | None = None, config: Mapping | None = None,
                 resume: tuple[int, int | None] | None = None):
        self.cfg = cfg or LoggingConfig()
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._jsonl = None
        if self.cfg.jsonl:
            path = self.run_dir / "metrics.jsonl"
            if resume is not None and resume[1] is not None and path.exists():
                with open(path, "r+") as f:
                    f.truncate(min(resume[1], path.stat().st_size))
            self._jsonl = open(path, "a")
        self._tb = None
        if self.cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.run_dir / "tensorboard"),
                                     purge_step=None if resume is None else resume[0] + 1)
        self._wandb = None
        if self.cfg.wandb:
            try:
                import wandb
            except ImportError as exc:
                raise ImportError("logging.wandb=true needs wandb: pip install 'rad-align[tracking]'") from exc
            # A resumed run (same run directory) logs into the W&B run it started, not a new one.
            self._wandb = wandb.init(project=self.cfg.project, dir=str(self.run_dir), config=dict(config or {}),
                                     id=wandb_run_id(self.run_dir), resume="allow")
        self._mlflow = None
        if self.cfg.mlflow:
            try:
                import mlflow
            except ImportError as exc:
                raise ImportError("logging.mlflow=true needs mlflow: pip install 'rad-align[tracking]'") from exc
            mlflow.set_experiment(self.cfg.project)
            mlflow.start_run()
            if config:
                mlflow.log_params({k: str(v)[:250] for k, v in _flatten(config).items()})
            self._mlflow = mlflow

    def position(self) -> int | None:
        """Bytes of ``metrics.jsonl`` written so far (what a checkpoint records), None without the file."""
        return None if self._jsonl is None else self._jsonl.tell()

    def log(self, metrics: Mapping[str, Any], step: int) -> dict[str, float]:
        clean = {k: v for k, v in ((k, _scalar(v)) for k, v in metrics.items()) if v is not None}
        if self._jsonl is not None:
            row = {"step": step, "time": time.time(), **{k: (v if math.isfinite(v) else str(v))
                                                         for k, v in clean.items()}}
            self._jsonl.write(json.dumps(row) + "\n")
            self._jsonl.flush()
        if self._tb is not None:
            for k, v in clean.items():
                self._tb.add_scalar(k, v, step)
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log(clean, step=step)
        if self._mlflow is not None:
            self._mlflow.log_metrics({k.replace("@", "_"): v for k, v in clean.items()}, step=step)
        return clean

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None
        if self._mlflow is not None:
            self._mlflow.end_run()
            self._mlflow = None

    def __enter__(self) -> "MetricsLogger":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: The file in a run directory that holds the run's W&B run id.
WANDB_ID_FILE = "wandb_run_id"


def wandb_run_id(run_dir: str | Path) -> str:
    """The W&B run id of the run in ``run_dir``: the one recorded in ``run_dir/wandb_run_id``, else a new one,
    recorded there (8 lowercase hex digits, the shape of W&B's own ids)."""
    path = Path(run_dir) / WANDB_ID_FILE
    if path.is_file() and path.read_text().strip():
        return path.read_text().strip()
    run_id = secrets.token_hex(4)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(run_id + "\n")
    tmp.replace(path)
    return run_id


def _flatten(d: Mapping, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def read_metrics(run_dir: str | Path) -> list[dict]:
    """All rows of a run's ``metrics.jsonl`` (for reports and tests)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class PhaseTimer:
    """Accumulates wall time per phase; ``metrics()`` gives ``timing/<phase>`` seconds."""

    def __init__(self) -> None:
        self._totals: dict[str, float] = defaultdict(float)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self._totals[name] += time.perf_counter() - start

    def metrics(self, reset: bool = True) -> dict[str, float]:
        out = {f"timing/{k}": v for k, v in self._totals.items()}
        if reset:
            self._totals.clear()
        return out
