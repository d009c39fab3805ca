"""End to end on real multi-process Ray clusters started by the test itself.

1. ``ray start --head`` + ``ray start --address`` (two nodes on 127.0.0.1, own temp dir and
   ports): ``launch/submit.py`` with ``address="auto"`` (``$RAY_ADDRESS``) runs every stage
   of the smoke config plus an eval against a judge on 127.0.0.1, and ``ray job submit
   --working-dir`` runs the SFT stage again as a job.
2. The cluster launcher: ``ray up`` -> ``ray submit`` -> ``ray down`` with launch/rad.yaml
   (provider ``local``) against an SSH server on 127.0.0.1 that the test starts in its own
   PID and mount namespace, so ``ray stop`` (which ``ray down`` runs) can only see the
   test's processes. Skipped, with the reason, where that is not possible.

Every cluster runs as the templates start theirs: ``RAY_AUTH_MODE=token`` on every node, the
token in an owner-only file (``RAY_AUTH_TOKEN_PATH``; ``~/.ray/auth_token`` on the ``ray up``
node). The Jobs API refuses a request or a ``ray job submit`` without the token; the
pipeline's run directory holds neither the token nor the judge's API key.

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
import urllib.error
import urllib.request
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
#: The clusters' Ray token and the judge's API key: distinctive, so a copy in any file is found.
TOKEN = f"rad-e2e-ray-token-{uuid.uuid4().hex}"
JUDGE_KEY = f"rad-e2e-judge-key-{uuid.uuid4().hex}"


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def write_token(path: Path) -> Path:
    """:data:`TOKEN` in an owner-only file, as the templates deliver it."""
    path.touch(mode=0o600)
    path.write_text(TOKEN + "\n")
    return path


def clean_env(token_path: Path | None = None) -> dict[str, str]:
    """This process's environment without its Ray settings, plus the ones the clusters need:
    token authentication, with the token read from ``token_path`` when given.

    PATH stays as it is: the virtualenv's bin holds pip's ninja, and a ninja other than the
    one that built DeepSpeed's cached CPU op makes torch rebuild it (minutes) for everyone.
    Commands are called by absolute path instead.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_AUTH_MODE="token", RAY_USAGE_STATS_ENABLED="0", TOKENIZERS_PARALLELISM="false",
               PYTHONUNBUFFERED="1")
    if token_path is not None:
        env["RAY_AUTH_TOKEN_PATH"] = str(token_path)
    return env


def files_holding(root: Path, secrets: list[str]) -> list[str]:
    """``file: secret`` for every file under ``root`` that contains one of ``secrets``."""
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        found += [f"{path.relative_to(root)}: {s[:20]}..." for s in secrets if s.encode() in data]
    return found


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
        self.env = clean_env(write_token(root / "auth_token"))
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


def test_submit_script_runs_the_pipeline_on_a_two_node_cluster(two_node_cluster, judge_server, tmp_path):
    run = tmp_path / "run-direct"
    # The driver as a user's shell would have it: the token in RAY_AUTH_TOKEN, RAY_AUTH_MODE unset
    # (rad then joins in token mode), the judge's key in the variable the config names.
    env = {k: v for k, v in two_node_cluster.env.items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")}
    env.update(RAY_ADDRESS=f"127.0.0.1:{two_node_cluster.gcs_port}", RAY_AUTH_TOKEN=TOKEN,
               RAD_TEST_JUDGE_KEY=JUDGE_KEY)
    evaluation = ["eval.prompts=[embedded/prompts-test:4]", "eval.redteam=[embedded/redteam:2]",
                  "eval.sampling.max_new_tokens=8", "eval.judge.seeds=[0]", "eval.figures=false",
                  "eval.judge.kind=http", f"eval.judge.url=http://127.0.0.1:{judge_server.server_port}/v1",
                  "eval.judge.model=judge-x", "eval.judge.api_key_env=RAD_TEST_JUDGE_KEY", "eval.judge.retries=0",
                  f"eval.cache_dir={run}/eval-cache"]
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "launch/submit.py", "--config", "launch/configs/smoke.yaml",
                             f"output_dir={run}", "stages=[sft,reward,cost,rad,eval]", "logging.tensorboard=true",
                             *evaluation], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    seconds = time.perf_counter() - start
    assert result.returncode == 0, result.stderr[-4000:]
    got = read_run(run)
    assert list(got["summary"]["stages"]) == ["sft", "reward", "cost", "rad", "eval"]
    assert got["config"]["rad"]["resources"]["ray_address"] == "auto"
    # The RAD stage's actors (learner, reference, scorer, rollout: 4 CPUs) only fit on both nodes (2 CPUs each).
    assert len(got["cluster"]["nodes"]) == 2
    assert got["cluster"]["resources"]["CPU"] == 4
    assert got["cluster"]["gcs_address"].endswith(f":{two_node_cluster.gcs_port}")
    for stage in ("sft", "reward", "cost", "rad"):
        assert (run / stage / "model" / "config.json").is_file(), stage
    assert (run / "rad" / "metrics.jsonl").stat().st_size > 0
    assert list((run / "sft").rglob("events.out.tfevents.*"))
    assert (run / "eval" / "report.md").is_file()
    # The judge got the key (so the run had it) ...
    auths = {r["auth"] for r in judge_server.state["requests"]}
    assert auths == {f"Bearer {JUDGE_KEY}"}
    # ... and neither secret reached a file of the run (config, summaries, metrics, TensorBoard, the
    # eval report and its cache) nor the driver's log.
    assert got["config"]["eval"]["judge"]["api_key_env"] == "RAD_TEST_JUDGE_KEY"
    assert files_holding(run, [TOKEN, JUDGE_KEY]) == []
    for secret in (TOKEN, JUDGE_KEY):
        assert secret not in result.stdout + result.stderr
    print(f"submit.py, 4 stages + eval on the 2-node cluster: {seconds:.0f} s")


