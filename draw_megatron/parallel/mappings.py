"""Autograd communication primitives of Megatron-style tensor and sequence parallelism.

Each maps a tensor between a *replicated* region (every TP rank holds the same full tensor),
a *TP region* (rank r holds the r-th slice of the last, hidden dim, or a partial sum) and a
*sequence region* (rank r holds the r-th slice of the sequence dim). With n ranks in the
group, x_r rank r's tensor, and [·]_r the r-th of n equal slices along a dim:

    primitive                      forward                 backward (g = grad of output)
    copy_to_tp_region              y = x                   dx = Σ_r g_r        (all-reduce)
    reduce_from_tp_region          y = Σ_r x_r             dx = g
    scatter_to_tp_region           y = [x]_r  (last dim)   dx = cat_r g_r      (all-gather)
    gather_from_tp_region          y = cat_r x_r           dx = [g]_r
    scatter_to_sequence_region     y = [x]_r  (seq dim)    dx = cat_r g_r
    gather_from_sequence_region    y = cat_r x_r           dx = [Σ_r g_r]_r    (reduce-scatter)
                                                           or [g]_r if the grad is replicated
    reduce_scatter_to_sequence_region  y = [Σ_r x_r]_r     dx = cat_r g_r

Each backward is the adjoint of its forward: the adjoint of "broadcast" is "sum", of
"slice" is "zero-pad" (which, summed over the ranks that use the slices, is a gather).

A group of ``None`` or of size 1 makes every primitive the identity (no autograd node),
so the same model code runs at tp = 1 without torch.distributed.

Collectives never write into a tensor autograd may still hold (an input, or a gradient that
another branch of the graph shares): they work on fresh buffers.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor
from torch.distributed import ProcessGroup

SEQUENCE_DIM = 1
"""Activations are [batch, sequence, hidden]: the sequence dim sequence parallelism splits."""

# Recent torch renamed the tensor-in/tensor-out collectives (the old names warn as
# deprecated); older releases, such as the GPU image's 2.11, may have only the old names.
_all_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
_reduce_scatter_single = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor

# Gloo has had reduce_scatter_tensor since torch 2.2 (as all-reduce + chunk inside the
# backend: twice the traffic, irrelevant on CPU), so no fallback is needed here.


def group_size(group: ProcessGroup | None) -> int:
    """Ranks in ``group``; 1 for ``None`` (no parallelism)."""
    return 1 if group is None else dist.get_world_size(group)


def group_rank(group: ProcessGroup | None) -> int:
    """This rank's index in ``group``; 0 for ``None``."""
    return 0 if group is None else dist.get_rank(group)


# ---------------------------------------------------------------- raw collectives (no autograd)

def all_reduce(x: Tensor, group: ProcessGroup) -> Tensor:
    """Σ over the group, into a new tensor."""
    out = x.clone(memory_format=torch.contiguous_format)
    dist.all_reduce(out, group=group)
    return out


def all_gather(x: Tensor, group: ProcessGroup, dim: int) -> Tensor:
    """The group's tensors concatenated along ``dim`` in rank order."""
    n = group_size(group)
    x0 = x.movedim(dim, 0).contiguous()
    out = x0.new_empty((n * x0.shape[0], *x0.shape[1:]))
    _all_gather_single(out, x0, group=group)
    return out.movedim(0, dim).contiguous() if dim % x.dim() else out


def split(x: Tensor, group: ProcessGroup, dim: int) -> Tensor:
    """This rank's slice of ``x`` along ``dim`` (n equal slices)."""
    n = group_size(group)
    if x.shape[dim] % n:
        raise ValueError(f"dim {dim} of size {x.shape[dim]} does not split into {n} equal parts")
    return x.chunk(n, dim=dim)[group_rank(group)].contiguous()


