"""Global rank 0's value on every rank: the mixture draws (Dirichlet α_t, DRO's α_0).

The values live on the host (the loader draws domains there), so they travel over a gloo
group: a broadcast over NCCL would copy them to the device and back, and the copy back waits
for every kernel queued before it (a host synchronisation in the middle of training).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def host_group():
    """A gloo group over all ranks for host-side values and agreement (None: the default
    group, when it is gloo already, or when not distributed). Collective: every rank calls
    it at the same point."""
    if not is_distributed() or dist.get_world_size() == 1 or dist.get_backend() == "gloo":
        return None
    return dist.new_group(backend="gloo")


def broadcast_from_rank0(values: np.ndarray, group=None) -> np.ndarray:
    """Global rank 0's ``values`` on every rank (float64, over ``group``, a gloo group from
    :func:`host_group`; None: the default group)."""
    host = np.array(values, dtype=np.float64)  # a copy the broadcast may overwrite
    if group is None and dist.get_backend() == "nccl":
        tensor = torch.from_numpy(host).cuda()
        dist.broadcast(tensor, src=0)
        return tensor.cpu().numpy()
    dist.broadcast(torch.from_numpy(host), src=0, group=group)
    return host


def rank0_broadcaster() -> tuple[Callable[[np.ndarray], np.ndarray] | None, bool]:
    """(broadcast callable or None, whether this rank is the source) for a schedule; the
    callable broadcasts over a gloo group made here (so every rank must call this)."""
    if is_distributed():
        group = host_group()
        return (lambda values: broadcast_from_rank0(values, group)), dist.get_rank() == 0
    return None, True
