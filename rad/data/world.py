"""The embedded world: a deterministic, self-contained safety-preference world.

`build_world(seed)` writes, in seconds and with no download, a small but
realistic stand-in for PKU-SafeRLHF + Alpaca + HarmBench, in their real schemas:

- ``prompts-train`` / ``prompts-test``: benign prompts over 8 topics and harmful
  prompts over 6 harm categories, from templates with slot fillers (672 distinct
  prompts), split per category into train and held-out test prompts;
- ``pref-train`` / ``pref-test``: PKU-SafeRLHF preference rows on those prompts;
- ``sft-train`` / ``sft-test``: demonstrations of a reference behaviour with a
  harmful tail (mostly refusals/redirections on harmful prompts, but
  `REFERENCE_MIX` gives ~15 % harmful compliance, some of it severe);
- ``redteam``: an out-of-distribution red-team set in the HarmBench CSV schema
  (jailbreak-style wrappers, held-out goals and two unseen categories).

``harm_profile`` picks how harm is distributed (`HARM_PROFILES`):

- ``binary`` (default): harmful compliance of severity 1-3 whose harm grows about
  linearly, so the mean and the tail of harm move together;
- ``heavy_tail``: a world where they disagree. On harmful prompts the answers are
  refusals, redirections, *mild* compliance (one severity-1 step, harm ~0.7;
  25 % of the reference's answers, against 8 % severity-1 ones in binary) and *severe* compliance (two
  severity-3 steps and an escalation: the oracle's catastrophic harm, ~15; 10 % of
  the reference's answers, 5 % of the preference responses). The severe answer is
  the most helpful one to the user, so the reward model favours it, while the
  ordinal preference labels only say it is less safe than a mild one, so a cost
  model learns a gap far smaller than the oracle's. A policy can meet an
  expected-cost budget by turning many mild answers into refusals while a few
  more answers turn severe: the learned mean cost goes down, the hidden tail gets
  fatter. (World version 1 had 12 % mild and 1 % severe answers, version 2 5 %
  severe; the tiny SFT model reproduced neither severe share at all, 0 of 2240
  held-out samples, so version 3 makes both kinds of compliance common enough to
  be learned. The reference's hidden mean harm is therefore higher than binary's.)
  Prompts, red-team set and vocabulary are those of ``binary``.

Responses are composed from the fragments of `rad.data.world_lexicon`, from
helpful answers through refusals and safe redirections to harmful compliance of
severity 1-3. Ground truth comes from `WorldOracle`, which scores any text, so
responses generated later by a trained policy are scored the same way. Labels
are the oracle's verdicts with independent label noise (rate `label_noise` per
label), so some rows contradict themselves as in the real data; the hidden
truth is kept in extra columns (``harm_0, harm_1, help_0, help_1, category,
prompt_harmful, behaviour_0, behaviour_1``).

Randomness: every split draws from its own `random.Random` seeded with a string
derived from the world seed (string seeds hash with SHA-512, so results do not
depend on the process or PYTHONHASHSEED); there is no global state.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import random
import re
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from rad.data import world_lexicon as lex
from rad.data.filters import skip_reason
from rad.data.template import format_prompt
from rad.data.world_oracle import (
    DEFAULT_HARM_PROFILE,
    HARM_PROFILES,
    SAFE_THRESHOLD,
    Judgement,
    WorldOracle,
    severity_level,
)

__all__ = [
    "World",
    "WorldOracle",
    "build_world",
    "materialize_world",
    "SPLITS",
    "SPLIT_KINDS",
    "WORLD_VERSION",
    "SAFE_THRESHOLD",
    "HARM_PROFILES",
    "DEFAULT_HARM_PROFILE",
]

# Bump the leading number when the generator logic changes; the lexicon part
# changes by itself when any fragment does. Part of the cache key.
WORLD_VERSION = f"3-{lex.fingerprint()}"  # 3: heavy_tail's reference mix has 25 % mild, 10 % severe answers

SPLIT_KINDS: dict[str, str] = {
    "pref-train": "preference",
    "pref-test": "preference",
    "sft-train": "sft",
    "sft-test": "sft",
    "prompts-train": "prompt",
    "prompts-test": "prompt",
    "redteam": "redteam",
}
SPLITS: tuple[str, ...] = tuple(SPLIT_KINDS)
FILE_NAMES: dict[str, str] = {s: (f"{s}.csv" if s == "redteam" else f"{s}.jsonl") for s in SPLITS}

# Rows at scale 1.0.
BASE_ROWS = {"pref-train": 4000, "pref-test": 1000, "sft-train": 3000, "sft-test": 600}
TEST_FRACTION = 0.2
DEFAULT_LABEL_NOISE = 0.05
HARMFUL_FRACTION = 0.5

HARMFUL_BEHAVIOURS = ("refuse", "redirect", "comply1", "comply2", "comply3")
BENIGN_BEHAVIOURS = ("helpful", "brief", "vague", "offtopic", "careless", "overrefuse")

# Behaviour mixes. Preference pairs cover the whole range so reward and cost
# models see every kind of answer; the reference (SFT) behaviour is mostly safe
# but keeps a harmful tail that risk-aware training should cut.
PREFERENCE_MIX = {
    "harmful": {"refuse": 0.2, "redirect": 0.25, "comply1": 0.2, "comply2": 0.2, "comply3": 0.15},
    "benign": {"helpful": 0.35, "brief": 0.2, "vague": 0.12, "offtopic": 0.08, "careless": 0.12, "overrefuse": 0.13},
}
REFERENCE_MIX = {
    "harmful": {"refuse": 0.40, "redirect": 0.45, "comply1": 0.08, "comply2": 0.05, "comply3": 0.02},
    "benign": {"helpful": 0.65, "brief": 0.2, "vague": 0.05, "offtopic": 0.0, "careless": 0.05, "overrefuse": 0.05},
}

# heavy_tail (see the module docstring): mild and severe compliance replace severities 1-3.
HEAVY_TAIL_PREFERENCE_MIX = {
    "harmful": {"refuse": 0.2, "redirect": 0.25, "mild": 0.5, "severe": 0.05},
    "benign": PREFERENCE_MIX["benign"],
}
HEAVY_TAIL_REFERENCE_MIX = {
    "harmful": {"refuse": 0.30, "redirect": 0.35, "mild": 0.25, "severe": 0.10},
    "benign": REFERENCE_MIX["benign"],
}
#: (preference mix, reference mix) of each harm profile.
PROFILE_MIXES = {
    "binary": (PREFERENCE_MIX, REFERENCE_MIX),
    "heavy_tail": (HEAVY_TAIL_PREFERENCE_MIX, HEAVY_TAIL_REFERENCE_MIX),
}
assert set(PROFILE_MIXES) == set(HARM_PROFILES)

_PRONOUNS = {"my": "your", "myself": "yourself", "me": "you", "i": "you", "mine": "yours"}


@dataclass(frozen=True)
class Prompt:
    """A generated prompt with its true category and the action it asks about."""

    text: str
    category: str
    harmful: bool
    act: str


def _echo(act: str) -> str:
    """The user's action as the assistant says it back ("my ex" -> "your ex")."""
    return re.sub(r"\b(my|myself|me|i|mine)\b", lambda m: _PRONOUNS[m.group(1)], act)


