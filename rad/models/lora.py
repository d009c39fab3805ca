"""LoRA adapters (``peft``) on any transformers model, and the plain model they stand for.

Training wraps a model with :func:`add_lora` (the base weights frozen, only the adapters
trainable). Everything that leaves the trainer sees the **plain** model instead, with the
adapters merged in: a LoRA-adapted weight ``W`` reads as ``W + B A * alpha / r`` (peft's
``get_delta_weight``, cast to ``W``'s dtype, as peft's own merge does) under the base
model's parameter name. :class:`MergedWeights` computes those tensors when read (the
learner's weight sync sends them to the rollout engines at every step) and
:func:`merged_state_dict` collects them for a save, so rollout engines, saved models and
every later stage load a plain transformers model and never need ``peft``.

Used by the score models (:mod:`rad.models.score_model`), the RL policy learner
(:mod:`rad.runtime.policy_workers`) and DPO (:mod:`risk_dpo.trainer`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from rad.errors import ConfigError

#: peft's name segment of the layer a LoRA layer wraps (``q_proj.base_layer.weight`` is ``q_proj.weight``).
BASE_LAYER = ".base_layer."


def is_lora(model: nn.Module) -> bool:
    """Whether ``model`` is a peft wrapper."""
    return callable(getattr(model, "get_base_model", None))


def base_model(model: nn.Module) -> nn.Module:
    """The transformers model inside a peft wrapper (or ``model`` itself)."""
    return model.get_base_model() if is_lora(model) else model


def add_lora(model: nn.Module, r: int = 8, alpha: float = 16.0, dropout: float = 0.0,
             target_modules: Sequence[str] | None = None) -> nn.Module:
    """``model`` wrapped with LoRA adapters (peft); its own weights frozen, the adapters trainable.

    ``target_modules`` empty/None means every linear layer (peft's ``"all-linear"``, which
    leaves the output layer alone), which works for any architecture.
    """
    from peft import LoraConfig, get_peft_model

    if is_lora(model):
        raise ConfigError(f"{type(base_model(model)).__name__}: the model already has LoRA adapters")
    targets: Any = list(target_modules) if target_modules else "all-linear"
    cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias="none")
    try:
        return get_peft_model(model, cfg)
    except ValueError as exc:  # e.g. a target module the model does not have
        raise ConfigError(f"lora.target_modules: {str(exc).splitlines()[0]}") from None


def _lora_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The peft LoRA layers of ``model``'s base model, by module name."""
    from peft.tuners.lora import LoraLayer

    return {name: m for name, m in base_model(model).named_modules() if isinstance(m, LoraLayer)}


def _merged(layer: nn.Module, weight: torch.Tensor) -> torch.Tensor:
    """``weight`` (the layer's base weight) plus every active adapter's delta, in ``weight``'s dtype."""
    out = weight.detach()
    for adapter in layer.active_adapters:
        if adapter in layer.lora_variant:
            raise ConfigError(f"LoRA adapter {adapter!r}: only plain LoRA (no DoRA or other variant) can be merged "
                              "for the rollout engines")
        out = out + layer.get_delta_weight(adapter).detach().to(weight.dtype)
    return out


class MergedWeights(Mapping):
    """The weights of a LoRA-wrapped model as the plain model names them, the adapters merged when read.

    ``names`` are :func:`rad.runtime.rollout.weight_sync.named_weights`-style ``(name, tensor)`` pairs
    of the base model (peft's names); the adapters' own tensors are left out and a
    ``<layer>.base_layer.weight`` reads as ``<layer>.weight``, merged. Nothing is copied until a
    key is read.
    """

    def __init__(self, model: nn.Module, names: Sequence[tuple[str, torch.Tensor]] | None = None) -> None:
        base = base_model(model)
        if names is None:
            names = list(base.state_dict(keep_vars=True).items())
        self._layers = _lora_layers(model)
        self._tensors: dict[str, tuple[torch.Tensor, nn.Module | None]] = {}
        for name, tensor in names:
            if ".lora_" in f".{name}":
                continue
            layer = None
            if BASE_LAYER in name:
                owner, _, leaf = name.partition(BASE_LAYER)
                layer = self._layers.get(owner) if leaf == "weight" else None
                name = f"{owner}.{leaf}"
            self._tensors[name] = (tensor, layer)

    def __getitem__(self, name: str) -> torch.Tensor:
        tensor, layer = self._tensors[name]
        if layer is None:
            return tensor
        with torch.no_grad():
            return _merged(layer, tensor)

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)


def merged_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The plain model's full state dict (adapters merged) on the CPU: what a save writes."""
    return {name: tensor.detach().cpu().clone() for name, tensor in MergedWeights(model).items()}


def save_merged(model: nn.Module, directory: Any, adapter: bool = False) -> None:
    """Write the plain model (adapters merged, HF format, safetensors) into ``directory``; with ``adapter`` also
    peft's adapter files into ``directory/adapter``. Not atomic (callers write into a temporary directory)."""
    from pathlib import Path

    base_model(model).save_pretrained(directory, state_dict=merged_state_dict(model), safe_serialization=True)
    if adapter:
        model.save_pretrained(Path(directory) / "adapter", safe_serialization=True)
