"""PPO-Lag (Safe RLHF) vs RAD: peak memory and step time on the same model, batch and hardware, in one run.

    python -m bench.ppo_lag_vs_rad [--size small] [--steps 5] [--prompts 16] [--k 2] [--max-new-tokens 48]
                                   [--policy DIR --reward-model DIR --cost-model DIR] [--out FILE]

Both controllers run one after the other in the same Ray cluster, on the same
policy and score models, with the same rollout batch (``--prompts`` prompts x
``--k`` samples), the same rollout engine, the same learner settings (ZeRO stage,
micro batch) and the same sampling seeds. Responses never stop at EOS, so every
step generates exactly ``prompts * k * max_new_tokens`` tokens whatever the
policy has learnt. PPO-Lag does one PPO update per rollout step (train batch =
rollout batch, ``update_iters`` 1), like RAD's one optimizer step.

Without ``--policy`` the tiny model of ``--size`` is used with seeded, untrained
reward / cost heads on its backbone (time and memory do not depend on what the
score models learnt).

Measured per algorithm:

* step time: median and best of ``timing/step`` over ``--steps`` steps after one
  warm-up step, and the medians of the phases (generation, scoring, logprobs,
  learner, weight sync); RAD's one-off reference particles are timed separately;
* peak memory: the sum over the role processes of their proportional set size
  (PSS: shared library pages split between the processes mapping them), sampled
  every 0.2 s by the driver during the steps; and each role's own peak RSS
  (``ru_maxrss``);
* model state: bytes of every tensor each role holds in its models and
  optimizers (weights, gradients, Adam moments), deduplicated by storage. This is
  what scales with model size and decides how many GPUs a method needs.

Results go to ``bench/results/ppo_lag_vs_rad.json`` with ratios PPO-Lag / RAD.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from bench.generation import _cpu_model, _versions  # noqa: E402


def _pid(self) -> int:
    return os.getpid()


def _peak_rss(self) -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _state_bytes(self) -> dict[str, int]:
    """Bytes of the tensors held by the actor's modules and optimizers (params, grads, buffers, Adam state)."""
    import torch

    seen: set[int] = set()
    totals = {"parameters": 0, "gradients": 0, "optimizer": 0}

    def add(t, kind):
        if not isinstance(t, torch.Tensor) or t.device.type == "meta":
            return
        storage = t.untyped_storage()
        if storage.data_ptr() in seen or storage.nbytes() == 0:
            return
        seen.add(storage.data_ptr())
        totals[kind] += storage.nbytes()

    visited: set[int] = set()

    def walk(obj, depth):
        if depth > 4 or id(obj) in visited:
            return
        visited.add(id(obj))
        if isinstance(obj, torch.nn.Module):
            for p in obj.parameters():
                add(p, "parameters")
                add(p.grad, "gradients")
            for b in obj.buffers():
                add(b, "parameters")
        if isinstance(obj, torch.optim.Optimizer):
            for state in obj.state.values():
                for v in state.values():
                    add(v, "optimizer")
        if isinstance(obj, dict):
            items = obj.values()
        elif isinstance(obj, (list, tuple)):
            items = obj
        elif hasattr(obj, "__dict__") and not isinstance(obj, torch.nn.Module):
            items = vars(obj).values()
        elif isinstance(obj, torch.nn.Module):
            items = [v for k, v in vars(obj).items() if k not in ("_parameters", "_buffers", "_modules")]
        else:
            return
        for item in items:
            walk(item, depth + 1)

    walk(self, 0)
    return totals


class PssSampler:
    """Samples the summed PSS of a set of processes in a thread; ``peak`` is the largest sum seen."""

    def __init__(self, pids: list[int], interval: float = 0.2):
        import psutil

        self.procs = [psutil.Process(p) for p in pids]
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            total = 0
            for proc in self.procs:
                try:
                    total += proc.memory_full_info().pss
                except Exception:  # a process that exited counts as 0
                    pass
            self.peak = max(self.peak, total)
            self._stop.wait(self.interval)

    def __enter__(self) -> "PssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _roles(trainer, algo: str) -> dict[str, list]:
    common = {"reference": trainer.reference.actors, "scorer": trainer.scorers.actors,
              "rollout": trainer.rollout.actors}
    if algo == "rad":
        return {"policy_learner": trainer.learners.actors, **common}
    return {"actor": trainer.actor.actors, "reward_critic": trainer.reward_critic.actors,
            "cost_critic": trainer.cost_critic.actors, **common}


def _call_all(roles: dict[str, list], fn) -> dict[str, list]:
    import ray

    return {name: ray.get([a.__ray_call__.remote(fn) for a in actors]) for name, actors in roles.items()}


