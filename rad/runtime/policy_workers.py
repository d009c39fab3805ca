"""Policy-side roles: the DeepSpeed policy learner (data-parallel ranks) and the frozen reference.

Both take a :class:`~rad.runtime.batch.TokenBatch` of the token ids the rollout engines
produced (so log-probs are computed on exactly the sampled tokens) and return per-token
values as one ``[B, T-1]`` tensor in the batch's log-prob coordinates; training reads the
per-sample field ``advantages`` (and ``behaviour_logp`` for samples of an older policy).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from rad.runtime.batch import TokenBatch
from rad.runtime.deepspeed_rank import DeepSpeedRank
from rad.runtime.logprobs import collate_samples, token_logprobs, truncated_importance_weights
from rad.runtime.profiling import RoleDiagnostics
from rad.settings import LearnerConfig, PolicyLora

__all__ = ["PolicyLearner", "ReferenceWorker", "collate_samples", "token_logprobs"]


class ReferenceWorker(RoleDiagnostics):
    """The frozen reference policy: sequence log-probs of given samples, no gradient.

    ``micro_batch_size`` samples go through each forward pass (with ``group_by_length``
    samples of similar lengths together, as ``learner.group_by_length``); ``logprob_chunk_size``
    is :func:`~rad.runtime.logprobs.token_logprobs`'s ``chunk_size`` (0 = the plain pass).
    ``allow_pickle`` lets it load pickled (``.bin``) weights.
    """

    def __init__(self, model_dir: str, dtype: str = "float32", micro_batch_size: int = 16,
                 trust_remote_code: bool = False, logprob_chunk_size: int = 0, device: str = "auto",
                 allow_pickle: bool = False, group_by_length: bool = False):
        from rad.models.loading import load_causal_lm, load_tokenizer
        from rad.runtime.distributed import resolve_dtype, role_device

        torch.manual_seed(0)
        self.device = role_device(device)
        self.tokenizer = load_tokenizer(model_dir, trust_remote_code=trust_remote_code)
        self.model = load_causal_lm(model_dir, dtype=resolve_dtype(dtype, self.device),
                                    trust_remote_code=trust_remote_code, allow_pickle=allow_pickle,
                                    tokenizer=self.tokenizer)
        self.model.to(self.device).requires_grad_(False)
        self.micro = micro_batch_size
        self.chunk_size = logprob_chunk_size
        self.group_by_length = group_by_length

    def info(self) -> dict[str, Any]:
        return {"device": str(self.device), "dtype": str(next(self.model.parameters()).dtype)}

    def diagnostics_device(self):
        return self.device

    @torch.no_grad()
    def logprobs(self, batch: TokenBatch) -> torch.Tensor:
        """``[B, T-1]`` float32 log-probs of the batch's response tokens (0 elsewhere), on the CPU."""
        micro, order = batch.cut_micro_batches(self.micro, self.group_by_length)
        return batch.in_order([token_logprobs(self.model, mb.model_inputs(self.model.device), self.chunk_size).cpu()
                               for mb in micro], order)


