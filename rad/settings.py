"""Config sections shared by several commands (model, learner, logging, embedded world).

Each command's own config (``SFTConfig``, ``PipelineConfig``, ...) composes these,
so a key means the same thing everywhere: ``learner.lr`` in ``rad sft`` and in
``rad train`` is the same knob with the same default and validation.
"""

from __future__ import annotations

from dataclasses import dataclass

from rad.config import field
from rad.data.world_oracle import DEFAULT_HARM_PROFILE, HARM_PROFILES
from rad.data.prompt_format import HELP as PROMPT_FORMAT_HELP
from rad.data.prompt_format import PromptFormat
from rad.errors import ConfigError

TINY = "tiny"  # model name that means "the project's own tiny model, built locally"
# Its size presets, in growing order (the shapes: rad.models.tiny.SIZES).
TINY_SIZES = ("tiny", "small", "medium")


@dataclass
class WorldConfig:
    """The embedded world: a generated safety-preference corpus with a ground-truth oracle."""

    seed: int = field(0, help="seed of the generator; the same seed gives the same files")
    harm_profile: str = field(DEFAULT_HARM_PROFILE, choices=HARM_PROFILES,
                              help="how hidden harm is distributed: binary (harm grows with the steps given, mean "
                                   "and tail move together) or heavy_tail (frequent mild answers and rare "
                                   "catastrophic ones: mean and tail disagree; see rad/data/world.py)")
    data_root: str = field("", help="data root: embedded world, HarmBench CSV, dataset cache "
                                    "('' = $RAD_DATA_ROOT or the rad cache)")


@dataclass
class ModelConfig:
    """Which causal LM / tokenizer to load."""

    name_or_path: str = field(TINY, help="'tiny' (built locally), a local HF directory, or a hub id")
    tokenizer: str = field("", help="tokenizer path or id ('' = same as name_or_path)")
    prompt_format: str = field("", help=PROMPT_FORMAT_HELP)
    tiny_size: str = field("tiny", choices=TINY_SIZES,
                           help="size preset when name_or_path is 'tiny': tiny ~197k parameters, small ~1.3M, "
                                "medium ~35M (rad/models/tiny.py)")
    dtype: str = field("auto", choices=("auto", "float32", "bfloat16", "float16"),
                       help="parameter dtype; auto = bf16 on GPUs that support it, else fp32")
    trust_remote_code: bool = field(False, help="execute modelling code shipped with the checkpoint")
    allow_pickle_weights: bool = field(False, help="allow loading .bin (pickle) weights; safetensors otherwise")

    def validate(self) -> None:
        if self.prompt_format:
            PromptFormat.parse(self.prompt_format, "prompt_format")


@dataclass
class LearnerConfig:
    """DeepSpeed learner (ZeRO) settings; the same engine runs SFT, score models and RL."""

    zero_stage: int = field(0, min=0, max=3, help="DeepSpeed ZeRO stage")
    offload_optimizer: bool = field(False, help="ZeRO-Offload the optimizer state to CPU (stage >= 1)")
    offload_params: bool = field(False, help="offload parameters to CPU (stage 3 only)")
    lr: float = field(1e-3, gt=0, help="peak learning rate")
    weight_decay: float = field(0.0, min=0, help="AdamW weight decay")
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95], help="Adam betas")
    scheduler: str = field("cosine", choices=("cosine", "linear", "constant"),
                           help="learning-rate schedule after the warmup")
    warmup_ratio: float = field(0.03, min=0, max=1, help="share of the optimizer steps spent warming the learning "
                                                         "rate up linearly from 0")
    micro_batch_size: int = field(8, min=1, help="per-rank micro batch")
    grad_accum: int = field(1, min=1, help="gradient accumulation steps")
    grad_clip: float = field(1.0, min=0, help="global gradient-norm clip (0 = off)")
    bf16: str = field("auto", choices=("auto", "true", "false"),
                      help="bf16 mixed precision; auto = on for CUDA with bf16 support")
    backend: str = field("auto", choices=("auto", "gloo", "nccl"),
                         help="torch.distributed backend; auto = nccl on GPU, gloo on CPU")
    gradient_checkpointing: bool = field(False, help="recompute each transformer layer's activations in backward "
                                                     "(HF gradient checkpointing, non-reentrant): less memory, "
                                                     "about a third more compute")
    logprob_chunk_size: int = field(0, min=0, help="policy log-probs (RAD learner, PPO-Lag actor, reference): run "
                                                   "the LM head and float32 logsumexp on this many response "
                                                   "positions at a time, recomputed in backward, instead of "
                                                   "[batch, length, vocab] logits (0 = off)")
    packing: bool = field(False, help="policy log-probs (RAD learner, PPO-Lag actor): pack a micro batch's samples "
                                      "into as few rows as fit its padded width, position ids restarting and "
                                      "attention kept inside each sample (padding-free)")
    group_by_length: bool = field(False, help="RL learners (RAD learner, PPO-Lag actor and critics) and the "
                                              "reference: cut a shard's micro batches by token count, not arrival "
                                              "order: samples of similar lengths share one (as many micro batches, "
                                              "none padded beyond micro_batch_size samples at the longest), so "
                                              "less is padding; each one's loss weighs its share of the samples, "
                                              "so the gradient is the same")

    def check_arrival_order(self, command: str, key: str = "learner") -> None:
        """Refuse ``group_by_length`` where ``command`` cuts its own micro batches (SFT, DPO, score models)."""
        if self.group_by_length:
            raise ConfigError(f"{key}.group_by_length applies to the RL learners (rad rl, rad baseline ppo-lag); "
                              f"{command} cuts its micro batches from its own data loader")

    def validate(self) -> None:
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"learner.betas: expected two numbers in [0, 1), got {self.betas}")
        if self.offload_params and self.zero_stage != 3:
            raise ConfigError("learner.offload_params needs learner.zero_stage=3")
        if self.offload_optimizer and self.zero_stage == 0:
            raise ConfigError("learner.offload_optimizer needs learner.zero_stage >= 1")


