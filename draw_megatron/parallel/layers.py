"""Tensor-parallel layers: column- and row-parallel linear, vocab-parallel embedding.

Notation: n ranks in the TP group, r this rank, X the input, A the full weight of
``nn.Linear`` shape [out, in] (Y = X Aᵀ + b).

Initialisation does not depend on n: each layer draws its FULL weight with
``init_method(full_shape, generator)`` and keeps its shard, so a model built at TP=2 from a
seeded generator equals the TP=1 model built from the same seed (at the price of drawing
the full tensor on every rank once).

Sharded parameters carry the attributes DeepSpeed's gradient-norm code reads
(``model_parallel`` / ``tensor_model_parallel``: counted on every TP rank rather than only
on TP rank 0) and Megatron's ``partition_dim`` / ``partition_stride``, which
:func:`gather_full_param` and :func:`load_full_` use to convert to and from full tensors.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributed import ProcessGroup

from draw_megatron.parallel.mappings import (all_gather, allreduce_sequence_parallel_grad,
                                             copy_to_tp_region, gather_from_sequence_region,
                                             gather_from_tp_region, group_rank, group_size,
                                             mark_sequence_parallel, reduce_from_tp_region,
                                             reduce_scatter_to_sequence_region,
                                             scatter_to_tp_region)

InitMethod = Callable[[tuple[int, ...], "torch.Generator | None"], Tensor]
"""``init_method(full_shape, generator)`` → the full fp32 tensor, on the generator's device."""


def normal_init(std: float = 0.02) -> InitMethod:
    """N(0, std²) entries (GPT-2's 0.02 by default)."""
    def init(shape: tuple[int, ...], generator: torch.Generator | None) -> Tensor:
        device = generator.device if generator is not None else None
        return torch.empty(shape, device=device).normal_(0.0, std, generator=generator)
    return init


