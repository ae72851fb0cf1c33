"""Output layer and cross-entropy fused, per token, over a vocabulary-parallel head.

Rank r holds W_r [V_r, d], the rows of the (padded) vocabulary ids [r·V_r, (r+1)·V_r) of
the output head (a column-parallel head that does not gather). For hidden states h [N, d]
and labels y [N] the logits z = h W_rᵀ are computed tile by tile and never stored whole:

    forward, per vocabulary tile (online softmax):   m_r = max z,  s_r = Σ exp(z − m_r),
                                                     z_y if the label is in this shard
    TP group (PyTorch, between kernel calls):        M = all-reduce MAX of m_r
                                                     [S, z_y − M] = all-reduce SUM of
                                                     [s_r · exp(m_r − M), z_y − M or 0]
    loss = log S − (z_y − M),  lse = M + log S       (kept for the backward)

    backward, given g = ∂L/∂loss per token (any weighting: DRO, mixture α, DGA probes):
        G = g · (exp(z − lse) − [v = y])   recomputed per tile
        ∂L/∂h = G W_r,   ∂L/∂W_r = Gᵀ h    per vocabulary chunk of G (BLAS), or per tile
                                          on chip with atomic adds

∂L/∂h is this shard's part only, as for ``F.linear`` in a column-parallel layer: the caller
feeds ``hidden`` through ``copy_to_tp_region`` (or the sequence-parallel gather), whose
backward sums the parts over the TP group. Ids at or above ``valid_vocab`` (vocabulary
padding) are excluded as in ``draw_megatron/parallel/cross_entropy.py``: they take no
probability and get zero gradient. Maths is fp32 (accumulation of every dot product too).

Two implementations of the same maths: Triton kernels (CUDA tensors, or fp32/fp16 CPU
tensors when ``TRITON_INTERPRET=1`` was set before this module was imported: Triton reads it
when the kernels are decorated) and a PyTorch reference that materialises one vocabulary
chunk of logits [N, chunk] at a time (elsewhere, and for fp64 inputs).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Literal

import torch
import torch.distributed as dist
from torch import Tensor
from torch.distributed import ProcessGroup

from draw_megatron.parallel.mappings import group_rank, group_size

try:
    import triton
    import triton.language as tl
except ImportError:  # the PyTorch reference serves everywhere
    triton = None

Backend = Literal["auto", "triton", "torch"]
FusedBackward = Literal["chunked", "atomic"]
GRAD_CHUNK_ELEMENTS = 2**25
"""Triton ``chunked`` backward: the logits' gradient is formed for N × chunk ids at a time,
about this many elements (64 MiB in bf16; 4096 ids at N = 8192)."""
REFERENCE_CHUNK = 4096
"""Vocabulary ids per chunk of the PyTorch reference ([N, chunk] fp32 logits at a time)."""


if triton is not None:

    @triton.jit
    def _logits_tile(h_ptr, w_ptr, offs_n, offs_v, n_rows, v_end, d,
                     BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_D: tl.constexpr,
                     PRECISION: tl.constexpr):
        """z[offs_n, offs_v] = h W_rᵀ in fp32, looping over d; rows/columns out of range: 0."""
        acc = tl.zeros((BLOCK_N, BLOCK_V), dtype=tl.float32)
        for d0 in range(0, d, BLOCK_D):
            offs_d = d0 + tl.arange(0, BLOCK_D)
            d_ok = offs_d[None, :] < d
            h = tl.load(h_ptr + offs_n[:, None] * d + offs_d[None, :],
                        mask=(offs_n[:, None] < n_rows) & d_ok, other=0.0)
            w = tl.load(w_ptr + offs_v[:, None] * d + offs_d[None, :],
                        mask=(offs_v[:, None] < v_end) & d_ok, other=0.0)
            acc = tl.dot(h, tl.trans(w), acc, input_precision=PRECISION)
        return acc

    @triton.jit
    def _forward_kernel(h_ptr, w_ptr, label_ptr, max_ptr, sum_ptr, label_logit_ptr,
                        n_rows, num_valid, d, vocab_per_split,
                        BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_D: tl.constexpr,
                        PRECISION: tl.constexpr):
        """Program (token block, vocabulary split): running max, sum-exp and label logit."""
        pid_n = tl.program_id(0)
        split = tl.program_id(1)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        row_ok = offs_n < n_rows
        labels = tl.load(label_ptr + offs_n, mask=row_ok, other=-1)  # -1: not in this shard
        run_max = tl.full((BLOCK_N,), float("-inf"), tl.float32)
        run_sum = tl.zeros((BLOCK_N,), tl.float32)
        label_logit = tl.zeros((BLOCK_N,), tl.float32)
        v_begin = split * vocab_per_split
        v_end = tl.minimum(v_begin + vocab_per_split, num_valid)
        for v0 in range(v_begin, v_end, BLOCK_V):
            offs_v = v0 + tl.arange(0, BLOCK_V)
            z = _logits_tile(h_ptr, w_ptr, offs_n, offs_v, n_rows, v_end, d,
                             BLOCK_N, BLOCK_V, BLOCK_D, PRECISION)
            z = tl.where(offs_v[None, :] < v_end, z, float("-inf"))
            # Each tile holds a valid column, so the new max is finite and exp(−inf) = 0
            # rescales the empty start.
            new_max = tl.maximum(run_max, tl.max(z, axis=1))
            run_sum = run_sum * tl.exp(run_max - new_max) + tl.sum(
                tl.exp(z - new_max[:, None]), axis=1)
            run_max = new_max
            label_logit += tl.sum(tl.where(offs_v[None, :] == labels[:, None], z, 0.0), axis=1)
        out = split * n_rows + offs_n
        tl.store(max_ptr + out, run_max, mask=row_ok)
        tl.store(sum_ptr + out, run_sum, mask=row_ok)
        tl.store(label_logit_ptr + out, label_logit, mask=row_ok)

    @triton.jit
    def _grad_logits_tile(h_ptr, w_ptr, label_ptr, lse_ptr, grad_ptr, offs_n, offs_v,
                          n_rows, num_valid, d,
                          BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_D: tl.constexpr,
                          PRECISION: tl.constexpr):
        """G = g · (softmax − one-hot) on a tile, in the inputs' dtype; 0 out of range."""
        row_ok = offs_n < n_rows
        z = _logits_tile(h_ptr, w_ptr, offs_n, offs_v, n_rows, num_valid, d,
                         BLOCK_N, BLOCK_V, BLOCK_D, PRECISION)
        lse = tl.load(lse_ptr + offs_n, mask=row_ok, other=0.0)
        upstream = tl.load(grad_ptr + offs_n, mask=row_ok, other=0.0)
        labels = tl.load(label_ptr + offs_n, mask=row_ok, other=-1)
        inside = row_ok[:, None] & (offs_v[None, :] < num_valid)
        prob = tl.where(inside, tl.exp(z - lse[:, None]), 0.0)
        one_hot = tl.where(offs_v[None, :] == labels[:, None], 1.0, 0.0)
        return ((prob - one_hot) * upstream[:, None]).to(h_ptr.dtype.element_ty)

    @triton.jit
    def _grad_logits_kernel(h_ptr, w_ptr, label_ptr, lse_ptr, grad_ptr, out_ptr,
                            n_rows, num_valid, d, v_start, width, out_stride,
                            BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr,
                            BLOCK_D: tl.constexpr, PRECISION: tl.constexpr):
        """G of vocabulary ids [v_start, v_start + width) into out [N, ≥ width] (row stride
        ``out_stride``)."""
        offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        cols = tl.program_id(1) * BLOCK_V + tl.arange(0, BLOCK_V)
        grad_z = _grad_logits_tile(h_ptr, w_ptr, label_ptr, lse_ptr, grad_ptr, offs_n,
                                   v_start + cols, n_rows, num_valid, d,
                                   BLOCK_N, BLOCK_V, BLOCK_D, PRECISION)
        tl.store(out_ptr + offs_n[:, None] * out_stride + cols[None, :], grad_z,
                 mask=(offs_n[:, None] < n_rows) & (cols[None, :] < width))

    @triton.jit
    def _backward_kernel(h_ptr, w_ptr, label_ptr, lse_ptr, grad_ptr, dh_ptr, dw_ptr,
                         n_rows, num_valid, d,
                         BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_D: tl.constexpr,
                         PRECISION: tl.constexpr):
        """Program (token block, vocabulary block): G on chip, then G W and Gᵀ h added.

        Other programs add to the same dh rows and dW rows, hence fp32 atomics."""
        offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        offs_v = tl.program_id(1) * BLOCK_V + tl.arange(0, BLOCK_V)
        row_ok = offs_n < n_rows
        col_ok = offs_v < num_valid
        grad_z = _grad_logits_tile(h_ptr, w_ptr, label_ptr, lse_ptr, grad_ptr, offs_n, offs_v,
                                   n_rows, num_valid, d, BLOCK_N, BLOCK_V, BLOCK_D, PRECISION)
        for d0 in range(0, d, BLOCK_D):
            offs_d = d0 + tl.arange(0, BLOCK_D)
            d_ok = offs_d[None, :] < d
            w = tl.load(w_ptr + offs_v[:, None] * d + offs_d[None, :],
                        mask=col_ok[:, None] & d_ok, other=0.0)
            h = tl.load(h_ptr + offs_n[:, None] * d + offs_d[None, :],
                        mask=row_ok[:, None] & d_ok, other=0.0)
            tl.atomic_add(dh_ptr + offs_n[:, None] * d + offs_d[None, :],
                          tl.dot(grad_z, w, input_precision=PRECISION),
                          mask=row_ok[:, None] & d_ok)
            tl.atomic_add(dw_ptr + offs_v[:, None] * d + offs_d[None, :],
                          tl.dot(tl.trans(grad_z), h, input_precision=PRECISION),
                          mask=col_ok[:, None] & d_ok)


