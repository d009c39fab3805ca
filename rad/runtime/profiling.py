"""Where a step's time goes inside every role: the PyTorch profiler in each Ray actor, for chosen steps.

A sampling profiler (py-spy) on the driver sees the controller only; the work of an
online RL step happens in the actors (rollout engines, learner ranks, reference,
scorers), each its own process. ``profile.steps: [3]`` makes the controller start
``torch.profiler`` in every actor and in itself before step 3 and stop it after, then
write ``<output_dir>/profile/step3/``:

* ``profile.json``   per process (``<role>-<rank>``, and ``controller``): the profiled
  wall seconds, the summed self time of every operator, and the top operators by self
  time (calls, self and total seconds; device seconds on CUDA);
* ``profile.md``     the same as one table per process, to read;
* ``<role>-<rank>.trace.json``  with ``profile.trace``: each process's Chrome trace
  (open in https://ui.perfetto.dev or chrome://tracing; tens of MB at the medium size).

The profiler records CPU operators, and CUDA kernels when the actor's device is a
GPU: one code path, the activity list follows the device. A vLLM engine running its
engine core in a child process (vLLM's default multiprocessing) is seen from the
actor's side only; vLLM's own profiler covers the core.
With ``algo.overlap`` the window also holds the generation of the next step's batch,
which runs during this step's update.

The profiler itself slows operators down (a few % on CPU at these sizes), so a
profiled step's ``timing/*`` metrics are not the run's; profile a step after the
first (startup and the reference particles) and read shares, not absolute times.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rad.config import field
from rad.errors import ConfigError


@dataclass
class ProfileConfig:
    """``profile:`` keys of an online RL run (off by default)."""

    steps: list[int] = field(default_factory=list,
                             help="RL steps (1-based) to profile in every role's actor and the controller; output in "
                                  "<output_dir>/profile/step<N>/ (profile.md, profile.json); [] = off")
    trace: bool = field(False, help="also write each process's Chrome trace, <role>-<rank>.trace.json")
    row_limit: int = field(20, min=1, help="operators kept per process, by self time")

    def validate(self) -> None:
        bad = [s for s in self.steps if s < 1]
        if bad:
            raise ConfigError(f"steps are counted from 1 (the first RL step is 1), got {bad[0]}")


class ActorProfiler:
    """``torch.profiler`` over this process between :meth:`start` and :meth:`stop` (one per actor)."""

    def __init__(self) -> None:
        self._prof = None
        self._start = 0.0
        self._cuda = False

    @property
    def active(self) -> bool:
        return self._prof is not None

    def start(self, device: torch.device | str = "cpu") -> None:
        from torch.profiler import ProfilerActivity, profile

        if self._prof is not None:
            raise RuntimeError("the profiler is already running in this process")
        self._cuda = torch.device(device).type == "cuda"
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self._cuda else [])
        self._prof = profile(activities=activities)
        self._prof.__enter__()
        self._start = time.perf_counter()

    def stop(self, trace_path: str | None = None, row_limit: int = 20) -> dict[str, Any]:
        """Stop; the summary (see the module docstring), and the Chrome trace at ``trace_path`` if given."""
        if self._prof is None:
            raise RuntimeError("the profiler is not running in this process")
        prof, self._prof = self._prof, None
        prof.__exit__(None, None, None)
        wall = time.perf_counter() - self._start
        events = list(prof.key_averages())
        # on a GPU, kernels (device time, no CPU time) rank beside the CPU operators that launch them
        events.sort(key=lambda e: e.self_cpu_time_total + (_device_us(e) if self._cuda else 0), reverse=True)
        ops = []
        for e in events[:row_limit]:
            row = {"name": e.key, "calls": e.count, "self_s": e.self_cpu_time_total / 1e6,
                   "total_s": e.cpu_time_total / 1e6}
            if self._cuda:
                row["self_device_s"] = _device_us(e) / 1e6
            ops.append(row)
        if trace_path:
            Path(trace_path).parent.mkdir(parents=True, exist_ok=True)
            prof.export_chrome_trace(str(trace_path))
        return {"wall_s": wall, "self_s": sum(e.self_cpu_time_total for e in events) / 1e6, "ops": ops,
                **({"trace": str(trace_path)} if trace_path else {})}


def _device_us(event: Any) -> float:
    """An averaged event's self time on the accelerator, microseconds (the attribute was renamed in torch 2.4)."""
    return getattr(event, "self_device_time_total", None) or getattr(event, "self_cuda_time_total", 0.0)


class RoleDiagnostics:
    """What the controller asks every role's actor besides its work: peak memory, and the profiler.

    An actor class mixes this in and says which device it computes on (:meth:`diagnostics_device`).
    """

    def diagnostics_device(self) -> torch.device | str:
        return "cpu"

    def memory_stats(self) -> dict[str, float]:
        from rad.runtime.distributed import memory_stats

        return memory_stats(self.diagnostics_device())

    def profile_start(self) -> None:
        if not hasattr(self, "_profiler"):
            self._profiler = ActorProfiler()
        self._profiler.start(self.diagnostics_device())

    def profile_stop(self, trace_path: str | None = None, row_limit: int = 20) -> dict[str, Any]:
        return self._profiler.stop(trace_path, row_limit)


def write_profile(out_dir: Path, processes: dict[str, dict[str, Any]], step: int) -> Path:
    """``profile.json`` and ``profile.md`` of one profiled step under ``out_dir``; the markdown's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "profile.json").write_text(json.dumps({"step": step, "processes": processes}, indent=2))
    lines = [f"# Profile of step {step}", "",
             "Per process: profiled wall time, summed operator self time, top operators by self time "
             "(rad/runtime/profiling.py).", ""]
    for name, p in processes.items():
        lines += [f"## {name}: {p['wall_s']:.2f} s wall, {p['self_s']:.2f} s operator self time", "",
                  "| operator | calls | self s | self % | total s |", "| --- | ---: | ---: | ---: | ---: |"]
        for op in p["ops"]:
            share = 100 * op["self_s"] / p["self_s"] if p["self_s"] else 0.0
            lines.append(f"| `{op['name']}` | {op['calls']} | {op['self_s']:.3f} | {share:.1f} | {op['total_s']:.3f} |")
        lines.append("")
    path = out_dir / "profile.md"
    path.write_text("\n".join(lines))
    return path
