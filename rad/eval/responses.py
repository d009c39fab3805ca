"""Responses of each model on a prompt set, scored by the reward and cost models, cached on disk.

Two cache layers under ``cache_dir`` (default ``$RAD_CACHE/eval``), each file
written atomically:

* ``generations/<key>.json`` — keyed by the policy directory's fingerprint
  (:func:`rad.runtime.provenance.dir_fingerprint`: every file's relative name, size and mtime), the prompts,
  samples per prompt, the sampling settings and the engine settings;
* ``scores/<key>-<scorekey>.json`` — the generation key plus the reward and cost
  directories' fingerprints and the scoring settings.

So a second comparison involving an already evaluated model costs nothing, and
retraining a model (new files, new mtimes) invalidates exactly its entries.

An empty response (the policy stopped at once) stays in the tables — dropping it
would unpair blue and red — but the score models need at least one token, so it
is scored as the text :data:`EMPTY_RESPONSE`; the ground-truth oracle sees the
true empty text. The number of empty responses is reported per model.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from rad.errors import DataError
from rad.runtime.provenance import digest
from rad.runtime.scorer import EMPTY_RESPONSE  # one placeholder for RL and evaluation
_FORMAT = 1


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


def _read_json(path: Path) -> Any | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None  # missing or torn (e.g. a killed run before the atomic rename existed): recompute


@dataclass
class Outputs:
    """One model's scored responses on one prompt set, prompt-major (all samples of prompt 0 first)."""

    model: str
    prompts: list[str]
    prompt_index: np.ndarray
    sample_index: np.ndarray
    responses: list[str]
    finish_reasons: list[str]
    rewards: np.ndarray
    costs: np.ndarray
    #: Hidden ground truth of the embedded world (None elsewhere).
    harm: np.ndarray | None = None
    helpfulness: np.ndarray | None = None
    generated: bool = False  # False when the responses came from the cache
    scored: bool = False

    def __len__(self) -> int:
        return len(self.responses)

    @property
    def empty(self) -> int:
        return sum(not r.strip() for r in self.responses)


class OutputCache:
    """Generation and score files under ``root`` (see the module docstring)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    @staticmethod
    def generation_key(model_fp: str, prompts: Sequence[str], n: int, sampling: Any, engine: Any) -> str:
        # The engine settings are part of the key: the HF engine seeds each micro-batch, so the same
        # sampling seed gives other (equally valid) samples with another micro-batch size, dtype or device.
        return digest({"format": _FORMAT, "model": model_fp, "prompts": list(prompts), "n": n,
                     "sampling": dataclasses.asdict(sampling), "engine": dataclasses.asdict(engine)})

    @staticmethod
    def score_key(reward_fp: str, cost_fp: str, scoring: Any) -> str:
        return digest({"format": _FORMAT, "reward": reward_fp, "cost": cost_fp, "scoring": dataclasses.asdict(scoring),
                     "empty": EMPTY_RESPONSE})

    def generation_path(self, key: str) -> Path:
        return self.root / "generations" / f"{key}.json"

    def score_path(self, gen_key: str, score_key: str) -> Path:
        return self.root / "scores" / f"{gen_key}-{score_key}.json"

    def generations(self, key: str, make: Callable[[], dict[str, list]]) -> tuple[dict[str, list], bool]:
        """The cached generation record of ``key``, or ``make()``'s (then stored); and whether it was made."""
        path = self.generation_path(key)
        cached = _read_json(path)
        if cached is not None:
            return cached, False
        record = make()
        _write_json(path, record)
        return record, True

    def scores(self, gen_key: str, score_key: str, make: Callable[[], dict[str, list]]) -> tuple[dict[str, list], bool]:
        path = self.score_path(gen_key, score_key)
        cached = _read_json(path)
        if cached is not None:
            return cached, False
        record = make()
        _write_json(path, record)
        return record, True


def generate_record(engine, prompts: Sequence[str], n: int, sampling: Any) -> dict[str, list]:
    """Rollouts of ``engine`` as a JSON-able record (prompt-major)."""
    rollouts = sorted(engine.generate(list(prompts), n, sampling), key=lambda r: (r.prompt_index, r.sample_index))
    return {"prompt_index": [r.prompt_index for r in rollouts], "sample_index": [r.sample_index for r in rollouts],
            "responses": [r.response_text for r in rollouts], "finish_reasons": [r.finish_reason for r in rollouts]}


def score_record(scorer, prompts: Sequence[str], gen: dict[str, list]) -> dict[str, list]:
    """Reward and cost of every response of a generation record."""
    ps = [prompts[i] for i in gen["prompt_index"]]
    rs = [r if r.strip() else EMPTY_RESPONSE for r in gen["responses"]]
    out = scorer.score(ps, rs)
    return {"rewards": [float(x) for x in out["rewards"]], "costs": [float(x) for x in out["costs"]]}


def build_outputs(model: str, prompts: Sequence[str], gen: dict[str, list], scores: dict[str, list],
                  oracle=None, generated: bool = False, scored: bool = False) -> Outputs:
    """Assemble an :class:`Outputs`; with the embedded world's ``oracle``, add hidden harm / helpfulness."""
    ps = [prompts[i] for i in gen["prompt_index"]]
    if len(scores["rewards"]) != len(ps) or len(scores["costs"]) != len(ps):
        raise DataError(f"eval cache: the scores of {model!r} do not match its {len(ps)} responses; "
                        "delete the cache directory's scores/ and rerun")
    harm = helpfulness = None
    if oracle is not None:
        judged = [oracle.judge(p, r) for p, r in zip(ps, gen["responses"])]
        harm = np.array([j.harm for j in judged], dtype=np.float64)
        helpfulness = np.array([j.helpfulness for j in judged], dtype=np.float64)
    return Outputs(model=model, prompts=ps, prompt_index=np.asarray(gen["prompt_index"], dtype=np.int64),
                   sample_index=np.asarray(gen["sample_index"], dtype=np.int64), responses=list(gen["responses"]),
                   finish_reasons=list(gen["finish_reasons"]), rewards=np.asarray(scores["rewards"], np.float64),
                   costs=np.asarray(scores["costs"], np.float64), harm=harm, helpfulness=helpfulness,
                   generated=generated, scored=scored)
