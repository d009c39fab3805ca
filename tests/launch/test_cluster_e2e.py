"""End to end on real multi-process Ray clusters started by the test itself.

1. ``ray start --head`` + ``ray start --address`` (two nodes on 127.0.0.1, own temp dir and
   ports): ``launch/submit.py`` with ``address="auto"`` (``$RAY_ADDRESS``) runs every stage
   of the smoke config, and ``ray job submit --working-dir`` runs it again as a job.
2. The cluster launcher: ``ray up`` -> ``ray submit`` -> ``ray down`` with launch/rad.yaml
   (provider ``local``) against an SSH server on 127.0.0.1 that the test starts in its own
   PID and mount namespace, so ``ray stop`` (which ``ray down`` runs) can only see the
   test's processes. Skipped, with the reason, where that is not possible.

The tests stop exactly the processes they started: the process trees of their ``ray
start --block`` commands and anything whose command line names their temporary directory
(case 1), or the namespace, whose processes the kernel kills with its first process (case 2).
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil
import pytest
import yaml

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
RAY = str(BIN / "ray")
OBJECT_STORE = str(150 * 1024 * 1024)  # small: two nodes share this machine


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def clean_env() -> dict[str, str]:
    """This process's environment without its Ray settings, plus the ones the clusters need.

    PATH stays as it is: the virtualenv's bin holds pip's ninja, and a ninja other than the
    one that built DeepSpeed's cached CPU op makes torch rebuild it (minutes) for everyone.
    Commands are called by absolute path instead.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", TOKENIZERS_PARALLELISM="false",
               PYTHONUNBUFFERED="1")
    return env


