"""One score model for any ``transformers`` backbone: ``AutoModel`` + a scalar head.

Safe RLHF ships one score-model class per architecture (``LlamaForScore``,
``GPT2ForScore``...), so a new architecture means new code. Here the backbone is
whatever :class:`transformers.AutoModel` loads for the checkpoint (decoder-only or
encoder; encoder-decoder models are not supported), and the head is one
``nn.Linear(hidden, 1)`` read at the **last token whose attention-mask entry is 1**.
Reading by the mask, not by ``input_ids == pad_id``, is what makes left- and
right-padded batches agree, and it stays right when pad == eos. Position ids are
derived from the mask too (``cumsum - 1``) for backbones that take them, so a
left-padded row sees the same positions as the unpadded sequence.

Input layout (shared by training and :mod:`rad.runtime.scorer`, see
:func:`encode_for_scoring`): the prompt in the model's prompt format (``template`` of
``score_config.json``: ``safe_rlhf``, ``chat`` or a custom template, see
:mod:`rad.data.prompt_format`), then the response and EOS; the score is read at the EOS.

A saved score model is one directory:

* the backbone in HF format (``config.json``, ``model.safetensors``), loadable
  with ``AutoModel`` on its own; LoRA adapters are merged in at save time, so
  readers never need ``peft``;
* ``score_head.safetensors`` (``weight`` [1, hidden], ``bias`` [1]);
* ``score_config.json``: kind (reward|cost), normalisation mode and statistics,
  the backbone class, the prompt template, a format version;
* the tokenizer files.

It is written atomically (:func:`save_score_model`) and read back with
:func:`load_score_model`.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from rad.data.prompt_format import PromptFormat
from rad.data.template import PROMPT_TEMPLATE
from rad.errors import ConfigError, DataError
from rad.models.loading import _as_dtype, _check_local_weights, _resolve, save_pretrained_atomic
from rad.models.lora import add_lora, base_model, is_lora, merged_state_dict

log = logging.getLogger("rad.models")

SCORE_CONFIG_FILE = "score_config.json"
HEAD_FILE = "score_head.safetensors"
FORMAT_VERSION = 1
KINDS = ("reward", "cost")
#: none = raw scores; scale = s / std (keeps the sign, so cost > 0 still means unsafe);
#: standard = (s - mean) / std.
NORMALIZE_MODES = ("none", "scale", "standard")
#: ``template`` value meaning "the tokenizer's chat template over (user prompt, assistant response)".
CHAT = "chat"


@dataclass
class ScoreConfig:
    """What a score-model directory says about itself (``score_config.json``)."""

    kind: str = "reward"
    normalize: str = "none"
    mean: float = 0.0
    std: float = 1.0
    template: str = PROMPT_TEMPLATE
    backbone_class: str = ""
    format_version: int = FORMAT_VERSION

    def validate(self, where: str = SCORE_CONFIG_FILE) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"{where}: kind {self.kind!r} is not one of {KINDS}")
        if self.normalize not in NORMALIZE_MODES:
            raise ConfigError(f"{where}: normalize {self.normalize!r} is not one of {NORMALIZE_MODES}")
        if not (math.isfinite(self.std) and self.std > 0 and math.isfinite(self.mean)):
            raise ConfigError(f"{where}: normalisation statistics must be finite with std > 0, "
                              f"got mean={self.mean}, std={self.std}")
        PromptFormat.parse(self.template, f"{where}: template")


def _hidden_size(config: Any) -> int:
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    for name in ("hidden_size", "d_model", "n_embd", "dim"):
        value = getattr(text, name, None)
        if isinstance(value, int) and value > 0:
            return value
    raise ConfigError(f"cannot tell the hidden size of backbone config {type(config).__name__}")


class ScoreModel(nn.Module):
    """``backbone`` (any AutoModel) + ``head`` (Linear(hidden, 1)); ``forward`` returns scores [B] (float32)."""

    def __init__(self, backbone: nn.Module, score_config: ScoreConfig | None = None, head: nn.Linear | None = None):
        super().__init__()
        self.backbone = backbone
        plain = base_model(backbone)
        self.config = plain.config  # what DeepSpeed / HF utilities look for
        self.score_config = score_config or ScoreConfig()
        if not self.score_config.backbone_class:
            self.score_config.backbone_class = type(plain).__name__
        self.score_config.validate()
        hidden = _hidden_size(plain.config)
        self.head = head if head is not None else nn.Linear(hidden, 1)
        if head is None:
            nn.init.normal_(self.head.weight, std=1.0 / math.sqrt(hidden + 1))
            nn.init.zeros_(self.head.bias)
        self.head.to(next(plain.parameters()).dtype)
        self._takes_position_ids = "position_ids" in inspect.signature(plain.forward).parameters

    @property
    def kind(self) -> str:
        return self.score_config.kind

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.long()
        positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
        last = torch.where(mask.bool(), positions, -1).max(dim=1).values
        if bool((last < 0).any()):
            rows = (last < 0).nonzero().flatten().tolist()
            raise DataError(f"score model: rows {rows} of the batch have no attended token")
        kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": mask}
        if self._takes_position_ids:
            kwargs["position_ids"] = (mask.cumsum(dim=1) - 1).clamp(min=0)
        hidden = self.backbone(**kwargs).last_hidden_state
        picked = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        return self.head(picked.to(self.head.weight.dtype)).squeeze(-1).float()

    def normalize(self, scores: torch.Tensor) -> torch.Tensor:
        """Apply the directory's normalisation mode to raw scores."""
        cfg = self.score_config
        if cfg.normalize == "scale":
            return scores / cfg.std
        if cfg.normalize == "standard":
            return (scores - cfg.mean) / cfg.std
        return scores

    @torch.no_grad()
    def score_sequences(self, sequences: Sequence[Sequence[int]], pad_id: int, batch_size: int = 32) -> torch.Tensor:
        """Raw scores of token sequences (any order), batched by similar length; returns [N] on CPU."""
        if pad_id is None:
            raise ConfigError("score model: the tokenizer has no pad token id")
        was_training = self.training
        self.eval()
        device = self.head.weight.device
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        out = torch.empty(len(sequences), dtype=torch.float32)
        for start in range(0, len(order), batch_size):
            idx = order[start: start + batch_size]
            batch = pad_right([sequences[i] for i in idx], pad_id)
            out[idx] = self(**{k: v.to(device) for k, v in batch.items()}).cpu()
        self.train(was_training)
        return out

    # -- LoRA (rad.models.lora) ------------------------------------------------------------
    def add_lora(self, r: int = 8, alpha: float = 16.0, dropout: float = 0.0,
                 target_modules: Sequence[str] | None = None) -> None:
        """Wrap the backbone with LoRA adapters (:func:`rad.models.lora.add_lora`); the head stays trainable."""
        self.backbone = add_lora(self.backbone, r, alpha, dropout, target_modules)
        self.head.requires_grad_(True)

    def plain_backbone(self) -> nn.Module:
        """The backbone without adapters: LoRA merged into a copy (the training model is untouched)."""
        if not is_lora(self.backbone):
            return self.backbone
        return copy.deepcopy(self.backbone).merge_and_unload()

    # -- saving ------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path, state_dict: dict[str, torch.Tensor] | None = None,
                        safe_serialization: bool = True, **_: Any) -> None:
        """Write the score-model files into ``directory`` (not atomic; see :func:`save_score_model`).

        Signature-compatible with ``PreTrainedModel.save_pretrained`` so
        :meth:`rad.runtime.learner.DeepSpeedLearner.save_pretrained` can call it with
        a gathered ``state_dict`` (keys ``backbone.*`` and ``head.*``). With LoRA the
        adapters are merged from the live module (ZeRO-3 + LoRA is not supported).
        """
        from safetensors.torch import save_file

        if not safe_serialization:
            raise ConfigError("score model: only safetensors serialization is supported")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if is_lora(self.backbone):
            backbone, backbone_state = base_model(self.backbone), merged_state_dict(self.backbone)
            head_state = {k: v.detach().cpu() for k, v in self.head.state_dict().items()}
        elif state_dict is None:
            backbone = self.backbone
            backbone_state = {k: v.detach().cpu() for k, v in backbone.state_dict().items()}
            head_state = {k: v.detach().cpu() for k, v in self.head.state_dict().items()}
        else:
            backbone = self.backbone
            backbone_state = {k[len("backbone."):]: v for k, v in state_dict.items() if k.startswith("backbone.")}
            head_state = {k[len("head."):]: v for k, v in state_dict.items() if k.startswith("head.")}
        backbone.save_pretrained(directory, state_dict=backbone_state, safe_serialization=True)
        save_file({k: v.contiguous() for k, v in head_state.items()}, str(directory / HEAD_FILE))
        (directory / SCORE_CONFIG_FILE).write_text(json.dumps(dataclasses.asdict(self.score_config), indent=2))