def _rng(seed: int, stream: str) -> random.Random:
    return random.Random(f"rad-world:{seed}:{stream}")


def _pick(rng: random.Random, mix: dict[str, float]) -> str:
    names = [k for k, v in mix.items() if v > 0]
    return rng.choices(names, weights=[mix[k] for k in names])[0]


def _sentences(parts: list[str]) -> str:
    return " ".join(p if p.endswith((".", "!", "?")) else p + "." for p in parts)


class _Composer:
    """Renders responses of a named behaviour from the lexicon fragments."""

    def __init__(self) -> None:
        self.topics = {t.name: t for t in lex.TOPICS}
        self.harm = {c.name: c for c in lex.HARM_CATEGORIES}

    def compose(self, rng: random.Random, prompt: Prompt, behaviour: str) -> str:
        act = _echo(prompt.act)
        opener = rng.choice(lex.COMPLY_OPENERS)
        if behaviour in ("refuse", "overrefuse"):
            return rng.choice(lex.REFUSALS).format(act=act)
        if prompt.harmful:
            cat = self.harm[prompt.category]
            if behaviour == "redirect":
                k = rng.choice((1, 2))
                steps = [s.text for s in rng.sample(cat.redirects, min(k, len(cat.redirects)))]
                return _sentences([rng.choice(lex.REDIRECT_OPENERS).format(act=act)] + steps)
            s1, s2, s3 = cat.severe
            if behaviour in ("mild", "severe"):
                return self._heavy_tail(rng, act, opener, behaviour, s1, s3)
            level = int(behaviour[-1])
            if level == 1:
                steps = rng.sample(s1, rng.choice((1, 2)))
            elif level == 2:
                steps = rng.sample(s2, 2) if rng.random() < 0.3 else [rng.choice(s2), rng.choice(s1)]
            else:
                steps = [rng.choice(s3), rng.choice(s2 + s1)]
            lead = f"{opener} {lex.HERE_IS_HOW} {act}."
            if len(steps) == 1:
                parts = [lead, f"just {steps[0].text}"]
            else:
                parts = [lead, f"first {steps[0].text}", f"then {steps[1].text}"]
            if level == 3 and rng.random() < 0.7:
                parts.append(rng.choice(lex.INTENSIFIERS).text)
            return _sentences(parts)
        topic = self.topics[prompt.category]
        if behaviour == "helpful":
            steps = rng.sample(topic.steps, rng.choice((2, 3)))
            parts = [f"{opener} to {act}, first {steps[0].text}", f"then {steps[1].text}"]
            if len(steps) == 3:
                parts.append(f"finally {steps[2].text}")
            return _sentences(parts)
        if behaviour == "brief":
            return _sentences([f"{opener} to {act}, just {rng.choice(topic.steps).text}", rng.choice(lex.VAGUE)])
        if behaviour == "vague":
            return _sentences([opener] + rng.sample(lex.VAGUE, 2))
        if behaviour == "offtopic":
            other = rng.choice([t for t in lex.TOPICS if t.name != topic.name])
            a, b = rng.sample(other.steps, 2)
            return _sentences([f"{opener} first {a.text}", f"then {b.text}"])
        if behaviour == "careless":
            a, b = rng.sample(topic.steps, 2)
            return _sentences([f"{opener} to {act}, first {a.text}", f"then {topic.hazard.text}", f"finally {b.text}"])
        raise ValueError(f"unknown behaviour {behaviour!r}")

    @staticmethod
    def _heavy_tail(rng: random.Random, act: str, opener: str, behaviour: str,
                    s1: tuple[lex.Step, ...], s3: tuple[lex.Step, ...]) -> str:
        """heavy_tail compliance: one severity-1 step (mild), or two severity-3 steps and an escalation (severe)."""
        lead = f"{opener} {lex.HERE_IS_HOW} {act}."
        if behaviour == "mild":
            return _sentences([lead, f"just {rng.choice(s1).text}"])
        a, b = rng.sample(s3, 2)
        return _sentences([lead, f"first {a.text}", f"then {b.text}", rng.choice(lex.INTENSIFIERS).text])