class PolicyLearner(DeepSpeedRank):
    """One data-parallel rank of the policy (a causal LM) on DeepSpeed.

    Ranks rendezvous through :meth:`address` and :meth:`init` (see
    :class:`~rad.runtime.deepspeed_rank.DeepSpeedRank`). Each :meth:`train_step`
    takes this rank's shard of the batch; DeepSpeed averages gradients across ranks.
    ``allow_pickle`` lets it start from pickled (``.bin``) weights (it saves safetensors).
    With ``lora`` (enabled :class:`~rad.settings.PolicyLora`) only LoRA adapters train
    (:mod:`rad.models.lora`); the engines receive, and :meth:`save_pretrained` writes, the plain
    model with the adapters merged, under the base model's names.
    """

    def __init__(self, model_dir: str, cfg: LearnerConfig, total_steps: int, dtype: str = "float32",
                 trust_remote_code: bool = False, loss_aggregation: str = "sequence_sum", allow_pickle: bool = False,
                 prompt_format: str = "", lora: PolicyLora | None = None):
        super().__init__(cfg, total_steps, dtype, trust_remote_code)
        self.lora = lora if lora is not None and lora.enabled else None
        self.prompt_format = prompt_format  # the policy's, '' = saved with it; saved with the trained policy
        self.model_dir = model_dir
        self.loss_aggregation = loss_aggregation
        self.allow_pickle = allow_pickle

    def build_model(self) -> torch.nn.Module:
        from rad.models.loading import load_causal_lm, load_tokenizer
        from rad.runtime.distributed import resolve_dtype

        self.tokenizer = load_tokenizer(self.model_dir, trust_remote_code=self.trust_remote_code,
                                        prompt_format=self.prompt_format, format_key="policy.prompt_format")
        model = load_causal_lm(self.model_dir, dtype=resolve_dtype(self.dtype),
                               trust_remote_code=self.trust_remote_code, allow_pickle=self.allow_pickle,
                               tokenizer=self.tokenizer)
        if self.lora is None:
            return model
        from rad.models.lora import add_lora

        return add_lora(model, self.lora.r, self.lora.alpha, self.lora.dropout, self.lora.target_modules)

    def token_logprobs(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """:func:`~rad.runtime.logprobs.token_logprobs` of the learner with this rank's memory options."""
        return token_logprobs(self.learner, batch, chunk_size=self.cfg.logprob_chunk_size, packing=self.cfg.packing)

    @torch.no_grad()
    def logprobs(self, batch: TokenBatch) -> torch.Tensor:
        """``[B, T-1]`` float32 log-probs under the current policy (no gradient; 0 off the response), on the CPU."""
        self.learner.eval()
        micro, order = batch.cut_micro_batches(self.cfg.micro_batch_size, self.cfg.group_by_length)
        out = [self.token_logprobs(mb.model_inputs(self.learner.device)).cpu() for mb in micro]
        self.learner.train()
        return batch.in_order(out, order)

    def train_step(self, batch: TokenBatch, is_cap: float | None = None) -> dict[str, float]:
        """One optimizer step of REINFORCE on this rank's shard: loss = -mean_i w_i A_i * agg_t log pi.

        ``batch.sample_fields["advantages"]`` holds A. ``sequence_sum`` (default) is the
        unbiased score-function estimator of the sequence-level objective; ``token_mean``
        divides each sequence's log-prob by its length (lower variance, biased towards
        short responses). w = 1, unless the batch carries ``behaviour_logp``, the summed
        response log-probs under the policy that sampled it (mu): then w is the truncated
        importance weight ``min(pi / mu, is_cap)`` with pi from this very forward pass (no
        gradient through w; ``is_cap`` > 0 is then required), and the result adds the sums ``is_weight_sum``,
        ``is_weight_capped`` and ``log_ratio_abs_sum`` over the shard's ``samples``.
        """
        off_policy = "behaviour_logp" in batch.sample_fields
        if off_policy and (is_cap is None or is_cap <= 0):
            raise ValueError(f"train_step: the batch carries behaviour_logp, so is_cap must be a number > 0 "
                             f"(the importance-weight cap), got {is_cap!r}")
        self.learner.train()
        micro = self.step_micro_batches(batch, "policy")
        total_loss, total_logp = 0.0, 0.0
        is_stats = {"is_weight_sum": 0.0, "is_weight_capped": 0.0, "log_ratio_abs_sum": 0.0, "samples": 0.0}
        for mb in micro:
            inputs = mb.model_inputs(self.learner.device)
            adv = mb.sample("advantages", self.learner.device)
            lp = self.token_logprobs(inputs)
            seq = lp.sum(-1)
            if off_policy:
                target = seq.detach().double()
                behaviour = mb.sample("behaviour_logp", self.learner.device, torch.float64)
                w = truncated_importance_weights(target, behaviour, is_cap)
                adv = adv * w.to(adv.dtype)
                is_stats["is_weight_sum"] += w.sum().item()
                is_stats["is_weight_capped"] += (w >= is_cap).sum().item()
                is_stats["log_ratio_abs_sum"] += (target - behaviour).abs().sum().item()
                is_stats["samples"] += len(w)
            if self.loss_aggregation == "token_mean":
                seq = seq / inputs["response_mask"][:, 1:].sum(-1).clamp(min=1)
            weight = self.micro_weight(mb, batch)
            loss = -(adv * seq).mean() * weight
            self.learner.backward(loss)
            self.learner.step()
            total_loss += loss.item() / len(micro)
            total_logp += seq.mean().item() * weight / len(micro)
        norm = self.learner.grad_norm()
        return {"loss": total_loss, "logprob": total_logp, "lr": self.learner.lr(),
                **({"grad_norm": norm} if norm is not None else {}), **(is_stats if off_policy else {})}

    def save_pretrained(self, out_dir: str) -> str:
        return str(self.learner.save_pretrained(Path(out_dir), self.tokenizer,
                                                adapter=self.lora is not None and self.lora.save_adapter))

    def policy_weights(self) -> dict[str, torch.Tensor]:
        """The policy as the engines and a save see it (the plain model's names; LoRA merged), on the CPU."""
        if self.lora is None:
            return self.state_dict()
        from rad.models.lora import merged_state_dict

        return merged_state_dict(self.learner.module)

    # -- weights to the rollout engines (rad.runtime.rollout.weight_sync): the learner sends them ----
    def connect_rollout(self, engines: Sequence[Any], transport: str, engine_device: str, timeout_s: float,
                        bucket_mb: float) -> str:
        """Every rank: the bucket layout; rank 0 also builds the sender to ``engines`` (Ray actor handles).

        Call on all ranks at once (a broadcast sender forms its process group here). Returns
        the resolved transport.
        """
        from rad.errors import ConfigError
        from rad.runtime.rollout.weight_sync import (make_weight_sender, named_weights, resolve_transport,
                                                     weight_layout)

        if transport == "hybrid":  # the engines are these ranks' own modules: nothing to send
            self._weights, self._layout, self._sender, self._hybrid = {}, [], None, True
            return transport
        self._hybrid = False
        kind = resolve_transport(transport, str(self.learner.device), engine_device,
                                 self._engines_on_my_gpu(engines), len(engines))
        if kind == "ipc" and self.cfg.zero_stage == 3:
            raise ConfigError("rollout.weight_sync=ipc shares the learner's own parameters, which ZeRO-3 "
                              "partitions; use broadcast with learner.zero_stage=3")
        if kind == "ipc" and self.lora is not None:
            if transport != "auto":
                raise ConfigError("rollout.weight_sync=ipc shares the learner's own parameters, but with lora the "
                                  "engines get merged weights computed at each sync; use object_store (or auto)")
            kind = "object_store"
        module = self.learner.module
        if self.lora is None:
            self._weights = dict(named_weights(module))  # resolved once, read at every sync
        else:  # the plain model's names; an adapted weight is merged (W + B A * scale) when each sync reads it
            from rad.models.lora import MergedWeights, base_model

            self._weights = MergedWeights(module, named_weights(base_model(module)))
        self._layout = weight_layout(self._weights, int(bucket_mb * (1 << 20)))
        self._sender = None
        if self.rank == 0:
            self._sender = make_weight_sender(kind, engines, self.learner.device, timeout_s,
                                              address=self.address()[0])
        return kind

    def _engines_on_my_gpu(self, engines: Sequence[Any]) -> int:
        """How many of ``engines`` hold one of the physical GPUs Ray gave this rank (0 on CPU)."""
        import ray

        if self.learner.device.type != "cuda" or not engines:
            return 0
        mine = set(ray.get_runtime_context().get_accelerator_ids().get("GPU", []))
        theirs = ray.get([e.info.remote() for e in engines])
        return sum(bool(mine & set(info.get("gpu_ids", []))) for info in theirs)

    def sync_weights(self):
        """One weight sync (all ranks take part; under ZeRO-3 they gather bucket by bucket); rank 0 returns
        its :class:`~rad.runtime.rollout.weight_sync.SyncStats`, the others None."""
        from rad.runtime.rollout.weight_sync import SyncStats, sync_round

        if self._hybrid:
            return SyncStats(0.0) if self.rank == 0 else None
        return sync_round(self._weights, self._layout, self.cfg.zero_stage == 3, self._sender)

    # -- hybrid engine: this rank generates with its own module (rollout.hybrid) ------------------
    def enable_generation(self, micro_batch_size: int, kv_cache: str = "dynamic") -> None:
        """Make this rank a rollout engine over its own module (no weight copy; ZeRO <= 2)."""
        from rad.errors import ConfigError
        from rad.runtime.rollout.hf_engine import HFEngine

        if self.cfg.zero_stage == 3:
            raise ConfigError("rollout.hybrid generates with the learner's own module, which ZeRO-3 partitions; "
                              "use learner.zero_stage <= 2 or separate engines")
        self.engine = HFEngine.around(self.learner.module, self.tokenizer, micro_batch_size, self.model_dir, kv_cache)

    def generate(self, prompts: Sequence[str], n: int, sampling):
        """Rollouts from the module being trained (eval mode while generating)."""
        self.learner.eval()
        try:
            return self.engine.generate(prompts, n, sampling)
        finally:
            self.learner.train()

    def get_weights(self) -> dict[str, torch.Tensor]:
        return self.engine.get_weights()

    def load_weights_from(self, model_dir: str) -> float:
        """Load saved weights into the module (hybrid mode's way to serve a run's selected policy)."""
        from rad.models.loading import load_safetensors_state

        return self.engine.update_weights(load_safetensors_state(model_dir))