@dataclass
class LoraSettings:
    """LoRA adapters (``peft``, see rad/models/lora.py): only the adapters train; whatever leaves the trainer
    (rollout-engine weights, the saved model) is the plain model with the adapters merged in."""

    enabled: bool = field(False, help="train LoRA adapters instead of the model's own weights")
    r: int = field(8, min=1, help="adapter rank")
    alpha: float = field(16.0, gt=0, help="scaling numerator (scale = alpha / r)")
    dropout: float = field(0.0, min=0, max=1, help="dropout on the adapters' input")
    target_modules: list[str] = field(default_factory=list, help="module names to adapt ([] = every linear layer "
                                                                 "but the output layer)")

    def check_learner(self, learner: LearnerConfig, key: str = "learner") -> None:
        """LoRA needs the live module whole: the adapters are merged from it (ZeRO <= 2)."""
        if self.enabled and learner.zero_stage == 3:
            raise ConfigError(f"lora.enabled with {key}.zero_stage=3 is not supported: the frozen base gains little "
                              "from ZeRO-3 and the adapters are merged from the live module")


@dataclass
class PolicyLora(LoraSettings):
    """LoRA adapters on a policy (``rad rl``, ``rad baseline ppo-lag``, ``rad dpo``)."""

    save_adapter: bool = field(False, help="also write peft's adapter files into <model>/adapter (the model itself "
                                           "is always saved merged)")

    def check_rl(self, learner: LearnerConfig, rollout, key: str = "learner") -> None:
        """:meth:`check_learner`, and a rollout (``rollout.*``, :class:`rad.runtime.rollout.config.RolloutConfig`)
        that receives merged weights: separate engines, not the learner's own module, and no CUDA IPC of it."""
        self.check_learner(learner, key)
        if self.enabled and rollout.hybrid:
            raise ConfigError("lora.enabled with rollout.hybrid is not supported: the engines get the merged policy; "
                              "use separate rollout engines")
        if self.enabled and rollout.weight_sync == "ipc":
            raise ConfigError("lora.enabled with rollout.weight_sync=ipc is not supported: ipc shares the learner's "
                              "own parameters, but the engines get merged weights; use object_store or auto")


@dataclass
class LoggingConfig:
    """Where metrics go. TensorBoard and a JSONL file by default."""

    tensorboard: bool = field(True, help="write TensorBoard event files under <output_dir>/tensorboard/")
    jsonl: bool = field(True, help="append every logged metric row to <output_dir>/metrics.jsonl")
    wandb: bool = field(False, help="log to Weights & Biases (pip install rad-align[tracking]); the run id is kept "
                                    "in <output_dir>/wandb_run_id, so a resumed run continues its W&B run")
    mlflow: bool = field(False, help="log to MLflow (pip install rad-align[tracking])")
    project: str = field("rad", help="W&B project / MLflow experiment name")
    log_every: int = field(1, min=1, help="log metrics every N optimizer steps")
    progress: bool = field(True, help="show a progress bar")
    actor_logs: bool = field(False, help="show the Ray actors' output (learners, engines, scorers) in this "
                                         "terminal (ray.init(log_to_driver=True)) when this command starts or joins "
                                         "Ray; off: it stays in Ray's session logs (/tmp/ray/session_latest/logs)")


@dataclass
class LearnerResources:
    """Where a supervised stage's data-parallel learner ranks run (the ``resources:`` section).

    The keys mean what RL's ``resources.*`` keys of the same names mean. One rank
    on a local machine trains in the calling process; more ranks (or a
    ``ray_address``) run as Ray actors, one DeepSpeed rank each, on the device Ray
    gives them (gloo on CPU, NCCL on GPU).
    """

    num_learners: int = field(1, min=1, help="data-parallel DeepSpeed ranks; each optimizer step's global batch "
                                             "(learner.micro_batch_size * learner.grad_accum * num_learners) is "
                                             "cut by rank")
    cpus_per_learner: float = field(1.0, gt=0, help="Ray CPUs per learner rank")
    gpus_per_learner: float = field(0.0, min=0, help="Ray GPUs per learner rank")
    ray_address: str = field("", help="'' = start a local Ray cluster when num_learners > 1, "
                                      "'auto' = connect to a running one (also for one rank)")
    ray_num_cpus: int = field(0, min=0, help="logical CPUs of a local cluster (0 = enough for all ranks)")

    def validate(self) -> None:
        if self.num_learners > 1 and 0 < self.gpus_per_learner < 1:
            raise ConfigError(f"resources.gpus_per_learner: {self.num_learners} NCCL ranks need a whole GPU each, "
                              f"got {self.gpus_per_learner}")


