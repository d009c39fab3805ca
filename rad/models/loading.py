"""Load and save causal LMs and their tokenizers (Hugging Face format).

Everything that reads or writes a model directory goes through here so the safety
and padding rules hold everywhere:

* ``trust_remote_code`` is off unless the caller turns it on.
* Weights are read from safetensors only. Pickled ``.bin`` checkpoints can run
  arbitrary code when unpickled, so loading them needs ``allow_pickle=True``
  (the config key ``allow_pickle_weights`` of the section naming the model).
* Tokenizers pad on the left by default: rollouts generate from a batch of
  prompts, and a decoder-only model must see each prompt end at the same position.
* Tokenizers without a pad token get one (see :func:`ensure_pad_token`).
* Saves are atomic (:func:`save_pretrained_atomic`): a reader sees the old
  directory, the new one or none, never a half-written checkpoint.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from rad.data.prompt_format import use_prompt_format
from rad.errors import ConfigError

# The pad token added to tokenizers that have neither a pad nor an eos token.
ADDED_PAD_TOKEN = "<|pad|>"

_SAFETENSORS_FILES = ("model.safetensors", "model.safetensors.index.json")
_PICKLE_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")
# "name" or "org/name" as the Hugging Face Hub spells repository ids.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def _resolve(name_or_path: str | os.PathLike[str], what: str) -> tuple[str, bool]:
    """Return ``(name_or_path, is_local)``; raise if it is neither a directory nor a hub id.

    A string that does not exist locally is taken for a hub id only if it is spelled
    like one ("name" or "org/name"); anything else is reported as a missing directory.
    """
    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    if path.is_dir():
        return str(path), True
    if path.exists():
        raise ConfigError(f"{what}: {text!r} is a file, expected a model directory")
    if text.startswith((".", "/", "~")) or not _HUB_ID.match(text):
        raise ConfigError(f"{what}: directory {text!r} does not exist")
    return text, False


def _hub_error(what: str, name: str, exc: Exception) -> ConfigError:
    return ConfigError(
        f"{what}: {name!r} is not a local directory and could not be loaded from the "
        f"Hugging Face Hub ({type(exc).__name__}: {exc})"
    )


def _as_dtype(dtype: torch.dtype | str) -> torch.dtype | str:
    if isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    try:
        return _DTYPES[dtype]
    except KeyError:
        raise ConfigError(
            f"dtype {dtype!r} is not supported; expected one of {sorted(_DTYPES)} or 'auto'"
        ) from None


def ensure_pad_token(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Give ``tokenizer`` a pad token if it has none; return True if the vocabulary grew.

    Policy: reuse eos as pad when there is an eos. This keeps the vocabulary, and so
    the checkpoint's embedding shapes, unchanged: the reference model, the policy and
    inference engines that receive weight updates all keep the same tensor shapes,
    and no untrained embedding row appears. Padded positions are masked by the
    attention mask, so which id fills them does not matter. Consequence for callers:
    mask loss labels with the attention mask, never with ``input_ids == pad_token_id``,
    which would also drop the genuine eos that ends each response.

    Only a tokenizer with neither pad nor eos gets a new ``<|pad|>`` token; the model
    must then be resized with :func:`resize_embeddings_to_tokenizer` (or loaded by
    :func:`load_causal_lm` with ``tokenizer=``).
    """
    if tokenizer.pad_token is not None:
        return False
    if tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
        return False
    before = len(tokenizer)
    tokenizer.add_special_tokens({"pad_token": ADDED_PAD_TOKEN})
    return len(tokenizer) > before


def resize_embeddings_to_tokenizer(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase
) -> None:
    """Grow the model's embeddings to cover the tokenizer and record its special ids.

    Embeddings only grow (a checkpoint may pad its vocabulary beyond the tokenizer,
    which is harmless). The pad/eos/bos ids go into the config and generation config
    so ``generate`` pads with the tokenizer's pad id.
    """
    rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
        model.resize_token_embeddings(len(tokenizer))
    # Base models (AutoModel, e.g. a score-model backbone) have no generation config.
    for cfg in (model.config, getattr(model, "generation_config", None)):
        if cfg is None:
            continue
        cfg.pad_token_id = tokenizer.pad_token_id
        if tokenizer.eos_token_id is not None:
            cfg.eos_token_id = tokenizer.eos_token_id
        if tokenizer.bos_token_id is not None:
            cfg.bos_token_id = tokenizer.bos_token_id


