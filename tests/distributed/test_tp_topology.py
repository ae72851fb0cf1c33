"""ParallelTopology on 4 gloo ranks with tp=2, and its mpu adapter answering DeepSpeed."""

import os

import pytest
import torch
import torch.distributed as dist

from draw_megatron.parallel import ColumnParallelLinear, ParallelTopology, shard_of
from tests.distributed.harness import run_distributed


def _groups_and_collectives(rank: int) -> dict:
    topo = ParallelTopology.from_dist(tp=2)
    x = torch.tensor([float(rank)])
    dist.all_reduce(x, group=topo.tp_group)
    y = torch.tensor([float(rank)])
    dist.all_reduce(y, group=topo.dp_group)
    return {"tp": dist.get_process_group_ranks(topo.tp_group), "tp_rank": topo.tp_rank,
            "dp": dist.get_process_group_ranks(topo.dp_group), "dp_rank": topo.dp_rank,
            "sizes": (topo.world_size, topo.tp_size, topo.dp_size),
            "tp_sum": x.item(), "dp_sum": y.item(), "topo": topo}


def _other_layouts() -> None:
    with pytest.raises(ValueError, match=r"parallel\.tp=3"):
        ParallelTopology.from_dist(tp=3)  # raised before any collective, on every rank
    for tp in (1, 4):  # built in the same order on every rank: new_group is collective
        topo = ParallelTopology.from_dist(tp=tp)
        assert dist.get_world_size(topo.tp_group) == tp
        assert dist.get_world_size(topo.dp_group) == 4 // tp


def _deepspeed_calls(topo: ParallelTopology) -> dict:
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed
    from deepspeed.runtime.model_checkpointing.utils import _create_model_parallel_info
    from deepspeed.runtime.utils import clip_grad_norm_
    from deepspeed.utils import bwc, groups

    # On CPU, deepspeed.comm's backend JIT-compiles a shared-memory all-reduce op (about
    # 80 s on 2 cores when not cached): switched off here, these checks never use it.
    compatible = deepspeed.ops.__compatible_ops__
    shm_was = compatible.get("deepspeed_shm_comm")
    compatible["deepspeed_shm_comm"] = False
    deepspeed.init_distributed("gloo")  # adopts the harness's default group
    mpu = topo.mpu()
    previous, groups.mpu = groups.mpu, mpu  # what deepspeed.initialize(mpu=...) sets
    try:
        seen = {
            "bwc": (bwc.bwc_tensor_model_parallel_rank(mpu),
                    bwc.bwc_tensor_model_parallel_world_size(mpu),
                    bwc.bwc_pipeline_parallel_world_size(mpu)),
            "groups": (groups._get_data_parallel_world_size(), groups._get_data_parallel_rank(),
                       groups._get_model_parallel_world_size(),
                       groups._get_sequence_parallel_world_size(),
                       groups._get_sequence_data_parallel_world_size()),
            "info": _create_model_parallel_info(mpu).__dict__,
            "src": mpu.get_tensor_model_parallel_src_rank(),
        }
        assert groups._get_data_parallel_group() is topo.dp_group
        assert bwc.bwc_tensor_model_parallel_group(mpu) is topo.tp_group
        assert mpu.get_model_parallel_group() is topo.tp_group
        assert dist.get_world_size(bwc.bwc_pipeline_parallel_group(mpu)) == 1

        # Gradient clipping counts a sharded grad on every TP rank, a replicated one once.
        torch.manual_seed(0)
        full_grad, replicated_grad = torch.randn(6, 4), torch.randn(5)
        layer = ColumnParallelLinear(4, 6, topo.tp_group, bias=False)
        layer.weight.grad = shard_of(full_grad, 0, topo.tp_group)
        replicated = torch.nn.Parameter(torch.zeros(5))
        replicated.grad = replicated_grad.clone()
        norm = clip_grad_norm_([layer.weight, replicated], max_norm=1e6, mpu=mpu)
        want = torch.cat([full_grad.flatten(), replicated_grad]).norm()
        seen["norm_rel_err"] = abs(float(norm) - want.item()) / want.item()
    finally:
        groups.mpu = previous
        compatible["deepspeed_shm_comm"] = shm_was
    return seen


def _rank_checks(rank: int, world_size: int) -> dict:
    result = _groups_and_collectives(rank)
    result.update(_deepspeed_calls(result.pop("topo")))
    _other_layouts()
    return result


def test_tp2_world4_layout_and_mpu():
    results = run_distributed(_rank_checks, 4)
    for rank, r in enumerate(results):
        tp_group = [0, 1] if rank < 2 else [2, 3]
        dp_group = [0, 2] if rank % 2 == 0 else [1, 3]
        assert r["tp"] == tp_group and r["dp"] == dp_group
        assert (r["tp_rank"], r["dp_rank"], r["sizes"]) == (rank % 2, rank // 2, (4, 2, 2))
        assert (r["tp_sum"], r["dp_sum"]) == (sum(tp_group), sum(dp_group))
        assert r["bwc"] == (rank % 2, 2, 1)
        assert r["groups"] == (2, rank // 2, 2, 1, 2)
        assert r["info"] == {"pp_world_size": 1, "pp_rank": 0, "tp_world_size": 2,
                             "tp_rank": rank % 2, "dp_world_size": 2, "dp_peer_ranks": dp_group,
                             "dp_rank": rank // 2}
        assert r["src"] == tp_group[0]
        assert r["norm_rel_err"] < 1e-6
