"""A hierarchical Dirichlet schedule on 2 gloo ranks: every rank uses global rank 0's draw."""

import numpy as np

from draw_megatron.mixture.hierarchical import (HierarchicalDirichlet,
                                                HierarchicalDirichletSchedule,
                                                groups_from_mapping)
from draw_megatron.parallel import rank0_broadcaster
from tests.distributed.harness import run_distributed

NAMES = ["A", "B", "C", "D", "E"]


def _spec() -> HierarchicalDirichlet:
    groups = groups_from_mapping({"x": ["A", "C"], "y": ["B", "D", "E"]}, NAMES, "test")
    return HierarchicalDirichlet(groups, [2.0, 0.8], [1.0, 3.0, 0.5, 1.5, 0.3])


def _weights(rank: int, world_size: int) -> list[list[float]]:
    broadcast, is_source = rank0_broadcaster()
    assert is_source == (rank == 0)
    # Rank 1 is not the source and has another seed: rank 0's draw reaches it by broadcast only.
    sched = HierarchicalDirichletSchedule(_spec(), redraw_every=3, seed=7 + rank,
                                          broadcast=broadcast, is_source=is_source)
    return [sched.weights(step).tolist() for step in range(10)]


def test_every_rank_uses_rank0s_draw():
    rank0, rank1 = run_distributed(_weights, 2)
    assert rank0 == rank1
    local = HierarchicalDirichletSchedule(_spec(), redraw_every=3, seed=7)
    np.testing.assert_array_equal(rank0, [local.weights(step) for step in range(10)])