def load_tokenizer(
    name_or_path: str | os.PathLike[str],
    trust_remote_code: bool = False,
    padding_side: str = "left",
    prompt_format: str = "",
    format_key: str = "prompt_format",
) -> PreTrainedTokenizerBase:
    """Load a tokenizer from a local directory or hub id, with a pad token and ``padding_side``.

    Its prompt format is ``prompt_format`` when given (checked, ``format_key`` names it in errors), else the one
    saved with it (:func:`rad.data.prompt_format.use_prompt_format`); a later ``save_pretrained`` records it.
    """
    if padding_side not in ("left", "right"):
        raise ConfigError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    name, is_local = _resolve(name_or_path, "tokenizer")
    if is_local and not any((Path(name) / f).is_file() for f in _TOKENIZER_FILES):
        raise ConfigError(
            f"tokenizer: directory {name!r} has none of the tokenizer files {list(_TOKENIZER_FILES)}"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            name, trust_remote_code=trust_remote_code, padding_side=padding_side
        )
    except OSError as exc:
        if is_local:
            raise ConfigError(f"tokenizer: cannot load from directory {name!r}: {exc}") from exc
        raise _hub_error("tokenizer", name, exc) from exc
    # Some tokenizer classes override the constructor argument from their config.
    tokenizer.padding_side = padding_side
    ensure_pad_token(tokenizer)
    use_prompt_format(tokenizer, prompt_format, format_key)
    return tokenizer


#: The config keys that allow pickled weights, for messages (``rad.settings.ModelConfig.allow_pickle_weights``).
PICKLE_KEYS = ("policy.allow_pickle_weights (rad rl, ppo-lag: policy, reference and rollout engines) or "
               "model.allow_pickle_weights (sft, rm, cm, dpo)")


def check_weights(name_or_path: str | os.PathLike[str], allow_pickle: bool, what: str = "model") -> None:
    """Raise :class:`ConfigError` now if a local model directory has no loadable weights, or only pickled ones
    without ``allow_pickle`` (a hub id is checked when it is loaded)."""
    name, is_local = _resolve(name_or_path, what)
    if is_local:
        _check_local_weights(name, allow_pickle, what)


def _check_local_weights(directory: str, allow_pickle: bool, what: str = "model") -> None:
    root = Path(directory)
    if not (root / "config.json").is_file():
        raise ConfigError(f"{what}: directory {directory!r} has no config.json")
    if any((root / f).is_file() for f in _SAFETENSORS_FILES):
        return
    pickles = [f for f in _PICKLE_FILES if (root / f).is_file()]
    if pickles and not allow_pickle:
        raise ConfigError(
            f"{what}: directory {directory!r} holds only pickled weights ({pickles[0]}); "
            "unpickling can run arbitrary code. Convert them to safetensors, or, if you trust the source, "
            f"set {PICKLE_KEYS} to true"
        )
    if not pickles:
        raise ConfigError(
            f"{what}: directory {directory!r} has no weights "
            f"(expected one of {list(_SAFETENSORS_FILES)})"
        )


def load_causal_lm(
    name_or_path: str | os.PathLike[str],
    dtype: torch.dtype | str = torch.float32,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    tokenizer: PreTrainedTokenizerBase | None = None,
) -> PreTrainedModel:
    """Load a causal LM (safetensors only unless ``allow_pickle``), in eval mode.

    ``dtype`` is a torch dtype, one of "float32"/"bfloat16"/"float16" (or short
    forms), or "auto" for the checkpoint's own dtype. With ``tokenizer``, the
    embeddings are resized to cover it and its special ids are recorded
    (:func:`resize_embeddings_to_tokenizer`).
    """
    torch_dtype = _as_dtype(dtype)
    name, is_local = _resolve(name_or_path, "model")
    if is_local:
        _check_local_weights(name, allow_pickle)
    kwargs: dict[str, Any] = {
        "dtype": torch_dtype,
        "trust_remote_code": trust_remote_code,
        # None lets transformers prefer safetensors and fall back to .bin.
        "use_safetensors": None if allow_pickle else True,
    }
    from safetensors import SafetensorError

    try:
        model = AutoModelForCausalLM.from_pretrained(name, **kwargs)
    except SafetensorError as exc:  # a truncated or corrupt weights file
        raise ConfigError(f"model: the safetensors weights in {name!r} are unreadable ({exc}); the file is "
                          "truncated or corrupt: copy or save the model again") from None
    except OSError as exc:
        if is_local:
            raise ConfigError(f"model: cannot load from directory {name!r}: {exc}") from exc
        raise _hub_error("model", name, exc) from exc
    if tokenizer is not None:
        resize_embeddings_to_tokenizer(model, tokenizer)
    model.eval()
    return model