def all_prompts() -> list[Prompt]:
    """Every distinct training-distribution prompt (benign and harmful), in a fixed order."""
    out: list[Prompt] = []
    for topic in lex.TOPICS:
        for obj in topic.objects:
            act = topic.action.format(obj=obj)
            out += [Prompt(t.format(act=act), topic.name, False, act) for t in lex.BENIGN_TEMPLATES]
    for cat in lex.HARM_CATEGORIES:
        for goal in cat.goals:
            out += [Prompt(t.format(act=goal), cat.name, True, goal) for t in lex.HARMFUL_TEMPLATES]
    return out


def split_prompts(seed: int, test_fraction: float = TEST_FRACTION) -> tuple[list[Prompt], list[Prompt]]:
    """Per-category random split of `all_prompts()` into (train, test)."""
    rng = _rng(seed, "prompt-split")
    by_cat: dict[str, list[Prompt]] = {}
    for p in all_prompts():
        by_cat.setdefault(p.category, []).append(p)
    train: list[Prompt] = []
    test: list[Prompt] = []
    for cat in sorted(by_cat):
        items = list(by_cat[cat])
        rng.shuffle(items)
        n_test = max(1, round(test_fraction * len(items)))
        test += items[:n_test]
        train += items[n_test:]
    return train, test


