"""Rollouts with Hugging Face ``generate``: the engine that runs anywhere torch runs.

Prompts are left-padded into micro-batches (``left_pad``; a decoder-only model must
see every prompt end at the same position, and the attention mask keeps padding out
of attention and position ids). Each micro-batch samples under its own seed derived
from ``(sampling.seed, micro-batch index)`` inside ``torch.random.fork_rng``, so a
call is reproducible for the same inputs and micro-batch size, and the caller's
global RNG is left untouched.

Sampling warpers (temperature, top-k, top-p) are applied by this engine's own
logits-processor list rather than by ``generate``'s built-in ones, followed by
:class:`_PickToken`, which draws the next token itself (inverse CDF: one uniform per
row against the cumulative probabilities), records its log-prob under the processed
scores and hands ``generate`` scores that are -inf everywhere else, so ``generate``
runs greedy and takes that token. ``torch.multinomial``, which ``generate`` would
sample with, draws one exponential per vocabulary entry: 3.4 ms per step for 64 rows
of a 1024-token vocabulary on one CPU thread, about a quarter of the tiny policy's
``generate`` time, against 0.16 ms for the inverse CDF. Recording only the chosen
token's log-prob also avoids ``output_scores``, which would keep
``max_new_tokens x batch x vocab`` floats.
"""

from __future__ import annotations

import os
from typing import Sequence

import torch
from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from rad.data.encode import left_pad
from rad.errors import ConfigError
from rad.models.loading import load_causal_lm, load_tokenizer
from rad.runtime.rollout.base import (
    Rollout,
    RolloutEngine,
    SamplingConfig,
    Stopwatch,
    Weights,
    check_n,
    cut_at_eos,
    derived_seed,
    encode_prompts,
    named_tensors,
)


def _as_tensor(flat) -> torch.Tensor:
    """A bucket's bytes (a read-only numpy array from Ray's object store) as a uint8 tensor, without a copy."""
    import warnings

    if isinstance(flat, torch.Tensor):
        return flat
    with warnings.catch_warnings():  # only read (copied into the model) before it is dropped
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(flat)


class _PickToken:
    """Last logits processor: picks each row's next token and records its log-prob (see the module doc).

    Sampling draws from the softmax of the processed scores; greedy takes their argmax
    (the same token ``generate``'s greedy search would take).
    """

    def __init__(self, sample: bool) -> None:
        self.sample = sample
        self._steps: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(scores.float(), dim=-1)
        if self.sample:
            probs = logp.double().exp()
            cdf = probs.cumsum(-1)
            u = torch.rand((cdf.shape[0], 1), dtype=cdf.dtype, device=cdf.device) * cdf[:, -1:]
            # right=True never lands on a zero-probability token; the clamp to each row's last positive
            # one covers u rounding up to the total
            last = (probs > 0).cumsum(-1).argmax(-1, keepdim=True)
            tokens = torch.minimum(torch.searchsorted(cdf, u, right=True), last)
        else:
            tokens = scores.argmax(-1, keepdim=True)
        self._steps.append(logp.gather(-1, tokens).squeeze(-1))
        return torch.full_like(scores, float("-inf")).scatter_(-1, tokens, 0.0)

    def logprobs(self) -> torch.Tensor:
        """``(batch, generated)`` log-probs of the picked tokens, one column per generated position."""
        return torch.stack(self._steps, dim=1).cpu()