def pad_right(sequences: Sequence[Sequence[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids`` / ``attention_mask`` (the score is read by the mask, so either side works)."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(list(seq), dtype=torch.long)
        mask[row, : len(seq)] = 1
    return {"input_ids": ids, "attention_mask": mask}


def encode_for_scoring(tokenizer, prompt: str, response: str, max_length: int, template: str = PROMPT_TEMPLATE,
                       truncate: bool = True) -> list[int]:
    """Token ids of (templated prompt, response + EOS); the score is read at the last id.

    Over-long pairs (``truncate=True``): the prompt is cut from the left (a leading
    BOS is kept, and the template's closing "ASSISTANT:" survives because it is at
    the end); if the response alone still does not fit in ``max_length`` minus a
    quarter reserved for the prompt, the response is cut from the left too, so its
    end, including EOS where the score is read, is always kept. With
    ``truncate=False`` an over-long pair raises :class:`DataError`. An empty or
    whitespace-only response raises :class:`DataError`.
    """
    if not response or not response.strip():
        raise DataError("empty response: a score needs at least one response token")
    fmt = PromptFormat.parse(template, "template")
    prompt_ids = fmt.ids(tokenizer, [prompt])[0]
    response_ids = tokenizer(fmt.response_text(response), add_special_tokens=False)["input_ids"]
    return _join_for_scoring(tokenizer, prompt_ids, response_ids, max_length, truncate)


def encode_many_for_scoring(tokenizer, prompts: Sequence[str], responses: Sequence[str], max_length: int,
                            template: str = PROMPT_TEMPLATE, truncate: bool = True) -> list[list[int]]:
    """:func:`encode_for_scoring` of every pair, with one tokenizer call for the distinct prompts and one
    for the responses (an RL batch repeats each prompt k times; one call per text was a quarter of
    the scorer's time on the tiny models). A :class:`DataError` names the pair's index."""
    for i, r in enumerate(responses):
        if not r or not r.strip():
            raise DataError(f"item {i}: empty response: a score needs at least one response token")
    fmt = PromptFormat.parse(template, "template")
    distinct = list(dict.fromkeys(prompts))
    by_prompt = dict(zip(distinct, fmt.ids(tokenizer, distinct)))
    response_ids = tokenizer([fmt.response_text(r) for r in responses], add_special_tokens=False)["input_ids"]
    out = []
    for i, (p, r) in enumerate(zip(prompts, response_ids)):
        try:
            out.append(_join_for_scoring(tokenizer, list(by_prompt[p]), list(r), max_length, truncate))
        except DataError as exc:
            raise DataError(f"item {i}: {exc}") from None
    return out


def _join_for_scoring(tokenizer, prompt_ids: list[int], response_ids: list[int], max_length: int,
                      truncate: bool) -> list[int]:
    """Prompt ids + response ids + EOS, truncated as :func:`encode_for_scoring` describes."""
    if tokenizer.eos_token_id is not None:
        response_ids = response_ids + [tokenizer.eos_token_id]
    total = len(prompt_ids) + len(response_ids)
    if total <= max_length:
        return prompt_ids + response_ids
    if not truncate:
        raise DataError(f"prompt + response is {total} tokens, over max_length={max_length} "
                        f"(prompt {len(prompt_ids)}, response {len(response_ids)})")
    head: list[int] = []
    if tokenizer.bos_token_id is not None and prompt_ids and prompt_ids[0] == tokenizer.bos_token_id:
        head, prompt_ids = prompt_ids[:1], prompt_ids[1:]
    budget = max_length - len(head)
    if budget < 2:
        raise DataError(f"max_length={max_length} is too small to hold a prompt and a response")
    reserve = min(len(prompt_ids), max(budget // 4, 1))  # prompt tokens kept even for a huge response
    if len(response_ids) <= budget - reserve:
        prompt_keep = budget - len(response_ids)
    else:
        prompt_keep = reserve
    kept_prompt = prompt_ids[len(prompt_ids) - prompt_keep:] if prompt_keep else []
    return head + kept_prompt + response_ids[len(response_ids) - (budget - prompt_keep):]


# -- building and loading --------------------------------------------------------------


def _load_backbone(path: str, dtype: Any, trust_remote_code: bool, allow_pickle: bool,
                   auto_class: Any = None) -> nn.Module:
    """``AutoModel`` (or ``auto_class``) of a checkpoint; missing trunk weights are logged, a dropped LM head is not.

    transformers' own load report is silenced for the call: loading a causal-LM
    checkpoint as a trunk always reports the LM head as unexpected, which is the point.
    """
    import transformers
    from safetensors import SafetensorError
    from transformers import AutoModel

    auto_class = auto_class or AutoModel
    name, is_local = _resolve(path, "score-model backbone")
    if is_local:
        _check_local_weights(name, allow_pickle)
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        model, info = auto_class.from_pretrained(name, dtype=_as_dtype(dtype), trust_remote_code=trust_remote_code,
                                                use_safetensors=None if allow_pickle else True,
                                                output_loading_info=True)
    except (OSError, ValueError, SafetensorError) as exc:  # SafetensorError: truncated or corrupt weights
        raise ConfigError(f"score-model backbone: cannot load {name!r} with {auto_class.__name__}: {exc}") from None
    finally:
        transformers.logging.set_verbosity(verbosity)
    if info.get("missing_keys"):
        log.warning("score-model backbone %s: weights not in the checkpoint, freshly initialised: %s",
                    name, sorted(info["missing_keys"]))
    if info.get("unexpected_keys"):
        log.debug("score-model backbone %s: unused checkpoint weights: %s", name, sorted(info["unexpected_keys"]))
    return model


def _fit_tokenizer(backbone: nn.Module, tokenizer) -> None:
    """Grow the embeddings to the tokenizer (e.g. after an added pad token) and record the pad id."""
    rows = backbone.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
        backbone.resize_token_embeddings(len(tokenizer))
    backbone.config.pad_token_id = tokenizer.pad_token_id


def build_score_model(backbone_path: str | Path, kind: str = "reward", dtype: Any = torch.float32,
                      tokenizer=None, trust_remote_code: bool = False, allow_pickle: bool = False,
                      template: str = PROMPT_TEMPLATE, normalize: str = "none", seed: int = 0) -> ScoreModel:
    """A new score model: the backbone of ``backbone_path`` (e.g. the SFT policy) + a seeded head.

    A causal-LM checkpoint works: ``AutoModel`` keeps its trunk and drops the LM head.
    """
    backbone = _load_backbone(str(backbone_path), dtype, trust_remote_code, allow_pickle)
    if tokenizer is not None:
        _fit_tokenizer(backbone, tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ScoreModel(backbone, ScoreConfig(kind=kind, normalize=normalize, template=template))
    return model


def read_score_config(path: str | Path) -> ScoreConfig:
    file = Path(path) / SCORE_CONFIG_FILE
    if not file.is_file():
        raise ConfigError(f"score model: {str(path)!r} has no {SCORE_CONFIG_FILE}; is it a score-model directory?")
    raw = json.loads(file.read_text())
    known = {f.name for f in dataclasses.fields(ScoreConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{file}: unknown keys {unknown}")
    if raw.get("format_version", FORMAT_VERSION) > FORMAT_VERSION:
        raise ConfigError(f"{file}: format_version {raw['format_version']} is newer than this rad "
                          f"({FORMAT_VERSION}); upgrade rad")
    cfg = ScoreConfig(**raw)
    cfg.validate(str(file))
    return cfg


def load_score_model(path: str | Path, dtype: Any = torch.float32, trust_remote_code: bool = False) -> ScoreModel:
    """Load a directory written by :func:`save_score_model` (eval mode)."""
    from safetensors.torch import load_file

    path = Path(path)
    cfg = read_score_config(path)
    head_file = path / HEAD_FILE
    if not head_file.is_file():
        raise ConfigError(f"score model: {str(path)!r} has no {HEAD_FILE}")
    backbone = _load_backbone(str(path), dtype, trust_remote_code, allow_pickle=False)
    state = load_file(str(head_file))
    if set(state) != {"weight", "bias"} or state["weight"].shape != (1, _hidden_size(backbone.config)):
        raise ConfigError(f"{head_file}: expected weight [1, {_hidden_size(backbone.config)}] and bias [1], "
                          f"got { {k: tuple(v.shape) for k, v in state.items()} }")
    head = nn.Linear(state["weight"].shape[1], 1)
    head.load_state_dict(state)
    return ScoreModel(backbone, cfg, head=head).eval()


def save_score_model(model: ScoreModel, out_dir: str | Path, tokenizer=None) -> Path:
    """Write ``model`` (and ``tokenizer``) to ``out_dir`` atomically; returns the path.

    Under ZeRO-3 use :meth:`rad.runtime.learner.DeepSpeedLearner.save_pretrained`,
    which gathers the partitioned weights and calls :meth:`ScoreModel.save_pretrained`.
    """
    return save_pretrained_atomic(model, tokenizer, out_dir)
