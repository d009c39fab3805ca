"""Build the tiny default model locally: a byte-level BPE tokenizer and a small Llama.

Three size presets (:data:`SIZES`): ``tiny`` (~197k parameters, the default), ``small``
(~1.3M) and ``medium`` (~35M, compute-bound on CPU).

Nothing is downloaded. Given the same texts, seed and size, the builder writes
byte-identical ``tokenizer.json`` and ``model.safetensors`` (with the same
torch/transformers/tokenizers versions), so tests and examples can share one
cached build (:func:`get_tiny_model_dir`).

Choices, and why:

* Byte-level BPE: every string round-trips through encode/decode (no unknown
  characters), whatever corpus the tokenizer was trained on.
* The prompt template words are added to the training texts so that
  ``BEGINNING OF CONVERSATION: USER: ... ASSISTANT:`` becomes a few whole-word tokens
  even when the corpus never contains it.
* A distinct ``<|pad|>`` token (the vocabulary is ours, so pad need not borrow eos);
  the tokenizer adds ``<|bos|>`` in front of every encoded text and pads on the left.
* Llama architecture: the one vLLM supports most widely; head dimension 32 because
  vLLM's CPU attention kernels need head_dim >= 32. Tied embeddings keep the
  parameter count small. The weights are only initialised (seeded); SFT trains them.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable

import tokenizers
import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from rad.data.template import PROMPT_TEMPLATE
from rad.errors import ConfigError
from rad.models.loading import resize_embeddings_to_tokenizer, save_pretrained_atomic

BOS_TOKEN = "<|bos|>"
EOS_TOKEN = "<|eos|>"
PAD_TOKEN = "<|pad|>"
UNK_TOKEN = "<|unk|>"
# Ids 0..3, in this order.
SPECIAL_TOKENS = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, UNK_TOKEN)

# How many copies of the bare template join the tokenizer's training texts: enough
# for its words to win merges over a corpus of a few thousand sentences.
_TEMPLATE_REPEATS = 64
# Bump when the build procedure changes, so cached builds are not reused.
BUILDER_VERSION = 1
# Seeded init goes through torch's global RNG; builder threads take turns on it.
_SEEDED_INIT = threading.Lock()


@dataclass(frozen=True)
class TinySpec:
    """Shape of a tiny Llama and the target size of its tokenizer's vocabulary."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    head_dim: int
    max_position_embeddings: int


SIZES: dict[str, TinySpec] = {
    "tiny": TinySpec(
        vocab_size=1024,
        hidden_size=64,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        head_dim=32,
        max_position_embeddings=512,
    ),
    "small": TinySpec(
        vocab_size=2048,
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=4,
        head_dim=32,
        max_position_embeddings=512,
    ),
    # ~35M parameters, where a step is compute rather than framework overhead. Eight heads
    # of 64 and an MLP three times the width (Llama's SwiGLU ratio is ~2.7). The embedded
    # world has 763 distinct words and its corpus runs out of pairs to merge at 1823
    # tokens, below both this target and small's; the target is for richer corpora.
    "medium": TinySpec(
        vocab_size=4096,
        hidden_size=512,
        intermediate_size=1536,
        num_hidden_layers=10,
        num_attention_heads=8,
        head_dim=64,
        max_position_embeddings=512,
    ),
}


def _spec(size: str) -> TinySpec:
    try:
        return SIZES[size]
    except KeyError:
        raise ConfigError(f"tiny model size {size!r} is unknown; expected one of {sorted(SIZES)}") from None


