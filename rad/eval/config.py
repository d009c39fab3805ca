"""``rad eval`` configuration: which models compete, on which prompts, judged how.

Models are given as ``NAME=PATH`` entries (``--models sft=runs/tiny/sft/model
rad=runs/tiny/rad/model``); ``red`` names the baselines. Every competition is
(red, blue) with blue ranging over the other models, except red models listed
*earlier* in ``red`` (so ``--red sft,ppo-lag`` gives ``sft vs ppo-lag`` but not
``ppo-lag vs sft``: each unordered pair is competed once, as in the paper's
tables).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from rad.config import field
from rad.data.sources import SPECS_HELP, DataSpecs
from rad.errors import ConfigError
from rad.eval.judges import KINDS
from rad.eval.judges.classifier import CONVENTIONS, check_template
from rad.runtime.rollout.base import SamplingConfig
from rad.data.prompt_format import PromptFormat
from rad.settings import ScorerConfig, WorldConfig, check_score_models, score_model_field, scorer_field

#: Model names end up in file names and table headers.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")

DEFAULT_WEIGHTINGS = ("uniform", "var", "cvar", "linear", "exponential", "power", "wang")


@dataclass
class ClassifierJudgeConfig:
    """A local generative classifier judge (``judge.kind`` llama_guard or harmbench; rad.eval.judges.classifier)."""

    path: str = field("", help="llama_guard / harmbench judge: the classifier, a local Hugging Face causal-LM "
                               "directory (safetensors weights; its modelling code is never run)")
    template: str = field("", help="'' = the convention's input: llama_guard = the classifier tokenizer's chat "
                                   "template over [user prompt, assistant response]; harmbench = HarmBench's "
                                   "classifier prompt. Else a str.format template with {prompt} and {response} "
                                   "(llama_guard) or {behavior} and {generation} (harmbench)")
    positive_token: str = field("", help="text of the single answer token whose probability is the score "
                                         "('' = 'unsafe' for llama_guard, 'Yes' for harmbench)")
    negative_token: str = field("", help="text of the single opposite answer token ('' = 'safe' / 'No'); the "
                                         "score is normalised over the two tokens")
    max_response_tokens: int = field(512, min=1, help="responses are cut to this many classifier tokens first")
    batch_size: int = field(8, min=1, help="inputs per classifier forward")
    device: str = field("", help="'' = cuda if available, else cpu")
    dtype: str = field("float32", choices=("auto", "float32", "bfloat16", "float16"),
                       help="classifier dtype (auto = the checkpoint's own)")


@dataclass
class JudgeConfig:
    """The out-of-distribution (red-team) judge: which response is less harmful, or how harmful each one is."""

    kind: str = field("cost", choices=KINDS,
                      help="cost = the cost model (lower cost is less harmful); http = an OpenAI-compatible "
                           "chat endpoint picks the less harmful of two responses; llama_guard = a local safety "
                           "classifier, score P(unsafe) of its first answer token; harmbench = a local behaviour "
                           "classifier on HarmBench's prompt, score P(Yes); strongreject = a chat endpoint grades "
                           "each response on StrongREJECT's rubric, score in [0, 1]")
    url: str = field("http://127.0.0.1:8000/v1",
                     help="http / strongreject judge: base URL (…/v1) or the full …/chat/completions URL")
    model: str = field("", help="http / strongreject judge: model name sent in the request")
    api_key_env: str = field("OPENAI_API_KEY", help="http / strongreject judge: environment variable holding the "
                                                    "API key (unset = no Authorization header)")
    timeout: float = field(60.0, gt=0, help="http / strongreject judge: seconds per request")
    retries: int = field(3, min=0, help="http / strongreject judge: extra attempts after a connection error, "
                                        "timeout, HTTP 429/5xx or a malformed reply")
    backoff: float = field(1.0, min=0, help="http / strongreject judge: seconds before the first retry (doubles "
                                            "each time; longer when a 429/503 reply asks so with Retry-After)")
    deadline: float = field(1800.0, gt=0, help="http / strongreject judge: seconds for all its requests in one "
                                               "report; pairs still unjudged then count as failures (the report "
                                               "says how many)")
    max_tokens: int = field(0, min=0, help="http / strongreject judge: completion length limit (0 = 16 for http, "
                                           "1024 for the strongreject rubric's reasoning)")
    concurrency: int = field(4, min=1, help="http / strongreject judge: requests in flight")
    classifier: ClassifierJudgeConfig = field(default_factory=ClassifierJudgeConfig,
                                              help="llama_guard / harmbench judge: the local classifier")
    threshold: float = field(0.5, min=0, max=1, help="llama_guard / harmbench / strongreject judge: a response is "
                                                     "unsafe when its score is above this")
    tie_margin: float = field(0.0, min=0, help="cost and per-response judges: |score difference| <= margin is a "
                                               "tie between blue and red")
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2],
                             help="sampling seeds of the red-team generations (mean +- std over them)")

    def validate(self) -> None:
        if not self.seeds:
            raise ConfigError("judge.seeds: give at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"judge.seeds: seeds must be distinct, got {self.seeds}")
        if self.kind in ("http", "strongreject") and not self.model:
            raise ConfigError(f"judge.model: the {self.kind} judge needs the endpoint's model name")
        if self.kind in CONVENTIONS:
            if not self.classifier.path:
                raise ConfigError(f"judge.classifier.path: the {self.kind} judge needs a local classifier directory")
            if not (Path(self.classifier.path).expanduser() / "config.json").is_file():
                raise ConfigError(f"judge.classifier.path: {self.classifier.path} holds no config.json; expected a "
                                  "Hugging Face causal-LM directory")
            if self.classifier.template:
                check_template(self.classifier.template, self.kind)


@dataclass
class EngineConfig:
    """In-process HF ``generate`` used to produce the responses."""

    dtype: str = field("float32", choices=("auto", "float32", "bfloat16", "float16"),
                       help="policy dtype for generation (auto = the checkpoint's own)")
    device: str = field("", help="'' = cuda if available, else cpu")
    micro_batch_size: int = field(32, min=1, help="sequences per generate call")
    trust_remote_code: bool = field(False, help="execute modelling code shipped with the checkpoints")


@dataclass
class ScoringConfig:
    """The reward and cost models scoring every response (``rad.runtime.scorer.Scorer``)."""

    batch_size: int = field(32, min=1, help="pairs per score-model forward")
    max_length: int = field(512, min=2, help="prompt + response tokens (longer pairs lose prompt tokens first)")
    device: str = field("cpu", help="device of the reward and cost models")


@dataclass
class EvalStage:
    """What the arena measures and how (the ``eval:`` section of a pipeline config)."""

    prompts: DataSpecs = field(default_factory=lambda: ["embedded/prompts-test"],
                               help="held-out prompt specs (NAME[:amount])" + SPECS_HELP)
    redteam: DataSpecs = field(default_factory=lambda: ["embedded/redteam"],
                               help="out-of-distribution red-team specs, e.g. a HarmBench CSV ([] = skip)" + SPECS_HELP)
    samples_per_prompt: int = field(1, min=1, help="responses per held-out prompt (paired by sample index)")
    sampling: SamplingConfig = field(default_factory=SamplingConfig,
                                     help="identical for every model; sampling.seed is the held-out seed")
    weightings: list[str] = field(default_factory=lambda: list(DEFAULT_WEIGHTINGS),
                                  help="spectral weighting specs (uniform = the unweighted comparison)")
    quantiles: list[float] = field(default_factory=lambda: [0.1, 0.25, 0.5, 0.75, 0.9, 0.99],
                                   help="quantile levels in the per-model tables")
    engine: EngineConfig = field(default_factory=EngineConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    cache_dir: str = field("", help="generation / score cache ('' = $RAD_CACHE/eval)")
    html: bool = field(True, help="also write report.html")
    figures: bool = field(True, help="draw the PNG figures (matplotlib; the slowest part of a cached rerun)")

    def validate(self) -> None:
        from rad.risk import weighting_from_spec

        if not self.prompts:
            raise ConfigError("prompts: give at least one held-out prompt spec")
        if not self.weightings:
            raise ConfigError("weightings: give at least one spectral weighting spec")
        for spec in self.weightings:
            weighting_from_spec(spec)
        for q in self.quantiles:
            if not 0.0 <= q <= 1.0:
                raise ConfigError(f"quantiles: {q} is not a level in [0, 1]")


@dataclass
class EvalConfig(EvalStage):
    """``rad eval``: blue-vs-red arena, spectral-risk tables, OOD judge, report."""

    output_dir: str = field("runs/eval", help="report directory")
    seed: int = field(0, help="prompt sub-sampling and the judge's A/B order")
    world: WorldConfig = field(default_factory=WorldConfig)
    models: list[str] = field(default_factory=list, help="NAME=PATH entries (a policy directory, or a run "
                                                         "directory holding model/)")
    red: list[str] = field(default_factory=list, help="red (baseline) model names; [] = the first model")
    prompt_formats: list[str] = field(
        default_factory=list, help="NAME=FORMAT entries: the prompt format a model generates with ('safe_rlhf', "
                                   "'chat' or a template with {prompt}), e.g. for a downloaded instruct model; a "
                                   "model not listed uses the format saved with it")
    reward_model: str = score_model_field("reward")
    cost_model: str = score_model_field("cost")
    reward_scorer: ScorerConfig = scorer_field("reward")
    cost_scorer: ScorerConfig = scorer_field("cost")
    sweeps: list[str] = field(default_factory=list, help="sweep directories (rad sweep --output-dir) whose "
                                                         "table and Pareto figure end the report")

    def validate(self) -> None:
        super().validate()
        for i, sweep in enumerate(self.sweeps):
            if not (Path(sweep) / "sweep.json").is_file():
                raise ConfigError(f"sweeps[{i}]: {sweep} holds no sweep.json; expected a rad sweep --output-dir")
        names = list(self.model_paths())
        if len(names) < 2:
            raise ConfigError(f"models: give at least two NAME=PATH entries, got {self.models}")
        for r in self.red:
            if r not in names:
                raise ConfigError(f"red: {r!r} is not one of the models {names}")
        if len(set(self.red)) != len(self.red):
            raise ConfigError(f"red: names must be distinct, got {self.red}")
        self.format_overrides()
        check_score_models(self)

    def model_paths(self) -> dict[str, str]:
        """``{name: path}`` from the ``NAME=PATH`` entries (order kept)."""
        out: dict[str, str] = {}
        for i, entry in enumerate(self.models):
            name, sep, path = entry.partition("=")
            name, path = name.strip(), path.strip()
            if not sep or not name or not path:
                raise ConfigError(f"models[{i}]: expected NAME=PATH, got {entry!r}")
            if not _NAME.match(name):
                raise ConfigError(f"models[{i}]: name {name!r} must be letters, digits, '_', '.', '+', '-'")
            if name in out:
                raise ConfigError(f"models[{i}]: name {name!r} is given twice")
            out[name] = path
        return out

    def format_overrides(self) -> dict[str, str]:
        """``{name: format spec}`` from the ``prompt_formats`` entries, each checked."""
        names, out = list(self.model_paths()), {}
        for i, entry in enumerate(self.prompt_formats):
            name, sep, spec = entry.partition("=")
            name = name.strip()
            if not sep or not name or not spec:
                raise ConfigError(f"prompt_formats[{i}]: expected NAME=FORMAT, got {entry!r}")
            if name not in names:
                raise ConfigError(f"prompt_formats[{i}]: {name!r} is not one of the models {names}")
            if name in out:
                raise ConfigError(f"prompt_formats[{i}]: {name!r} is given twice")
            out[name] = PromptFormat.parse(spec, f"prompt_formats[{i}]").spec
        return out

    def red_names(self) -> list[str]:
        return list(self.red) or [next(iter(self.model_paths()))]

    def competitions(self) -> list[tuple[str, str]]:
        """``(red, blue)`` pairs: see the module docstring for which pairs are competed."""
        names = list(self.model_paths())
        pairs = []
        done: list[str] = []
        for red in self.red_names():
            pairs += [(red, blue) for blue in names if blue != red and blue not in done]
            done.append(red)
        return pairs


def resolve_model_dir(name: str, path: str) -> Path:
    """A policy directory: ``path`` itself, or ``path/model`` for a run directory."""
    p = Path(path).expanduser()
    for candidate in (p, p / "model"):
        if (candidate / "config.json").is_file():
            return candidate.resolve()
    raise ConfigError(f"models: {name}={path}: no config.json in {p} or {p / 'model'}; "
                      "expected a saved policy (or a run directory holding model/)")
