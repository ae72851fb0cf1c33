"""Megatron-style tensor (+ sequence) parallelism over torch.distributed process groups.

Plain ``nn.Module``s and autograd functions, so DeepSpeed ZeRO can wrap the model and the
same code runs with NCCL on GPU and gloo on CPU:

- ``topology``: the TP/DP groups (built once) and DeepSpeed's ``mpu`` adapter;
- ``mappings``: the communication primitives (with their adjoints) and the in-graph
  gradient sum of sequence-parallel parameters;
- ``layers``: column/row-parallel linear, vocab-parallel embedding, shard ↔ full helpers;
- ``cross_entropy``: per-token loss over vocabulary-parallel logits;
- ``broadcast``: global rank 0's mixture draws on every rank.
"""

from draw_megatron.parallel.broadcast import broadcast_from_rank0, host_group, rank0_broadcaster
from draw_megatron.parallel.cross_entropy import vocab_parallel_cross_entropy
from draw_megatron.parallel.layers import (ColumnParallelLinear, InitMethod, RowParallelLinear,
                                           VocabParallelEmbedding, gather_full, gather_full_param,
                                           is_tensor_parallel, load_full_, normal_init,
                                           pad_vocab_size, set_tensor_parallel_attributes,
                                           shard_of)
from draw_megatron.parallel.mappings import (SEQUENCE_DIM, allreduce_sequence_parallel_grad,
                                             copy_to_tp_region, gather_from_sequence_region,
                                             gather_from_tp_region, is_sequence_parallel,
                                             mark_sequence_parallel, reduce_from_tp_region,
                                             reduce_scatter_to_sequence_region,
                                             scatter_to_sequence_region, scatter_to_tp_region)
from draw_megatron.parallel.topology import DeepSpeedMPU, ParallelTopology

__all__ = [
    "broadcast_from_rank0", "host_group", "rank0_broadcaster",
    "ColumnParallelLinear", "DeepSpeedMPU", "InitMethod", "ParallelTopology",
    "RowParallelLinear", "SEQUENCE_DIM", "VocabParallelEmbedding",
    "allreduce_sequence_parallel_grad", "copy_to_tp_region", "gather_from_sequence_region",
    "gather_from_tp_region", "gather_full", "gather_full_param", "is_sequence_parallel",
    "is_tensor_parallel", "load_full_", "mark_sequence_parallel", "normal_init",
    "pad_vocab_size", "reduce_from_tp_region", "reduce_scatter_to_sequence_region",
    "scatter_to_sequence_region", "scatter_to_tp_region", "set_tensor_parallel_attributes",
    "shard_of", "vocab_parallel_cross_entropy",
]