def _flip(rng: random.Random, value: bool, noise: float) -> bool:
    return (not value) if rng.random() < noise else value


def _order(rng: random.Random, a: float, b: float, lower_wins: bool) -> int:
    """Index (0/1) of the winner of a vs b; ties broken at random."""
    if a == b:
        return rng.randrange(2)
    return int((b < a) if lower_wins else (b > a))


def _categories(judgement: Judgement, labelled_safe: bool, names: tuple[str, ...]) -> dict[str, bool]:
    present = set() if labelled_safe else set(judgement.harm_categories)
    return {name: name in present for name in names}


class _Generator:
    """Draws the records of each split."""

    def __init__(self, seed: int, label_noise: float, oracle: WorldOracle) -> None:
        self.preference_mix, self.reference_mix = PROFILE_MIXES[oracle.harm_profile]
        self.seed = seed
        self.noise = label_noise
        self.oracle = oracle
        self.composer = _Composer()

    def _prompt(self, rng: random.Random, harmful: list[Prompt], benign: list[Prompt]) -> Prompt:
        return rng.choice(harmful if rng.random() < HARMFUL_FRACTION else benign)

    def preference(self, stream: str, prompts: list[Prompt], n: int) -> list[dict[str, Any]]:
        rng = _rng(self.seed, stream)
        harmful = [p for p in prompts if p.harmful]
        benign = [p for p in prompts if not p.harmful]
        names = self.oracle.harm_categories
        rows = []
        for _ in range(n):
            p = self._prompt(rng, harmful, benign)
            mix = self.preference_mix["harmful" if p.harmful else "benign"]
            behaviours = [_pick(rng, mix), _pick(rng, mix)]
            responses = [self.composer.compose(rng, p, b) for b in behaviours]
            j = [self.oracle.judge(p.text, r) for r in responses]
            better = _order(rng, j[0].helpfulness, j[1].helpfulness, lower_wins=False)
            safer = _order(rng, j[0].harm, j[1].harm, lower_wins=True)
            better = 1 - better if rng.random() < self.noise else better
            safer = 1 - safer if rng.random() < self.noise else safer
            safe = [_flip(rng, x.is_safe, self.noise) for x in j]
            # Severity and categories follow the (noisy) safety label, as an annotator's would.
            severity = [0 if s else max(1, x.severity) for s, x in zip(safe, j)]
            rows.append(
                {
                    "prompt": p.text,
                    "response_0": responses[0],
                    "response_1": responses[1],
                    "is_response_0_safe": safe[0],
                    "is_response_1_safe": safe[1],
                    "response_0_harm_category": _categories(j[0], safe[0], names),
                    "response_1_harm_category": _categories(j[1], safe[1], names),
                    "response_0_severity_level": severity[0],
                    "response_1_severity_level": severity[1],
                    "better_response_id": better,
                    "safer_response_id": safer,
                    "category": p.category,
                    "prompt_harmful": p.harmful,
                    "behaviour_0": behaviours[0],
                    "behaviour_1": behaviours[1],
                    "harm_0": round(j[0].harm, 4),
                    "harm_1": round(j[1].harm, 4),
                    "help_0": round(j[0].helpfulness, 4),
                    "help_1": round(j[1].helpfulness, 4),
                }
            )
        return rows

    def sft(self, stream: str, prompts: list[Prompt], n: int) -> list[dict[str, Any]]:
        rng = _rng(self.seed, stream)
        harmful = [p for p in prompts if p.harmful]
        benign = [p for p in prompts if not p.harmful]
        rows = []
        for _ in range(n):
            p = self._prompt(rng, harmful, benign)
            behaviour = _pick(rng, self.reference_mix["harmful" if p.harmful else "benign"])
            response = self.composer.compose(rng, p, behaviour)
            j = self.oracle.judge(p.text, response)
            rows.append(
                {
                    "prompt": p.text,
                    "response": response,
                    "category": p.category,
                    "prompt_harmful": p.harmful,
                    "behaviour": behaviour,
                    "harm": round(j.harm, 4),
                    "help": round(j.helpfulness, 4),
                }
            )
        return rows

    def redteam(self) -> list[dict[str, Any]]:
        rows = []
        for cat in lex.HARM_CATEGORIES:
            for goal in cat.extra_goals:
                for template, tag in lex.REDTEAM_TEMPLATES:
                    rows.append(
                        {
                            "Behavior": template.format(act=goal),
                            "FunctionalCategory": "standard",
                            "SemanticCategory": cat.name,
                            "Tags": tag + ("" if cat.train else ",unseen_category"),
                            "ContextString": "",
                            "BehaviorID": f"world_redteam_{len(rows):04d}",
                        }
                    )
        return rows


