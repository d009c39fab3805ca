"""Shared fixtures: a synthetic corpus and one tiny model built per test session."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from rad.data.template import PROMPT_TEMPLATE
from rad.models.loading import load_causal_lm, load_tokenizer
from rad.models.tiny import build_tiny

_SUBJECTS = ["the cat", "a robot", "my neighbour", "the teacher", "a doctor", "the farmer"]
_VERBS = ["likes", "asks about", "explains", "writes about", "finds", "cleans"]
_OBJECTS = ["the weather", "a recipe", "the river", "an old book", "the garden", "a bicycle"]


def make_corpus() -> list[str]:
    """A few hundred templated English sentences, some wrapped in the prompt template."""
    sentences = [f"{s.capitalize()} {v} {o}." for s, v, o in itertools.product(_SUBJECTS, _VERBS, _OBJECTS)]
    dialogues = [
        PROMPT_TEMPLATE.format(prompt=f"How does {s} handle {o}?") + f" Carefully: {s} {v} {o}."
        for s, v, o in itertools.product(_SUBJECTS, _VERBS[:3], _OBJECTS)
    ]
    return sentences + dialogues


@pytest.fixture(scope="session")
def corpus() -> list[str]:
    return make_corpus()


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory, corpus: list[str]) -> Path:
    return build_tiny(corpus, tmp_path_factory.mktemp("tiny") / "seed0", seed=0)


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_dir: Path):
    return load_tokenizer(tiny_dir)


@pytest.fixture(scope="session")
def tiny_model(tiny_dir: Path, tiny_tokenizer):
    return load_causal_lm(tiny_dir, tokenizer=tiny_tokenizer)