def wait_for_log(path: Path, text: str, proc: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if text in path.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            break
        time.sleep(0.5)
    raise AssertionError(f"{path.name}: no {text!r} (exit {proc.poll()}):\n{path.read_text(errors='replace')[-3000:]}")


class TwoNodeCluster:
    """A Ray head and one worker node on 127.0.0.1, each a ``ray start --block`` process of this test."""

    def __init__(self, root: Path):
        self.root = root
        self.env = clean_env()
        self.procs: list[subprocess.Popen] = []
        self.gcs_port, self.dashboard_port, *self.ports = free_ports(16)

    def _node_ports(self) -> list[str]:
        agent, grpc, runtime_env, metrics, node_manager, object_manager = (self.ports.pop() for _ in range(6))
        return [f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={grpc}",
                f"--runtime-env-agent-port={runtime_env}", f"--metrics-export-port={metrics}",
                f"--node-manager-port={node_manager}", f"--object-manager-port={object_manager}"]

    def _start(self, name: str, args: list[str]) -> None:
        # Each node its own temp dir, as on separate machines: nodes sharing one would share the
        # runtime-env directory, and one node's agent deletes job working dirs the other still uses.
        log = self.root / f"{name}.log"
        with open(log, "w") as out:
            proc = subprocess.Popen([RAY, "start", "--block", "--node-ip-address=127.0.0.1", "--num-cpus=2",
                                     "--num-gpus=0", f"--object-store-memory={OBJECT_STORE}",
                                     f"--temp-dir={self.root / name}", "--disable-usage-stats",
                                     *self._node_ports(), *args],
                                    stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        self.procs.append(proc)
        wait_for_log(log, "Ray runtime started", proc, timeout_s=300)

    def start(self) -> None:
        self._start("head", ["--head", f"--port={self.gcs_port}", "--include-dashboard=true",
                             "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}",
                             f"--ray-client-server-port={self.ports.pop()}"])
        self._start("worker", [f"--address=127.0.0.1:{self.gcs_port}"])

    def ours(self) -> set[psutil.Process]:
        """Every live process this cluster started: the ``ray start`` trees and anything naming our temp dir."""
        found: set[psutil.Process] = set()
        for proc in self.procs:
            try:
                parent = psutil.Process(proc.pid)
                found.add(parent)
                found.update(parent.children(recursive=True))
            except psutil.NoSuchProcess:
                pass
        marker = str(self.root)
        for proc in psutil.process_iter(["cmdline"]):
            if marker in " ".join(proc.info["cmdline"] or []):
                found.add(proc)
        found.discard(psutil.Process())
        return found

    def stop(self) -> list[str]:
        """Terminate our processes (kill what ignores SIGTERM); returns the command lines still alive."""
        victims = self.ours()
        for proc in victims:
            try:
                proc.terminate()
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(victims, timeout=10)
        for proc in alive:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=10)
        for proc in self.procs:
            proc.wait(timeout=10)
        return [" ".join(p.cmdline()) for p in self.ours() if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


@pytest.fixture(scope="module")
def two_node_cluster():
    root = Path(tempfile.mkdtemp(prefix="rl", dir="/tmp"))  # short: Ray's socket paths live under it
    cluster = TwoNodeCluster(root)
    try:
        cluster.start()
        yield cluster
    finally:
        leftovers = cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
        assert not leftovers, f"processes of the test cluster survived: {leftovers}"


def read_run(run: Path) -> dict:
    summary = json.loads((run / "summary.json").read_text())
    config = yaml.safe_load((run / "config.yaml").read_text())
    cluster = json.loads((run / "cluster.json").read_text())
    return {"summary": summary, "config": config, "cluster": cluster}


def test_submit_script_runs_the_pipeline_on_a_two_node_cluster(two_node_cluster, tmp_path):
    run = tmp_path / "run-direct"
    env = {**two_node_cluster.env, "RAY_ADDRESS": f"127.0.0.1:{two_node_cluster.gcs_port}"}
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "launch/submit.py", "--config", "launch/configs/smoke.yaml",
                             f"output_dir={run}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    seconds = time.perf_counter() - start
    assert result.returncode == 0, result.stderr[-4000:]
    got = read_run(run)
    assert list(got["summary"]["stages"]) == ["sft", "reward", "cost", "rad"]
    assert got["config"]["rad"]["resources"]["ray_address"] == "auto"
    # The RAD stage's actors (learner, reference, scorer, rollout: 4 CPUs) only fit on both nodes (2 CPUs each).
    assert len(got["cluster"]["nodes"]) == 2
    assert got["cluster"]["resources"]["CPU"] == 4
    assert got["cluster"]["gcs_address"].endswith(f":{two_node_cluster.gcs_port}")
    for stage in ("sft", "reward", "cost", "rad"):
        assert (run / stage / "model" / "config.json").is_file(), stage
    assert (run / "rad" / "metrics.jsonl").stat().st_size > 0
    print(f"submit.py, 4 stages on the 2-node cluster: {seconds:.0f} s")


def test_ray_job_submit_runs_the_submit_script(two_node_cluster, tmp_path):
    run = tmp_path / "run-job"
    job_id = f"rad-e2e-{uuid.uuid4().hex[:8]}"
    # `ray job submit` shell-quotes each argument of the entrypoint itself.
    entrypoint = [sys.executable, "launch/submit.py", "--config", "launch/configs/smoke.yaml", "stages=[sft]",
                  f"output_dir={run}"]
    start = time.perf_counter()
    result = subprocess.run([RAY, "job", "submit", "--address", f"http://127.0.0.1:{two_node_cluster.dashboard_port}",
                             "--working-dir", str(ROOT), "--submission-id", job_id, "--", *entrypoint],
                            cwd=ROOT, env=two_node_cluster.env, capture_output=True, text=True, timeout=1200)
    seconds = time.perf_counter() - start
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert f"Job '{job_id}' succeeded" in result.stdout
    got = read_run(run)
    assert list(got["summary"]["stages"]) == ["sft"]
    assert len(got["cluster"]["nodes"]) == 2
    assert (run / "sft" / "model" / "config.json").is_file()
    print(f"ray job submit, SFT stage: {seconds:.0f} s")


# -- ray up / ray submit / ray down over SSH -------------------------------------------------------

def ssh_unavailable() -> str:
    """Why the ``ray up`` cycle cannot run here ('' when it can)."""
    if os.geteuid() != 0:
        return "needs root: sshd binds 127.0.0.1:22 and the test isolates the cluster in a PID/mount namespace"
    for tool in ("/usr/sbin/sshd", "ssh", "ssh-keygen", "rsync", "unshare"):
        if not shutil.which(tool):
            return f"{tool} not found (Debian: apt-get install -y openssh-server rsync)"
    probe = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot create PID/mount namespaces here: {probe.stderr.strip()}"
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", 22))
        except OSError as exc:
            return f"127.0.0.1:22 is taken ({exc}); Ray's SSH runner has no port option"
    return ""


def _die_with_parent() -> None:
    """SIGKILL this child if the test process dies (unshare then kills the namespace)."""
    import ctypes

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class NamespacedSSHServer:
    """sshd on 127.0.0.1:22 as the first process of a new PID + mount namespace.

    Inside, /root is the test's own home (authorized key, .bashrc with the test's
    PATH) and /tmp/ray is private, so the launcher's commands (``ray stop`` included)
    see only this namespace. Killing sshd (PID 1 there) makes the kernel kill the rest.
    """

    def __init__(self, root: Path, bashrc: str):
        self.root = root
        self.key = root / "id_ed25519"
        home = root / "home"
        (home / ".ssh").mkdir(parents=True, mode=0o700)
        home.chmod(0o700)
        for key in (self.key, root / "hostkey"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        auth = home / ".ssh" / "authorized_keys"
        auth.write_text(self.key.with_suffix(".pub").read_text())
        auth.chmod(0o600)
        (home / ".bashrc").write_text(bashrc)
        (root / "rayroot").mkdir()
        (root / "sshd_config").write_text("\n".join([
            "Port 22", "ListenAddress 127.0.0.1", f"HostKey {root / 'hostkey'}", f"PidFile {root / 'sshd.pid'}",
            "PermitRootLogin prohibit-password", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "UsePAM no", "AuthorizedKeysFile .ssh/authorized_keys", "MaxStartups 100", "MaxSessions 100",
            "LogLevel VERBOSE", ""]))
        self.proc: subprocess.Popen | None = None

    def start(self, keep: list[Path]) -> None:
        """Start sshd; ``keep`` are paths under the real /root the node still needs (they are
        bound at the same place inside the replacement home)."""
        home = self.root / "home"
        binds = []
        for path in keep:
            inside = home / path.relative_to("/root")
            binds.append(f"mkdir -p {shlex.quote(str(inside))}; mount --bind {shlex.quote(str(path))} "
                         f"{shlex.quote(str(inside))}")
        binds.append(f"mount --rbind {home} /root; mkdir -p /tmp/ray; mount --bind {self.root / 'rayroot'} /tmp/ray")
        script = "set -e; " + "; ".join(binds)
        script += f"; exec /usr/sbin/sshd -D -f {self.root / 'sshd_config'} -E {self.root / 'sshd.log'}"
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
        with open(self.root / "unshare.log", "w") as err:
            self.proc = subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "bash", "-c",
                                          script], stderr=err, start_new_session=True, preexec_fn=_die_with_parent)
        log = self.root / "sshd.log"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self.proc.poll() is None:
            if log.exists() and "Server listening" in log.read_text(errors="replace"):
                return
            time.sleep(0.2)
        raise AssertionError(f"sshd did not start (exit {self.proc.poll()}): "
                             f"{log.read_text(errors='replace') if log.exists() else ''}")

    def namespace_processes(self) -> list[str]:
        """Command lines of the processes in the server's PID namespace (seen from outside)."""
        init = psutil.Process(self.proc.pid).children()[0]
        ns = os.readlink(f"/proc/{init.pid}/ns/pid")
        out = []
        for proc in psutil.process_iter(["cmdline"]):
            try:
                if os.readlink(f"/proc/{proc.pid}/ns/pid") == ns:
                    out.append(" ".join(proc.info["cmdline"] or []))
            except OSError:
                pass
        return out

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            for child in psutil.Process(self.proc.pid).children():
                child.kill()  # PID 1 of the namespace: the kernel kills everything else in it
        except psutil.NoSuchProcess:
            pass
        self.proc.wait(timeout=30)


SSH_UNAVAILABLE = ssh_unavailable()


@pytest.mark.skipif(bool(SSH_UNAVAILABLE), reason=SSH_UNAVAILABLE)
def test_ray_up_submit_down_over_ssh():
    from rad.cache import cache_root

    root = Path(tempfile.mkdtemp(prefix="rs", dir="/tmp"))
    name = f"radtest-{uuid.uuid4().hex[:8]}"
    gcs, dashboard, client, agent = free_ports(4)
    # Inside the namespace /root is the test's home; the interpreter the venv points at and the
    # rad cache (built ops, tiny model) stay visible where they are if they live under /root.
    keep = [p for p in {Path(sys.base_prefix).resolve(), cache_root().resolve()} if p.is_relative_to("/root")]
    # The node's login shell: `python` and `ray` of the test's virtualenv (instead of rad.yaml's
    # ~/rad-env, which pip would fill from PyPI; wrappers, not the venv's bin, for the reason in
    # clean_env) and the copy of the project ray up puts in ~/rad ahead of the installed one.
    wrappers = root / "bin"
    wrappers.mkdir()
    for tool in ("python", "ray"):
        (wrappers / tool).write_text(f'#!/bin/sh\nexec {BIN / tool} "$@"\n')
        (wrappers / tool).chmod(0o755)
    bashrc = (f"export PATH={wrappers}:$PATH\nexport PYTHONPATH=$HOME/rad\n"
              "export RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0 TOKENIZERS_PARALLELISM=false\n")
    server = NamespacedSSHServer(root, bashrc)
    cluster = yaml.safe_load((ROOT / "launch" / "rad.yaml").read_text())
    cluster["cluster_name"] = name
    cluster["provider"].update(head_ip="127.0.0.1", worker_ips=[])
    cluster["auth"] = {"ssh_user": "root", "ssh_private_key": str(server.key)}
    # Installing is rad.yaml's pip line; here the check is that file_mounts delivered the
    # project and that the node's Python imports it from there.
    cluster["setup_commands"] = [
        "test -f ~/rad/launch/submit.py && test -f ~/rad/launch/configs/smoke.yaml",
        "python -c \"import os, rad; assert rad.__file__.startswith(os.path.expanduser('~/rad/')), rad.__file__\""]
    head = cluster["head_start_ray_commands"]
    head[-1] = (head[-1].replace("--port=6379", f"--port={gcs}").replace("--dashboard-port=8265",
                                                                         f"--dashboard-port={dashboard}")
                .replace("--dashboard-host=0.0.0.0", "--dashboard-host=127.0.0.1")
                + f" --node-ip-address=127.0.0.1 --num-cpus=2 --num-gpus=0 --object-store-memory={OBJECT_STORE}"
                  f" --ray-client-server-port={client} --dashboard-agent-listen-port={agent}")
    config = root / "cluster.yaml"
    config.write_text(yaml.safe_dump(cluster))
    env = clean_env()
    run = root / "run-ssh"
    # The local provider's state, on the launcher's side:
    state = [Path(f"/tmp/ray/cluster-{name}.state"), Path(f"/tmp/ray/cluster-{name}.lock")]

    def ray(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
        return subprocess.run([RAY, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)

    try:
        cache_root().mkdir(parents=True, exist_ok=True)
        server.start(keep=sorted(keep))
        start = time.perf_counter()
        up = ray("up", "-y", "--no-config-cache", str(config))
        t_up = time.perf_counter() - start
        assert up.returncode == 0, (up.stdout + up.stderr)[-4000:]
        assert any("raylet" in c for c in server.namespace_processes())

        start = time.perf_counter()
        submit = ray("submit", "--no-config-cache", str(config), "launch/submit.py", "--",
                     "--config", "launch/configs/smoke.yaml", "stages=[sft]", f"output_dir={run}")
        t_submit = time.perf_counter() - start
        assert submit.returncode == 0, (submit.stdout + submit.stderr)[-4000:]
        got = read_run(run)
        assert list(got["summary"]["stages"]) == ["sft"]
        assert got["cluster"]["gcs_address"].endswith(f":{gcs}")
        assert (run / "sft" / "model" / "config.json").is_file()

        start = time.perf_counter()
        down = ray("down", "-y", str(config))  # no --no-config-cache option: it caches in /tmp/ray-config-*
        t_down = time.perf_counter() - start
        assert down.returncode == 0, (down.stdout + down.stderr)[-4000:]
        # `ray down` ran `ray stop` on the head: no Ray process is left in the namespace.
        deadline = time.monotonic() + 30
        while any(k in c for c in server.namespace_processes() for k in ("raylet", "gcs_server")):
            assert time.monotonic() < deadline, server.namespace_processes()
            time.sleep(0.5)
        print(f"ray up {t_up:.0f} s, ray submit (SFT stage) {t_submit:.0f} s, ray down {t_down:.0f} s")
    finally:
        server.stop()
        state += [p for p in Path(tempfile.gettempdir()).glob("ray-config-*") if name in p.read_text(errors="replace")]
        for path in state:
            path.unlink(missing_ok=True)
        # The ssh client's shared-connection directory: /tmp/ray_ssh_<user hash>/<cluster-name hash>.
        for control in Path("/tmp").glob(f"ray_ssh_*/{hashlib.sha256(name.encode()).hexdigest()[:10]}"):
            shutil.rmtree(control, ignore_errors=True)
            if not any(control.parent.iterdir()):
                control.parent.rmdir()
        shutil.rmtree(root, ignore_errors=True)
