"""Tensor- and data-parallel process groups, built once, and DeepSpeed's ``mpu`` view of them.

Layout (Megatron's, with pipeline size 1): the TP ranks of a model replica are adjacent, so
TP groups stay inside a node where NVLink is:

    TP group i = global ranks [i·tp, (i+1)·tp)            (tp_rank = rank mod tp)
    DP group j = global ranks {j, j + tp, j + 2·tp, ...}   (dp_rank = rank div tp)

Layers receive ``tp_group``; DeepSpeed receives ``topology.mpu()``. A group of ``None``
means "no parallelism" throughout ``draw_megatron.parallel`` (never torch's WORLD).
"""

from __future__ import annotations

import torch.distributed as dist
from torch.distributed import ProcessGroup


class ParallelTopology:
    """This rank's place in the (DP × TP) grid and the groups it belongs to.

    Construction is collective when ``world_size > 1``: every rank must build it, with the
    same ``tp``, at the same point of the program (``torch.distributed.new_group`` is).
    """

    def __init__(self, world_size: int, rank: int, tp: int) -> None:
        _check_layout(world_size, rank, tp)
        self.world_size = world_size
        self.rank = rank
        self.tp_size = tp
        self.tp_rank = rank % tp
        self.dp_size = world_size // tp
        self.dp_rank = rank // tp
        self.tp_group: ProcessGroup | None = None
        self.dp_group: ProcessGroup | None = None
        # A group holding only this rank: DeepSpeed's pipeline (pp = 1) and Ulysses
        # sequence-parallel (size 1) groups.
        self.self_group: ProcessGroup | None = None
        # With a process group (even of one rank) DeepSpeed needs real groups: None would
        # mean the whole world to it.
        if dist.is_available() and dist.is_initialized():
            self._new_groups()

    @classmethod
    def single(cls) -> ParallelTopology:
        """One process, no torch.distributed needed: sizes 1, ranks 0, groups ``None``."""
        return cls(world_size=1, rank=0, tp=1)

    @classmethod
    def from_dist(cls, tp: int) -> ParallelTopology:
        """Built from the initialised default group (or :meth:`single` without one)."""
        if not (dist.is_available() and dist.is_initialized()):
            return cls(world_size=1, rank=0, tp=tp)
        return cls(world_size=dist.get_world_size(), rank=dist.get_rank(), tp=tp)

    def tp_ranks(self) -> list[int]:
        """Global ranks of this rank's TP group."""
        return group_layout(self.world_size, self.tp_size)[0][self.dp_rank]

    def dp_ranks(self) -> list[int]:
        """Global ranks of this rank's DP group."""
        return group_layout(self.world_size, self.tp_size)[1][self.tp_rank]

    def mpu(self) -> DeepSpeedMPU:
        """The adapter to pass as ``deepspeed.initialize(..., mpu=...)``."""
        return DeepSpeedMPU(self)

    def _new_groups(self) -> None:
        # Every rank creates every group in the same order: new_group is collective.
        tp_groups, dp_groups = group_layout(self.world_size, self.tp_size)
        for ranks in tp_groups:
            group = dist.new_group(ranks)
            if self.rank in ranks:
                self.tp_group = group
        for ranks in dp_groups:
            group = dist.new_group(ranks)
            if self.rank in ranks:
                self.dp_group = group
        # Only the member takes part, so this costs one group, not world_size of them.
        self.self_group = dist.new_group([self.rank], use_local_synchronization=True)

    def __repr__(self) -> str:
        return (f"ParallelTopology(world_size={self.world_size}, rank={self.rank}, "
                f"tp={self.tp_size} (rank {self.tp_rank}), "
                f"dp={self.dp_size} (rank {self.dp_rank}))")