def is_url(path: object) -> bool:
    """Whether a ``reward_model`` / ``cost_model`` value names a remote (http) scorer."""
    return str(path).startswith(("http://", "https://"))


#: Score-model formats ``reward_model`` / ``cost_model`` may hold (see :mod:`rad.models.score_formats`).
SCORER_FORMATS = ("auto", "rad", "hf_seq_cls", "safe_rlhf", "http")


@dataclass
class ScorerConfig:
    """How to read the model named by ``reward_model`` or ``cost_model`` (the ``reward_scorer:`` /
    ``cost_scorer:`` sections). Conventions after ``sign``: a reward is higher-is-better, a cost > 0 means
    unsafe. README "Bring your own scorer" lists the formats and the HTTP schema."""

    format: str = field("auto", choices=SCORER_FORMATS,
                        help="auto = detect: an http(s):// URL is a remote scorer, a directory with "
                             "score_config.json is rad's, a config.json whose architectures end in "
                             "ForSequenceClassification (one label) is hf_seq_cls, one ending in ForScore (or with "
                             "score_type / score_dim keys) is safe_rlhf")
    sign: int = field(1, choices=(1, -1),
                      help="multiply the model's score by this: -1 turns a harmlessness reward into a cost, or "
                           "a cost whose convention is 'higher = safer' into rad's 'cost > 0 = unsafe'")
    template: str = field("", help="prompt template of the scored text: '' = the model's own (rad: stored with it; "
                                   "hf_seq_cls: 'chat' when its tokenizer has a chat template, else the Safe RLHF "
                                   "template; safe_rlhf: the Safe RLHF template), 'chat' = the tokenizer's chat "
                                   "template over (user prompt, assistant response), or a string with {prompt} "
                                   "(the response follows after a space, then EOS)")
    batch_size: int = field(64, min=1, help="http: pairs per request")
    timeout: float = field(60.0, gt=0, help="http: seconds per request")
    retries: int = field(3, min=0, help="http: retries of a failed request (connection error, timeout, HTTP "
                                        "429/5xx, malformed reply) with exponential backoff; a batch still failing "
                                        "after them fails the step or evaluation with the error")
    backoff: float = field(1.0, min=0, help="http: seconds before the first retry, doubled each retry")
    deadline: float = field(0.0, min=0, help="http: seconds for one score call's requests together (0 = none)")
    concurrency: int = field(4, min=1, help="http: requests in flight at once")
    api_key_env: str = field("", help="http: environment variable holding a bearer token ('' = none)")

    def identity(self) -> dict[str, object]:
        """The keys the scores depend on (caches of scores record them); the HTTP settings only decide how
        they are fetched."""
        return {"format": self.format, "sign": self.sign, "template": self.template}

    def validate(self) -> None:
        if self.template and self.template != "chat" and "{prompt}" not in self.template:
            raise ConfigError(f"template {self.template!r} is neither 'chat' nor a string with a {{prompt}} "
                              "placeholder")


#: Help text of the ``reward_model`` / ``cost_model`` keys of every command that scores text.
SCORE_MODEL_HELP = ("{kind} model: a directory (rad {cmd} train output, a transformers "
                    "AutoModelForSequenceClassification with one label, or a safe-rlhf score model) or an "
                    "http(s):// scorer URL; {kind}_scorer says how to read it")


def score_model_field(kind: str):
    """The ``reward_model`` / ``cost_model`` key (``kind`` = reward|cost)."""
    return field("", help=SCORE_MODEL_HELP.format(kind=kind, cmd="rm" if kind == "reward" else "cm"))


def scorer_field(kind: str):
    """The ``reward_scorer`` / ``cost_scorer`` section (``kind`` = reward|cost)."""
    return field(default_factory=ScorerConfig, help=f"how to read {kind}_model: format, sign, template, HTTP "
                                                    "settings")


def check_score_models(cfg, required: bool = True) -> None:
    """``cfg.reward_model`` and ``cfg.cost_model`` are given (unless not ``required``), and agree with the format
    of their scorer section."""
    for kind in ("reward", "cost"):
        path, source = getattr(cfg, f"{kind}_model"), getattr(cfg, f"{kind}_scorer")
        if not path and not required:
            continue
        if not path:
            raise ConfigError(f"{kind}_model: a {kind} model is required (a score-model directory or an http(s):// "
                              "scorer URL)")
        url = is_url(path)
        if url and source.format not in ("auto", "http"):
            raise ConfigError(f"{kind}_model: {path!r} is a URL but {kind}_scorer.format is {source.format!r}")
        if source.format == "http" and not url:
            raise ConfigError(f"{kind}_model: {kind}_scorer.format is 'http', so give an http(s):// URL, got {path!r}")
