"""The DeepSpeed learner: one engine wrapper used by SFT, score-model training and RL.

ZeRO stage, offload, batch geometry, precision and optimiser come from
:class:`rad.settings.LearnerConfig`. The optimiser is a client-side
``torch.optim.AdamW`` (DeepSpeed's own Adam would JIT-compile a fused op for
~90 s on CPU); with optimizer offload DeepSpeed is told to accept it.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

import torch

from rad.errors import ConfigError
from rad.runtime.distributed import device, init_distributed
from rad.settings import LearnerConfig

log = logging.getLogger("rad.runtime")

T = TypeVar("T")


def use_bf16(cfg: LearnerConfig) -> bool:
    if cfg.bf16 == "auto":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return cfg.bf16 == "true"


def deepspeed_config(cfg: LearnerConfig, world_size: int) -> dict[str, Any]:
    """The DeepSpeed JSON config equivalent of ``cfg`` (also written next to checkpoints)."""
    zero: dict[str, Any] = {"stage": cfg.zero_stage}
    if cfg.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": torch.cuda.is_available()}
    if cfg.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": torch.cuda.is_available()}
    if cfg.zero_stage == 3:
        # Gather full weights on save so checkpoints load with plain transformers.
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    return {
        "train_micro_batch_size_per_gpu": cfg.micro_batch_size,
        "gradient_accumulation_steps": cfg.grad_accum,
        "train_batch_size": cfg.micro_batch_size * cfg.grad_accum * world_size,
        "gradient_clipping": cfg.grad_clip,
        "zero_optimization": zero,
        "bf16": {"enabled": use_bf16(cfg)},
        "zero_allow_untested_optimizer": True,
        "zero_force_ds_cpu_optimizer": False,
        "steps_per_print": 10**9,  # rad logs its own metrics
        "wall_clock_breakdown": False,
    }


def lr_lambda(kind: str, warmup_steps: int, total_steps: int):
    """Multiplier of the peak LR at optimizer step ``s`` (warmup, then cosine/linear/constant)."""
    total_steps = max(total_steps, 1)

    def fn(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        if kind == "constant":
            return 1.0
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        if kind == "linear":
            return max(0.0, 1.0 - progress)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return fn


def enable_gradient_checkpointing(model: torch.nn.Module) -> list[torch.nn.Module]:
    """Turn on HF gradient checkpointing (non-reentrant) in ``model`` or the outermost transformers models in it.

    A score model or critic wraps its transformers backbone, so the search goes
    down the module tree and stops at the first model that supports it on each
    branch. Non-reentrant checkpointing needs no input that requires grad and
    recomputes under DeepSpeed's parameter hooks. Returns the models it was
    turned on in; raises :class:`ConfigError` when there is none.
    """
    enabled: list[torch.nn.Module] = []

    def visit(module: torch.nn.Module) -> None:
        if getattr(module, "supports_gradient_checkpointing", False):
            module.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            enabled.append(module)
            return
        for child in module.children():
            visit(child)

    visit(model)
    if not enabled:
        raise ConfigError(f"learner.gradient_checkpointing: {type(model).__name__} holds no transformers model "
                          "that supports gradient checkpointing")
    return enabled


class DeepSpeedLearner:
    """Wraps ``deepspeed.initialize`` for one model on one rank.

    ``total_steps`` is in optimizer steps (after gradient accumulation); it shapes
    the LR schedule. With ``cfg.gradient_checkpointing`` the model's transformer
    layers recompute their activations in backward (:func:`enable_gradient_checkpointing`).
    """

    def __init__(self, model: torch.nn.Module, cfg: LearnerConfig, total_steps: int,
                 params: Iterable[torch.nn.Parameter] | None = None):
        init_distributed(cfg.backend)
        import deepspeed

        self.cfg = cfg
        if cfg.gradient_checkpointing:
            enable_gradient_checkpointing(model)
        self.world_size = torch.distributed.get_world_size()
        self.rank = torch.distributed.get_rank()
        trainable = [p for p in (params if params is not None else model.parameters()) if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
        warmup = int(round(cfg.warmup_ratio * total_steps))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg.scheduler, warmup, total_steps))
        self.ds_config = deepspeed_config(cfg, self.world_size)
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=model.to(device()), optimizer=optimizer, lr_scheduler=scheduler, config=self.ds_config)

    @property
    def module(self) -> torch.nn.Module:
        return self.engine.module

    @property
    def device(self) -> torch.device:
        return self.engine.device

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.engine(*args, **kwargs)

    def train(self) -> None:
        self.engine.train()

    def eval(self) -> None:
        self.engine.eval()

    def backward(self, loss: torch.Tensor) -> None:
        self.engine.backward(loss)

    def forward_loss(self, compute: Callable[[torch.nn.Module], tuple[torch.Tensor, T]]) -> tuple[torch.Tensor, T]:
        """``compute(module) -> (loss, extra)`` for a loss that differentiates the model itself.

        For gradient penalties and other losses that call ``torch.autograd.grad``
        (``create_graph=True``) through the model's outputs before :meth:`backward`.
        ``self(...)`` (``engine.forward``) hooks the model's outputs so that the first
        gradient through them starts DeepSpeed's backward: ZeRO's bookkeeping, scaling
        by ``1 / grad_accum`` (and at ZeRO-0 a refusal of any backward but
        ``engine.backward``). An inner ``autograd.grad`` would fire those hooks early
        and be rescaled. Here ``compute`` runs the bare module and the same hooks go on
        the returned ``loss``, which :meth:`backward` reaches exactly once, as after a
        normal forward. (The engine's forward adds nothing else under this learner's
        configs: no torch autocast, no DeepCompile.) ZeRO-3 re-partitions parameters
        after the inner pass; use ZeRO <= 2 for such losses.
        """
        from deepspeed.runtime.base_optimizer import ZeROOptimizer
        from deepspeed.runtime.utils import register_output_backward_hooks

        engine = self.engine
        if isinstance(engine.optimizer, ZeROOptimizer):
            engine.optimizer.clear_backward_seen_flag()  # as engine.forward does
        loss, extra = compute(engine.module)
        register_output_backward_hooks(loss, preprocess_once_fn=engine._backward_prologue,
                                       preprocess_per_tensor_fn=engine._backward_prologue_per_tensor)
        return loss, extra

    def step(self) -> bool:
        """Optimizer step at an accumulation boundary; returns True if weights changed."""
        boundary = self.engine.is_gradient_accumulation_boundary()
        self.engine.step()
        return boundary

    @property
    def global_step(self) -> int:
        return int(self.engine.global_steps)

    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def grad_norm(self) -> float | None:
        norm = self.engine.get_global_grad_norm()
        return None if norm is None else float(norm)

    # -- checkpoints -------------------------------------------------------------------
    def save_checkpoint(self, ckpt_dir: str | Path) -> None:
        """DeepSpeed engine state (weights, optimizer, scheduler) under ``ckpt_dir/engine``."""
        self.engine.save_checkpoint(str(Path(ckpt_dir) / "engine"), tag="state")

    def load_checkpoint(self, ckpt_dir: str | Path) -> None:
        path, _ = self.engine.load_checkpoint(str(Path(ckpt_dir) / "engine"), tag="state")
        if path is None:
            raise FileNotFoundError(f"no DeepSpeed engine state in {ckpt_dir}/engine")

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """Full (unsharded) weights on CPU, gathering ZeRO-3 partitions when needed."""
        module = self.engine.module
        if self.cfg.zero_stage == 3:
            import deepspeed

            params = list(module.parameters())
            with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
                return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
        return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}

    def save_pretrained(self, out_dir: str | Path, tokenizer: Any = None, adapter: bool = False) -> Path:
        """HF-format save (safetensors) of the full model, written atomically by rank 0.

        A LoRA-wrapped model (:mod:`rad.models.lora`) is saved as the plain model with its adapters
        merged; ``adapter`` also writes peft's adapter files into ``out_dir/adapter``.
        """
        from rad.models.lora import is_lora, save_merged
        from rad.runtime.checkpoint import atomic_dir

        module = self.engine.module
        lora = is_lora(module)
        state = None if lora else self.full_state_dict()  # LoRA runs at ZeRO <= 2: the live module is whole
        out_dir = Path(out_dir)
        if self.rank == 0:
            with atomic_dir(out_dir) as tmp:
                if lora:
                    save_merged(module, tmp, adapter=adapter)
                else:
                    module.save_pretrained(tmp, state_dict=state, safe_serialization=True)
                if tokenizer is not None:
                    tokenizer.save_pretrained(tmp)
        if self.world_size > 1:
            torch.distributed.barrier()
        return out_dir


def set_seed(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
