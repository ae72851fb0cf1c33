"""Build a run's mixture schedule from its ``mixture.kind`` and the data's manifest.

Kinds (DESIGN.md): natural, uniform, static (file of weights), dirichlet (file of
concentrations), random (Dir((√n/k)·1), DRAW's "Random" baseline), and online (weights set
by DRO or DGA, starting from natural). Dirichlet draws are made on global rank 0 and
broadcast with torch.distributed when it is initialised.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.distributed as dist

from draw_megatron.data.manifest import Manifest
from draw_megatron.mixture.files import load_mixture
from draw_megatron.mixture.schedule import (DirichletSchedule, MixtureSchedule, OnlineSchedule,
                                            StaticSchedule)

MIXTURE_KINDS = ("natural", "uniform", "static", "dirichlet", "random", "online")


def broadcast_from_rank0(alpha: np.ndarray) -> np.ndarray:
    """Global rank 0's ``alpha`` on every rank (float64, over the default group)."""
    tensor = torch.from_numpy(np.ascontiguousarray(alpha, dtype=np.float64))
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    dist.broadcast(tensor, src=0)
    return tensor.cpu().numpy()


def build_schedule(kind: str, manifest: Manifest, *, file: str | None = None,
                   redraw_every: int = 10, seed: int = 0, width: int | None = None,
                   split: str = "train") -> MixtureSchedule:
    """The schedule for ``kind``; ``width`` (d_model) is needed by ``random``."""
    if kind not in MIXTURE_KINDS:
        raise ValueError(f"mixture.kind must be one of {', '.join(MIXTURE_KINDS)}; got {kind!r}")
    names = manifest.domain_names
    k = len(names)
    if kind in ("static", "dirichlet") and not file:
        raise ValueError(f"mixture.kind={kind} needs mixture.file")
    if kind not in ("static", "dirichlet") and file:
        raise ValueError(f"mixture.file is only read for kind static or dirichlet, not {kind}")
    if kind == "natural":
        return StaticSchedule(manifest.natural_weights(split))
    if kind == "uniform":
        return StaticSchedule(np.full(k, 1.0 / k))
    if kind == "online":
        return OnlineSchedule(manifest.natural_weights(split))
    if kind == "random":
        if not width:
            raise ValueError("mixture.kind=random needs the model width (d_model)")
        beta = np.full(k, math.sqrt(width) / k)
        return _dirichlet(beta, redraw_every, seed)
    spec = load_mixture(file, names)
    if spec.kind != ("static" if kind == "static" else "dirichlet"):
        raise ValueError(f"mixture.kind={kind} but {file} holds a {spec.kind!r} mixture")
    if kind == "static":
        return StaticSchedule(spec.values)
    return _dirichlet(spec.values, redraw_every, seed)


def _dirichlet(beta: np.ndarray, redraw_every: int, seed: int) -> DirichletSchedule:
    if dist.is_available() and dist.is_initialized():
        return DirichletSchedule(beta, redraw_every, seed, broadcast=broadcast_from_rank0,
                                 is_source=dist.get_rank() == 0)
    return DirichletSchedule(beta, redraw_every, seed)