def jobs_api_status(port: int, token: str | None) -> int:
    """HTTP status of a Jobs API listing on 127.0.0.1:``port``, with ``token`` as the bearer (None: no header)."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/jobs/")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_ray_job_submit_runs_the_submit_script_and_only_with_the_token(two_node_cluster, tmp_path):
    run = tmp_path / "run-job"
    job_id = f"rad-e2e-{uuid.uuid4().hex[:8]}"
    address = f"http://127.0.0.1:{two_node_cluster.dashboard_port}"
    # `ray job submit` shell-quotes each argument of the entrypoint itself.
    entrypoint = [sys.executable, "launch/submit.py", "--config", "launch/configs/smoke.yaml", "stages=[sft]",
                  f"output_dir={run}"]

    def submit(env: dict[str, str], submission_id: str) -> subprocess.CompletedProcess:
        return subprocess.run([RAY, "job", "submit", "--address", address, "--working-dir", str(ROOT),
                               "--submission-id", submission_id, "--", *entrypoint],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)

    # The door is shut: no token, a wrong one, a client without token mode.
    port = two_node_cluster.dashboard_port
    assert jobs_api_status(port, None) == 401
    assert jobs_api_status(port, "not-the-token") == 403
    assert jobs_api_status(port, TOKEN) == 200
    outsider = {**two_node_cluster.env, "RAY_AUTH_MODE": "disabled"}
    del outsider["RAY_AUTH_TOKEN_PATH"]
    refused = submit(outsider, job_id + "-outsider")
    assert refused.returncode != 0
    assert "Authentication required" in refused.stdout + refused.stderr, (refused.stdout + refused.stderr)[-2000:]
    assert not run.exists()

    start = time.perf_counter()
    result = submit(two_node_cluster.env, job_id)
    seconds = time.perf_counter() - start
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert f"Job '{job_id}' succeeded" in result.stdout
    got = read_run(run)
    assert list(got["summary"]["stages"]) == ["sft"]
    assert len(got["cluster"]["nodes"]) == 2
    assert (run / "sft" / "model" / "config.json").is_file()
    # Only the token holder's job ever reached the cluster.
    listing = subprocess.run([RAY, "job", "list", "--address", address], cwd=ROOT, env=two_node_cluster.env,
                             capture_output=True, text=True, timeout=300)
    assert job_id in listing.stdout and f"{job_id}-outsider" not in listing.stdout
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
              "export RAY_USAGE_STATS_ENABLED=0 TOKENIZERS_PARALLELISM=false\n")
    server = NamespacedSSHServer(root, bashrc)
    cluster = yaml.safe_load((ROOT / "launch" / "rad.yaml").read_text())
    cluster["cluster_name"] = name
    cluster["provider"].update(head_ip="127.0.0.1", worker_ips=[])
    cluster["auth"] = {"ssh_user": "root", "ssh_private_key": str(server.key)}
    # The launching machine's token (this test's, not the real ~/.ray/auth_token) goes where rad.yaml sends it.
    cluster["file_mounts"]["~/.ray/auth_token"] = str(write_token(root / "launcher-token"))
    # Installing is rad.yaml's pip line; here the check is that file_mounts delivered the
    # project and that the node's Python imports it from there. rad.yaml's token lines run as they are.
    auth_lines = [c for c in cluster["setup_commands"] if "auth_token" in c or "RAY_AUTH_MODE" in c]
    assert len(auth_lines) == 2, cluster["setup_commands"]
    cluster["setup_commands"] = auth_lines + [
        "test -f ~/rad/launch/submit.py && test -f ~/rad/launch/configs/smoke.yaml",
        "python -c \"import os, rad; assert rad.__file__.startswith(os.path.expanduser('~/rad/')), rad.__file__\""]
    head = cluster["head_start_ray_commands"]
    head[-1] = (head[-1].replace("--port=6379", f"--port={gcs}").replace("--dashboard-port=8265",
                                                                         f"--dashboard-port={dashboard}")
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
        # The head runs in token mode with the launcher's token, delivered owner-only.
        node_token = root / "home" / ".ray" / "auth_token"
        assert node_token.read_text().strip() == TOKEN and node_token.stat().st_mode & 0o777 == 0o600
        assert jobs_api_status(dashboard, None) == 401 and jobs_api_status(dashboard, TOKEN) == 200

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
