"""Which examples each data-parallel rank trains and evaluates on.

Training walks an epoch's example order (a permutation) in optimizer steps. Step
``s`` takes the *global batch*: positions ``[s * G, (s + 1) * G)`` of the order,
``G = micro * accum * world`` (cyclic, so a set smaller than a step still fills
it). Rank ``r`` gets the ``r``-th contiguous ``micro * accum`` slice of it, cut into
``accum`` micro batches. DeepSpeed averages the micro-batch losses over
accumulation and the gradients over ranks, so ``world`` ranks at ``accum`` micro
batches each take the optimizer step one rank takes at ``accum * world``: the same
micro batches, the same mean. With ``world = 1`` the walk is the plain sequential
one.

Evaluation cuts the held-out set into batches of ``batch_size`` from the start (the
same batches on any number of ranks) and deals them round-robin; ranks with fewer
batches repeat one whose result they drop, so every rank runs the same number of
forward passes (ZeRO-3 gathers parameters in every forward, on all ranks at once).
"""

from __future__ import annotations

import math
from typing import Sequence


def micro_batch_indices(order: Sequence[int], index: int, micro: int, accum: int, rank: int = 0,
                        world: int = 1) -> list[int]:
    """Example indices of rank ``rank``'s micro batch number ``index`` (counted on that rank) in an epoch."""
    step, k = divmod(index, accum)
    start = ((step * world + rank) * accum + k) * micro
    n = len(order)
    return [order[p % n] for p in range(start, start + micro)]


def rank_step_batches(order: Sequence[int], step: int, micro: int, accum: int, rank: int,
                      world: int) -> list[list[int]]:
    """The ``accum`` micro batches rank ``rank`` trains on in optimizer step ``step`` of an epoch."""
    return [micro_batch_indices(order, step * accum + k, micro, accum, rank, world) for k in range(accum)]


def global_step_batch(order: Sequence[int], step: int, micro: int, accum: int, world: int) -> list[int]:
    """Example indices of optimizer step ``step``'s whole global batch (all ranks together)."""
    size = micro * accum * world
    n = len(order)
    return [order[p % n] for p in range(step * size, (step + 1) * size)]


def steps_per_epoch(n_examples: int, micro: int, accum: int, world: int) -> int:
    """Whole optimizer steps per epoch (at least one), so every checkpoint falls on a step boundary."""
    return max(1, math.ceil(n_examples / micro) // (accum * world))


def eval_batches(n_examples: int, batch_size: int, rank: int = 0, world: int = 1) -> list[tuple[range, bool]]:
    """Rank ``rank``'s evaluation batches as (example range, counted); uncounted ones only keep ranks in step."""
    starts = list(range(0, n_examples, batch_size))
    mine = starts[rank::world]
    rounds = math.ceil(len(starts) / world)
    out = [(range(s, min(s + batch_size, n_examples)), True) for s in mine]
    out += [(range(0, min(batch_size, n_examples)), False)] * (rounds - len(mine))
    return out
