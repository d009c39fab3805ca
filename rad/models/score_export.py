"""Export a rad score model as a ``transformers`` ``AutoModelForSequenceClassification`` checkpoint.

``rad rm export --model DIR --out DIR`` (and ``rad cm export``) writes a directory that plain transformers
loads with ``AutoModelForSequenceClassification.from_pretrained(out)``; its logit for a text is rad's score
for it, normalisation included:

* the trunk's weights are copied unchanged under the classifier's ``base_model_prefix``;
* the classifier's ``score`` layer gets rad's head weight divided by the normalisation ``std`` (modes
  ``scale`` / ``standard``);
* the constant of rad's head (its bias, minus ``mean`` under ``standard``, over ``std``) goes into the
  ``score`` layer's bias where it has one, else into the bias of the trunk's final LayerNorm where it has one
  (exact: only the score reads that norm's output, and moving its bias by c·w/|w|² moves w·h by c). Decoder
  classifiers have a bias-free ``score`` layer, and RMSNorm trunks (Llama, Qwen2...) have no norm bias:
  there the constant is written to ``config.json`` as ``rad_score_offset``, transformers' logit is rad's
  score minus it, and rad reading the export back (format ``hf_seq_cls``) adds it again.

The text scored is rad's: ``rad_prompt_template`` in ``config.json`` formats the prompt, then a space, the
response and the EOS token (see :func:`rad.models.score_model.encode_for_scoring`). transformers reads the
rightmost token that is not ``pad_token_id``; a tokenizer that pads with its EOS id would make it read the
token before the EOS, so such an export is flagged (``pad_is_eos``). The export is checked before it is
written: the classifier scores probe texts as the rad model does, or :class:`ConfigError` is raised.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rad.errors import ConfigError
from rad.models.loading import load_tokenizer, save_pretrained_atomic
from rad.models.score_formats import OFFSET_KEY, TEMPLATE_KEY
from rad.models.score_model import encode_many_for_scoring, load_score_model, pad_right

#: Probe pairs the export is checked on before it is written.
PROBES = (("how do i bake bread?", "mix flour and water, then bake it."), ("tell me a joke", "no"))


def _final_norm_with_bias(trunk: nn.Module, hidden: int) -> nn.Module | None:
    """The trunk's last normalisation module, if it has a bias over the hidden size (GPT-2's ``ln_f``)."""
    norms = [m for _, m in trunk.named_modules() if type(m).__name__.lower().endswith("norm")]
    if not norms:
        return None
    last = norms[-1]
    bias = getattr(last, "bias", None)
    return last if isinstance(bias, nn.Parameter) and tuple(bias.shape) == (hidden,) else None


def export_seq_cls(model_dir: str | Path, out_dir: str | Path, overwrite: bool = False,
                   tolerance: float = 1e-4) -> dict[str, Any]:
    """Write the rad score model at ``model_dir`` to ``out_dir`` as a sequence classifier (module docstring);
    returns what was written: path, architecture, offset and whether it was folded, template, pad_is_eos."""
    from transformers import AutoModelForSequenceClassification

    if Path(out_dir).exists() and not overwrite:
        raise ConfigError(f"export: {str(out_dir)!r} exists; choose another output directory or replace it "
                          "(--overwrite)")
    model = load_score_model(model_dir)
    tokenizer = load_tokenizer(model_dir, padding_side="right")
    trunk = model.plain_backbone()
    config = copy.deepcopy(trunk.config)
    config.num_labels = 1
    config.problem_type = "regression"
    config.pad_token_id = tokenizer.pad_token_id
    try:
        hf = AutoModelForSequenceClassification.from_config(config).float().eval()
    except ValueError as exc:
        raise ConfigError(f"export: transformers has no sequence classifier for {type(trunk).__name__}: "
                          f"{exc}") from None
    head = getattr(hf, "score", None)
    if not isinstance(head, nn.Linear) or head.out_features != 1:
        raise ConfigError(f"export: {type(hf).__name__} has no linear 'score' head read at the last token; only "
                          "decoder trunks (Llama, Qwen2, Mistral, GPT-2...) can be exported")
    base = getattr(hf, hf.base_model_prefix)
    base.load_state_dict({k: v.float() for k, v in trunk.state_dict().items()})
    cfg = model.score_config
    scale = 1.0 / cfg.std if cfg.normalize in ("scale", "standard") else 1.0
    shift = cfg.mean if cfg.normalize == "standard" else 0.0
    weight = model.head.weight.detach().float() * scale
    offset = (float(model.head.bias.detach().float()) - shift) * scale
    folded = "none" if offset == 0.0 else ""
    with torch.no_grad():
        head.weight.copy_(weight)
        if offset and head.bias is not None:
            head.bias.fill_(offset)
            folded = "score.bias"
        norm = _final_norm_with_bias(base, weight.shape[1]) if offset and not folded else None
        if norm is not None:
            norm.bias.add_(offset * weight[0] / weight[0].pow(2).sum())
            folded = "final norm bias"
    residual = 0.0 if folded else offset
    hf.config.architectures = [type(hf).__name__]
    setattr(hf.config, TEMPLATE_KEY, cfg.template)
    setattr(hf.config, OFFSET_KEY, residual)
    pad_is_eos = tokenizer.pad_token_id == tokenizer.eos_token_id
    if not pad_is_eos:
        _check(model, hf, tokenizer, residual, tolerance)
    path = save_pretrained_atomic(hf, tokenizer, out_dir, overwrite=overwrite)
    return {"out": str(path), "architecture": type(hf).__name__, "kind": cfg.kind, "offset": residual,
            "folded_into": folded or "config.json rad_score_offset", "template": cfg.template,
            "pad_is_eos": pad_is_eos}


def _check(model, hf, tokenizer, offset: float, tolerance: float) -> None:
    """The classifier's logits + ``offset`` equal the rad model's normalised scores on :data:`PROBES`."""
    seqs = encode_many_for_scoring(tokenizer, [p for p, _ in PROBES], [r for _, r in PROBES], 10 ** 6,
                                   model.score_config.template)
    batch = pad_right(seqs, tokenizer.pad_token_id)
    with torch.no_grad():
        want = model.normalize(model(**batch).float())
        got = hf(**batch).logits.squeeze(-1).float() + offset
    gap = float((want - got).abs().max())
    if gap > tolerance * max(1.0, float(want.abs().max())):
        raise ConfigError(f"export: the exported classifier's scores differ from the rad model's by {gap:.3g} on "
                          "probe texts; nothing was written")
