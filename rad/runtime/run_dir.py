"""A run directory, as every command (``rad train``, ``sft``, ``rm``/``cm train``, ``rl``, ``baseline ppo-lag``,
``dpo``, ``rsa``) opens it: one run at a time, the record of what was run, and reruns that continue it.

* **Lock** (``.rad.lock``, :func:`run_lock`): an ``flock`` held for the whole command, taken first, after
  checking that the directory can be written (:func:`check_writable`). A second command
  into the same directory stops at once with an error naming the holder (pid, host, start time, command
  line). The kernel drops the lock when its process dies, so a lock left by a killed run is taken over
  (with a warning naming the dead holder).
* **Record** (``config.yaml``): the resolved config of the run that created the directory, written once
  and never rewritten. Every invocation also appends a line to ``runs.jsonl`` (time, pid, host, command
  line and the harmless keys it changed).
* **Rerun** (:func:`open_run`): with ``resume=true`` (the default of every command) rerunning the same
  command continues the run: a finished run (``summary.json`` and ``model/``) returns its recorded summary,
  an interrupted one continues from its newest checkpoint. The new config must ask for the same results:
  a key outside :data:`HARMLESS` that differs from the record is refused, naming the keys
  (:func:`check_config`). ``resume=false`` asks for a new run and refuses a directory that holds one
  (choose another ``output_dir`` or delete the old one: nothing is overwritten).
"""

from __future__ import annotations

import datetime
import fcntl
import json
import logging
import os
import socket
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import yaml

from rad.config import field, save_config, to_dict
from rad.errors import ConfigError

log = logging.getLogger("rad.runtime")

LOCK = ".rad.lock"
RECORD = "config.yaml"
RUNS_LOG = "runs.jsonl"

#: Keys (and key prefixes) a rerun may change: how a run is logged, checkpointed, evaluated on the side or
#: placed on machines — never what it trains. Every other key must equal the record.
HARMLESS = (
    "resume", "output_dir", "logging", "profile",
    "save_every", "keep_checkpoints", "schedule.save_every", "schedule.keep_checkpoints",
    "schedule.eval_every", "schedule.eval_batch_size", "num_samples",
    "resources",
    "rollout.num_cpus_per_engine", "rollout.num_gpus_per_engine", "rollout.sync_timeout_s",
    "rollout.sync_bucket_mb", "rollout.vllm_gpu_memory_utilization",
    *(f"{kind}_scorer.{key}" for kind in ("reward", "cost")
      for key in ("batch_size", "timeout", "retries", "backoff", "deadline", "concurrency", "api_key_env")),
)
#: Exceptions under a harmless prefix: they change the numbers (data sharding, scorer precision).
RESULT_KEYS = ("resources.num_learners", "resources.scorer_dtype")


def resume_field() -> Any:
    """The ``resume`` key of every command's config (see the module docstring)."""
    return field(True, help="rerunning continues the run in output_dir (from its newest checkpoint; a finished run "
                            "returns its summary); false = a new run, refused if output_dir holds one")


def is_harmless(key: str) -> bool:
    """Whether a change of ``key`` (dotted) leaves a run's results unchanged (see :data:`HARMLESS`)."""
    def under(prefixes: tuple[str, ...]) -> bool:
        return any(key == p or key.startswith(p + ".") for p in prefixes)

    return under(HARMLESS) and not under(RESULT_KEYS)


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}{k}."))
    return {k.rstrip("."): v for k, v in out.items()}


def _holder() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(sys.argv)}


def _describe(holder: dict[str, Any]) -> str:
    return (f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}: "
            f"{holder.get('command')!r}")


def check_writable(path: str | os.PathLike, key: str = "output_dir") -> Path:
    """Create ``path`` (with its parents) and write and remove a probe file in it; the path. A read-only
    directory or a path through a file is one :class:`ConfigError` naming ``key`` and the directory, before
    any work, instead of an ``OSError`` traceback from whichever write comes first."""
    out = Path(path).expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".rad-write-check-"):
            pass
    except OSError as exc:
        where = exc.filename or out
        raise ConfigError(f"{key}: cannot write to {str(where)!r} ({exc.strerror or exc}); give a writable "
                          "directory") from None
    return out


