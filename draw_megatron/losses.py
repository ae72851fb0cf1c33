"""Per-domain loss reduction (docs/architecture.md, Contract 4), shared by logging, DRO and evaluation.

The model returns per-token losses; this reduces them to per-domain (sum, count) and
all-reduces those over data-parallel ranks. It lives below train/, passes/ and eval/ so
that none of them imports upward.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist


class DomainLoss:
    """Running per-domain sums of token losses and token counts (float64)."""

    def __init__(self, num_domains: int, device: torch.device | str = "cpu"):
        self.num_domains = num_domains
        self.sums = torch.zeros(num_domains, dtype=torch.float64, device=device)
        self.counts = torch.zeros(num_domains, dtype=torch.float64, device=device)

    def add(self, loss_BT: torch.Tensor, domain_ids_B: torch.Tensor) -> None:
        """Add a micro-batch's per-token losses [B, T] of sequences from ``domain_ids_B``."""
        loss = loss_BT.detach().to(torch.float64)
        ids = domain_ids_B.to(self.sums.device)
        self.sums.index_add_(0, ids, loss.sum(dim=1))
        self.counts.index_add_(0, ids, torch.full_like(loss[:, 0], loss.shape[1]))

    def reduced(self, group=None) -> torch.Tensor:
        """[2, k] (sums; counts) summed over ``group`` (the DP group), left on the device:
        no host synchronisation (the training step reads it only when a record is due)."""
        both = torch.stack([self.sums, self.counts])
        if group is not None and dist.is_initialized() and dist.get_world_size(group) > 1:
            dist.all_reduce(both, group=group)
        return both

    def all_reduce(self, group=None) -> tuple[np.ndarray, np.ndarray]:
        """(sums, counts) summed over ``group`` (the DP group), as numpy arrays."""
        both = self.reduced(group).cpu().numpy()
        return both[0], both[1]

    def reset(self) -> None:
        self.sums.zero_()
        self.counts.zero_()


def domain_means(sums: np.ndarray, counts: np.ndarray) -> list[float | None]:
    """Token-mean loss per domain; None where a domain had no token."""
    return [float(s / c) if c > 0 else None for s, c in zip(sums, counts)]
