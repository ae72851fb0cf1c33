"""Topology layout, validation and the DeepSpeed mpu adapter, without a process group."""

import pytest

from draw_megatron.parallel import ParallelTopology
from draw_megatron.parallel.topology import group_layout


def test_layout_is_megatrons():
    tp_groups, dp_groups = group_layout(8, 2)
    assert tp_groups == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert dp_groups == [[0, 2, 4, 6], [1, 3, 5, 7]]
    assert group_layout(4, 4) == ([[0, 1, 2, 3]], [[0], [1], [2], [3]])
    assert group_layout(4, 1) == ([[0], [1], [2], [3]], [[0, 1, 2, 3]])


@pytest.mark.parametrize("tp", [3, 0, -2, 2.0, True])
def test_bad_tp_names_the_key(tp):
    with pytest.raises(ValueError, match=r"parallel\.tp"):
        group_layout(4, tp)
    with pytest.raises(ValueError, match=r"parallel\.tp"):
        ParallelTopology(world_size=4, rank=0, tp=tp)



def test_single_needs_no_process_group():
    topo = ParallelTopology.single()
    assert (topo.world_size, topo.rank, topo.tp_size, topo.tp_rank, topo.dp_size, topo.dp_rank) \
        == (1, 0, 1, 0, 1, 0)
    assert topo.tp_group is None and topo.dp_group is None
    assert ParallelTopology.from_dist(tp=1).world_size == 1
    with pytest.raises(ValueError, match=r"parallel\.tp=2"):
        ParallelTopology.from_dist(tp=2)


def test_single_mpu_answers_deepspeed():
    from deepspeed.runtime.model_checkpointing.utils import _create_model_parallel_info
    from deepspeed.utils import bwc

    mpu = ParallelTopology.single().mpu()
    assert not hasattr(mpu, "initialize_sequence_parallel")  # would mark it as a Ulysses mpu
    assert bwc.bwc_tensor_model_parallel_rank(mpu) == 0
    assert bwc.bwc_tensor_model_parallel_world_size(mpu) == 1
    assert bwc.bwc_tensor_model_parallel_group(mpu) is None
    assert bwc.bwc_pipeline_parallel_world_size(mpu) == 1
    info = _create_model_parallel_info(mpu)
    assert (info.pp_world_size, info.pp_rank, info.tp_world_size, info.tp_rank,
            info.dp_world_size, info.dp_rank, info.dp_peer_ranks) == (1, 0, 1, 0, 1, 0, [0])
    assert mpu.get_sequence_parallel_world_size() == 1
    assert mpu.get_model_parallel_src_rank() == 0
