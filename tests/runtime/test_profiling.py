"""The per-process profiler behind ``profile.steps`` (rad/runtime/profiling.py), in this process."""

import json

import pytest
import torch

from rad.config import load_config
from rad.errors import ConfigError
from rad.runtime.profiling import ActorProfiler, ProfileConfig, RoleDiagnostics, write_profile


class _Role(RoleDiagnostics):
    def work(self, n: int) -> None:
        a = torch.randn(64, 64)
        for _ in range(n):
            a = torch.mm(a, a).tanh()


def test_an_actor_profile_counts_its_operators_and_writes_a_readable_trace(tmp_path):
    role = _Role()
    role.profile_start()
    role.work(7)
    summary = role.profile_stop(str(tmp_path / "role-0.trace.json"), row_limit=50)
    ops = {op["name"]: op for op in summary["ops"]}
    assert ops["aten::mm"]["calls"] == 7 and ops["aten::tanh"]["calls"] == 7
    assert 0 < ops["aten::mm"]["self_s"] <= ops["aten::mm"]["total_s"]
    assert 0 < summary["self_s"] <= summary["wall_s"] * 1.5  # one thread's operators, a little timer slack
    assert json.loads((tmp_path / "role-0.trace.json").read_text())["traceEvents"]
    # a second window counts only its own calls
    role.profile_start()
    role.work(2)
    assert {op["name"]: op["calls"] for op in role.profile_stop()["ops"]}["aten::mm"] == 2
    with pytest.raises(RuntimeError, match="not running"):
        role.profile_stop()
    assert role.memory_stats()["peak_rss_mb"] > 0

    md = write_profile(tmp_path / "step3", {"scorer-0": summary}, step=3).read_text()
    assert "## scorer-0" in md and "| `aten::mm` | 7 |" in md
    assert json.loads((tmp_path / "step3" / "profile.json").read_text())["processes"]["scorer-0"]["ops"]


def test_row_limit_keeps_the_largest_self_times():
    prof = ActorProfiler()
    prof.start()
    _Role().work(3)
    ops = prof.stop(row_limit=2)["ops"]
    assert len(ops) == 2 and ops[0]["self_s"] >= ops[1]["self_s"]


def test_profile_steps_are_counted_from_one():
    with pytest.raises(ConfigError, match=r"steps are counted from 1 .*got 0"):
        load_config(ProfileConfig, None, ["steps=[3,0]"])


class _CudaRole(_Role):
    def diagnostics_device(self):
        return "cuda"

    def work(self, n: int) -> None:
        a = torch.randn(256, 256, device="cuda")
        for _ in range(n):
            a = torch.mm(a, a).tanh()
        torch.cuda.synchronize()


@pytest.mark.gpu
def test_on_a_gpu_the_profile_has_device_time():
    role = _CudaRole()
    role.profile_start()
    role.work(5)
    ops = role.profile_stop(row_limit=100)["ops"]
    assert all("self_device_s" in op for op in ops)
    assert sum(op["self_device_s"] for op in ops) > 0
