"""``rad train``: the main job. Runs the selected stages, in order, skipping finished ones.

This is the top (CLI) layer: it is the one place in ``rad`` that reaches into the
sibling packages ``reward_cost_models`` and ``safe_rlhf_baseline``. Stages write into
one run directory::

    <output_dir>/config.yaml      resolved pipeline config of the first invocation (never rewritten)
    <output_dir>/runs.jsonl       one line per invocation (time, host, pid, command line)
    <output_dir>/sft/             SFT (model/, checkpoints/, metrics.jsonl, tensorboard/, samples.jsonl)
    <output_dir>/reward/          reward model (model/, metrics, score histogram)
    <output_dir>/cost/            cost model
    <output_dir>/rad/             RAD policy (model/, checkpoints/, metrics, held-out comparison)
    <output_dir>/ppo_lag/         optional: Safe RLHF PPO-Lagrangian from the same SFT / reward / cost models
    <output_dir>/eval/            optional: the arena report over every policy of the run (rad eval)
    <output_dir>/summary.json     per-stage summaries and timings

``stages`` selects among :data:`STAGES` (default: the first four); they always run
in pipeline order. A training stage is skipped when its summary is recorded and its
model exists, so re-running the same command resumes the pipeline, and an interrupted
stage continues from its newest checkpoint (``resume: false`` asks for a new run and
refuses a directory that holds one). Before any work, every selected stage that ran
before is checked against its recorded ``config.yaml``: a changed key that alters
results (``sft.learner.lr``) is refused (:mod:`rad.runtime.run_dir`). The eval stage
runs every time: its generations and scores are cached per model, so rebuilding the
report of unchanged policies costs only the tables and figures.

The eval stage compares ``sft``, ``rad`` and ``ppo-lag`` (the policies whose stage
is selected or whose model already exists in the run directory), with SFT and
PPO-Lag as the red (baseline) models, scored by the run's reward and cost models.
``reward_model`` / ``cost_model`` replace the reward / cost stage with a given model
(any format ``rad rl`` takes, read as ``reward_scorer`` / ``cost_scorer`` say), and
``policy_model`` replaces the SFT stage with a given causal LM (e.g. an instruct model):
RL starts from it, the score models train on its backbone, and eval compares it as ``init``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from rad.algos.rad import run_rad
from rad.algos.rad_config import RADConfig, RADStage
from rad.algos.sft import SFTConfig, SFTStage, run_sft
from rad.config import field, from_dict, to_dict
from rad.errors import ConfigError
from rad.eval.config import EvalConfig, EvalStage
from rad.runtime.profiling import ProfileConfig
from rad.runtime.ray_auth import require_token
from rad.runtime.run_dir import open_run
from rad.settings import LoggingConfig, ModelConfig, ScorerConfig, WorldConfig, check_score_models, scorer_field
from reward_cost_models.config import ScoreModelConfig, ScoreModelStage
from safe_rlhf_baseline.config import PPOLagConfig, PPOLagStage

log = logging.getLogger("rad")

STAGES = ("sft", "reward", "cost", "rad", "ppo_lag", "eval")
DEFAULT_STAGES = ("sft", "reward", "cost", "rad")
#: Eval model name of each policy stage, and which of them are red (baselines) when present.
POLICIES = {"sft": "sft", "rad": "rad", "ppo_lag": "ppo-lag"}
RED = ("sft", "ppo_lag")
#: Eval name of a given ``policy_model`` (in place of ``sft``; red too).
INIT = "init"
#: Stages whose Ray actors need a cluster sized for them (a local one is shut down after the stage).
RAY_STAGES = ("rad", "ppo_lag")


@dataclass
class PipelineConfig:
    """``rad train``: SFT -> reward model -> cost model -> RAD [-> PPO-Lag baseline] [-> eval report]."""

    output_dir: str = field("runs/tiny", help="run directory for all stages")
    seed: int = field(0, help="random seed of data order, sub-sampling, initialisation and sampling")
    resume: bool = field(True, help="skip finished stages and resume an interrupted one; false = a new run, "
                                         "refused if output_dir holds one")
    stages: list[str] = field(default_factory=lambda: list(DEFAULT_STAGES),
                              help=f"stages to run (always in pipeline order), of {list(STAGES)}")
    world: WorldConfig = field(default_factory=WorldConfig)
    model: ModelConfig = field(default_factory=ModelConfig, help="the base model SFT starts from")
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    profile: ProfileConfig = field(default_factory=ProfileConfig,
                                   help="PyTorch profiler in every role's actor for chosen steps of the RL stages")
    sft: SFTStage = field(default_factory=SFTStage, whole=SFTConfig)
    reward: ScoreModelStage = field(default_factory=ScoreModelStage, whole=ScoreModelConfig)
    cost: ScoreModelStage = field(default_factory=ScoreModelStage, whole=ScoreModelConfig)
    rad: RADStage = field(default_factory=RADStage, whole=RADConfig)
    ppo_lag: PPOLagStage = field(default_factory=PPOLagStage, whole=PPOLagConfig,
                                 help="the baseline's keys; defaults are safe_rlhf_baseline's (the reference's)")
    eval: EvalStage = field(default_factory=EvalStage, whole=EvalConfig)
    reward_model: str = field("", help="a reward model to use instead of training one (the reward stage is then "
                                       "not run): a directory in rad's, transformers' sequence-classifier or "
                                       "safe-rlhf's format, or an http(s):// scorer ('' = the reward stage's)")
    cost_model: str = field("", help="a cost model to use instead of training one (the cost stage is then not "
                                     "run), as reward_model ('' = the cost stage's)")
    reward_scorer: ScorerConfig = scorer_field("reward")
    cost_scorer: ScorerConfig = scorer_field("cost")
    policy_model: str = field("", help="a policy (causal LM: a local directory or hub id, e.g. an instruct model) "
                                       "to start from instead of running SFT (the sft stage is then not run; the "
                                       "reward and cost stages train on its backbone; eval names it 'init'; "
                                       "model.prompt_format still applies) ('' = the sft stage's)")

    def validate(self) -> None:
        unknown = [s for s in self.stages if s not in STAGES]
        if unknown:
            raise ConfigError(f"stages: unknown stage {unknown[0]!r}; choose from {list(STAGES)}")
        if len(set(self.stages)) != len(self.stages):
            raise ConfigError(f"stages: each stage once, got {self.stages}")
        check_score_models(self, required=False)
        if self.policy_model:
            from rad.models.loading import check_causal_lm

            check_causal_lm(self.policy_model, "policy_model", trust_remote_code=self.model.trust_remote_code)

    def selected(self) -> list[str]:
        """The selected stages in pipeline order; the sft / reward / cost stage is not run when ``policy_model`` /
        ``reward_model`` / ``cost_model`` gives the model."""
        given = {s for s in ("sft", "reward", "cost") if getattr(self, "policy_model" if s == "sft" else f"{s}_model")}
        return [s for s in STAGES if s in self.stages and s not in given]


def _fields(obj: Any, cls: type) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(cls)}


def _eval_models(cfg: PipelineConfig, out: Path) -> list[str]:
    """``NAME=PATH`` of the policies the eval stage compares (see the module docstring); a given
    ``policy_model`` stands for the sft stage's, as ``init``."""
    models = [f"{name}={out / stage / 'model'}" for stage, name in POLICIES.items()
              if stage != "sft" and (stage in cfg.stages or (out / stage / "model" / "config.json").is_file())]
    if cfg.policy_model:
        return [f"{INIT}={cfg.policy_model}", *models]
    if "sft" in cfg.stages or (out / "sft" / "model" / "config.json").is_file():
        return [f"sft={out / 'sft' / 'model'}", *models]
    return models