def run_algo(algo: str, common: list[str], args, out_dir: Path) -> dict:
    from rad.config import load_config

    if algo == "rad":
        from rad.algos.rad import RADConfig as Cfg
        from rad.algos.rad import RADTrainer as Trainer

        overrides = [f"algo.k={args.k}", f"algo.prompts_per_step={args.prompts}", "algo.n_particles=32",
                     "algo.ref_prompts=16", "algo.ref_samples_per_prompt=2", "learner.lr=1e-4",
                     f"learner.micro_batch_size={args.micro_batch}", "learner.zero_stage=0"]
    else:
        from safe_rlhf_baseline.config import PPOLagConfig as Cfg
        from safe_rlhf_baseline.trainer import PPOLagTrainer as Trainer

        batch = args.prompts * args.k
        overrides = [f"algo.samples_per_prompt={args.k}", f"algo.prompts_per_step={args.prompts}",
                     f"algo.train_batch_size={batch}", "algo.update_iters=1", "actor_learner.lr=1e-4",
                     f"actor_learner.micro_batch_size={args.micro_batch}", "actor_learner.zero_stage=0",
                     f"critic_learner.micro_batch_size={args.micro_batch}", "critic_learner.zero_stage=0"]
    cfg = load_config(Cfg, None, common + overrides + [f"output_dir={out_dir / algo}", f"algo.steps={args.steps + 1}"])
    t0 = time.perf_counter()
    trainer = Trainer(cfg)
    startup = time.perf_counter() - t0
    try:
        roles = _roles(trainer, algo)
        pids = [p for ps in _call_all(roles, _pid).values() for p in ps]
        extra: dict[str, float] = {}
        if algo == "rad":
            t0 = time.perf_counter()
            particles = trainer.reference_particles()
            extra["reference_particles_seconds"] = time.perf_counter() - t0
            step = lambda: trainer.train_step(particles)  # noqa: E731
        else:
            step = trainer.train_step
        step()  # warm-up: first-call allocations, lazy inits
        rows = []
        with PssSampler(pids) as sampler:
            for _ in range(args.steps):
                rows.append(step())
        rss = _call_all(roles, _peak_rss)
        state = _call_all(roles, _state_bytes)
    finally:
        trainer.shutdown()
    phases = sorted({k for r in rows for k in r if k.startswith("timing/") and "megabytes" not in k})
    role_state = {name: {k: sum(s[k] for s in per) for k in per[0]} for name, per in state.items()}
    return {
        "roles": {name: len(actors) for name, actors in roles.items()},
        "startup_seconds": startup, **extra,
        "step_seconds_median": statistics.median(r["timing/step"] for r in rows),
        "step_seconds_best": min(r["timing/step"] for r in rows),
        "phase_seconds_median": {p: statistics.median(r.get(p, 0.0) for r in rows) for p in phases},
        "peak_pss_total_bytes": sampler.peak,
        "peak_rss_bytes": {name: sum(v) for name, v in rss.items()},
        "peak_rss_total_bytes": sum(sum(v) for v in rss.values()),
        "model_state_bytes": role_state,
        "model_state_total_bytes": sum(sum(v.values()) for v in role_state.values()),
        "trained_model_state_bytes": sum(sum(v.values()) for n, v in role_state.items()
                                         if n in ("policy_learner", "actor", "reward_critic", "cost_critic")),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="small", choices=("tiny", "small"), help="tiny model preset (without --policy)")
    p.add_argument("--policy", help="policy directory (default: the tiny model of --size)")
    p.add_argument("--reward-model", help="reward model directory (default: seeded head on the policy)")
    p.add_argument("--cost-model", help="cost model directory (default: seeded head on the policy)")
    p.add_argument("--steps", type=int, default=5, help="measured steps per algorithm (after one warm-up)")
    p.add_argument("--prompts", type=int, default=16, help="prompts per step")
    p.add_argument("--k", type=int, default=2, help="samples per prompt")
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--micro-batch", type=int, default=16, help="learner micro batch (both algorithms)")
    p.add_argument("--num-cpus", type=int, default=8, help="logical CPUs of the local Ray cluster")
    p.add_argument("--out", default="bench/results/ppo_lag_vs_rad.json")
    args = p.parse_args(argv)

    import ray

    from rad.models.loading import load_tokenizer
    from rad.models.score_model import build_score_model, save_score_model
    from rad.settings import WorldConfig

    tmp = Path(tempfile.mkdtemp(prefix="bench-ppo-lag-"))
    if args.policy:
        policy = args.policy
    else:
        from rad.algos.assets import tiny_model_dir

        policy = str(tiny_model_dir(WorldConfig(), size=args.size))
    scores = {}
    for kind, given in (("reward", args.reward_model), ("cost", args.cost_model)):
        if given:
            scores[kind] = given
            continue
        tok = load_tokenizer(policy, padding_side="right")
        scores[kind] = str(save_score_model(build_score_model(policy, kind=kind, tokenizer=tok, seed=7),
                                            tmp / kind, tok))
    common = [f"policy.name_or_path={policy}", f"reward_model={scores['reward']}", f"cost_model={scores['cost']}",
              "rollout.engine=hf", f"rollout.sampling.max_new_tokens={args.max_new_tokens}",
              "rollout.sampling.stop_on_eos=false", "data.eval_prompts=embedded/prompts-test:2",
              "eval_samples_per_prompt=1", "save_every=0", "logging.tensorboard=false", "logging.jsonl=false",
              "logging.progress=false"]
    ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}})
    load_before = os.getloadavg()
    try:
        results = {algo: run_algo(algo, common, args, tmp) for algo in ("rad", "ppo_lag")}
    finally:
        ray.shutdown()
    rad, lag = results["rad"], results["ppo_lag"]
    ratios = {k: lag[k] / rad[k] for k in ("step_seconds_median", "step_seconds_best", "peak_pss_total_bytes",
                                            "peak_rss_total_bytes", "model_state_total_bytes",
                                            "trained_model_state_bytes")}
    ratios["learner_phase"] = (lag["phase_seconds_median"]["timing/learner"]
                               / rad["phase_seconds_median"]["timing/learner"])
    report = {
        "command": " ".join([Path(sys.executable).name, "-m", "bench.ppo_lag_vs_rad", *(argv or sys.argv[1:])]),
        "date": datetime.datetime.now().isoformat(timespec="seconds"), "cpu": _cpu_model(),
        "cores": os.cpu_count(), "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "versions": _versions(), "policy": policy,
        "batch": {"prompts": args.prompts, "k": args.k, "max_new_tokens": args.max_new_tokens,
                  "micro_batch": args.micro_batch},
        "results": results, "ratios_ppo_lag_over_rad": ratios,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps({"ratios_ppo_lag_over_rad": ratios, "out": str(out)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