def pad_vocab_size(vocab_size: int, tp_size: int, multiple: int = 128) -> int:
    """The vocabulary rounded up to a multiple of ``multiple · tp_size`` (equal, aligned shards).

    Padded ids never occur in the data; the loss masks them (``valid_vocab``).
    """
    step = multiple * tp_size
    return -(-vocab_size // step) * step


# ---------------------------------------------------------------- shards and full tensors

def set_tensor_parallel_attributes(param: Tensor, partition_dim: int, stride: int = 1) -> None:
    """Mark ``param`` as this rank's shard of a tensor split along ``partition_dim``."""
    param.tensor_model_parallel = True
    param.model_parallel = True
    param.partition_dim = partition_dim
    param.partition_stride = stride


def is_tensor_parallel(param: Tensor) -> bool:
    return bool(getattr(param, "tensor_model_parallel", False))


def shard_of(full: Tensor, dim: int, group: ProcessGroup | None, stride: int = 1) -> Tensor:
    """This rank's shard of ``full`` along ``dim``.

    With ``stride`` s, ``full`` is s blocks along ``dim`` (e.g. fused [Q; K; V], s = 3) and
    the shard is this rank's slice of each block, concatenated: [Q_r; K_r; V_r].
    """
    n, r = group_size(group), group_rank(group)
    if full.shape[dim] % (n * stride):
        raise ValueError(f"dim {dim} of size {full.shape[dim]} does not split into "
                         f"{stride} block(s) × {n} rank(s)")
    blocks = full.chunk(stride, dim=dim)
    return torch.cat([block.chunk(n, dim=dim)[r] for block in blocks], dim=dim).contiguous()


@torch.no_grad()
def gather_full(shard: Tensor, dim: int, group: ProcessGroup | None, stride: int = 1) -> Tensor:
    """The full tensor from every rank's shard (collective over ``group``).

    The inverse of :func:`shard_of`.
    """
    n = group_size(group)
    if n == 1:
        return shard.detach().clone()
    per_rank = all_gather(shard.detach(), group, dim).chunk(n, dim=dim)
    blocks = [part.chunk(stride, dim=dim) for part in per_rank]
    return torch.cat([blocks[r][k] for k in range(stride) for r in range(n)], dim=dim)


@torch.no_grad()
def load_full_(param: Tensor, full: Tensor, group: ProcessGroup | None) -> None:
    """Copy ``full`` into ``param``: its shard if ``param`` is tensor-parallel, else all of it."""
    if is_tensor_parallel(param):
        full = shard_of(full, param.partition_dim, group, param.partition_stride)
    if full.shape != param.shape:
        raise ValueError(f"a tensor of shape {tuple(full.shape)} cannot fill a parameter "
                         f"of shape {tuple(param.shape)}")
    param.copy_(full)


def gather_full_param(param: Tensor, group: ProcessGroup | None) -> Tensor:
    """``param`` as a full tensor (collective for a tensor-parallel ``param``)."""
    if not is_tensor_parallel(param):
        return param.detach().clone()
    return gather_full(param, param.partition_dim, group, param.partition_stride)


def _divide(total: int, n: int, what: str) -> int:
    if total % n:
        raise ValueError(f"{what} ({total}) must be divisible by the tensor-parallel size {n}")
    return total // n


def _make_param(shape: tuple[int, ...], device, dtype) -> nn.Parameter:
    return nn.Parameter(torch.empty(shape, device=device, dtype=dtype))


# ---------------------------------------------------------------- layers

class _TensorParallelModule(nn.Module):
    """Holds the group and the weight's init method; subclasses say the weight's full shape."""

    weight: nn.Parameter
    bias: nn.Parameter | None

    def __init__(self, tp_group: ProcessGroup | None, init_method: InitMethod | None) -> None:
        super().__init__()
        self.tp_group = tp_group
        self.tp_size = group_size(tp_group)
        self.tp_rank = group_rank(tp_group)
        self.init_method = init_method or normal_init()

    def full_weight_shape(self) -> tuple[int, ...]:
        raise NotImplementedError

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Draw the full weight from ``generator`` and keep this rank's shard; zero the bias."""
        if self.weight.is_meta:
            return
        full = self.init_method(self.full_weight_shape(), generator)
        load_full_(self.weight, full, self.tp_group)
        if self.bias is not None:
            self.bias.zero_()


class ColumnParallelLinear(_TensorParallelModule):
    """Y = X Aᵀ + b with A split along its output rows: A = [A_1; …; A_n], b = [b_1; …; b_n].

    Rank r computes Y_r = X A_rᵀ + b_r, its slice of Y's last dim. X is replicated, so the
    forward needs no communication; backward, dX = Σ_r dY_r A_r is a sum of the ranks'
    partial products (``copy_to_tp_region``). With ``sequence_parallel`` X arrives split
    along the sequence and is all-gathered first (backward: reduce-scatter of dX).
    ``gather_output`` all-gathers Y (else Y stays split, for a following row-parallel layer).
    ``stride`` > 1 splits a fused weight block-wise (see :func:`shard_of`).
    """

    def __init__(self, in_features: int, out_features: int, tp_group: ProcessGroup | None, *,
                 bias: bool = True, gather_output: bool = False, sequence_parallel: bool = False,
                 stride: int = 1, init_method: InitMethod | None = None,
                 generator: torch.Generator | None = None, device=None, dtype=None) -> None:
        super().__init__(tp_group, init_method)
        self.in_features, self.out_features = in_features, out_features
        self.gather_output = gather_output
        self.sequence_parallel = sequence_parallel
        out_local = _divide(out_features, self.tp_size * stride, "out_features / stride") * stride
        self.weight = _make_param((out_local, in_features), device, dtype)
        set_tensor_parallel_attributes(self.weight, partition_dim=0, stride=stride)
        self.bias = _make_param((out_local,), device, dtype) if bias else None
        if self.bias is not None:
            set_tensor_parallel_attributes(self.bias, partition_dim=0, stride=stride)
        self.reset_parameters(generator)

    def full_weight_shape(self) -> tuple[int, ...]:
        return (self.out_features, self.in_features)

    def forward(self, x: Tensor) -> Tensor:
        if self.sequence_parallel:
            x = gather_from_sequence_region(x, self.tp_group)
        else:
            x = copy_to_tp_region(x, self.tp_group)
        y = F.linear(x, self.weight, self.bias)
        return gather_from_tp_region(y, self.tp_group) if self.gather_output else y

    def extra_repr(self) -> str:
        return (f"in={self.in_features}, out={self.out_features} (local {self.weight.shape[0]}), "
                f"bias={self.bias is not None}, gather_output={self.gather_output}, "
                f"sequence_parallel={self.sequence_parallel}")


class RowParallelLinear(_TensorParallelModule):
    """Y = X Aᵀ + b with A split along its input columns: A = [A_1 … A_n], X = [X_1 … X_n].

    Rank r holds X_r (the output of a column-parallel layer, ``input_is_parallel``, or its
    slice of a replicated X) and computes the partial product P_r = X_r A_rᵀ; Y = Σ_r P_r is
    an all-reduce (``reduce_from_tp_region``), or with ``sequence_parallel`` a
    reduce-scatter that leaves this rank's slice of the sequence. The bias is replicated
    and added once, after the reduction; under sequence parallelism each rank's bias
    gradient covers only its tokens, so it is summed over the group inside the graph.
    """

    def __init__(self, in_features: int, out_features: int, tp_group: ProcessGroup | None, *,
                 bias: bool = True, input_is_parallel: bool = True,
                 sequence_parallel: bool = False, init_method: InitMethod | None = None,
                 generator: torch.Generator | None = None, device=None, dtype=None) -> None:
        super().__init__(tp_group, init_method)
        if sequence_parallel and not input_is_parallel:
            raise ValueError("a sequence-parallel RowParallelLinear needs input_is_parallel=True")
        self.in_features, self.out_features = in_features, out_features
        self.input_is_parallel = input_is_parallel
        self.sequence_parallel = sequence_parallel
        in_local = _divide(in_features, self.tp_size, "in_features")
        self.weight = _make_param((out_features, in_local), device, dtype)
        set_tensor_parallel_attributes(self.weight, partition_dim=1)
        self.bias = _make_param((out_features,), device, dtype) if bias else None
        if self.bias is not None and sequence_parallel:
            mark_sequence_parallel(self.bias)
        self.reset_parameters(generator)

    def full_weight_shape(self) -> tuple[int, ...]:
        return (self.out_features, self.in_features)

    def forward(self, x: Tensor) -> Tensor:
        if not self.input_is_parallel:
            x = scatter_to_tp_region(x, self.tp_group)
        partial = F.linear(x, self.weight)
        if self.sequence_parallel:
            y = reduce_scatter_to_sequence_region(partial, self.tp_group)
        else:
            y = reduce_from_tp_region(partial, self.tp_group)
        if self.bias is None:
            return y
        sp_group = self.tp_group if self.sequence_parallel else None
        return y + allreduce_sequence_parallel_grad(self.bias, sp_group)

    def extra_repr(self) -> str:
        return (f"in={self.in_features} (local {self.weight.shape[1]}), out={self.out_features}, "
                f"bias={self.bias is not None}, input_is_parallel={self.input_is_parallel}, "
                f"sequence_parallel={self.sequence_parallel}")


class VocabParallelEmbedding(_TensorParallelModule):
    """E[ids] with the table E [V, D] split along the vocabulary: rank r holds rows
    [r·V/n, (r+1)·V/n).

    Each rank looks up the ids in its range and writes zeros for the others, so
    E[ids] = Σ_r (masked lookup)_r: an all-reduce, or with ``sequence_parallel`` a
    reduce-scatter leaving this rank's slice of the sequence. Backward, each rank's
    gradient lands on its own rows only.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, tp_group: ProcessGroup | None, *,
                 sequence_parallel: bool = False, init_method: InitMethod | None = None,
                 generator: torch.Generator | None = None, device=None, dtype=None) -> None:
        super().__init__(tp_group, init_method)
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.sequence_parallel = sequence_parallel
        rows = _divide(num_embeddings, self.tp_size, "num_embeddings (pad the vocabulary)")
        self.vocab_start = self.tp_rank * rows
        self.vocab_end = self.vocab_start + rows
        self.weight = _make_param((rows, embedding_dim), device, dtype)
        set_tensor_parallel_attributes(self.weight, partition_dim=0)
        self.bias = None
        self.reset_parameters(generator)

    def full_weight_shape(self) -> tuple[int, ...]:
        return (self.num_embeddings, self.embedding_dim)

    def forward(self, ids: Tensor) -> Tensor:
        if self.tp_size == 1:
            out = F.embedding(ids, self.weight)
        else:
            outside = (ids < self.vocab_start) | (ids >= self.vocab_end)
            local_ids = (ids - self.vocab_start).masked_fill(outside, 0)
            out = F.embedding(local_ids, self.weight).masked_fill(outside.unsqueeze(-1), 0.0)
        if self.sequence_parallel:
            return reduce_scatter_to_sequence_region(out, self.tp_group)
        return reduce_from_tp_region(out, self.tp_group)

    def extra_repr(self) -> str:
        return (f"{self.num_embeddings} (rows {self.vocab_start}:{self.vocab_end}), "
                f"{self.embedding_dim}, sequence_parallel={self.sequence_parallel}")