def stage_configs(cfg: PipelineConfig) -> dict[str, Any]:
    """The stand-alone config of every selected stage (in pipeline order), wired to the other stages' outputs."""
    out = Path(cfg.output_dir)
    common = dict(seed=cfg.seed, resume=cfg.resume, world=cfg.world, logging=cfg.logging)
    sft_model = cfg.policy_model or out / "sft" / "model"
    backbone = dataclasses.replace(cfg.model, name_or_path=str(sft_model), tokenizer="")
    scores = dict(reward_model=cfg.reward_model or str(out / "reward" / "model"),
                  cost_model=cfg.cost_model or str(out / "cost" / "model"),
                  reward_scorer=cfg.reward_scorer, cost_scorer=cfg.cost_scorer)
    build: dict[str, Callable[[], Any]] = {
        "sft": lambda: SFTConfig(output_dir=str(out / "sft"), model=cfg.model, **common,
                                 **_fields(cfg.sft, SFTStage)),
        "reward": lambda: ScoreModelConfig(kind="reward", output_dir=str(out / "reward"), model=backbone, **common,
                                           **_fields(cfg.reward, ScoreModelStage)),
        "cost": lambda: ScoreModelConfig(kind="cost", output_dir=str(out / "cost"), model=backbone, **common,
                                         **_fields(cfg.cost, ScoreModelStage)),
        "rad": lambda: RADConfig(output_dir=str(out / "rad"), policy=backbone, **scores, **common,
                                 profile=cfg.profile,
                                 **_fields(cfg.rad, RADStage)),
        "ppo_lag": lambda: PPOLagConfig(output_dir=str(out / "ppo_lag"), policy=backbone, **scores, **common,
                                        profile=cfg.profile,
                                        **_fields(cfg.ppo_lag, PPOLagStage)),
        "eval": lambda: _eval_config(cfg, out, scores),
    }
    return {name: build[name]() for name in cfg.selected()}