@contextmanager
def run_lock(run_dir: str | os.PathLike) -> Iterator[None]:
    """Hold ``run_dir``'s lock for the block; a held lock is a :class:`ConfigError` naming its holder."""
    run_dir = check_writable(run_dir)
    try:
        fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise ConfigError(f"output_dir: cannot write to {str(run_dir / LOCK)!r} ({exc.strerror or exc}); give a "
                          "writable directory") from None
    with os.fdopen(fd, "r+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = json.loads(f.read() or "{}")
            except ValueError:
                holder = {}
            raise ConfigError(f"output_dir: {run_dir} is in use by another run ({_describe(holder)}); wait for it "
                              "to finish, stop it, or choose another output_dir") from None
        try:
            stale = json.loads(f.read() or "{}")
        except ValueError:
            stale = {}
        if stale:
            log.warning("%s: taking over the lock left by a run that is gone (%s)", run_dir, _describe(stale))
        f.seek(0)
        f.truncate()
        f.write(json.dumps(_holder()))
        f.flush()
        try:
            yield
        finally:
            f.seek(0)
            f.truncate()  # a clean exit leaves no holder behind
            f.flush()
            fcntl.flock(f, fcntl.LOCK_UN)


def holds_run(run_dir: str | os.PathLike) -> bool:
    """Whether ``run_dir`` holds (part of) a run: its record, metrics or checkpoints."""
    run_dir = Path(run_dir)
    return any((run_dir / name).exists() for name in (RECORD, "metrics.jsonl", "checkpoints", "summary.json"))


def config_changes(cfg: Any, run_dir: str | os.PathLike) -> dict[str, tuple[Any, Any]]:
    """``{key: (recorded, now)}`` of every key whose value differs from ``run_dir``'s record (none without one).

    Keys that only one side has (a key added to or removed from rad since the record) are not compared; a
    path spelled differently is the same value when both spellings name one existing file.
    """
    path = Path(run_dir) / RECORD
    if not path.is_file():
        return {}
    try:
        recorded = _flatten(yaml.safe_load(path.read_text()) or {})
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: the record of this run is not valid YAML ({exc}); restore it or choose "
                          "another output_dir") from None
    now = _flatten(yaml.safe_load(yaml.safe_dump(to_dict(cfg))))  # the values as the record reads back
    return {k: (recorded[k], now[k]) for k in sorted(set(recorded) & set(now)) if not _same(recorded[k], now[k])}


def _same(recorded: Any, now: Any) -> bool:
    """Equal values, or two spellings of one existing file or directory (``runs/x`` and ``/home/me/runs/x``)."""
    if recorded == now:
        return True
    if not (isinstance(recorded, str) and isinstance(now, str) and recorded and now):
        return False
    try:
        return os.path.samefile(recorded, now)
    except OSError:
        return False


def check_config(cfg: Any, prefix: str = "", compare: bool = True) -> dict[str, tuple[Any, Any]]:
    """Refuse to run ``cfg`` into its ``output_dir`` unless that continues the run recorded there.

    Raises :class:`ConfigError` when the directory holds a run and ``cfg.resume`` is false, or (``compare``)
    when a key that changes results differs from the record (named with ``prefix``, e.g. ``sft.learner.lr``).
    Returns the harmless changes.
    """
    run_dir = Path(cfg.output_dir)
    if not holds_run(run_dir):
        return {}
    where = f"{prefix}." if prefix else ""
    if not getattr(cfg, "resume", True):
        raise ConfigError(f"{where}resume: false asks for a new run, but {run_dir} already holds one; choose "
                          f"another output_dir, delete {run_dir}, or drop resume=false to continue it")
    if not compare:
        return {}
    changes = config_changes(cfg, run_dir)
    refused = {k: v for k, v in changes.items() if not is_harmless(k)}
    if refused:
        detail = ", ".join(f"{where}{k}: {old!r} -> {new!r}" for k, (old, new) in refused.items())
        raise ConfigError(f"{', '.join(where + k for k in refused)}: {run_dir} holds a run made with different "
                          f"values ({detail}); they change its results, so it cannot be continued or reused. "
                          f"Rerun with the recorded values ({run_dir / RECORD}) or choose another output_dir")
    return changes


def finished_summary(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The recorded summary of a finished run (``summary.json`` and ``model/`` exist), else None."""
    run_dir = Path(run_dir)
    summary = run_dir / "summary.json"
    if summary.is_file() and (run_dir / "model" / "config.json").is_file():
        try:
            return json.loads(summary.read_text())
        except ValueError:
            return None
    return None


@contextmanager
def open_run(cfg: Any, stages: dict[str, Any] | None = None) -> Iterator[dict[str, Any] | None]:
    """Lock ``cfg.output_dir`` for the block, check ``cfg`` against its record (:func:`check_config`), record
    the config of a new run and log this invocation; yields the recorded summary of a finished run (None
    otherwise).

    A pipeline passes ``stages`` (name -> config of a stage with its own directory): then those are checked
    against their records instead (its own record only keeps the first invocation: stages may be added later).
    """
    run_dir = Path(cfg.output_dir)
    check = stages is None
    with run_lock(run_dir):
        changed = check_config(cfg, compare=check)
        for name, stage_cfg in (stages or {}).items():
            check_config(stage_cfg, prefix=name)
        if not check:
            changed = config_changes(cfg, run_dir)
        if not (run_dir / RECORD).is_file():
            save_config(cfg, run_dir / RECORD)
        entry = {**_holder(), "changed": {k: list(v) for k, v in changed.items()}}
        with open(run_dir / RUNS_LOG, "a") as f:
            f.write(json.dumps(entry, default=str) + "\n")
        done = finished_summary(run_dir) if check else None
        if done is not None:
            log.info("%s already holds a finished run; returning its summary (delete %s/model to train it again, "
                     "or choose another output_dir)", run_dir, run_dir)
        yield done

