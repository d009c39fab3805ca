"""The batched scorer: equality with direct scoring, re-tokenization, bad input, Ray actor."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rad.errors import ConfigError, DataError
from rad.models.loading import load_tokenizer
from rad.models.score_model import build_score_model, encode_for_scoring, load_score_model, pad_right, save_score_model
from rad.runtime.scorer import Scorer, remote_scorer

PROMPTS = ["how do i bake bread?", "tell me a joke", "how can i pick a lock?", "what is the capital of france?",
           "write a poem about rain"]
RESPONSES = ["mix flour and water, then bake it for forty minutes.", "no", "i can't help with that.",
             "paris.", "rain taps the roof; the garden drinks and sleeps."]


@pytest.fixture(scope="module")
def policy_tokenizer(tiny_model_dir):
    return load_tokenizer(tiny_model_dir)


@pytest.fixture(scope="module")
def reward_dir(tiny_model_dir, policy_tokenizer, tmp_path_factory):
    model = build_score_model(tiny_model_dir, kind="reward", tokenizer=policy_tokenizer, seed=11)
    return save_score_model(model, tmp_path_factory.mktemp("scorer") / "reward", policy_tokenizer)


@pytest.fixture(scope="module")
def other_cost_dir(world, tmp_path_factory):
    """A cost model whose backbone and tokenizer differ from the policy's (512-token vocabulary)."""
    from rad.models.tiny import SIZES, build_model, train_tokenizer

    tokenizer = train_tokenizer(world.corpus_texts(), vocab_size=512)
    root = tmp_path_factory.mktemp("scorer")
    build_model(tokenizer, SIZES["tiny"], seed=5).save_pretrained(root / "backbone")
    tokenizer.save_pretrained(root / "backbone")
    model = build_score_model(root / "backbone", kind="cost", tokenizer=tokenizer, seed=12)
    return save_score_model(model, root / "cost", tokenizer)


def direct_scores(path, prompts, responses, max_length=512) -> np.ndarray:
    """Score each pair on its own with the model's own tokenizer: no batching, no sorting."""
    model = load_score_model(path)
    tokenizer = load_tokenizer(path)
    with torch.no_grad():
        return np.array([model(**pad_right([encode_for_scoring(tokenizer, p, r, max_length)],
                                           tokenizer.pad_token_id)).item() for p, r in zip(prompts, responses)])


def test_scores_match_direct_scoring_and_ignore_order(reward_dir, other_cost_dir):
    scorer = Scorer(reward_dir, other_cost_dir, batch_size=2)
    out = scorer.score(PROMPTS, RESPONSES)
    assert set(out) == {"rewards", "costs"} and out["rewards"].dtype == np.float32
    np.testing.assert_allclose(out["rewards"], direct_scores(reward_dir, PROMPTS, RESPONSES), atol=1e-5)
    np.testing.assert_allclose(out["costs"], direct_scores(other_cost_dir, PROMPTS, RESPONSES), atol=1e-5)
    perm = [3, 0, 4, 2, 1]
    shuffled = scorer.score([PROMPTS[i] for i in perm], [RESPONSES[i] for i in perm])
    np.testing.assert_allclose(shuffled["costs"], out["costs"][perm], atol=1e-5)
    assert scorer.score([], [])["rewards"].shape == (0,)


def test_retokenizes_policy_text_with_the_scorers_tokenizer(policy_tokenizer, other_cost_dir):
    scorer_tokenizer = load_tokenizer(other_cost_dir)
    assert len(scorer_tokenizer) != len(policy_tokenizer)
    # What a rollout hands over: policy token ids decoded to text.
    policy_ids = [policy_tokenizer(" " + r, add_special_tokens=False)["input_ids"] for r in RESPONSES]
    texts = policy_tokenizer.batch_decode(policy_ids, skip_special_tokens=True)
    scorer_ids = [scorer_tokenizer(" " + t.strip(), add_special_tokens=False)["input_ids"] for t in texts]
    assert any(a != b for a, b in zip(policy_ids, scorer_ids))  # the token ids really differ
    costs = Scorer(cost_dir=other_cost_dir, batch_size=4).score(PROMPTS, texts)["costs"]
    np.testing.assert_allclose(costs, direct_scores(other_cost_dir, PROMPTS, texts), atol=1e-5)
    assert "rewards" not in Scorer(cost_dir=other_cost_dir).score(PROMPTS[:1], texts[:1])