def load_config(name_or_path: str | os.PathLike[str], trust_remote_code: bool = False,
                what: str = "model config") -> Any:
    """Load only a model's config (cheap: no weights), e.g. to check its architecture; errors name ``what``."""
    name, is_local = _resolve(name_or_path, what)
    if is_local and not (Path(name) / "config.json").is_file():
        raise ConfigError(f"{what}: directory {name!r} has no config.json")
    try:
        return AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code)
    except OSError as exc:
        if is_local:
            raise ConfigError(f"{what}: cannot load from directory {name!r}: {exc}") from exc
        raise _hub_error(what, name, exc) from exc
    except ValueError as exc:  # e.g. an unknown model_type
        raise ConfigError(f"{what}: {name!r}: {str(exc).splitlines()[0]}") from None


def check_causal_lm(name_or_path: str | os.PathLike[str], what: str, trust_remote_code: bool = False) -> None:
    """``name_or_path`` holds a causal LM (by its config's ``architectures``, else its model type); a
    :class:`ConfigError` naming ``what`` otherwise. Reads only the config."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    config = load_config(name_or_path, trust_remote_code=trust_remote_code, what=what)
    archs = list(getattr(config, "architectures", None) or [])
    causal = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    if archs:
        ok = any(a in causal or a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs)
    else:
        ok = config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    if not ok:
        raise ConfigError(f"{what}: {os.fspath(name_or_path)!r} is not a causal language model (architectures "
                          f"{archs or [config.model_type]}); expected a policy checkpoint such as *ForCausalLM")


def _fsync_tree(root: Path) -> None:
    """Flush every file under ``root`` to disk so a rename publishes complete files."""
    for path in sorted(root.rglob("*")):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_pretrained_atomic(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase | None,
    out_dir: str | os.PathLike[str],
    overwrite: bool = True,
) -> Path:
    """Save ``model`` (safetensors) and ``tokenizer`` to ``out_dir`` atomically; return its path.

    The files are written to a temporary directory next to ``out_dir`` (same
    filesystem, so the rename is atomic) and renamed into place. An existing
    ``out_dir`` is replaced only if ``overwrite``: it is first renamed aside, the new
    directory renamed in, and the old one deleted, so a reader sees the old or the new
    checkpoint, or briefly none, never a mixture. On any failure the temporary
    directory is removed and ``out_dir`` is left as it was. Concurrent writers with
    ``overwrite=False``: one publishes, the others raise (ConfigError or OSError).
    """
    target = Path(out_dir).expanduser().resolve()
    if target.exists() and not overwrite:
        raise ConfigError(f"save: {str(target)!r} exists and overwrite=False")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    old: Path | None = None
    try:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if not any((tmp / f).is_file() for f in _SAFETENSORS_FILES):
            raise ConfigError(
                f"save: the model's save_pretrained wrote no safetensors file for {str(target)!r}"
            )
        _fsync_tree(tmp)
        if overwrite and target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, old)  # onto an empty directory: allowed on POSIX
        # Renaming onto a non-empty directory fails, so without overwrite a directory
        # published meanwhile by another writer is kept and this call raises OSError.
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not target.exists():
            os.replace(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return target


def load_safetensors_state(directory: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The weights of an HF directory saved with safetensors (one file or an index of shards), on CPU."""
    import json

    from safetensors.torch import load_file

    root = Path(directory)
    index = root / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (root / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        raise ConfigError(f"{str(root)!r}: no model.safetensors or model.safetensors.index.json")
    state: dict[str, torch.Tensor] = {}
    for name in files:
        state.update(load_file(str(root / name), device="cpu"))
    return state