def _eval_config(cfg: PipelineConfig, out: Path, scores: dict[str, Any]) -> EvalConfig:
    models = _eval_models(cfg, out)
    names = [m.partition("=")[0] for m in models]
    if len(models) < 2:
        raise ConfigError(f"stages: eval compares at least two policies of the run, found {names}; select rad "
                          f"and/or ppo_lag too (or run them into {out} first)")
    red = [name for name in (*(POLICIES[s] for s in RED), INIT) if name in names]
    return EvalConfig(output_dir=str(out / "eval"), seed=cfg.seed, world=cfg.world, models=models, red=red,
                      **scores, **_fields(cfg.eval, EvalStage))


def _runner(name: str) -> Callable[[Any], dict[str, Any]]:
    if name == "sft":
        return run_sft
    if name in ("reward", "cost"):
        from reward_cost_models.train import run_score_model

        return run_score_model
    if name == "ppo_lag":
        from safe_rlhf_baseline.trainer import run_ppo_lag

        return run_ppo_lag
    if name == "eval":
        from rad.eval.run import run_eval

        return run_eval
    return run_rad


def _run_stage(name: str, stage_cfg: Any) -> dict[str, Any]:
    if name not in RAY_STAGES:
        return _runner(name)(stage_cfg)
    import ray

    started_here = not ray.is_initialized()
    try:
        return _runner(name)(stage_cfg)
    finally:
        # A stage that started a local cluster sized it for its own actors (PPO-Lag has more than RAD).
        if started_here and ray.is_initialized():
            ray.shutdown()


def _finished(name: str, stage_cfg: Any, summary: dict[str, Any]) -> bool:
    return name != "eval" and name in summary["stages"] and (Path(stage_cfg.output_dir) / "model").exists()


#: Dataset-spec keys outside a stage's ``data`` section (whose list-of-string keys are all specs).
SPEC_KEYS = {"eval": ("prompts", "redteam")}


def check_data_specs(configs: dict[str, Any]) -> None:
    """Every selected stage's dataset specs name a registered dataset or an existing file (nothing is read), so
    a typo in a late stage's data fails before the first stage starts, naming the key."""
    from rad.data.registry import check_spec

    for name, stage_cfg in configs.items():
        keys = {key: getattr(stage_cfg, key) for key in SPEC_KEYS.get(name, ())}
        data = getattr(stage_cfg, "data", None)
        if dataclasses.is_dataclass(data):
            keys.update({f"data.{f.name}": getattr(data, f.name) for f in dataclasses.fields(data)
                         if isinstance(getattr(data, f.name), list)})
        for key, specs in keys.items():
            for i, spec in enumerate(specs):
                check_spec(spec, f"{name}.{key}[{i}]")


def run_pipeline(cfg: PipelineConfig) -> dict[str, Any]:
    # Validate every selected stage's resolved config before any work starts.
    configs = {name: from_dict(type(c), to_dict(c), prefix=name) for name, c in stage_configs(cfg).items()}
    check_data_specs(configs)
    # A stage that joins a cluster needs its token: missing, it fails now, not after the stages before it.
    for name, stage_cfg in configs.items():
        address = stage_cfg.resources.ray_address if hasattr(stage_cfg, "resources") else ""
        if address:
            require_token(address, key=f"{name}.resources.ray_address")
    # A stage that ran before (finished or interrupted) continues only with the config it ran with.
    with open_run(cfg, stages={name: c for name, c in configs.items() if name != "eval"}):
        return _run_stages(cfg, configs)


def _run_stages(cfg: PipelineConfig, configs: dict[str, Any]) -> dict[str, Any]:
    out = Path(cfg.output_dir)
    summary_path = out / "summary.json"
    summary: dict[str, Any] = {"output_dir": str(out), "stages": {}}
    if summary_path.exists():
        summary["stages"] = json.loads(summary_path.read_text()).get("stages", {})
    for name, stage_cfg in configs.items():
        if _finished(name, stage_cfg, summary):
            log.info("stage %s already finished in %s; skipping", name, stage_cfg.output_dir)
            continue
        log.info("stage %s -> %s", name, stage_cfg.output_dir)
        start = time.perf_counter()
        result = _run_stage(name, stage_cfg)
        result["seconds"] = round(time.perf_counter() - start, 1)
        summary["stages"][name] = result
        tmp = summary_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(summary, indent=2, default=str))
        tmp.replace(summary_path)
    summary["total_seconds"] = round(sum(s.get("seconds", 0) for s in summary["stages"].values()), 1)
    summary_path.write_text(json.dumps(summary, indent=2, default=str))
    return summary
