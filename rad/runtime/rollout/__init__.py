"""Rollout engines (HF ``generate``, vLLM) behind one interface, as Ray actors, with weight sync.

Import the submodules directly; nothing here imports vLLM or Ray at import time.
"""
