"""Initialisation of the GPT's parameters, independent of the tensor-parallel size.

Every parameter is drawn as its FULL (unsharded) tensor from its own generator, seeded by
(seed, parameter name), and each rank keeps its shard. The weights are therefore a
function of (seed, name, shape, device type) only: the same at any TP size, in any order
of construction, and adding a parameter never shifts the others' draws. The price is one
full-tensor draw per parameter on every rank.

    parameter (name pattern)                          full tensor
    embedding.weight, head.weight                     N(0, σ²); padding rows ≥ vocab_size zero
    blocks.*.attention.qkv.weight                     N(0, σ²)
    blocks.*.mlp.up.weight | gate_up.weight           N(0, σ²)
    blocks.*.attention.proj.weight, mlp.down.weight   N(0, (σ / √(2L))²)
    *norm.weight                                      1
    *norm.bias                                        0

σ = ``init_std``, L = ``n_layers``. The two projections that write into the residual
stream are scaled by 1/√(2L) as in GPT-2 (two residual additions per block), so the
stream's variance at the output does not grow with depth. Padding rows of the vocabulary
are zero so that they are inert and every export holds the same padding.

A generator on the parameter's device draws it: CPU and CUDA builds from one seed differ
(different generators), TP sizes do not. A parameter no rule names is an error, so a new
parameter cannot be silently left uninitialised.
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from draw_megatron.parallel import is_tensor_parallel, load_full_

if TYPE_CHECKING:
    from draw_megatron.model.gpt import GPT

# (full-match pattern, kind): the first match wins.
_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple((re.compile(p), kind) for p, kind in [
    (r"(embedding|head)\.weight", "vocab"),
    (r"blocks\.\d+\.(attention\.proj|mlp\.down)\.weight", "residual_out"),
    (r"blocks\.\d+\.(attention\.qkv|mlp\.up|mlp\.gate_up)\.weight", "normal"),
    (r"(blocks\.\d+\.(attn_norm|mlp_norm)|final_norm)\.weight", "ones"),
    (r"(blocks\.\d+\.(attn_norm|mlp_norm)|final_norm)\.bias", "zeros"),
])


def init_kind(name: str) -> str:
    """The initialisation rule of parameter ``name``: vocab, residual_out, normal, ones, zeros."""
    for pattern, kind in _RULES:
        if pattern.fullmatch(name):
            return kind
    raise ValueError(f"no initialisation rule for parameter {name!r}: add one to "
                     f"draw_megatron/model/init.py")


def parameter_seed(seed: int, name: str) -> int:
    """A 63-bit generator seed from (seed, name), stable across processes and Python runs."""
    digest = hashlib.sha256(f"{seed}/{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def full_shape(param: Tensor, tp_size: int) -> tuple[int, ...]:
    """The unsharded shape of ``param`` (its partition dim × ``tp_size`` if tensor-parallel)."""
    shape = list(param.shape)
    if is_tensor_parallel(param):
        shape[param.partition_dim] *= tp_size
    return tuple(shape)


@torch.no_grad()
def init_parameters_(model: GPT, seed: int) -> None:
    """Initialise every parameter of ``model`` in place by the scheme of the module docstring."""
    cfg = model.cfg
    residual_std = cfg.init_std / math.sqrt(2 * cfg.n_layers)
    for name, param in model.named_parameters():
        kind = init_kind(name)
        shape = full_shape(param, model.tp_size)
        if kind in ("ones", "zeros"):
            param.fill_(1.0 if kind == "ones" else 0.0)
            continue
        generator = torch.Generator(device=param.device).manual_seed(parameter_seed(seed, name))
        std = residual_std if kind == "residual_out" else cfg.init_std
        full = torch.empty(shape, device=param.device, dtype=torch.float32)
        full.normal_(0.0, std, generator=generator)
        if kind == "vocab":
            full[cfg.vocab_size:] = 0.0
        load_full_(param, full.to(param.dtype), model.tp_group)


def materialize_(module: nn.Module, device: torch.device | str) -> None:
    """Give every (meta) parameter uninitialised storage on ``device``, keeping its attributes.

    ``nn.Module.to_empty`` would drop the Python attributes the TP code relies on
    (``tensor_model_parallel``, ``partition_dim``, ``sequence_parallel``...).
    """
    for sub in module.modules():
        for key, param in list(sub.named_parameters(recurse=False)):
            fresh = nn.Parameter(torch.empty_like(param, device=device),
                                 requires_grad=param.requires_grad)
            fresh.__dict__.update(param.__dict__)
            setattr(sub, key, fresh)