def reduce_scatter(x: Tensor, group: ProcessGroup, dim: int) -> Tensor:
    """This rank's slice along ``dim`` of Σ over the group."""
    n = group_size(group)
    if x.shape[dim] % n:
        raise ValueError(f"dim {dim} of size {x.shape[dim]} does not split into {n} equal parts")
    x0 = x.movedim(dim, 0).contiguous()
    out = x0.new_empty((x0.shape[0] // n, *x0.shape[1:]))
    _reduce_scatter_single(out, x0, group=group)
    return out.movedim(0, dim).contiguous() if dim % x.dim() else out


# ---------------------------------------------------------------- autograd functions

class _CopyToTP(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, group: ProcessGroup) -> Tensor:
        ctx.group = group
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return all_reduce(grad, ctx.group), None


class _ReduceFromTP(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, group: ProcessGroup) -> Tensor:
        return all_reduce(x, group)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad, None


class _Scatter(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, group: ProcessGroup, dim: int) -> Tensor:
        ctx.group, ctx.dim = group, dim
        return split(x, group, dim)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return all_gather(grad, ctx.group, ctx.dim), None, None


class _Gather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, group: ProcessGroup, dim: int, reduce_grad: bool) -> Tensor:
        ctx.group, ctx.dim, ctx.reduce_grad = group, dim, reduce_grad
        return all_gather(x, group, dim)

    @staticmethod
    def backward(ctx, grad: Tensor):
        if ctx.reduce_grad:
            return reduce_scatter(grad, ctx.group, ctx.dim), None, None, None
        return split(grad, ctx.group, ctx.dim), None, None, None


class _ReduceScatter(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, group: ProcessGroup, dim: int) -> Tensor:
        ctx.group, ctx.dim = group, dim
        return reduce_scatter(x, group, dim)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return all_gather(grad, ctx.group, ctx.dim), None, None


# ---------------------------------------------------------------- public primitives

def copy_to_tp_region(x: Tensor, group: ProcessGroup | None) -> Tensor:
    """Identity forward; all-reduce of the gradient (x feeds n ranks' partial computations)."""
    return x if group_size(group) == 1 else _CopyToTP.apply(x, group)


def reduce_from_tp_region(x: Tensor, group: ProcessGroup | None) -> Tensor:
    """All-reduce forward (partial sums → full); identity backward."""
    return x if group_size(group) == 1 else _ReduceFromTP.apply(x, group)


def scatter_to_tp_region(x: Tensor, group: ProcessGroup | None) -> Tensor:
    """Keep this rank's slice of the last dim; backward all-gathers the gradient."""
    return x if group_size(group) == 1 else _Scatter.apply(x, group, -1)


def gather_from_tp_region(x: Tensor, group: ProcessGroup | None) -> Tensor:
    """All-gather along the last dim; backward keeps this rank's slice of the gradient."""
    return x if group_size(group) == 1 else _Gather.apply(x, group, -1, False)


def scatter_to_sequence_region(x: Tensor, group: ProcessGroup | None,
                               dim: int = SEQUENCE_DIM) -> Tensor:
    """Keep this rank's slice of the sequence; backward all-gathers the gradient."""
    return x if group_size(group) == 1 else _Scatter.apply(x, group, dim)


def gather_from_sequence_region(x: Tensor, group: ProcessGroup | None, dim: int = SEQUENCE_DIM,
                                reduce_grad: bool = True) -> Tensor:
    """All-gather along the sequence.

    ``reduce_grad=True`` (the default: the gathered tensor feeds a column-parallel layer,
    whose ranks each produce a partial gradient of the full sequence) makes the backward a
    reduce-scatter; ``False`` (the gradient is already replicated) a plain slice.
    """
    return x if group_size(group) == 1 else _Gather.apply(x, group, dim, reduce_grad)


def reduce_scatter_to_sequence_region(x: Tensor, group: ProcessGroup | None,
                                      dim: int = SEQUENCE_DIM) -> Tensor:
    """Reduce-scatter along the sequence (partial sums → this rank's slice of the full sum);
    backward all-gathers the gradient."""
    return x if group_size(group) == 1 else _ReduceScatter.apply(x, group, dim)


# ---------------------------------------------------------------- sequence-parallel parameters

def mark_sequence_parallel(param: Tensor) -> Tensor:
    """Flag a TP-replicated parameter whose gradient is partial under sequence parallelism.

    Such a parameter acts on this rank's slice of the sequence only (norm weights and
    biases, the row-parallel bias), so each TP rank's gradient is a partial sum over
    tokens. The flag documents it (and lets tools find it); the reduction itself is
    :func:`allreduce_sequence_parallel_grad`.
    """
    param.sequence_parallel = True
    return param


def is_sequence_parallel(param: Tensor) -> bool:
    return bool(getattr(param, "sequence_parallel", False))


def allreduce_sequence_parallel_grad(param: Tensor, group: ProcessGroup | None) -> Tensor:
    """``param`` for use in forward, whose gradient is summed over the TP ``group``.

    Identity forward; backward dW = Σ_r dW_r, the full-sequence gradient, on every TP rank.
    The sum happens inside the autograd graph, before the gradient reaches ``param.grad``:
    ZeRO-2 takes and frees ``.grad`` in its own hooks, so a fix-up after ``backward()``
    would come too late. Pass ``group=None`` when sequence parallelism is off.
    """
    return copy_to_tp_region(param, group)
