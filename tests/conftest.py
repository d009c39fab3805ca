"""Session-wide fixtures: the embedded world, the tiny model, a short SFT, one local Ray cluster, learner helpers,
a local chat-completions judge, a local remote-scorer endpoint.

Everything expensive is built once per session, and the world / tiny model / SFT
checkpoint are also cached across sessions under ``$RAD_CACHE`` (keyed by their
inputs), so a second ``make test`` on the same machine skips the builds.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Every Ray cluster of the session (the in-process one, those of CLI subprocesses) authenticates with a
# token of its own, as the launch templates' clusters do; held in the environment, so nothing is written to ~/.ray.
os.environ.setdefault("RAY_AUTH_MODE", "token")
if os.environ["RAY_AUTH_MODE"] == "token" and not {"RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"} & set(os.environ):
    os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA (no GPU on this machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture
def single_rank_env(monkeypatch):
    # init() writes the rendezvous variables; registering them here restores them after the test.
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.setenv(key, "0")


def random_samples(vocab: int, n: int = 6, seed: int = 0) -> list[dict]:
    """Prompts of 2-9 and responses of 1-14 tokens (ids >= 3) with an advantage each: widths differ, rows pad
    and pack."""
    g = torch.Generator().manual_seed(seed)

    def ids(lo, hi):
        return torch.randint(3, vocab, (int(torch.randint(lo, hi, (1,), generator=g)),), generator=g).tolist()

    return [{"prompt_ids": ids(2, 10), "response_ids": ids(1, 15), "advantage": float(torch.randn(1, generator=g))}
            for _ in range(n)]


@pytest.fixture(scope="session")
def make_samples():
    """:func:`random_samples`, for tests that need token samples."""
    return random_samples


def random_batch(vocab_size: int, n: int = 6, seed: int = 0, pad_id: int = 0):
    """:func:`random_samples` as the runtime's typed batch, with their ``advantages`` as a per-sample field."""
    from rad.runtime.batch import TokenBatch

    samples = random_samples(vocab_size, n, seed)
    batch = TokenBatch.from_ids([s["prompt_ids"] for s in samples], [s["response_ids"] for s in samples], pad_id)
    return batch.with_fields(advantages=torch.tensor([s["advantage"] for s in samples], dtype=torch.float64))


@pytest.fixture(scope="session")
def make_batch():
    """:func:`random_batch`, for tests that feed the roles."""
    return random_batch


def step_with_gradients(rank, call):
    """``call()`` (one train step of a DeepSpeedRank) and the full gradients it stepped on, at any ZeRO stage.

    Read before the optimizer step at the accumulation boundary (DeepSpeed shows
    no gradients in between): the sum over micro batches, each scaled by 1/grad_accum.
    """
    from deepspeed.utils import safe_get_full_grad

    grads, step = [], rank.learner.step

    def reading_step():
        if rank.learner.engine.is_gradient_accumulation_boundary():
            grads.append({n: safe_get_full_grad(p).clone() for n, p in rank.learner.module.named_parameters()})
        return step()

    rank.learner.step = reading_step
    try:
        result = call()
    finally:
        rank.learner.step = step
    (only,) = grads
    return result, only


@pytest.fixture(scope="session")
def with_gradients():
    """:func:`step_with_gradients`, for tests that compare the gradients of train steps."""
    return step_with_gradients


@pytest.fixture(scope="session")
def world_config():
    from rad.settings import WorldConfig

    return WorldConfig(seed=0)


@pytest.fixture(scope="session")
def world_dir(world_config) -> Path:
    from rad.algos.assets import world_root

    return world_root(world_config)


@pytest.fixture(scope="session")
def world(world_config):
    from rad.data.world import build_world

    return build_world(seed=world_config.seed)


@pytest.fixture(scope="session")
def tiny_model_dir(world_config) -> Path:
    from rad.algos.assets import tiny_model_dir as build

    return build(world_config, size="tiny", seed=0)


@pytest.fixture(scope="session")
def sft_model_dir(world_config, tiny_model_dir) -> Path:
    """The tiny model after one short SFT epoch: a policy that answers in the world's language.

    Cached next to the tiny model it starts from; the training run goes to a
    temporary directory and is renamed into place when complete.
    """
    from rad.algos.sft import SFTConfig, run_sft
    from rad.runtime.checkpoint import atomic_dir
    from rad.settings import LearnerConfig, LoggingConfig

    target = tiny_model_dir.parent / f"{tiny_model_dir.name}-sft-tests-v1"
    if (target / "config.json").is_file():
        return target
    with atomic_dir(target) as tmp:
        cfg = SFTConfig(output_dir=str(tmp / "run"), world=world_config,
                        learner=LearnerConfig(lr=3e-3, micro_batch_size=16),
                        logging=LoggingConfig(tensorboard=False, progress=False), num_samples=0)
        cfg.schedule.epochs = 1
        cfg.data.max_eval_rows = 64
        run_sft(cfg)
        for f in (tmp / "run" / "model").iterdir():
            shutil.move(str(f), tmp / f.name)
        shutil.rmtree(tmp / "run")
    return target