class HFEngine(RolloutEngine):
    """A causal LM sampled with ``model.generate`` in left-padded micro-batches."""

    kind = "hf"

    def __init__(self, model_dir: str | os.PathLike, tokenizer_dir: str | os.PathLike | None = None,
                 dtype: str = "float32", device: str | None = None, micro_batch_size: int = 64,
                 trust_remote_code: bool = False, model: torch.nn.Module | None = None, tokenizer=None,
                 allow_pickle: bool = False, prompt_format: str = "", kv_cache: str = "dynamic") -> None:
        """Load ``model_dir`` onto ``device`` (default: the accelerator Ray assigned, else the CPU), or, with
        ``model`` and ``tokenizer``, generate with that module as it is (see :meth:`around`). Prompts are
        built in ``prompt_format`` ('' = the format saved with the tokenizer); ``kv_cache`` is generate's
        cache, ``dynamic`` (grown token by token) or ``static`` (preallocated: no copy per token)."""
        if micro_batch_size < 1:
            raise ConfigError(f"HFEngine: micro_batch_size must be >= 1, got {micro_batch_size}")
        if kv_cache not in ("dynamic", "static"):
            raise ConfigError(f"rollout.hf_kv_cache: expected dynamic or static, got {kv_cache!r}")
        from rad.runtime.distributed import role_device

        with Stopwatch() as sw:
            if model is None:
                tokenizer = load_tokenizer(tokenizer_dir or model_dir, trust_remote_code=trust_remote_code,
                                           prompt_format=prompt_format, format_key="policy.prompt_format")
                model = load_causal_lm(model_dir, dtype=dtype, trust_remote_code=trust_remote_code,
                                       allow_pickle=allow_pickle, tokenizer=tokenizer)
                model = model.to(role_device(device or "auto")).eval().requires_grad_(False)
            self.tokenizer, self.model = tokenizer, model
            self.device = next(model.parameters()).device
        self.start_seconds = sw.seconds
        self.micro_batch_size = micro_batch_size
        self.kv_cache = kv_cache
        self.model_dir = str(model_dir)
        self._own: dict[str, torch.Tensor] = {}  # the model's state dict while a weight update is under way
        self._received: set[str] = set()
        self._bucket_seconds = 0.0
        self._group = None  # the weight-broadcast process group, once joined

    @classmethod
    def around(cls, model: torch.nn.Module, tokenizer, micro_batch_size: int = 64, model_dir: str = "",
               kv_cache: str = "dynamic") -> "HFEngine":
        """An engine over an existing module (a learner's own, for ``rollout.hybrid``): nothing is copied,
        so it always generates with the module's current weights."""
        return cls(model_dir, micro_batch_size=micro_batch_size, model=model, tokenizer=tokenizer, kv_cache=kv_cache)

    # -- generation ----------------------------------------------------------

    def _generate_kwargs(self, sampling: SamplingConfig) -> tuple[dict, list]:
        """``generate`` keyword arguments and the sampling warpers (applied by this engine, see module doc)."""
        tok = self.tokenizer
        kwargs = dict(max_new_tokens=sampling.max_new_tokens, pad_token_id=tok.pad_token_id,
                      # eos_token_id=None as a keyword (not in a GenerationConfig, where the
                      # model's default would be filled back in) lets generation run past EOS.
                      eos_token_id=tok.eos_token_id if sampling.stop_on_eos else None,
                      temperature=None, top_k=None, top_p=None)
        if self.kv_cache == "static":
            kwargs["cache_implementation"] = "static"
        warpers: list = []
        kwargs["do_sample"] = False  # _PickToken samples; generate takes the one token it leaves
        if not sampling.greedy:
            if sampling.temperature != 1.0:
                warpers.append(TemperatureLogitsWarper(sampling.temperature))
            if sampling.top_k > 0:
                warpers.append(TopKLogitsWarper(top_k=sampling.top_k))
            if sampling.top_p < 1.0:
                warpers.append(TopPLogitsWarper(top_p=sampling.top_p))
        return kwargs, warpers

    @torch.no_grad()
    def generate(self, prompts: Sequence[str], n: int = 1, sampling: SamplingConfig | None = None) -> list[Rollout]:
        sampling = sampling or SamplingConfig()
        check_n(n)
        prompt_ids = encode_prompts(self.tokenizer, prompts)
        rows = [(i, j) for i in range(len(prompt_ids)) for j in range(n)]
        kwargs, warpers = self._generate_kwargs(sampling)
        rng_devices = [self.device.index or 0] if self.device.type == "cuda" else []
        eos_id = self.tokenizer.eos_token_id
        rollouts: list[Rollout] = []
        for mb, start in enumerate(range(0, len(rows), self.micro_batch_size)):
            chunk = rows[start: start + self.micro_batch_size]
            batch = {k: v.to(self.device) for k, v in left_pad([prompt_ids[i] for i, _ in chunk],
                                                                self.tokenizer.pad_token_id).items()}
            picker = _PickToken(sample=not sampling.greedy)
            with torch.random.fork_rng(devices=rng_devices):
                torch.manual_seed(derived_seed(sampling.seed, mb))
                sequences = self.model.generate(**batch, **kwargs,
                                                logits_processor=LogitsProcessorList([*warpers, picker]))
            new_tokens = sequences[:, batch["input_ids"].shape[1]:].cpu()
            logprobs = picker.logprobs()
            for row, (i, j) in enumerate(chunk):
                ids, reason = cut_at_eos(new_tokens[row].tolist(), eos_id, sampling.stop_on_eos)
                rollouts.append(Rollout(
                    prompt=prompts[i], prompt_token_ids=list(prompt_ids[i]), response_token_ids=ids,
                    response_text=self.tokenizer.decode(ids, skip_special_tokens=True),
                    logprobs=logprobs[row, : len(ids)].tolist(), finish_reason=reason,
                    prompt_index=i, sample_index=j))
        return rollouts

    # -- weights -------------------------------------------------------------

    def update_weights(self, weights: Weights) -> float:
        """Copy ``weights`` (HF names, any dtype/device) into the model in place.

        Every name must be a model parameter or buffer, and every parameter must be
        covered, except tied aliases (e.g. ``lm_head.weight`` tied to the embeddings
        may come under either name).
        """
        with Stopwatch() as sw:
            self._begin_weights()
            for name, tensor in named_tensors(weights):
                self._load_tensor(name, tensor)
            self._finish_weights()
        return sw.seconds

    # the receiving side of every transport (rad.runtime.rollout.weight_sync): begin, tensors, finish
    def _begin_weights(self) -> None:
        self._own = self.model.state_dict()
        self._received: set[str] = set()

    def _load_tensor(self, name: str, tensor: torch.Tensor) -> None:
        target = self._own.get(name)
        error = None
        if target is None:
            error = f"update_weights: {name!r} is not a parameter of the model {self.model_dir!r}"
        elif tuple(tensor.shape) != tuple(target.shape):
            error = (f"update_weights: {name!r} has shape {tuple(tensor.shape)}, "
                     f"the model expects {tuple(target.shape)}")
        if error:
            self._own, self._received = {}, set()  # the round is void; the next one starts afresh
            raise ConfigError(error)
        with torch.no_grad():
            target.copy_(tensor.to(device=target.device, dtype=target.dtype))
        self._received.add(name)

    def _finish_weights(self) -> None:
        by_storage: dict[int, list[str]] = {}
        for name, tensor in self._own.items():
            by_storage.setdefault(tensor.data_ptr(), []).append(name)
        missing = [names[0] for names in by_storage.values() if not any(n in self._received for n in names)]
        self._own, received, self._received = {}, self._received, set()
        if missing:
            raise ConfigError(f"update_weights: the update lacks parameters {missing[:5]} "
                              f"({len(received)} tensors received)")

    def num_workers(self) -> int:
        return 1

    def join_weight_group(self, address: str, port: int, rank: int, world_size: int, timeout_s: float) -> None:
        from rad.runtime.rollout.transport import join_group

        self._group = join_group(address, port, rank, world_size, self.device, timeout_s)

    def receive_broadcast(self, layout) -> float:
        from rad.runtime.rollout.transport import receive_buckets

        with Stopwatch() as sw:
            self._begin_weights()
            for name, tensor in receive_buckets(self._group, layout, self.device):
                self._load_tensor(name, tensor)
            self._finish_weights()
        return sw.seconds

    def load_bucket(self, specs, flat) -> float:
        """One object-store bucket (``flat``: the bucket's bytes as a numpy array); see ``finish_weights``."""
        from rad.runtime.rollout.transport import unpack_bucket

        with Stopwatch() as sw:
            if not self._own:  # the round's first bucket
                self._begin_weights()
            for name, tensor in unpack_bucket(specs, _as_tensor(flat)):
                self._load_tensor(name, tensor)
        self._bucket_seconds += sw.seconds
        return sw.seconds

    def finish_weights(self) -> float:
        with Stopwatch() as sw:
            self._finish_weights()
        seconds, self._bucket_seconds = self._bucket_seconds + sw.seconds, 0.0
        return seconds

    def load_ipc(self, handles: bytes, names: list[str]) -> float:
        """CUDA IPC handles of a colocated learner's tensors (pickled ``reduce_tensor`` output of this job)."""
        import pickle

        with Stopwatch() as sw:
            self._begin_weights()
            for name, (rebuild, args) in pickle.loads(handles):
                args = list(args)
                args[6] = self.device.index or 0  # the learner's device index, as this process numbers it
                self._load_tensor(name, rebuild(*args))
            self._finish_weights()
        return sw.seconds

    def get_weights(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}

    @torch.no_grad()
    def token_logprobs(self, sequences: Sequence[Sequence[int]]) -> list[list[float]]:
        out = []
        for seq in sequences:
            ids = torch.tensor([list(seq)], device=self.device)
            logits = self.model(input_ids=ids).logits.float()
            lp = torch.log_softmax(logits[0, :-1], dim=-1).gather(-1, ids[0, 1:, None]).squeeze(-1)
            out.append(lp.cpu().tolist())
        return out

    def close(self) -> None:
        del self.model
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
