"""Open a reward or cost model in any supported format as a :class:`~rad.models.score_model.ScoreModel`.

:func:`open_score_model` is the one entry point (the scorer and the PPO-Lag critics use it); it detects the
format (:func:`detect_format`) unless a :class:`rad.settings.ScorerConfig` names it:

* ``rad``: a directory written by :func:`rad.models.score_model.save_score_model` (``score_config.json``).
* ``hf_seq_cls``: a ``transformers`` ``AutoModelForSequenceClassification`` checkpoint with one label whose
  head is a linear ``score`` layer read at the last token (Llama, Qwen2, Mistral, GPT-2... -- the decoder
  classifiers). transformers reads the rightmost token that is not the pad id; rad reads the last token of the
  attention mask, the same token unless the text itself ends in pad ids. A ``rad_score_offset`` key in its
  ``config.json`` (written by :func:`rad.models.score_export.export_seq_cls`) is added back to the score.
* ``safe_rlhf``: a safe-rlhf score model (``AutoModelForScore``: a causal-LM trunk saved with its
  ``*ForScore`` architecture, a ``score_head`` linear layer of ``score_dim`` outputs, with or without bias,
  read at the last attended token; ``normalizer.mean`` / ``normalizer.var`` applied when ``do_normalize``,
  affine for ``score_type: reward``, scale for ``cost``). ``score_dim`` must be 1.

Every format becomes the same module (trunk + ``Linear(hidden, 1)``), so batching, truncation and the
score's position are rad's. ``sign`` is folded into the head's weights, so the model returned already follows
rad's conventions: rewards higher-is-better, costs > 0 unsafe. The template used to build the scored text is
recorded in the returned model's ``score_config.template``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rad.data.template import PROMPT_TEMPLATE
from rad.errors import ConfigError
from rad.models.loading import _resolve, load_config, load_tokenizer
from rad.models.score_model import (
    CHAT,
    SCORE_CONFIG_FILE,
    ScoreConfig,
    ScoreModel,
    _hidden_size,
    _load_backbone,
    load_score_model,
    read_score_config,
)
from rad.settings import ScorerConfig, is_url


#: The ``config.json`` key :func:`rad.models.score_export.export_seq_cls` writes when a constant could not be
#: folded into the exported weights: plain transformers scores + this = rad's scores.
OFFSET_KEY = "rad_score_offset"
#: The ``config.json`` key recording the prompt template of an exported model.
TEMPLATE_KEY = "rad_prompt_template"
#: safe-rlhf's normalisation per ``score_type``, in rad's names.
_SAFE_RLHF_NORMALIZE = {"reward": "standard", "cost": "scale", "critic": "none"}


def _architectures(path: str, trust_remote_code: bool) -> tuple[list[str], dict]:
    """``architectures`` and the raw ``config.json`` of a local directory (or a hub id's config)."""
    name, is_local = _resolve(path, "score model")
    if is_local:
        file = Path(name) / "config.json"
        if not file.is_file():
            raise ConfigError(f"score model: {name!r} has no config.json")
        raw = json.loads(file.read_text())
    else:
        raw = load_config(name, trust_remote_code=trust_remote_code).to_dict()
    return list(raw.get("architectures") or []), raw


def detect_format(path: str, trust_remote_code: bool = False, key: str = "score model") -> str:
    """``rad``, ``hf_seq_cls``, ``safe_rlhf`` or ``http`` for ``path`` (see the module docstring)."""
    if is_url(path):
        return "http"
    if (Path(path) / SCORE_CONFIG_FILE).is_file():
        return "rad"
    archs, raw = _architectures(path, trust_remote_code)
    if any(a.endswith("ForSequenceClassification") for a in archs):
        return "hf_seq_cls"
    if any(a.endswith("ForScore") for a in archs) or "score_type" in raw or "score_dim" in raw:
        return "safe_rlhf"
    raise ConfigError(f"{key}: {path!r} is not a score model: no {SCORE_CONFIG_FILE} (rad's format) and its "
                      f"config.json architectures {archs} are neither *ForSequenceClassification nor safe-rlhf's "
                      "*ForScore; name the format in the scorer's format key if it is one of them")


def open_score_model(path: str | Path, kind: str | None, source: ScorerConfig | None = None,
                     dtype: Any = torch.float32,
                     trust_remote_code: bool = False, allow_pickle: bool = False,
                     key: str = "score model") -> ScoreModel:
    """The score model at ``path`` used as a ``kind`` (reward|cost) model, in rad's conventions (eval mode).

    ``kind`` None: any kind (a critic initialised from a score model). ``key`` names the config key in errors
    (e.g. ``cost_model``).
    """
    source = source or ScorerConfig()
    path = str(path)
    fmt = source.format if source.format != "auto" else detect_format(path, trust_remote_code, key)
    if fmt == "http":
        raise ConfigError(f"{key}: {path!r} is a remote (http) scorer, not a model that can be loaded; this role "
                          "needs a model directory")
    if fmt == "rad":
        model = load_score_model(path, dtype=dtype, trust_remote_code=trust_remote_code)
    elif fmt == "hf_seq_cls":
        model = _open_seq_cls(path, kind, dtype, trust_remote_code, allow_pickle, key)
    elif fmt == "safe_rlhf":
        model = _open_safe_rlhf(path, kind, dtype, trust_remote_code, allow_pickle, key)
    else:
        raise ConfigError(f"{key}: unknown score-model format {fmt!r}")
    if kind is not None and model.kind != kind:
        if source.sign == 1:
            raise ConfigError(f"{key}: {path!r} holds a {model.kind} model, given as the {kind} model (set the "
                              f"scorer's sign to -1 if its negation is meant)")
        model.score_config.kind = kind
    if source.template:
        model.score_config.template = source.template
        model.score_config.validate(key)
    if source.sign == -1:
        with torch.no_grad():
            model.head.weight.neg_()
            model.head.bias.neg_()
            if model.score_config.normalize == "standard":
                model.score_config.mean = -model.score_config.mean
    return model.eval()


def stated_templates(scorers: dict[str, tuple[str, ScorerConfig | None]]) -> dict[str, str]:
    """The prompt format each scorer reads, where it is known without loading a model: the scorer config's
    ``template`` if set, else the one a rad score model saved. A remote scorer or a foreign checkpoint
    without a stated template is left out (``{name: (model path or URL, scorer config)}``)."""
    out = {}
    for name, (path, source) in scorers.items():
        if not path:
            continue
        if source is not None and source.template:
            out[name] = source.template
        elif not is_url(path) and (Path(path) / SCORE_CONFIG_FILE).is_file():
            out[name] = read_score_config(path).template
    return out


def _head(weight: torch.Tensor, bias: torch.Tensor | float, where: str, hidden: int) -> nn.Linear:
    """``Linear(hidden, 1)`` holding ``weight`` [1, hidden] and ``bias``."""
    if tuple(weight.shape) != (1, hidden):
        raise ConfigError(f"{where}: the score head is {tuple(weight.shape)}, expected one output over the hidden "
                          f"size ({1}, {hidden}); multi-output score models are not supported")
    head = nn.Linear(hidden, 1)
    with torch.no_grad():
        head.weight.copy_(weight.float())
        head.bias.copy_(torch.as_tensor(bias, dtype=torch.float32).reshape(1))
    return head


def _default_template(path: str, trust_remote_code: bool) -> str:
    """'chat' when the model's tokenizer has a chat template, else the Safe RLHF template."""
    tokenizer = load_tokenizer(path, trust_remote_code=trust_remote_code)
    return CHAT if getattr(tokenizer, "chat_template", None) else PROMPT_TEMPLATE


def _open_seq_cls(path: str, kind: str | None, dtype: Any, trust_remote_code: bool, allow_pickle: bool,
                  key: str) -> ScoreModel:
    from transformers import AutoModelForSequenceClassification

    _, raw = _architectures(path, trust_remote_code)
    labels = raw.get("num_labels") or len(raw.get("id2label") or {0: 0})
    if labels != 1:
        raise ConfigError(f"{key}: {path!r} is a sequence classifier with {labels} labels; a score model has one "
                          "(num_labels = 1)")
    model = _load_backbone(path, dtype, trust_remote_code, allow_pickle, auto_class=AutoModelForSequenceClassification)
    head = getattr(model, "score", None)
    if not isinstance(head, nn.Linear) or getattr(model, "base_model_prefix", "") == "":
        raise ConfigError(f"{key}: {type(model).__name__} has no linear 'score' head read at the last token (an "
                          "encoder classifier pools differently); only decoder sequence classifiers are supported")
    backbone = getattr(model, model.base_model_prefix)
    hidden = _hidden_size(backbone.config)
    bias = (head.bias.detach() if head.bias is not None else 0.0) + float(raw.get(OFFSET_KEY, 0.0))
    template = raw.get(TEMPLATE_KEY) or _default_template(path, trust_remote_code)
    cfg = ScoreConfig(kind=kind or "reward", template=template, backbone_class=type(backbone).__name__)
    return ScoreModel(backbone, cfg, head=_head(head.weight.detach(), bias, key, hidden))


def _safe_rlhf_tensors(path: str, prefixes: tuple[str, ...], allow_pickle: bool, key: str) -> dict[str, torch.Tensor]:
    """The tensors whose names start with ``prefixes``, read from the checkpoint's safetensors (or, with
    ``allow_pickle``, its ``pytorch_model*.bin``) files without loading the rest."""
    root = Path(path)
    files = sorted(root.glob("*.safetensors"))
    out: dict[str, torch.Tensor] = {}
    if files:
        from safetensors import safe_open

        for file in files:
            with safe_open(str(file), framework="pt") as f:
                for name in f.keys():
                    if name.startswith(prefixes):
                        out[name] = f.get_tensor(name)
        return out
    bins = sorted(root.glob("pytorch_model*.bin"))
    if bins and allow_pickle:
        for file in bins:
            state = torch.load(str(file), map_location="cpu", weights_only=True)
            out.update({k: v for k, v in state.items() if k.startswith(prefixes)})
        return out
    raise ConfigError(f"{key}: {path!r} has no safetensors weights" + (" (only pickled .bin files; allow pickled "
                                                                       "weights to read them)" if bins else ""))


def _open_safe_rlhf(path: str, kind: str | None, dtype: Any, trust_remote_code: bool, allow_pickle: bool,
                    key: str) -> ScoreModel:
    _, raw = _architectures(path, trust_remote_code)
    if int(raw.get("score_dim", 1)) != 1:
        raise ConfigError(f"{key}: {path!r} has score_dim={raw['score_dim']}; only one score per text is supported")
    if not Path(path).is_dir():
        raise ConfigError(f"{key}: a safe-rlhf score model must be a local directory, got {path!r}")
    backbone = _load_backbone(path, dtype, trust_remote_code, allow_pickle)
    tensors = _safe_rlhf_tensors(path, ("score_head.", "normalizer."), allow_pickle, key)
    if "score_head.weight" not in tensors:
        raise ConfigError(f"{key}: {path!r} has no score_head.weight tensor; is it a safe-rlhf score model?")
    hidden = _hidden_size(backbone.config)
    head = _head(tensors["score_head.weight"], tensors.get("score_head.bias", 0.0), key, hidden)
    score_type = raw.get("score_type", kind)
    cfg = ScoreConfig(kind=score_type if score_type in ("reward", "cost") else kind or "reward",
                      template=PROMPT_TEMPLATE,
                      backbone_class=type(backbone).__name__)
    if raw.get("do_normalize") and "normalizer.mean" in tensors and "normalizer.var" in tensors:
        cfg.normalize = _SAFE_RLHF_NORMALIZE.get(score_type, "none")
        cfg.mean = float(tensors["normalizer.mean"].reshape(-1)[0])
        cfg.std = math.sqrt(float(tensors["normalizer.var"].reshape(-1)[0]))
    return ScoreModel(backbone, cfg, head=head)