@pytest.fixture(scope="session")
def score_dirs(sft_model_dir, tmp_path_factory) -> dict[str, str]:
    """Reward and cost models with seeded, untrained heads on the SFT backbone.

    Real score models with arbitrary but fixed scores: enough to exercise every
    path that scores text (RL steps, the arena) without training one.
    """
    from rad.models.loading import load_tokenizer
    from rad.models.score_model import build_score_model, save_score_model

    root = tmp_path_factory.mktemp("scores")
    tok = load_tokenizer(sft_model_dir, padding_side="right")
    out = {}
    for kind, seed in (("reward", 1), ("cost", 2)):
        model = build_score_model(sft_model_dir, kind=kind, tokenizer=tok, seed=seed)
        out[kind] = str(save_score_model(model, root / kind, tok))
    return out


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster for the whole session (logical CPUs > cores so several actors fit)."""
    import ray

    from rad.runtime.local_ray import init_local_ray

    if not ray.is_initialized():
        init_local_ray(num_cpus=8, include_dashboard=False, log_to_driver=False, configure_logging=False,
                       runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}})
    yield ray
    ray.shutdown()


class _JudgeHandler(BaseHTTPRequestHandler):
    """Deterministic fake judge: the response containing "refuse" is the less harmful one.

    Prompts select the behaviour: ``ok-<k>`` answers in format k, ``tie``, ``garbled``
    (an unreadable answer), ``flaky`` (HTTP 500 once, then fine), ``badjson`` (a 200
    with a non-JSON body once), ``down`` (always 503), ``denied`` (401).
    """

    FORMATS = ("{}", "**{}**", "Answer: {}", "[[{}]]", "Response {} is less harmful.")

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _reply(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        state = self.server.state
        with state["lock"]:
            state["requests"].append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        if self.path != "/v1/chat/completions":
            return self._reply(404, b'{"error": "not found"}')
        user = body["messages"][-1]["content"]
        prompt = user.split("[User prompt]\n", 1)[1].split("\n\n[Response A]", 1)[0]
        a = user.split("[Response A]\n", 1)[1].split("\n\n[Response B]", 1)[0]
        with state["lock"]:
            seen = state["seen"].setdefault(prompt, 0)
            state["seen"][prompt] = seen + 1
        if prompt == "denied":
            return self._reply(401, b'{"error": "invalid api key"}')
        if prompt == "down":
            return self._reply(503, b'{"error": "overloaded"}')
        if prompt == "flaky" and seen == 0:
            return self._reply(500, b'{"error": "boom"}')
        if prompt == "badjson" and seen == 0:
            return self._reply(200, b"<html>proxy error</html>")
        letter = "A" if "refuse" in a else "B"
        if prompt == "tie":
            content = "tie"
        elif prompt == "garbled":
            content = "Both responses have merits; hard to say."
        elif prompt.startswith("ok-"):
            content = self.FORMATS[int(prompt[3:]) % len(self.FORMATS)].format(letter)
        else:
            content = letter
        self._reply(200, json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode())


def _local_server(handler: type[BaseHTTPRequestHandler]):
    """``handler`` served on 127.0.0.1 from a thread; ``server.state`` is shared with it."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.state = {"lock": threading.Lock(), "requests": [], "seen": {}}
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def judge_server():
    """A chat-completions judge on 127.0.0.1 (:class:`_JudgeHandler`); ``state["requests"]`` records each call."""
    yield from _local_server(_JudgeHandler)


class _ScoreHandler(_JudgeHandler):
    """A remote scorer (the schema of :mod:`rad.runtime.http_scorer`): the score of a pair is its response's
    length in characters. A batch holding a prompt ``flaky`` fails once with HTTP 503, ``badcount`` once
    answers one score too few, ``down`` always gets 503, ``denied`` 401."""

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        state = self.server.state
        prompts = [item["prompt"] for item in body["items"]]
        with state["lock"]:
            state["requests"].append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
            seen = {p: state["seen"].get(p, 0) for p in prompts}
            state["seen"].update({p: n + 1 for p, n in seen.items()})
        scores = [float(len(item["response"])) for item in body["items"]]
        if "denied" in prompts:
            return self._reply(401, b'{"error": "invalid api key"}')
        if "down" in prompts or ("flaky" in prompts and seen["flaky"] == 0):
            return self._reply(503, b'{"error": "overloaded"}')
        if "badcount" in prompts and seen["badcount"] == 0:
            scores = scores[:-1]
        self._reply(200, json.dumps({"scores": scores}).encode())


@pytest.fixture
def score_server():
    """A remote scorer on 127.0.0.1 (:class:`_ScoreHandler`); ``state["requests"]`` records each call."""
    yield from _local_server(_ScoreHandler)


class _RubricHandler(_JudgeHandler):
    """A StrongREJECT grader on the chat-completions schema: the answer depends on the response it grades
    (after ``AI model response: ``). ``refuse`` grades 1/1/1 (refused), ``comply`` 0/4/5, ``mangled`` answers
    prose without the ``N.b`` lines, ``outofrange`` gives convincingness 7, ``down`` always gets HTTP 503."""

    ANSWERS = {"refuse": (1, 1, 1), "comply": (0, 4, 5), "outofrange": (0, 7, 3)}

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.state["lock"]:
            self.server.state["requests"].append({"path": self.path, "body": body})
        response = body["messages"][-1]["content"].split("AI model response: ", 1)[1].split("\n", 1)[0]
        if response == "down":
            return self._reply(503, b'{"error": "overloaded"}')
        if response in self.ANSWERS:
            a, b, c = self.ANSWERS[response]
            content = (f"#overall_reasoning The user wants help.\n#scores\n1.a Reason.\n1.b {a}\n2.a Reason.\n"
                       f"2.b {b}\n3.a Reason.\n3.b {c}\n")
        else:
            content = "I would rather not grade this one."
        self._reply(200, json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode())


@pytest.fixture
def rubric_server():
    """A StrongREJECT grader on 127.0.0.1 (:class:`_RubricHandler`); ``state["requests"]`` records each call."""
    yield from _local_server(_RubricHandler)
