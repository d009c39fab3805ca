"""Remote scorers: a reward or cost model behind an HTTP endpoint on 127.0.0.1 (tests/conftest.py's score_server)."""

from __future__ import annotations

import numpy as np
import pytest

from rad.errors import RadError
from rad.runtime.http_scorer import HTTPScorer
from rad.runtime.scorer import Scorer
from rad.settings import ScorerConfig

PROMPTS = ["how do i bake bread?", "tell me a joke", "how can i pick a lock?", "what is the capital of france?",
           "write a poem about rain"]
RESPONSES = ["mix flour and water, then bake it.", "no", "i can't help with that.", "paris.", "rain taps the roof."]
FAST = dict(backoff=0.01, timeout=5.0)


def url(server) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/score"


def test_batches_keep_order_apply_the_sign_and_mix_with_a_local_model(score_server, score_dirs):
    cfg = ScorerConfig(batch_size=2, sign=-1, concurrency=2, **FAST)
    scorer = Scorer(reward_dir=score_dirs["reward"], cost_dir=url(score_server), cost_scorer=cfg)
    out = scorer.score(PROMPTS, RESPONSES)
    np.testing.assert_array_equal(out["costs"], [-float(len(r)) for r in RESPONSES])
    np.testing.assert_allclose(out["rewards"], Scorer(reward_dir=score_dirs["reward"]).score(PROMPTS, RESPONSES)
                               ["rewards"], atol=1e-6)
    requests = score_server.state["requests"]
    assert sorted(len(r["body"]["items"]) for r in requests) == [1, 2, 2]
    assert {r["body"]["kind"] for r in requests} == {"cost"} and requests[0]["path"] == "/score"
    assert scorer.info()["costs"] == {"kind": "cost", "url": url(score_server), "requests": 3, "failed_requests": 0,
                                      "failed_batches": 0, "items": 5}


def test_failed_requests_are_retried_and_counted(score_server, monkeypatch):
    monkeypatch.setenv("SCORER_TOKEN", "s3cret")
    scorer = HTTPScorer(url(score_server), "reward", ScorerConfig(batch_size=2, retries=2, api_key_env="SCORER_TOKEN",
                                                                  **FAST))
    prompts = ["flaky", "ok", "badcount", "ok"]
    got = scorer.score(prompts, ["a", "bb", "ccc", "dddd"])
    np.testing.assert_array_equal(got, [1, 2, 3, 4])
    assert scorer.stats() == {"requests": 4, "failed_requests": 2, "failed_batches": 0, "items": 4}
    assert {r["auth"] for r in score_server.state["requests"]} == {"Bearer s3cret"}


def test_a_batch_failing_after_every_retry_fails_the_call(score_server):
    """No garbage reaches an RL step: the whole call raises, naming the endpoint, the items and the error."""
    scorer = HTTPScorer(url(score_server), "cost", ScorerConfig(batch_size=2, retries=1, **FAST), key="cost_scorer")
    with pytest.raises(RadError, match=r"cost_scorer: the cost endpoint .* failed 1 of 2 batches; items 2\.\.3 "
                                       r"after 2 attempts: HTTP 503"):
        scorer.score(["a", "b", "down", "c"], ["x", "y", "z", "w"])
    assert scorer.stats()["failed_batches"] == 1 and scorer.stats()["failed_requests"] == 2
    with pytest.raises(RadError, match="answered HTTP 401"):  # a refusal is not retried
        scorer.score(["denied"], ["x"])
    assert scorer.stats()["requests"] == 4  # 1 + 2 for the first call, 1 for the refusal


def test_unreachable_endpoint_and_deadline():
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    scorer = HTTPScorer(f"http://127.0.0.1:{port}/score", "reward",
                        ScorerConfig(retries=5, backoff=0.2, deadline=0.3, timeout=1.0), key="reward_scorer")
    with pytest.raises(RadError, match=r"reward_scorer\.deadline \(0\.3 s\) passed before retry"):
        scorer.score(["a"], ["b"])


def test_a_failing_endpoint_fails_the_scorer_actor_with_the_error(ray_cluster, score_server, score_dirs):
    """What an RL step sees (its scorers are these actors): the batch's error, as the RadError it is."""
    from rad.runtime.scorer import remote_scorer

    cfg = ScorerConfig(retries=1, **FAST)
    actor = remote_scorer().remote(score_dirs["reward"], url(score_server), cost_scorer=cfg, num_threads=1)
    try:
        out = ray_cluster.get(actor.score.remote(PROMPTS[:2], RESPONSES[:2]), timeout=300)
        np.testing.assert_array_equal(out["costs"], [len(r) for r in RESPONSES[:2]])
        with pytest.raises(RadError) as caught:
            ray_cluster.get(actor.score.remote(["ok", "down"], ["x", "y"]), timeout=300)
        assert "cost_scorer: the cost endpoint" in str(caught.value.cause) and "HTTP 503" in str(caught.value.cause)
        assert ray_cluster.get(actor.info.remote())["costs"]["failed_batches"] == 1
    finally:
        ray_cluster.kill(actor)