def test_bad_input_raises_a_clear_error(reward_dir, other_cost_dir):
    scorer = Scorer(reward_dir, batch_size=4)
    with pytest.raises(DataError, match="item 2: the response is empty"):
        scorer.score(PROMPTS[:3], ["fine", "ok", "   "])
    with pytest.raises(DataError, match="3 prompts but 2 responses"):
        scorer.score(PROMPTS[:3], RESPONSES[:2])
    with pytest.raises(DataError, match="item 0: prompt and response must be strings"):
        scorer.score([None], ["x"])
    with pytest.raises(ConfigError, match="holds a cost model"):
        Scorer(reward_dir=other_cost_dir)


def test_empty_responses_can_be_scored_as_the_placeholder(reward_dir):
    # RL policies emit empty answers; the RL scorer scores them as EMPTY_RESPONSE instead of failing.
    from rad.runtime.scorer import EMPTY_RESPONSE

    strict = Scorer(reward_dir, batch_size=4)
    lenient = Scorer(reward_dir, batch_size=4, empty_response="placeholder")
    got = lenient.score(PROMPTS[:2], ["", "ok"])["rewards"]
    want = strict.score(PROMPTS[:2], [EMPTY_RESPONSE, "ok"])["rewards"]
    assert got.tolist() == want.tolist()
    with pytest.raises(ConfigError, match="empty_response must be"):
        Scorer(reward_dir, empty_response="skip")


def test_over_long_pairs_are_truncated_or_rejected(reward_dir):
    prompt = "please explain in detail " * 30
    scores = Scorer(reward_dir, max_length=24).score([prompt, "hi"], ["water them every day", "hello"])["rewards"]
    assert np.isfinite(scores).all()
    np.testing.assert_allclose(scores, direct_scores(reward_dir, [prompt, "hi"], ["water them every day", "hello"],
                                                     max_length=24), atol=1e-5)
    with pytest.raises(DataError, match=r"item 0: .*over max_length=24"):
        Scorer(reward_dir, max_length=24, truncate=False).score([prompt], ["water them every day"])


def test_stored_normalisation_is_applied(tiny_model_dir, policy_tokenizer, tmp_path):
    model = build_score_model(tiny_model_dir, kind="cost", tokenizer=policy_tokenizer, normalize="scale", seed=4)
    model.score_config.std = 4.0
    path = save_score_model(model, tmp_path / "scaled", policy_tokenizer)
    raw = Scorer(cost_dir=path, normalize=False).score(PROMPTS, RESPONSES)["costs"]
    scaled = Scorer(cost_dir=path).score(PROMPTS, RESPONSES)["costs"]
    np.testing.assert_allclose(scaled, raw / 4.0, rtol=1e-6)


def test_ray_actor_returns_the_in_process_scores(ray_cluster, reward_dir, other_cost_dir):
    local = Scorer(reward_dir, other_cost_dir, batch_size=3).score(PROMPTS, RESPONSES)
    actor = remote_scorer().remote(str(reward_dir), str(other_cost_dir), batch_size=3, num_threads=1)
    remote = ray_cluster.get(actor.score.remote(PROMPTS, RESPONSES), timeout=300)
    for key in ("rewards", "costs"):
        np.testing.assert_allclose(remote[key], local[key], atol=1e-5)
    ray_cluster.kill(actor)