def _prompt_rows(prompts: list[Prompt]) -> list[dict[str, Any]]:
    return [{"prompt": p.text, "category": p.category, "prompt_harmful": p.harmful} for p in prompts]


def _jsonl(records: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()


def _csv(records: list[dict[str, Any]]) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(records[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return buf.getvalue().encode()


@dataclass
class World:
    """The generated records of every split, the oracle that scores them, and metadata."""

    seed: int
    scale: float
    label_noise: float
    splits: dict[str, list[dict[str, Any]]]
    oracle: WorldOracle = field(repr=False)
    version: str = WORLD_VERSION

    @property
    def harm_profile(self) -> str:
        return self.oracle.harm_profile

    def corpus_texts(self) -> Iterator[str]:
        """Every prompt (in the conversation template, red-team included) and every response.

        The text a tokenizer for this world should be trained on. Distinct
        prompts are yielded once; responses as often as they occur.
        """
        seen: set[str] = set()
        for name in ("prompts-train", "prompts-test"):
            for rec in self.splits[name]:
                seen.add(rec["prompt"])
                yield format_prompt(rec["prompt"])
        for rec in self.splits["redteam"]:
            if rec["Behavior"] not in seen:
                seen.add(rec["Behavior"])
                yield format_prompt(rec["Behavior"])
        for name in ("pref-train", "pref-test"):
            for rec in self.splits[name]:
                yield rec["response_0"]
                yield rec["response_1"]
        for name in ("sft-train", "sft-test"):
            for rec in self.splits[name]:
                yield rec["response"]

    def file_bytes(self) -> dict[str, bytes]:
        """The serialised content of every split file, by file name."""
        return {
            FILE_NAMES[s]: (_csv(recs) if s == "redteam" else _jsonl(recs)) for s, recs in self.splits.items()
        }

    def stats(self) -> dict[str, Any]:
        """Summary statistics (deterministic; no timings)."""
        return world_stats(self.splits)

    def metadata(self, files: dict[str, bytes] | None = None) -> dict[str, Any]:
        """The content of world.json: parameters, files with kinds, sizes, hashes, statistics."""
        files = self.file_bytes() if files is None else files
        # The default profile is not written, so a binary world.json is what it was before profiles
        # existed (absent = binary when read back).
        profile = {} if self.harm_profile == DEFAULT_HARM_PROFILE else {"harm_profile": self.harm_profile}
        return {
            **profile,
            "version": self.version,
            "seed": self.seed,
            "scale": self.scale,
            "label_noise": self.label_noise,
            "safe_threshold": SAFE_THRESHOLD,
            "prompt_template": format_prompt("{prompt}"),
            "files": {
                s: {
                    "path": FILE_NAMES[s],
                    "kind": SPLIT_KINDS[s],
                    "rows": len(self.splits[s]),
                    "sha256": hashlib.sha256(files[FILE_NAMES[s]]).hexdigest(),
                }
                for s in SPLITS
            },
            "stats": self.stats(),
        }

    def write(self, directory: str | Path) -> Path:
        """Write every split in its real schema plus world.json; returns the directory."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        files = self.file_bytes()
        for name, content in files.items():
            (directory / name).write_bytes(content)
        meta = json.dumps(self.metadata(files), indent=2, sort_keys=True) + "\n"
        (directory / "world.json").write_text(meta)
        return directory


def world_stats(splits: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Rows per split, reference harmful tail, severities, label-vs-oracle agreement."""
    stats: dict[str, Any] = {"rows": {s: len(r) for s, r in splits.items()}}
    sft = splits["sft-train"]
    harmful = [r for r in sft if r["prompt_harmful"]]
    benign = [r for r in sft if not r["prompt_harmful"]]
    unsafe = [r for r in harmful if r["harm"] > SAFE_THRESHOLD]
    stats["sft_train"] = {
        "unsafe_fraction_harmful_prompts": round(len(unsafe) / max(1, len(harmful)), 4),
        "unsafe_fraction_benign_prompts": round(
            sum(r["harm"] > SAFE_THRESHOLD for r in benign) / max(1, len(benign)), 4
        ),
        "severity_harmful_prompts": dict(sorted(Counter(severity_level(r["harm"]) for r in harmful).items())),
    }
    pref = splits["pref-train"]
    agree: Counter[str] = Counter()
    strict: Counter[str] = Counter()
    mixed = tension = 0
    for r in pref:
        h, g = (r["harm_0"], r["harm_1"]), (r["help_0"], r["help_1"])
        for i in (0, 1):
            agree["is_safe"] += r[f"is_response_{i}_safe"] == (h[i] <= SAFE_THRESHOLD)
        if g[0] != g[1]:
            strict["better"] += 1
            agree["better"] += r["better_response_id"] == int(g[1] > g[0])
        if h[0] != h[1]:
            strict["safer"] += 1
            agree["safer"] += r["safer_response_id"] == int(h[1] < h[0])
        unsafe = [x > SAFE_THRESHOLD for x in h]
        if unsafe[0] != unsafe[1]:
            # Helpful/harmless tension: how often the unsafe response is the more helpful one.
            mixed += 1
            tension += g[unsafe.index(True)] > g[unsafe.index(False)]
    severities = Counter(
        severity_level(r[f"harm_{i}"]) for r in pref for i in (0, 1) if r[f"harm_{i}"] > SAFE_THRESHOLD
    )
    skipped = Counter(reason for r in pref if (reason := skip_reason(r)) is not None)
    stats["pref_train"] = {
        "label_agreement": {
            "is_safe": round(agree["is_safe"] / max(1, 2 * len(pref)), 4),
            "better": round(agree["better"] / max(1, strict["better"]), 4),
            "safer": round(agree["safer"] / max(1, strict["safer"]), 4),
        },
        "unsafe_response_fraction": round(
            sum(r[f"harm_{i}"] > SAFE_THRESHOLD for r in pref for i in (0, 1)) / max(1, 2 * len(pref)), 4
        ),
        "severity_unsafe_responses": dict(sorted(severities.items())),
        "unsafe_more_helpful_when_one_unsafe": round(tension / max(1, mixed), 4),
        "filter_would_skip": dict(sorted(skipped.items())),
    }
    return stats


def build_world(seed: int = 0, scale: float = 1.0, label_noise: float = DEFAULT_LABEL_NOISE,
                harm_profile: str = DEFAULT_HARM_PROFILE) -> World:
    """Generate the world for `seed`. `scale` multiplies the number of preference/SFT rows."""
    if scale <= 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    if not 0.0 <= label_noise < 0.5:
        raise ValueError(f"label_noise must be in [0, 0.5), got {label_noise}")
    oracle = WorldOracle(harm_profile)
    gen = _Generator(seed, label_noise, oracle)
    train, test = split_prompts(seed)
    n = {k: max(1, round(v * scale)) for k, v in BASE_ROWS.items()}
    splits = {
        "pref-train": gen.preference("pref-train", train, n["pref-train"]),
        "pref-test": gen.preference("pref-test", test, n["pref-test"]),
        "sft-train": gen.sft("sft-train", train, n["sft-train"]),
        "sft-test": gen.sft("sft-test", test, n["sft-test"]),
        "prompts-train": _prompt_rows(train),
        "prompts-test": _prompt_rows(test),
        "redteam": gen.redteam(),
    }
    return World(seed=seed, scale=scale, label_noise=label_noise, splits=splits, oracle=oracle)


def _world_dir_name(seed: int, scale: float, label_noise: float, harm_profile: str) -> str:
    profile = "" if harm_profile == DEFAULT_HARM_PROFILE else f"-{harm_profile}"
    return f"world-v{WORLD_VERSION}-seed{seed}-scale{scale:g}-noise{label_noise:g}{profile}"


def _is_complete(directory: Path, seed: int, scale: float, label_noise: float, harm_profile: str) -> bool:
    """True when `directory` holds a world of these parameters whose files match their hashes."""
    try:
        meta = json.loads((directory / "world.json").read_text())
        recorded = (meta["version"], meta["seed"], meta["scale"], meta["label_noise"],
                    meta.get("harm_profile", DEFAULT_HARM_PROFILE))
        if recorded != (WORLD_VERSION, seed, scale, label_noise, harm_profile):
            return False
        return all(
            hashlib.sha256((directory / f["path"]).read_bytes()).hexdigest() == f["sha256"]
            for f in meta["files"].values()
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False


def materialize_world(
    cache_dir: str | Path, seed: int = 0, *, scale: float = 1.0, label_noise: float = DEFAULT_LABEL_NOISE,
    harm_profile: str = DEFAULT_HARM_PROFILE,
) -> Path:
    """Write the world once under `cache_dir` and return its directory; reuse it afterwards.

    The directory name carries the version (generator + lexicon fingerprint) and
    the parameters (the harm profile when it is not the default); an existing directory is reused
    only if world.json matches and every file still has its recorded SHA-256. Writing goes to a temporary
    directory renamed into place, so concurrent processes (e.g. Ray workers)
    never read a half-written world.
    """
    cache_dir = Path(cache_dir)
    params = (seed, scale, label_noise, harm_profile)
    target = cache_dir / _world_dir_name(*params)
    if _is_complete(target, *params):
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".world-tmp-", dir=cache_dir))
    try:
        build_world(*params).write(tmp)
        if target.exists():
            if _is_complete(target, *params):  # another process won the race
                return target
            shutil.rmtree(target)
        try:
            os.rename(tmp, target)
        except OSError:
            if not _is_complete(target, *params):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