def triton_interpreted() -> bool:
    """Whether the Triton kernels were built for the CPU interpreter (``TRITON_INTERPRET=1``)."""
    if triton is None:
        return False
    from triton.runtime.interpreter import InterpretedFunction
    return isinstance(_forward_kernel, InterpretedFunction)


def triton_runs(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether ``backend="auto"`` takes the Triton kernels for tensors of this device and dtype."""
    if triton is None:
        return False
    if device.type == "cuda":
        return dtype in (torch.float32, torch.float16, torch.bfloat16)
    # The interpreter's tl.dot multiplies bfloat16 bit patterns (triton-lang/triton#11584).
    return device.type == "cpu" and dtype in (torch.float32, torch.float16) and \
        triton_interpreted()


def _blocks(device: torch.device) -> tuple[int, int, int]:
    """(BLOCK_N, BLOCK_V, BLOCK_D): GPU tiles, or the smallest ``tl.dot`` allows (interpreter)."""
    return (64, 128, 64) if device.type == "cuda" else (16, 16, 16)


# --------------------------------------------------------------------------- the two backends


def _stats_triton(hidden: Tensor, weight: Tensor, local_labels: Tensor,
                  num_valid: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per vocabulary split: (max, sum-exp, label logit), each [splits, N] fp32."""
    n_rows, d = hidden.shape
    block_n, block_v, block_d = _blocks(hidden.device)
    # Splits of 16 tiles give a GPU grid of thousands of programs at 1B-like shapes.
    per_split = block_v * 16
    splits = max(1, math.ceil(num_valid / per_split))
    stats = torch.empty(3, splits, n_rows, device=hidden.device, dtype=torch.float32)
    grid = (triton.cdiv(n_rows, block_n), splits)
    _forward_kernel[grid](hidden, weight, local_labels, stats[0], stats[1], stats[2],
                          n_rows, num_valid, d, per_split, BLOCK_N=block_n, BLOCK_V=block_v,
                          BLOCK_D=block_d, PRECISION=_precision(hidden.dtype))
    return stats[0], stats[1], stats[2]


def _grads_triton(hidden: Tensor, weight: Tensor, local_labels: Tensor, lse: Tensor,
                  upstream: Tensor, num_valid: int, backward: FusedBackward,
                  ) -> tuple[Tensor, Tensor]:
    """(∂L/∂hidden, ∂L/∂weight) in fp32 from the per-token lse and upstream gradient."""
    n_rows, d = hidden.shape
    block_n, block_v, block_d = _blocks(hidden.device)
    grad_h = torch.zeros(n_rows, d, device=hidden.device, dtype=torch.float32)
    grad_w = torch.zeros(weight.shape, device=weight.device, dtype=torch.float32)
    blocks = dict(BLOCK_N=block_n, BLOCK_V=block_v, BLOCK_D=block_d,
                  PRECISION=_precision(hidden.dtype))
    if backward == "atomic" and num_valid > 0:
        grid = (triton.cdiv(n_rows, block_n), triton.cdiv(num_valid, block_v))
        _backward_kernel[grid](hidden, weight, local_labels, lse, upstream, grad_h, grad_w,
                               n_rows, num_valid, d, **blocks)
        return grad_h, grad_w
    # chunked: G of one vocabulary chunk at a time in memory, its two products in the BLAS.
    chunk = max(block_v, GRAD_CHUNK_ELEMENTS // max(n_rows, 1) // block_v * block_v)
    grad_z = torch.empty(n_rows, min(chunk, max(num_valid, 1)), device=hidden.device,
                         dtype=hidden.dtype)
    for start in range(0, num_valid, chunk):
        width = min(chunk, num_valid - start)
        out = grad_z[:, :width]
        grid = (triton.cdiv(n_rows, block_n), triton.cdiv(width, block_v))
        _grad_logits_kernel[grid](hidden, weight, local_labels, lse, upstream, out,
                                  n_rows, num_valid, d, start, width, grad_z.shape[1],
                                  **blocks)
        grad_h += out @ weight[start:start + width]
        grad_w[start:start + width] = out.T @ hidden
    return grad_h, grad_w


def _precision(dtype: torch.dtype) -> str:
    # fp32 inputs: full-precision products (TF32 would cost ~3 digits); 16-bit: tensor cores.
    return "ieee" if dtype == torch.float32 else "tf32"


def _chunks(num_valid: int) -> Iterator[tuple[int, int]]:
    """[start, end) of the reference's vocabulary chunks (``REFERENCE_CHUNK`` read per call)."""
    for start in range(0, num_valid, REFERENCE_CHUNK):
        yield start, min(start + REFERENCE_CHUNK, num_valid)


def _stats_torch(hidden: Tensor, weight: Tensor, local_labels: Tensor,
                 num_valid: int) -> tuple[Tensor, Tensor, Tensor]:
    """The reference of :func:`_stats_triton`: one split, online over vocabulary chunks."""
    compute = torch.promote_types(hidden.dtype, torch.float32)
    h = hidden.to(compute)
    run_max = h.new_full((hidden.shape[0],), float("-inf"))
    run_sum = h.new_zeros(hidden.shape[0])
    label_logit = h.new_zeros(hidden.shape[0])
    for start, end in _chunks(num_valid):
        z = h @ weight[start:end].to(compute).T
        new_max = torch.maximum(run_max, z.amax(dim=1))
        run_sum = run_sum * torch.exp(run_max - new_max) + torch.exp(
            z - new_max[:, None]).sum(dim=1)
        run_max = new_max
        hit = (local_labels >= start) & (local_labels < end)
        picked = z.gather(1, (local_labels - start).clamp(0, end - start - 1)[:, None])[:, 0]
        label_logit += torch.where(hit, picked, 0.0)
    return run_max[None], run_sum[None], label_logit[None]


def _grads_torch(hidden: Tensor, weight: Tensor, local_labels: Tensor, lse: Tensor,
                 upstream: Tensor, num_valid: int) -> tuple[Tensor, Tensor]:
    """The reference of :func:`_grads_triton`: G recomputed per vocabulary chunk."""
    compute = torch.promote_types(hidden.dtype, torch.float32)
    h = hidden.to(compute)
    grad_h = torch.zeros_like(h)
    grad_w = torch.zeros(weight.shape, device=weight.device, dtype=compute)
    rows = torch.arange(h.shape[0], device=h.device)
    for start, end in _chunks(num_valid):
        w = weight[start:end].to(compute)
        grad_z = torch.exp(h @ w.T - lse[:, None])
        hit = (local_labels >= start) & (local_labels < end)
        grad_z[rows[hit], local_labels[hit] - start] -= 1.0
        grad_z *= upstream[:, None]
        grad_h += grad_z @ w
        grad_w[start:end] = grad_z.T @ h
    return grad_h, grad_w


# --------------------------------------------------------------------------- autograd


def _combine(stats: tuple[Tensor, Tensor, Tensor], in_shard: Tensor,
             group: ProcessGroup | None) -> tuple[Tensor, Tensor]:
    """Per-token (loss, lse) from per-split statistics, all-reduced over the TP group."""
    split_max, split_sum, split_label = stats
    token_max = split_max.amax(dim=0)
    if group_size(group) > 1:
        dist.all_reduce(token_max, op=dist.ReduceOp.MAX, group=group)
    # A split (or a whole shard) without valid ids has max −inf and sum 0: it adds nothing.
    scale = torch.where(split_max == float("-inf"), 0.0, torch.exp(split_max - token_max))
    label = torch.where(in_shard, split_label.sum(dim=0) - token_max, 0.0)
    sums = torch.stack([(split_sum * scale).sum(dim=0), label])
    if group_size(group) > 1:
        dist.all_reduce(sums, group=group)  # both sums in one collective
    log_sum = torch.log(sums[0])
    return log_sum - sums[1], token_max + log_sum


class _FusedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, labels: Tensor,
                group: ProcessGroup | None, valid_vocab: int | None,
                triton_backward: FusedBackward | None) -> Tensor:
        vocab_local = weight.shape[0]
        vocab_start = group_rank(group) * vocab_local
        # Padding is a suffix of the vocabulary, so this rank's valid ids are a prefix.
        num_valid = vocab_local if valid_vocab is None else max(
            0, min(vocab_local, valid_vocab - vocab_start))
        local_labels = labels - vocab_start
        in_shard = (local_labels >= 0) & (local_labels < num_valid)
        local_labels = local_labels.masked_fill(~in_shard, -1)
        stats_fn = _stats_torch if triton_backward is None else _stats_triton
        loss, lse = _combine(stats_fn(hidden, weight, local_labels, num_valid), in_shard, group)
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            ctx.save_for_backward(hidden, weight, local_labels, lse)
            ctx.num_valid, ctx.triton_backward = num_valid, triton_backward
        return loss

    @staticmethod
    def backward(ctx, grad_loss: Tensor):
        hidden, weight, local_labels, lse = ctx.saved_tensors
        upstream = grad_loss.to(lse.dtype).contiguous()
        if ctx.triton_backward is None:
            grad_h, grad_w = _grads_torch(hidden, weight, local_labels, lse, upstream,
                                          ctx.num_valid)
        else:
            grad_h, grad_w = _grads_triton(hidden, weight, local_labels, lse, upstream,
                                           ctx.num_valid, ctx.triton_backward)
        return (grad_h.to(hidden.dtype) if ctx.needs_input_grad[0] else None,
                grad_w.to(weight.dtype) if ctx.needs_input_grad[1] else None,
                None, None, None, None)


def fused_linear_cross_entropy(hidden: Tensor, weight: Tensor, labels: Tensor,
                               tp_group: ProcessGroup | None = None,
                               valid_vocab: int | None = None,
                               backend: Backend = "auto",
                               backward: FusedBackward = "chunked") -> Tensor:
    """Per-token loss −log softmax(hidden · weightᵀ)_label, shape of ``labels``, fp32
    (fp64 for fp64 inputs), without the logits ever stored whole.

    ``hidden`` [..., d] (identical on every TP rank); ``weight`` [V/n, d] this rank's
    vocabulary shard (rank order = id order); ``labels`` [...] global ids < ``valid_vocab``
    (default: the whole padded V). The gradient of ``hidden`` is this shard's part (see the
    module docstring). ``backend``: ``triton`` (error where it cannot run), ``torch`` (the
    chunked reference) or ``auto`` (Triton where :func:`triton_runs`). The Triton backward:
    ``chunked`` (the logits' gradient for a vocabulary chunk at a time, about
    ``GRAD_CHUNK_ELEMENTS`` elements, its two products by the BLAS) or ``atomic`` (never in
    memory: each tile's products added to fp32 buffers atomically; more atomic traffic).
    """
    _check_inputs(hidden, weight, labels, valid_vocab)
    use_triton = triton_runs(hidden.device, hidden.dtype)
    if backend == "triton" and not use_triton:
        raise RuntimeError("the Triton fused cross-entropy needs triton and CUDA tensors of "
                           "fp32/fp16/bf16 (or fp32/fp16 CPU tensors with TRITON_INTERPRET=1 "
                           f"set before import); got {hidden.device} {hidden.dtype}")
    if backward not in ("chunked", "atomic"):
        raise ValueError(f"backward must be 'chunked' or 'atomic', got {backward!r}")
    triton_backward = backward if use_triton and backend != "torch" else None
    loss = _FusedLinearCrossEntropy.apply(
        hidden.reshape(-1, hidden.shape[-1]).contiguous(), weight.contiguous(),
        labels.reshape(-1), tp_group, valid_vocab, triton_backward)
    return loss.reshape(labels.shape)


def _check_inputs(hidden: Tensor, weight: Tensor, labels: Tensor,
                  valid_vocab: int | None) -> None:
    if hidden.shape[:-1] != labels.shape:
        raise ValueError(f"hidden {tuple(hidden.shape)} and labels {tuple(labels.shape)} "
                         "disagree outside the model dim")
    if weight.dim() != 2 or weight.shape[1] != hidden.shape[-1]:
        raise ValueError(f"weight {tuple(weight.shape)} must be [vocab shard, "
                         f"{hidden.shape[-1]}]")
    if weight.dtype != hidden.dtype:
        raise ValueError(f"weight dtype {weight.dtype} differs from hidden dtype {hidden.dtype}")
    if valid_vocab is not None and valid_vocab < 1:
        raise ValueError(f"valid_vocab must be positive, got {valid_vocab}")
