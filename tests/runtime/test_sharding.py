"""Data-parallel sharding: every step's global batch is cut into disjoint rank shards, the same batches as one rank."""

import random

import pytest

from rad.runtime.sharding import (eval_batches, global_step_batch, micro_batch_indices, rank_step_batches,
                                  steps_per_epoch)


@pytest.mark.parametrize("micro, accum, world", [(4, 1, 2), (3, 2, 2), (2, 3, 4), (5, 1, 3)])
def test_rank_shards_are_disjoint_and_their_union_is_the_global_batch(micro, accum, world):
    order = list(range(200))
    random.Random(7).shuffle(order)
    for step in range(steps_per_epoch(len(order), micro, accum, world)):
        shards = [[i for mb in rank_step_batches(order, step, micro, accum, r, world) for i in mb]
                  for r in range(world)]
        assert all(len(s) == micro * accum for s in shards)
        seen = [i for s in shards for i in s]
        assert len(set(seen)) == len(seen)  # disjoint
        assert sorted(seen) == sorted(global_step_batch(order, step, micro, accum, world))


@pytest.mark.parametrize("micro, accum, world", [(4, 1, 2), (3, 2, 2), (2, 3, 4)])
def test_world_ranks_train_on_the_micro_batches_one_rank_takes_at_accum_times_world(micro, accum, world):
    """The 1-rank run with grad_accum * world takes every step from the same micro batches (the same mean)."""
    order = list(range(97))
    random.Random(3).shuffle(order)
    n_steps = steps_per_epoch(len(order), micro, accum, world)
    assert n_steps == steps_per_epoch(len(order), micro, accum * world, 1)
    for step in range(n_steps + 2):  # past the end too: cyclic wrap-around
        ranks = sorted(mb for r in range(world) for mb in rank_step_batches(order, step, micro, accum, r, world))
        single = sorted(rank_step_batches(order, step, micro, accum * world, 0, 1))
        assert ranks == single


def test_one_rank_walks_the_order_sequentially():
    order = list(range(10))
    assert [micro_batch_indices(order, i, 4, 2) for i in range(3)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 1]]
    assert steps_per_epoch(10, 4, 2, 1) == 1 and steps_per_epoch(3, 4, 2, 2) == 1


def test_eval_batches_cover_the_set_once_and_keep_ranks_in_step():
    n, bs, world = 23, 4, 4  # 6 batches over 4 ranks: two ranks run an extra, uncounted one
    per_rank = [eval_batches(n, bs, r, world) for r in range(world)]
    assert {len(b) for b in per_rank} == {2}
    counted = sorted(i for b in per_rank for rows, keep in b if keep for i in rows)
    assert counted == list(range(n))
    assert eval_batches(n, bs) == [(range(s, min(s + bs, n)), True) for s in range(0, n, bs)]
