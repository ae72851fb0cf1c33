"""Cross-entropy over vocabulary-parallel logits, per token.

Rank r holds z_r, the logits of vocabulary ids [r·V_r, (r+1)·V_r) (the output of a
column-parallel head that did not gather). For a token with label y:

    m    = max_v z_v                    all-reduce MAX over the group (stability)
    S    = Σ_v exp(z_v − m)             local sums, all-reduce SUM
    z_y  = the one rank holding y contributes z_y − m, the others 0: all-reduce SUM
    loss = log S − (z_y − m)            = −log softmax(z)_y

    ∂loss/∂z_v = softmax(z)_v − [v = y]  each rank on its own shard, no communication.

The two sums travel in one all-reduce. Maths is fp32 (fp64 for fp64 logits) whatever the
logits' dtype. Without TP and without a gradient to compute (a frozen model) it is one
``torch.logsumexp`` instead. Ids at or above ``valid_vocab`` (vocabulary padding for equal shards) are
excluded: they behave as logits of −∞, so they take no probability and get zero gradient.
The full logits are never materialised on one rank.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor
from torch.distributed import ProcessGroup

from draw_megatron.parallel.mappings import group_rank, group_size


class _VocabParallelCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits_local: Tensor, labels: Tensor, group: ProcessGroup | None,
                valid_vocab: int | None) -> Tensor:
        parallel = group_size(group) > 1
        # fp32 at least (fp64 stays fp64, for gradcheck).
        z = logits_local.to(torch.promote_types(logits_local.dtype, torch.float32))
        vocab_local = z.shape[-1]
        vocab_start = group_rank(group) * vocab_local
        # Padding is a suffix of the vocabulary, so this rank's valid ids are a prefix.
        num_valid = vocab_local if valid_vocab is None else max(
            0, min(vocab_local, valid_vocab - vocab_start))

        if num_valid > 0:
            z_max = z[..., :num_valid].amax(dim=-1)
        else:
            z_max = z.new_full(z.shape[:-1], float("-inf"))
        if parallel:
            dist.all_reduce(z_max, op=dist.ReduceOp.MAX, group=group)

        exp_z = torch.exp(z - z_max.unsqueeze(-1))  # fresh buffer: later in-place ops are safe
        if num_valid < vocab_local:
            exp_z[..., num_valid:] = 0.0

        local_label = labels - vocab_start
        in_shard = (local_label >= 0) & (local_label < num_valid)
        local_label = local_label.masked_fill(~in_shard, 0)
        z_label = z.gather(-1, local_label.unsqueeze(-1)).squeeze(-1) - z_max
        sums = torch.stack([exp_z.sum(dim=-1), z_label.masked_fill(~in_shard, 0.0)])
        if parallel:
            dist.all_reduce(sums, group=group)
        sum_exp, z_label = sums[0], sums[1]

        if ctx.needs_input_grad[0]:  # a frozen model (DRO reference, evaluation) skips this pass
            softmax = exp_z.div_(sum_exp.unsqueeze(-1))
            ctx.save_for_backward(softmax, local_label, in_shard)
            ctx.logits_dtype = logits_local.dtype
        return torch.log(sum_exp) - z_label

    @staticmethod
    def backward(ctx, grad_loss: Tensor):
        softmax, local_label, in_shard = ctx.saved_tensors
        grad_loss = grad_loss.to(softmax.dtype)
        grad = softmax * grad_loss.unsqueeze(-1)
        # −1 at the label, on the rank that holds it.
        grad.scatter_add_(-1, local_label.unsqueeze(-1),
                          (-grad_loss).masked_fill(~in_shard, 0.0).unsqueeze(-1))
        return grad.to(ctx.logits_dtype), None, None, None


def vocab_parallel_cross_entropy(logits_local: Tensor, labels: Tensor,
                                 tp_group: ProcessGroup | None,
                                 valid_vocab: int | None = None) -> Tensor:
    """Per-token loss −log softmax(z)_label, shape of ``labels``, fp32 (fp64 for fp64 logits).

    ``logits_local`` [..., V/n] is this rank's vocabulary shard (rank order = id order);
    ``labels`` [...] are global ids < ``valid_vocab`` (default: the whole padded V).
    ``tp_group=None`` (or size 1) is the unsharded case. The model returns these per-token
    losses; reducing them (per domain, docs/architecture.md, Contract 4) is the caller's.
    """
    if logits_local.shape[:-1] != labels.shape:
        raise ValueError(f"logits {tuple(logits_local.shape)} and labels {tuple(labels.shape)} "
                         "disagree outside the vocabulary dim")
    if valid_vocab is not None and valid_vocab < 1:
        raise ValueError(f"valid_vocab must be positive, got {valid_vocab}")
    if group_size(tp_group) == 1 and not (torch.is_grad_enabled() and logits_local.requires_grad):
        # A frozen model (the DRO reference, evaluation), unsharded: one fused log-sum-exp,
        # no softmax buffer kept for a backward that never comes.
        z = logits_local[..., :valid_vocab] if valid_vocab is not None else logits_local
        z = z.to(torch.promote_types(z.dtype, torch.float32))
        return torch.logsumexp(z, dim=-1) - z.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    return _VocabParallelCrossEntropy.apply(logits_local, labels, tp_group, valid_vocab)
