"""``rad rsa``: Risk-aware Stepwise Alignment (RSA) and its weight-averaged variant RSA(P).

SACPO-style stepwise alignment with risk-aware DPO:

1. stage 1 (``<output_dir>/stage1``): risk-aware DPO on **helpfulness** pairs from
   the SFT model, which is also the reference, with ``beta``;
2. stage 2 (``<output_dir>/stage2``): risk-aware DPO on **safety** pairs from the
   stage-1 model, which is now also the reference, with ``beta / lambda``
   (the safety realignment of the Lagrangian ``r - lambda c``: the closed form
   ``pi* ∝ pi_r* exp(-(lambda/beta) c)`` is DPO with inverse temperature ``beta/lambda``);
3. RSA(P) (``<output_dir>/rsa_p``): the weight average
   ``theta = q * theta_1 + (1 - q) * theta_2`` of the two models, a loadable HF model.
   ``q = 1`` is the stage-1 model, ``q = 0`` the stage-2 model; sweeping ``q``
   traces the helpfulness-safety frontier (:func:`average_weights`).

With ``resume`` (the default), rerunning returns a finished stage's summary (``summary.json``
and ``model/`` exist) and continues an interrupted stage from its newest checkpoint
(:mod:`rad.runtime.run_dir`).
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rad.algos.supervised import ScheduleConfig
from rad.config import field
from rad.errors import ConfigError
from rad.runtime.run_dir import open_run
from rad.settings import LearnerConfig, LearnerResources, LoggingConfig, ModelConfig, WorldConfig
from risk_dpo.trainer import DPOConfig, DPODataConfig, LossConfig, run_dpo

log = logging.getLogger("risk_dpo")


@dataclass
class RSAStageConfig:
    data: DPODataConfig = field(default_factory=DPODataConfig)
    learner: LearnerConfig = field(default_factory=lambda: LearnerConfig(lr=5e-4, micro_batch_size=8))
    schedule: ScheduleConfig = field(default_factory=lambda: ScheduleConfig(epochs=1))

    def validate(self) -> None:
        self.learner.check_arrival_order("RSA")


@dataclass
class RSAConfig:
    """``rad rsa``: helpfulness stage, safety stage (beta / lambda), and the RSA(P) weight average."""

    output_dir: str = field("runs/rsa", help="run directory: stage1/, stage2/, rsa_p/, summary.json")
    seed: int = field(0, help="random seed of data order, sub-sampling, initialisation and sampling")
    resume: bool = field(True, help="skip finished stages and continue an interrupted one; false = a new run, "
                                          "refused if output_dir holds one")
    world: WorldConfig = field(default_factory=WorldConfig)
    model: ModelConfig = field(default_factory=ModelConfig, help="the SFT model (stage-1 init and reference)")
    loss: LossConfig = field(default_factory=lambda: LossConfig(name="ra_dpo2"),
                             help="risk-aware loss of both stages; loss.beta is stage 1's beta")
    lagrange: float = field(1.0, gt=0, help="lambda: stage 2 uses beta / lambda (larger = more safety)")
    q: float = field(0.5, min=0, max=1, help="RSA(P) mixing ratio: q * stage 1 + (1 - q) * stage 2")
    precompute_reference: bool = field(False, help="precompute each stage's reference statistics")
    helpfulness: RSAStageConfig = field(default_factory=lambda: RSAStageConfig(
        data=DPODataConfig(pairs="helpfulness")))
    safety: RSAStageConfig = field(default_factory=lambda: RSAStageConfig(data=DPODataConfig(pairs="safety")))
    resources: LearnerResources = field(default_factory=LearnerResources, help="learner ranks of both stages")
    logging: LoggingConfig = field(default_factory=LoggingConfig)


def stage_config(cfg: RSAConfig, stage: int) -> DPOConfig:
    """The :class:`DPOConfig` of RSA stage 1 (helpfulness) or 2 (safety)."""
    out = Path(cfg.output_dir)
    section = cfg.helpfulness if stage == 1 else cfg.safety
    loss = copy.deepcopy(cfg.loss)
    model = copy.deepcopy(cfg.model)
    if stage == 2:
        loss.beta = cfg.loss.beta / cfg.lagrange
        # The stage-1 model is both the init and the reference of stage 2.
        model.name_or_path = str(out / "stage1" / "model")
        model.tokenizer = ""
    return DPOConfig(output_dir=str(out / f"stage{stage}"), seed=cfg.seed, resume=cfg.resume, world=cfg.world,
                     model=model, reference="", precompute_reference=cfg.precompute_reference,
                     data=copy.deepcopy(section.data), loss=loss, learner=copy.deepcopy(section.learner),
                     schedule=copy.deepcopy(section.schedule), resources=copy.deepcopy(cfg.resources),
                     logging=cfg.logging)


def average_weights(model_a_dir: str | Path, model_b_dir: str | Path, q: float, out_dir: str | Path) -> Path:
    """Write ``q * theta_a + (1 - q) * theta_b`` as a loadable HF model (tokenizer of ``model_a_dir``).

    Both models must have the same architecture (same parameter names and
    shapes); floating-point tensors are mixed in float32 and stored in the
    models' dtype, others (integer buffers) are taken from ``model_a``.
    """
    from rad.models.loading import load_causal_lm, load_tokenizer, save_pretrained_atomic

    if not 0.0 <= q <= 1.0:
        raise ConfigError(f"q: the mixing ratio must be in [0, 1], got {q}")
    model_a = load_causal_lm(model_a_dir, dtype="auto")
    model_b = load_causal_lm(model_b_dir, dtype="auto")
    state_a, state_b = model_a.state_dict(), model_b.state_dict()
    if state_a.keys() != state_b.keys():
        diff = sorted(set(state_a) ^ set(state_b))
        raise ConfigError(f"cannot average {model_a_dir} and {model_b_dir}: parameter names differ ({diff[:3]} ...)")
    mixed = {}
    for name, a in state_a.items():
        b = state_b[name]
        if a.shape != b.shape:
            raise ConfigError(f"cannot average {model_a_dir} and {model_b_dir}: {name} has shapes "
                              f"{tuple(a.shape)} and {tuple(b.shape)}")
        if a.is_floating_point():
            mixed[name] = (q * a.float() + (1.0 - q) * b.float()).to(a.dtype)
        else:
            mixed[name] = a
    model_a.load_state_dict(mixed)
    return save_pretrained_atomic(model_a, load_tokenizer(model_a_dir), out_dir)


def run_rsa(cfg: RSAConfig) -> dict[str, Any]:
    """Run the two stages and the weight average; returns (and writes) the summary."""
    with open_run(cfg):
        return _run_rsa(cfg)


def _run_rsa(cfg: RSAConfig) -> dict[str, Any]:
    out = Path(cfg.output_dir)
    summaries: dict[str, Any] = {}
    for stage in (1, 2):
        stage_cfg = stage_config(cfg, stage)
        log.info("RSA stage %d: %s on %s pairs (beta %.4g)", stage, stage_cfg.loss.name, stage_cfg.data.pairs,
                 stage_cfg.loss.beta)
        summaries[f"stage{stage}"] = run_dpo(stage_cfg)
    stage1, stage2 = out / "stage1" / "model", out / "stage2" / "model"
    rsa_p = average_weights(stage1, stage2, cfg.q, out / "rsa_p")
    summary = {"stage1_model": str(stage1), "stage2_model": str(stage2), "rsa_p_model": str(rsa_p), "q": cfg.q,
               "beta": cfg.loss.beta, "stage2_beta": cfg.loss.beta / cfg.lagrange, **summaries}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary
