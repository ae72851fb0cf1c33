"""Gradient inner products for DGA under TP × DP (docs/algorithms.md §3), on the live module.

Gradients come from ``torch.autograd.grad`` on the module's trainable parameters: no
``.backward()``, so DeepSpeed's gradient buffers and its ZeRO-2 hooks (on the
AccumulateGrad nodes, which ``autograd.grad`` does not run) are untouched, and no optimizer
step happens.

Global gradients are means over DP ranks (each rank holds the same number of probe
sequences). The product is linear in each argument, so only the target's gradient needs an
all-reduce: ⟨mean_r g_i^r, ḡ_y⟩ = mean_r ⟨g_i^r, ḡ_y⟩, with ḡ_y all-reduced over DP once per
update (one flat fp32 buffer). Under TP a sharded parameter (Megatron's
``tensor_model_parallel``) contributes its shard's partial sum, summed over the TP group;
a replicated one (norms, row-parallel biases) is identical on every TP rank and counted
once. The k partial sums of an update travel together: one TP all-reduce, one DP all-reduce.

``cosine`` needs ‖mean_r g_i^r‖ too, which is not linear: under DP each g_i is all-reduced
(k more gradient all-reduces per update; the raw products need none).

Memory: ḡ_y (fp32, flat) is the one extra gradient copy; each g_i lives only while its
products are taken.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.distributed as dist

from draw_megatron.parallel.layers import is_tensor_parallel
from draw_megatron.parallel.topology import ParallelTopology


def _group_size(group) -> int:
    if group is None or not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size(group)


class GradientAlignment:
    """Inner products of probe gradients with one target gradient, per DGA update."""

    def __init__(self, module: torch.nn.Module, topology: ParallelTopology,
                 alignment: str = "raw"):
        if alignment not in ("raw", "cosine"):
            raise ValueError(f"alignment must be 'raw' or 'cosine', got {alignment!r}")
        self.alignment = alignment
        params = [p for p in module.parameters() if p.requires_grad]
        # Sharded parameters first, then replicated: one split point in the flat buffers.
        self.params = ([p for p in params if is_tensor_parallel(p)]
                       + [p for p in params if not is_tensor_parallel(p)])
        self.num_sharded = sum(p.numel() for p in self.params if is_tensor_parallel(p))
        self.numel = sum(p.numel() for p in self.params)
        self.tp_group, self.dp_group = topology.tp_group, topology.dp_group
        self.tp_size, self.dp_size = _group_size(topology.tp_group), _group_size(topology.dp_group)
        self.target: torch.Tensor | None = None  # flat fp32 ḡ_y

    def gradients(self, loss: torch.Tensor) -> list[torch.Tensor]:
        """∇ loss for every trainable parameter (zeros where unused), by autograd.grad."""
        grads = torch.autograd.grad(loss, self.params, allow_unused=True)
        return [torch.zeros_like(p) if g is None else g for p, g in zip(self.params, grads)]

    def _flat(self, grads: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.cat([g.reshape(-1).to(torch.float32) for g in grads])

    def _dp_mean(self, flat: torch.Tensor) -> torch.Tensor:
        if self.dp_size > 1:
            dist.all_reduce(flat, group=self.dp_group)
            flat.div_(self.dp_size)
        return flat

    def partial_products(self, grads: Sequence[torch.Tensor],
                         flat: torch.Tensor | None) -> torch.Tensor:
        """[2]: (sharded partial sum, replicated sum) of ⟨grads, flat⟩ in fp32; ``flat=None``:
        of ⟨grads, grads⟩ (squared norms)."""
        out = torch.zeros(2, dtype=torch.float32, device=grads[0].device)
        offset = 0
        for g in grads:
            n = g.numel()
            g32 = g.reshape(-1).to(torch.float32)
            other = g32 if flat is None else flat[offset:offset + n]
            out[0 if offset < self.num_sharded else 1] += torch.dot(g32, other)
            offset += n
        return out

    def _flat_split_dot(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """[2]: the same for two flat buffers."""
        ns = self.num_sharded
        return torch.stack([torch.dot(a[:ns], b[:ns]), torch.dot(a[ns:], b[ns:])])

    def _tp_total(self, split: torch.Tensor) -> torch.Tensor:
        """[..., 2] (sharded, replicated) partial sums → [...] totals over the TP group."""
        sharded = split[..., 0].contiguous()
        if self.tp_size > 1:
            dist.all_reduce(sharded, group=self.tp_group)
        return sharded + split[..., 1]

    def set_target(self, loss: torch.Tensor) -> None:
        """ḡ_y: the gradient of this rank's target loss, averaged over DP."""
        self.target = self._dp_mean(self._flat(self.gradients(loss)))

    def scores(self, losses: Callable[[int], torch.Tensor], count: int) -> torch.Tensor:
        """a_i for i < ``count``; ``losses(i)`` builds unit i's probe loss on this rank (its
        graph is built and freed one unit at a time). Returns [count] fp32 on every rank."""
        if self.target is None:
            raise RuntimeError("set_target() first: the alignment needs the target gradient")
        dots = torch.zeros(count, 2, dtype=torch.float32, device=self.target.device)
        sq_norms = torch.zeros(count, 2, dtype=torch.float32, device=self.target.device)
        for i in range(count):
            grads = self.gradients(losses(i))
            if self.alignment == "cosine" and self.dp_size > 1:
                flat = self._dp_mean(self._flat(grads))  # ‖mean_r g_i^r‖ needs the mean
                del grads
                dots[i] = self._flat_split_dot(flat, self.target)
                sq_norms[i] = self._flat_split_dot(flat, flat)
                del flat
            else:
                dots[i] = self.partial_products(grads, self.target)
                if self.alignment == "cosine":
                    sq_norms[i] = self.partial_products(grads, None)
                del grads
        if self.alignment == "raw":
            totals = self._tp_total(dots)
            if self.dp_size > 1:
                dist.all_reduce(totals, group=self.dp_group)
                totals.div_(self.dp_size)
            return totals
        # cosine: dots and norms are of DP means already (or DP = 1); one TP reduction.
        target_sq = self._flat_split_dot(self.target, self.target).unsqueeze(0)
        totals = self._tp_total(torch.cat([dots, sq_norms, target_sq]))
        dots_t, sq_t, target_t = totals[:count], totals[count:2 * count], totals[-1]
        return dots_t / (sq_t * target_t).sqrt().clamp_min(1e-30)

    def release(self) -> None:
        """Free ḡ_y between updates."""
        self.target = None
