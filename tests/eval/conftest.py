"""Fixtures of the eval tests: one small arena config (score heads come from tests/conftest.py) and a raw-socket
judge server for broken replies."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time

import pytest


@pytest.fixture(scope="session")
def make_eval_config(tiny_model_dir, sft_model_dir, score_dirs):
    """A small but complete arena config: tiny (untrained) vs SFT, held-out and red-team prompts, 2 OOD seeds."""
    from rad.config import load_config
    from rad.eval import EvalConfig

    def make(out_dir, cache_dir, **extra):
        base = {
            "output_dir": out_dir, "cache_dir": cache_dir, "reward_model": score_dirs["reward"],
            "cost_model": score_dirs["cost"], "prompts": "embedded/prompts-test:12", "redteam": "embedded/redteam:6",
            "samples_per_prompt": 2, "sampling.max_new_tokens": 16, "judge.seeds": "[0, 1]", "html": "true",
        }
        base.update(extra)
        overrides = [f"models=[sft={sft_model_dir}, tiny={tiny_model_dir}]", "red=[sft]"]
        return load_config(EvalConfig, None, overrides + [f"{k}={v}" for k, v in base.items()])

    return make


@pytest.fixture(scope="session")
def arena_run(tmp_path_factory, make_eval_config):
    """(summary, output dir, cache dir) of one run_eval call."""
    from rad.eval import run_eval

    root = tmp_path_factory.mktemp("arena")
    out, cache = root / "report", root / "cache"
    return run_eval(make_eval_config(out, cache)), out, cache


# -- a raw-socket server for replies no HTTP server library would send ----------------------------------------------


def _answer(body: dict) -> bytes:
    """The fake judge's correct reply: the response containing "refuse" is the less harmful one."""
    a = body["messages"][-1]["content"].split("[Response A]\n", 1)[1].split("\n\n[Response B]", 1)[0]
    content = json.dumps({"choices": [{"message": {"content": "A" if "refuse" in a else "B"}}]}).encode()
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        len(content), content)


class RawServer:
    """Behaviour per prompt: ``<mode>`` misbehaves on its first request then answers, ``<mode>-always`` always
    misbehaves, any other prompt gets ``default`` (``ok`` unless set). Modes: ``incomplete`` (Content-Length 500,
    13 bytes, close), ``garbage`` (not HTTP), ``silent`` (close without a reply), ``reset`` (TCP RST), ``hang``
    (never answers), ``429`` (Too Many Requests with ``Retry-After: 1``)."""

    def __init__(self, default: str = "ok"):
        self.default = default
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.stop = threading.Event()
        self.seen: dict[str, int] = {}
        self.times: dict[str, list[float]] = {}
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket):
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            while len(body) < length:
                body += conn.recv(65536)
            request = json.loads(body)
            prompt = request["messages"][-1]["content"].split("[User prompt]\n", 1)[1].split("\n\n[Response A]")[0]
            with self.lock:
                seen = self.seen[prompt] = self.seen.get(prompt, 0) + 1
                self.times.setdefault(prompt, []).append(time.monotonic())
            mode, always = (prompt.removesuffix("-always"), True) if prompt.endswith("-always") else (prompt, False)
            if mode not in ("incomplete", "garbage", "silent", "reset", "hang", "429"):
                mode, always = self.default, True
            if mode == "ok" or (seen > 1 and not always):
                conn.sendall(_answer(request))
            elif mode == "incomplete":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n"
                             b'{"choices": [')
            elif mode == "garbage":
                conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")
            elif mode == "reset":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            elif mode == "hang":
                self.stop.wait(60)
            elif mode == "429":
                conn.sendall(b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n")

    def close(self):
        self.stop.set()
        self.sock.close()


@pytest.fixture
def raw_server():
    server = RawServer()
    yield server
    server.close()