def _template_texts(prompt_template: str) -> list[str]:
    bare = prompt_template.replace("{prompt}", "").replace("  ", " ")
    return [bare] * _TEMPLATE_REPEATS


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 1024,
    model_max_length: int = 512,
    prompt_template: str = PROMPT_TEMPLATE,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on ``texts`` and wrap it for transformers.

    The vocabulary may come out smaller than ``vocab_size`` when the corpus runs out
    of pairs to merge; size the model with ``len(tokenizer)``.
    """
    backend = Tokenizer(models.BPE(unk_token=UNK_TOKEN))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [*_template_texts(prompt_template), *texts]
    backend.train_from_iterator(corpus, trainer=trainer, length=len(corpus))
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        add_bos_token=True,
        add_eos_token=False,
        padding_side="left",
        model_max_length=model_max_length,
        # Byte-level decoding is already exact; the cleanup would alter spaces.
        clean_up_tokenization_spaces=False,
    )


def build_model(
    tokenizer: PreTrainedTokenizerFast, spec: TinySpec, seed: int = 0
) -> LlamaForCausalLM:
    """A freshly initialised Llama shaped by ``spec``, its vocabulary ``len(tokenizer)``."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_attention_heads,
        head_dim=spec.head_dim,
        max_position_embeddings=spec.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    # fork_rng restores the caller's global RNG state afterwards; the lock keeps
    # concurrent builds from drawing from each other's seeded stream.
    with _SEEDED_INIT, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    resize_embeddings_to_tokenizer(model, tokenizer)
    return model.eval()


def build_tiny(
    texts: Iterable[str],
    out_dir: str | os.PathLike[str],
    seed: int = 0,
    size: str = "tiny",
    prompt_template: str = PROMPT_TEMPLATE,
    overwrite: bool = True,
) -> Path:
    """Train the tokenizer on ``texts``, initialise the model with ``seed``, save to ``out_dir``.

    The directory is written atomically in Hugging Face format (config.json,
    generation_config.json, model.safetensors, tokenizer files) and loads with
    :func:`rad.models.loading.load_causal_lm` / ``load_tokenizer``. Returns its path.
    """
    spec = _spec(size)
    tokenizer = train_tokenizer(
        texts,
        vocab_size=spec.vocab_size,
        model_max_length=spec.max_position_embeddings,
        prompt_template=prompt_template,
    )
    model = build_model(tokenizer, spec, seed=seed)
    return save_pretrained_atomic(model, tokenizer, out_dir, overwrite=overwrite)


def corpus_fingerprint(texts: Iterable[str]) -> str:
    """SHA-256 of the texts in order (length-prefixed, so boundaries count)."""
    digest = hashlib.sha256()
    for text in texts:
        data = text.encode("utf-8")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def tiny_cache_key(
    texts: Iterable[str], seed: int, size: str, prompt_template: str = PROMPT_TEMPLATE
) -> str:
    """Hash of everything a build depends on, library versions included."""
    payload = {
        "builder": BUILDER_VERSION,
        "spec": asdict(_spec(size)),
        "seed": seed,
        "prompt_template": prompt_template,
        "corpus": corpus_fingerprint(texts),
        "versions": [torch.__version__, transformers.__version__, tokenizers.__version__],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def get_tiny_model_dir(
    cache_dir: str | os.PathLike[str],
    texts_fn: Callable[[], Iterable[str]],
    seed: int = 0,
    size: str = "tiny",
    prompt_template: str = PROMPT_TEMPLATE,
) -> Path:
    """Return a cached tiny-model directory under ``cache_dir``, building it on first use.

    The directory name carries the cache key (:func:`tiny_cache_key`), so another
    corpus, seed, size or library version gets its own build. ``texts_fn`` is called
    every time (its texts are fingerprinted), so it should be cheap. Concurrent
    callers may both build; the atomic rename lets exactly one publish, and the
    others use its (identical) result.
    """
    texts = list(texts_fn())
    key = tiny_cache_key(texts, seed, size, prompt_template)
    target = Path(cache_dir).expanduser() / f"tiny-{size}-seed{seed}-{key}"
    if (target / "config.json").is_file():
        return target
    try:
        return build_tiny(
            texts, target, seed=seed, size=size, prompt_template=prompt_template, overwrite=False
        )
    except (ConfigError, OSError):
        # Lost the race to another process: its build is complete once renamed in.
        if (target / "config.json").is_file():
            return target
        raise
