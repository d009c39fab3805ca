"""The loop every online RL algorithm runs, and what it shares: RAD and PPO-Lag are siblings on this base.

One controller on the driver owns the dataflow; the models live in the roles' Ray actors
(:class:`rad.runtime.roles.RLRoles`, held as ``self.roles``)::

    for each step:   prompts -> generate -> score and log-probs (overlapped)
                     -> the algorithm's update (train_step) -> weight sync (by the learner ranks)
                     -> metrics -> checkpoint -> validate
    at the end:      the returned policy (last or selected) -> held-out evaluation -> summary.json

A subclass is one algorithm and says only what differs (the template's hooks below):
which learner roles it trains (:meth:`policy_role`, :meth:`trained_roles`), one step
(:meth:`train_step`), what it keeps in a checkpoint (:meth:`trainer_state`), how its held-out
result is judged (:meth:`compare`) and, optionally, how validated steps are selected
(:meth:`make_selector`). Neither algorithm has a method of the other.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Any

import torch

from rad.config import to_dict
from rad.data.sources import spec_name
from rad.errors import ConfigError
from rad.runtime.roles import RLRoles, TrainedRole
from rad.settings import LearnerConfig, is_url

log = logging.getLogger("rad.algos")


def sorted_rollouts(rollouts: list) -> list:
    """``rollouts`` in the order every step works in: by prompt, then sample."""
    return sorted(rollouts, key=lambda r: (r.prompt_index, r.sample_index))


def reference_sample_inputs(cfg: Any, reference_dir: str, prompts: list[str], n: int, seed: int) -> dict[str, Any]:
    """What the reference's scored samples of ``prompts`` (``n`` each, sampling seed ``cfg.seed + seed``) are
    computed from: the key of every cache of them in an RL run directory (see :mod:`rad.runtime.provenance`)."""
    from rad.runtime.provenance import digest, dir_fingerprint

    return {"reference": dir_fingerprint(reference_dir), "reward_model": dir_fingerprint(cfg.reward_model),
            "cost_model": dir_fingerprint(cfg.cost_model), "reward_scorer": cfg.reward_scorer.identity(),
            "cost_scorer": cfg.cost_scorer.identity(), "prompts": digest(prompts), "samples_per_prompt": n,
            "seed": cfg.seed + seed, "engine": cfg.rollout.engine, "dtype": cfg.policy.dtype,
            "scorer_dtype": cfg.resources.scorer_dtype,
            "sampling": {k: v for k, v in to_dict(cfg.rollout.sampling).items() if k != "seed"}}


class OnlineRLTrainer:
    """Builds the roles and runs the loop; subclasses implement the hooks (see the module docstring)."""

    name = ""
    selector = None  # a ValidationSelector when the algorithm validates steps (RAD's select=feasible)
    _selection_state: dict[str, Any] | None = None

    def __init__(self, cfg: Any, selection: Any = None) -> None:
        """``selection``: a :class:`~rad.algos.selection.SelectionConfig` when the algorithm validates steps."""
        from rad.algos.assets import load_records, model_dir

        self.cfg = cfg
        self.out = Path(cfg.output_dir)
        self.out.mkdir(parents=True, exist_ok=True)  # the command holds it (rad.runtime.run_dir.open_run)
        self.prompts = [r["prompt"] for r in load_records(cfg.data.prompts, "prompt", cfg.world, cfg.seed)]
        self.eval_prompts = [r["prompt"] for r in load_records(cfg.data.eval_prompts, "prompt", cfg.world, cfg.seed)]
        if not self.prompts:
            raise ConfigError("data.prompts: no prompts after loading")
        self.selection = selection
        self.val_prompts: list[str] = []
        val_prompts = selection.held_out if selection is not None else 0
        if val_prompts:
            from rad.algos.selection import split_validation

            try:
                train_idx, val_idx = split_validation(len(self.prompts), val_prompts, cfg.seed)
            except ValueError as exc:
                raise ConfigError(f"algo.selection.prompts: {exc}") from None
            self.val_prompts = [self.prompts[i] for i in val_idx]
            self.prompts = [self.prompts[i] for i in train_idx]
        self.check_model_dirs()  # before any actor starts: a wrong path is one line, not a Ray traceback
        self.policy_dir = model_dir(cfg.policy, cfg.world, cfg.seed)
        self.reference_dir = cfg.reference_model or self.policy_dir
        from rad.models.loading import load_tokenizer

        self.tokenizer = load_tokenizer(self.policy_dir, trust_remote_code=cfg.policy.trust_remote_code,
                                        prompt_format=cfg.policy.prompt_format, format_key="policy.prompt_format")
        from rad.data.prompt_format import tokenizer_prompt_format, warn_on_mismatch
        from rad.models.score_formats import stated_templates

        warn_on_mismatch(tokenizer_prompt_format(self.tokenizer).spec,
                         stated_templates({"reward": (cfg.reward_model, getattr(cfg, "reward_scorer", None)),
                                           "cost": (cfg.cost_model, getattr(cfg, "cost_scorer", None))}))
        self.pad_id = self.tokenizer.pad_token_id
        self.roles = RLRoles(
            name=f"{self.name}-{self.out.name}", res=cfg.resources, rollout=cfg.rollout, seed=cfg.seed,
            policy_dir=self.policy_dir, reference_dir=self.reference_dir, policy=self.policy_role(),
            trained=self.trained_roles(), reward_model=cfg.reward_model, cost_model=cfg.cost_model,
            reward_scorer=cfg.reward_scorer, cost_scorer=cfg.cost_scorer,
            dtype=cfg.policy.dtype, trust_remote_code=cfg.policy.trust_remote_code,
            allow_pickle=cfg.policy.allow_pickle_weights, prompt_format=cfg.policy.prompt_format,
            reference_micro_batch_size=cfg.reference_micro_batch_size,
            logprob_chunk_size=self.policy_learner().logprob_chunk_size,
            group_by_length=self.policy_learner().group_by_length, actor_logs=cfg.logging.actor_logs)
        self.startup_seconds = self.roles.startup_seconds
        self.step = 0
        self._logger = None
        #: (step, metrics.jsonl bytes) of the checkpoint a resumed run continues (see MetricsLogger)
        self._metrics_resume: tuple[int, int | None] | None = None

    def model_dir_keys(self) -> tuple[str, ...]:
        """The config keys that name a model directory this run loads (checked before any actor starts)."""
        return ("reference_model", "reward_model", "cost_model")

    def check_model_dirs(self) -> None:
        for key in self.model_dir_keys():
            path = getattr(self.cfg, key)
            if is_url(path) and key in ("reward_model", "cost_model"):
                continue  # a remote scorer (rad.runtime.http_scorer)
            if path and not (Path(path) / "config.json").is_file():
                what = "is not a directory" if not Path(path).is_dir() else "has no config.json"
                raise ConfigError(f"{key}: {path!r} {what}; expected a saved model directory (the output of "
                                  f"the stage that trains it)")

    # -- the hooks of an algorithm ---------------------------------------------------------------
    def policy_role(self) -> TrainedRole:
        """The policy learner's actor class and arguments (``PolicyLearner`` or a subclass)."""
        raise NotImplementedError

    def trained_roles(self) -> dict[str, TrainedRole]:
        """Further DeepSpeed-trained groups (e.g. critics), by name; none by default."""
        return {}

    def policy_learner(self) -> LearnerConfig:
        """The policy learner's settings (the reference takes its ``logprob_chunk_size`` and ``group_by_length``)."""
        raise NotImplementedError

    def train_step(self, *args: Any) -> dict[str, float]:
        """One step: generate, score, update every trained role, sync the engines; the step's metrics."""
        raise NotImplementedError

    def before_loop(self) -> tuple[tuple, dict[str, Any]]:
        """Arguments of every ``train_step`` and extra summary entries."""
        return (), {}

    def checkpoint_groups(self) -> dict[str, Any]:
        """The trained groups of a checkpoint, by sub-directory ("" = the checkpoint directory itself)."""
        return {"": self.learners}

    def trainer_state(self) -> dict[str, Any]:
        """The controller's own state in a checkpoint (besides step and seed)."""
        return {}

    def load_trainer_state(self, state: dict[str, Any]) -> None:
        pass

    def compare(self, policy: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
        """The held-out result of the returned policy against the reference (SFT)."""
        return self.common_comparison(policy, reference)

    def progress(self, last: dict[str, float]) -> dict[str, str]:
        return {}

    def summary_extra(self) -> dict[str, Any]:
        return {}

    def make_selector(self):
        """A :class:`~rad.algos.selection.ValidationSelector` when the algorithm selects a validated step."""
        return None

    # -- the roles -------------------------------------------------------------------------------
    @property
    def learners(self):
        """The policy learner ranks."""
        return self.roles.learners

    @property
    def rollout(self):
        return self.roles.rollout

    @property
    def reference_policy(self):
        """The reference policy's log-prob worker group."""
        return self.roles.reference_policy

    @property
    def scorers(self):
        return self.roles.scorers

    @property
    def placement(self):
        return self.roles.placement

    def score(self, prompts: list[str], responses: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.roles.score(prompts, responses)

    def sample(self, prompts: list[str], n: int, seed: int):
        import dataclasses

        return self.roles.sample(prompts, n, dataclasses.replace(self.cfg.rollout.sampling, seed=seed))

    def step_seed(self, step: int | None = None) -> int:
        """The sampling seed of step ``step``'s rollouts (default: the current step)."""
        return self.cfg.rollout.sampling.seed + 1000 * ((self.step if step is None else step) + 1)

    # -- rollouts, optionally generated one step ahead ----------------------------------------------
    #: (step, generate_async handle, its sorted rollouts once collected) of rollouts generated ahead, during
    #: the previous step's learner update
    _ahead: tuple[int, list, list | None] | None = None

    def step_rollouts(self, prompts: list[str], n: int) -> tuple[list, int]:
        """This step's rollouts, sorted by (prompt, sample), and their lag in policy versions: 1 when they were
        generated ahead (:meth:`generate_ahead`, with the weights from before the previous update), else 0.

        A resumed run starts without rollouts ahead, so its first step after the checkpoint is on-policy."""
        if self._ahead is not None and self._ahead[0] == self.step:
            rollouts, lag = self.rollouts_ahead(), 1
        else:
            rollouts, lag = sorted_rollouts(self.sample(prompts, n, seed=self.step_seed())), 0
        self._ahead = None
        return rollouts, lag

    def generate_ahead(self, n: int) -> None:
        """Start the next step's generation (``n`` samples per prompt, that step's prompts and seed) on the
        engines with the weights they hold now. Call it after the learners' update is launched and before the
        weight sync: the engines generate while the learners update, and the sync runs after the generation
        (calls on an actor run in order). The next step then learns from samples one policy version old."""
        nxt = self.step + 1
        if nxt >= self.cfg.algo.steps:
            return
        import dataclasses

        sampling = dataclasses.replace(self.cfg.rollout.sampling, seed=self.step_seed(nxt))
        self._ahead = (nxt, self.rollout.generate_async(self.step_prompts(nxt), n, sampling), None)

    def rollouts_ahead(self) -> list | None:
        """Wait for the rollouts :meth:`generate_ahead` started and return them sorted as :meth:`step_rollouts`
        gives them (the next step takes this very list); None when no generation is ahead."""
        if self._ahead is None:
            return None
        step, calls, rollouts = self._ahead
        if rollouts is None:
            rollouts = sorted_rollouts(self.rollout.collect(calls))
            self._ahead = (step, calls, rollouts)
        return rollouts

    def token_batch(self, rollouts):
        """The typed batch of sorted rollouts (:class:`~rad.runtime.batch.TokenBatch`, padded with the policy's
        pad id): what the controller sends to every role that reads token ids."""
        from rad.runtime.batch import TokenBatch

        return TokenBatch.from_ids([r.prompt_token_ids for r in rollouts], [r.response_token_ids for r in rollouts],
                                   self.pad_id)

    def step_prompt_indices(self, step: int) -> list[int]:
        """Indices of step ``step``'s prompts: consecutive slices of seeded per-epoch permutations."""
        p = self.cfg.algo.prompts_per_step
        out = []
        for pos in range(step * p, (step + 1) * p):
            epoch, i = divmod(pos, len(self.prompts))
            order = list(range(len(self.prompts)))
            random.Random(self.cfg.seed * 7919 + epoch).shuffle(order)
            out.append(order[i])
        return out

    def step_prompts(self, step: int) -> list[str]:
        return [self.prompts[i] for i in self.step_prompt_indices(step)]

    # -- checkpoints -----------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        import ray

        from rad.runtime.checkpoint import atomic_dir, checkpoint_dir, prune_checkpoints, write_trainer_state

        final = checkpoint_dir(self.out, self.step)
        with atomic_dir(final) as tmp:
            ray.get([ref for sub, group in self.checkpoint_groups().items()
                     for ref in group.broadcast_async("save_checkpoint", str(tmp / sub))])
            write_trainer_state(tmp, {"step": self.step, "seed": self.cfg.seed, **self.trainer_state(),
                                      "selection": self.selector.state() if self.selector else None,
                                      "metrics_offset": self._logger.position() if self._logger else None})
        prune_checkpoints(self.out, self.cfg.keep_checkpoints)
        return final

    def resume(self) -> bool:
        import ray

        from rad.runtime.checkpoint import latest_checkpoint, read_trainer_state

        ckpt = latest_checkpoint(self.out)
        if ckpt is None:
            self._metrics_resume = (0, 0)  # the rows of an attempt cut before its first checkpoint are redone
            return False
        ray.get([ref for sub, group in self.checkpoint_groups().items()
                 for ref in group.broadcast_async("load_checkpoint", str(ckpt / sub))])
        state = read_trainer_state(ckpt)
        self.step = state["step"]
        self._metrics_resume = (self.step, state.get("metrics_offset"))
        self.load_trainer_state(state)
        self._selection_state = state.get("selection")
        self.roles.sync_weights()
        log.info("resumed %s from %s (step %d)", self.name, ckpt, self.step)
        return True

    # -- the reference policy's cached results ----------------------------------------------------
    def sample_inputs(self, prompts: list[str], n: int, seed: int) -> dict[str, Any]:
        """:func:`reference_sample_inputs` of this run."""
        return reference_sample_inputs(self.cfg, self.reference_dir, prompts, n, seed)

    def reusable(self, path: Path, inputs: dict[str, Any]) -> bool:
        """Whether the reference's cached result ``path`` was computed from ``inputs``; False when it must be
        computed now (logged if a stale one is replaced). Raises after step 0, when the engines hold the trained
        policy and the reference can no longer be sampled."""
        from rad.runtime.provenance import stale_reason

        reason = stale_reason(path, inputs)
        if reason is None:
            return True
        if self.step > 0:
            raise ConfigError(f"{path} {reason}; it holds the reference policy's samples, which cannot be drawn "
                              f"again after step 0 (the engines hold the trained policy): run into a new output_dir")
        if path.exists():
            log.warning("%s %s; computing it again", path, reason)
        return False

    def reference_evaluation(self, tag: str, prompts: list[str], seed: int, n: int) -> dict[str, Any]:
        """:meth:`evaluate_policy` of the reference (the engines' weights at step 0) into ``eval_<tag>.json``, or
        that file when it was computed from the same inputs."""
        from rad.runtime.provenance import record_inputs

        path, inputs = self.out / f"eval_{tag}.json", self.sample_inputs(prompts, n, seed)
        if self.reusable(path, inputs):
            return json.loads(path.read_text())
        record = self.evaluate_policy(tag, prompts, seed, n)
        record_inputs(path, inputs)
        return record

    # -- evaluation ------------------------------------------------------------------------------
    _EVAL_SEED = 4242

    def evaluate_policy(self, tag: str | None, prompts: list[str] | None = None, seed: int = _EVAL_SEED,
                        n: int | None = None) -> dict[str, Any]:
        """``n`` samples (default ``eval_samples_per_prompt``) per prompt of ``prompts`` (default: the
        held-out ones) with the current engine weights, scored.

        Written to ``eval_<tag>.json`` unless ``tag`` is None. The sampling seed is fixed, so
        two policies are compared on common random numbers.
        """
        n = n or self.cfg.eval_samples_per_prompt
        rollouts = self.sample(self.eval_prompts if prompts is None else prompts, n, seed=self.cfg.seed + seed)
        rollouts.sort(key=lambda r: (r.prompt_index, r.sample_index))
        prompts = [r.prompt for r in rollouts]
        responses = [r.response_text for r in rollouts]
        rewards, costs = self.score(prompts, responses)
        record = {"prompts": prompts, "responses": responses, "rewards": rewards.tolist(), "costs": costs.tolist()}
        if tag is not None:
            (self.out / f"eval_{tag}.json").write_text(json.dumps(record))
        return record

    def common_comparison(self, policy: dict[str, Any], reference: dict[str, Any]) -> dict[str, float]:
        """Cost, reward, safety and (on the embedded world) hidden-harm numbers of policy vs reference."""
        from rad.algos.selection import tie_rate, win_rate
        from rad.risk import spectral_risk

        pc, rc = torch.tensor(policy["costs"]), torch.tensor(reference["costs"])
        pr, rr = torch.tensor(policy["rewards"]), torch.tensor(reference["rewards"])
        out = {"cost_mean_policy": float(pc.mean()), "cost_mean_reference": float(rc.mean()),
               "cost_cvar_0.9_policy": float(spectral_risk(pc, "cvar:0.9")),
               "cost_cvar_0.9_reference": float(spectral_risk(rc, "cvar:0.9")),
               "reward_mean_policy": float(pr.mean()), "reward_mean_reference": float(rr.mean()),
               "safe_fraction_policy": float((pc <= 0).double().mean()),
               "safe_fraction_reference": float((rc <= 0).double().mean()),
               "reward_win_rate": win_rate(pr, rr), "reward_tie_rate": tie_rate(pr, rr)}
        oracle = self._oracle()
        if oracle is not None:
            ph = torch.tensor([oracle.harm(p, r) for p, r in zip(policy["prompts"], policy["responses"])])
            rh = torch.tensor([oracle.harm(p, r) for p, r in zip(reference["prompts"], reference["responses"])])
            for who, harm in (("policy", ph), ("reference", rh)):
                # CVaR-0.99 too: on the heavy-tailed world the severe answers are ~1 % of the reference's
                out.update({f"true_harm_cvar_0.9_{who}": float(spectral_risk(harm, "cvar:0.9")),
                            f"true_harm_cvar_0.99_{who}": float(spectral_risk(harm, "cvar:0.99")),
                            f"true_harm_mean_{who}": float(harm.mean()),
                            f"true_unsafe_fraction_{who}": float((harm > 0).double().mean())})
        return out

    def _oracle(self):
        if not all(spec_name(spec).startswith("embedded/") for spec in self.cfg.data.eval_prompts):
            return None
        from rad.data.world_oracle import WorldOracle

        return WorldOracle(self.cfg.world.harm_profile)

    # -- validation and the returned policy --------------------------------------------------------
    _VAL_SEED = 5151

    def validation_reference(self) -> dict[str, Any]:
        """The reference's validation samples, drawn at step 0 and cached with the run."""
        return self.reference_evaluation("validation_reference", self.val_prompts, self._VAL_SEED,
                                         self.selection.samples_per_prompt)

    def validate(self, logger) -> None:
        """Every ``selection.every`` steps and at the last: score the policy on the validation prompts."""
        if self.selector is None or (self.step % self.selection.every and self.step != self.cfg.algo.steps):
            return
        record = self.evaluate_policy(f"validation_step{self.step}", self.val_prompts, self._VAL_SEED,
                                      self.selection.samples_per_prompt)
        cand, better = self.selector.judge(self.step, record)
        if better:
            self.learners.broadcast("save_pretrained", str(self.out / "best"))
        logger.log(self.selector.metrics(cand), step=self.step)

    def save_returned_policy(self) -> tuple[str, dict[str, Any]]:
        """Write ``model/`` (the last iterate or the selected one), load it into the engines; (dir, summary)."""
        best = self.selector.best if self.selector else None
        model = self.out / "model"
        if best is None:
            out = self.learners.broadcast("save_pretrained", str(model))[0]
            return out, ({"select": "feasible", "selected_step": None, "reason": "no validated step was feasible; "
                          "returning the last iterate"} if self.selector else {})
        import shutil

        from rad.runtime.checkpoint import atomic_dir

        with atomic_dir(model) as tmp:
            shutil.copytree(self.out / "best", tmp, dirs_exist_ok=True)
        self.rollout.load_weights_from(str(model))
        return str(model), {"select": "feasible", "selected_step": best.step, "validation": self.selector.state()}

    # -- the loop --------------------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        from tqdm.auto import tqdm

        from rad.runtime.metrics import MetricsLogger

        if self.cfg.resume:
            self.resume()
        reference_eval = self.reference_evaluation("reference", self.eval_prompts, self._EVAL_SEED,
                                                   self.cfg.eval_samples_per_prompt)
        step_args, extra = self.before_loop()
        self.selector = self.make_selector()
        if self.selector is not None:
            self.selector.load_state(self._selection_state)
        last: dict[str, float] = {}
        with MetricsLogger(self.out, self.cfg.logging, config=to_dict(self.cfg), resume=self._metrics_resume) as logger:
            self._logger = logger
            bar = tqdm(total=self.cfg.algo.steps, initial=self.step, desc=self.name, unit="step",
                       disable=not self.cfg.logging.progress, dynamic_ncols=True)
            while self.step < self.cfg.algo.steps:
                profiled = self.step + 1 in self.cfg.profile.steps
                if profiled:
                    self.profile_start()
                last = self.train_step(*step_args)
                if profiled:
                    self.profile_stop()
                if self.step % self.cfg.logging.log_every == 0:
                    logger.log(last, step=self.step)
                bar.update(1)
                bar.set_postfix(**self.progress(last))
                self.validate(logger)
                if self.cfg.save_every and self.step % self.cfg.save_every == 0:
                    self.save_checkpoint()
            bar.close()
            if not self.cfg.save_every or self.step % self.cfg.save_every:
                self.save_checkpoint()
            model_out, selection = self.save_returned_policy()
            final_eval = self.evaluate_policy("policy")
            comparison = self.compare(final_eval, reference_eval)
            logger.log({f"eval/{k}": v for k, v in comparison.items()}, step=self.step)
        summary = {"model_dir": model_out, "steps": self.step, **self.summary_extra(),
                   **({"selection": selection} if selection else {}),
                   "startup_seconds": round(self.startup_seconds, 1), **extra, "engine": self.rollout.kind,
                   "weight_sync": self.roles.transport, "last_step": last, "heldout": comparison}
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary

    # -- profiling (profile.steps) ------------------------------------------------------------------
    def profile_start(self) -> None:
        """The PyTorch profiler in every actor and in this controller process (:mod:`rad.runtime.profiling`)."""
        from rad.runtime.profiling import ActorProfiler

        self.roles.profile_start()
        self._profiler = ActorProfiler()
        self._profiler.start()

    def profile_stop(self) -> None:
        """Stop every profiler; write ``profile/step<N>/`` (profile.md, profile.json, traces if asked)."""
        from rad.runtime.profiling import write_profile

        cfg = self.cfg.profile
        out = self.out / "profile" / f"step{self.step}"  # write_profile and the traces create it
        controller = self._profiler.stop(str(out / "controller.trace.json") if cfg.trace else None, cfg.row_limit)
        processes = {"controller": controller, **self.roles.profile_stop(out, cfg.trace, cfg.row_limit)}
        log.info("profile of step %d: %s", self.step, write_profile(out, processes, self.step))

    def shutdown(self) -> None:
        self.roles.shutdown()

    @staticmethod
    def common_step_metrics(rollouts, lengths: torch.Tensor, elapsed: float, timer, sync) -> dict[str, float]:
        """The metrics every algorithm logs for a step: response shape, throughput, phase times, sync."""
        return {"response/length_mean": float(lengths.mean()),
                "response/eos_fraction": sum(r.finish_reason == "stop" for r in rollouts) / len(rollouts),
                "throughput/samples_per_s": len(rollouts) / elapsed,
                "throughput/tokens_per_s": float(lengths.sum()) / elapsed,
                **timer.metrics(), "timing/step": elapsed, **sync.metrics()}


def run_trainer(cls: type[OnlineRLTrainer], cfg: Any) -> dict[str, Any]:
    """The command: hold ``cfg.output_dir`` (:func:`rad.runtime.run_dir.open_run`: lock, recorded config, a
    finished run's summary), build the trainer, train, then release every role (also on errors)."""
    from rad.runtime.run_dir import open_run

    with open_run(cfg) as finished:
        if finished is not None:
            return finished
        trainer = cls(cfg)
        try:
            return trainer.train()
        finally:
            trainer.shutdown()
