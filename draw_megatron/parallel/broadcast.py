"""Global rank 0's value on every rank: the mixture draws (Dirichlet α_t, DRO's α_0)."""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def broadcast_from_rank0(values: np.ndarray) -> np.ndarray:
    """Global rank 0's ``values`` on every rank (float64, over the default group)."""
    tensor = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float64))
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    dist.broadcast(tensor, src=0)
    return tensor.cpu().numpy()


def rank0_broadcaster() -> tuple[object, bool]:
    """(broadcast callable or None, whether this rank is the source) for a schedule."""
    if is_distributed():
        return broadcast_from_rank0, dist.get_rank() == 0
    return None, True