def group_layout(world_size: int, tp: int) -> tuple[list[list[int]], list[list[int]]]:
    """(TP groups, DP groups) as lists of global ranks: TP group i is [i·tp, (i+1)·tp),
    DP group j is {j, j + tp, ...}."""
    _check_layout(world_size, 0, tp)
    tp_groups = [list(range(i * tp, (i + 1) * tp)) for i in range(world_size // tp)]
    dp_groups = [list(range(j, world_size, tp)) for j in range(tp)]
    return tp_groups, dp_groups


def _check_layout(world_size: int, rank: int, tp: int) -> None:
    if isinstance(tp, bool) or not isinstance(tp, int) or tp < 1:
        raise ValueError(f"parallel.tp must be a positive integer, got {tp!r}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside a world of size {world_size}")
    if world_size % tp:
        raise ValueError(f"parallel.tp={tp} must divide the world size {world_size} "
                         f"(data-parallel size = world size / tp)")


class DeepSpeedMPU:
    """The ``mpu`` object DeepSpeed 0.19 queries, answered from a :class:`ParallelTopology`.

    "Model parallel" is tensor parallel (pipeline size is 1). DeepSpeed's *sequence*
    parallelism is Ulysses, not Megatron's: ours lives inside the TP groups and is invisible
    to DeepSpeed, so its sequence-parallel size is 1 (ZeRO divides gradients by it) and
    its sequence-data-parallel group is the DP group. Deliberately absent:
    ``initialize_sequence_parallel``, whose mere presence makes DeepSpeed ignore the
    model-parallel and data-parallel groups (it marks a Ulysses mpu).
    """

    def __init__(self, topology: ParallelTopology) -> None:
        self._topo = topology

    # Tensor ("model") parallel.
    def get_tensor_model_parallel_rank(self) -> int:
        return self._topo.tp_rank

    def get_tensor_model_parallel_world_size(self) -> int:
        return self._topo.tp_size

    def get_tensor_model_parallel_group(self) -> ProcessGroup | None:
        return self._topo.tp_group

    def get_tensor_model_parallel_src_rank(self) -> int:
        """Global rank of TP rank 0 in this rank's TP group."""
        return self._topo.tp_ranks()[0]

    get_model_parallel_rank = get_tensor_model_parallel_rank
    get_model_parallel_world_size = get_tensor_model_parallel_world_size
    get_model_parallel_group = get_tensor_model_parallel_group
    get_model_parallel_src_rank = get_tensor_model_parallel_src_rank
    # DeepSpeed's pipeline topology calls TP "slice parallel".
    get_slice_parallel_rank = get_tensor_model_parallel_rank
    get_slice_parallel_world_size = get_tensor_model_parallel_world_size
    get_slice_parallel_group = get_tensor_model_parallel_group

    # Data parallel.
    def get_data_parallel_rank(self) -> int:
        return self._topo.dp_rank

    def get_data_parallel_world_size(self) -> int:
        return self._topo.dp_size

    def get_data_parallel_group(self) -> ProcessGroup | None:
        return self._topo.dp_group

    def get_data_parallel_group_ranks(self) -> list[int]:
        return self._topo.dp_ranks()

    get_sequence_data_parallel_rank = get_data_parallel_rank
    get_sequence_data_parallel_world_size = get_data_parallel_world_size
    get_sequence_data_parallel_group = get_data_parallel_group

    # Pipeline parallel (size 1) and Ulysses sequence parallel (size 1).
    def get_pipeline_model_parallel_rank(self) -> int:
        return 0

    def get_pipeline_model_parallel_world_size(self) -> int:
        return 1

    def get_pipeline_model_parallel_group(self) -> ProcessGroup | None:
        return self._topo.self_group

    get_pipe_parallel_rank = get_pipeline_model_parallel_rank
    get_pipe_parallel_world_size = get_pipeline_model_parallel_world_size
    get_pipe_parallel_group = get_pipeline_model_parallel_group
    get_sequence_parallel_rank = get_pipeline_model_parallel_rank
    get_sequence_parallel_world_size = get_pipeline_model_parallel_world_size
    get_sequence_parallel_group = get_pipeline_model_parallel_group

    def __repr__(self) -> str:
        return f"DeepSpeedMPU({self._topo!r})"
