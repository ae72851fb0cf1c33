"""Causal self-attention with heads split over tensor parallelism, and its kernels.

Backends (``model.attention``):

- ``flash``: flash-attn's ``flash_attn_func`` (CUDA, fp16/bf16 only); an error if it cannot
  run, never a silent fallback;
- ``sdpa``: ``torch.nn.functional.scaled_dot_product_attention`` with ``is_causal=True``
  (torch picks its own flash / memory-efficient / math kernel);
- ``auto``: flash-attn when importable and the tensors are CUDA fp16/bf16, else SDPA. It is
  resolved per call from the tensors, so a model built on CPU and moved to GPU does the
  right thing.

Tensor parallelism (n ranks, h heads, h/n per rank): the fused QKV projection is
column-parallel with stride 3, so rank r's output holds [Q_r; K_r; V_r], the q, k, v of
heads [r·h/n, (r+1)·h/n); attention needs no communication; the output projection is
row-parallel and sums the ranks' partial products (or reduce-scatters them along the
sequence under sequence parallelism).
"""

from __future__ import annotations

import functools
from types import ModuleType

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributed import ProcessGroup

from draw_megatron.model.rotary import apply_rotary
from draw_megatron.parallel import ColumnParallelLinear, RowParallelLinear
from draw_megatron.parallel.mappings import group_size

BACKENDS = ("auto", "flash", "sdpa")
_FLASH_DTYPES = (torch.float16, torch.bfloat16)


@functools.cache
def flash_attn_module() -> ModuleType | None:
    """The ``flash_attn`` module, or None when it is not importable (checked once)."""
    try:
        import flash_attn
    except Exception:  # ImportError, or a wheel built against another torch/CUDA
        return None
    return flash_attn


def check_backend_available(name: str) -> None:
    """Raise ValueError/RuntimeError now if backend ``name`` can never run here."""
    if name not in BACKENDS:
        raise ValueError(f"model.attention={name!r} is not one of {', '.join(BACKENDS)}")
    if name == "flash" and flash_attn_module() is None:
        raise RuntimeError(
            "model.attention='flash' but flash-attn is not importable: install it on a CUDA "
            "machine (pip install 'draw_megatron[gpu]', i.e. flash-attn>=2.6), or set "
            "model.attention=sdpa (or auto, which falls back to SDPA)")


def select_backend(name: str, device: torch.device, dtype: torch.dtype) -> str:
    """The kernel that runs for tensors on ``device`` of ``dtype``: "flash" or "sdpa"."""
    check_backend_available(name)
    flash_ok = (flash_attn_module() is not None and torch.device(device).type == "cuda"
                and dtype in _FLASH_DTYPES)
    if name == "flash" and not flash_ok:
        raise RuntimeError(
            f"model.attention='flash' needs CUDA fp16/bf16 tensors, got {dtype} on "
            f"{torch.device(device)}; use model.attention=sdpa or auto")
    if name == "auto":
        return "flash" if flash_ok else "sdpa"
    return name


def causal_attention(q_BTHD: Tensor, k_BTHD: Tensor, v_BTHD: Tensor, *, backend: str,
                     dropout_p: float) -> Tensor:
    """softmax(q kᵀ / √D + causal mask) v, per head; inputs and output [B, T, H, D]."""
    if select_backend(backend, q_BTHD.device, q_BTHD.dtype) == "flash":
        return flash_attn_module().flash_attn_func(q_BTHD, k_BTHD, v_BTHD, dropout_p=dropout_p,
                                                   causal=True)
    q, k, v = (t.transpose(1, 2) for t in (q_BTHD, k_BTHD, v_BTHD))  # SDPA wants [B, H, T, D]
    out_BHTD = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
    return out_BHTD.transpose(1, 2)


class ParallelSelfAttention(nn.Module):
    """Fused QKV (column-parallel) → rotary → causal attention → output (row-parallel).

    Input and output are [B, T, d_model], or [B, T/n, d_model] under sequence parallelism.
    """

    def __init__(self, d_model: int, n_heads: int, head_dim: int, tp_group: ProcessGroup | None,
                 *, backend: str = "auto", dropout: float = 0.0, sequence_parallel: bool = False,
                 device=None) -> None:
        super().__init__()
        check_backend_available(backend)
        tp_size = group_size(tp_group)
        if n_heads % tp_size:
            raise ValueError(f"model.n_heads={n_heads} must be divisible by the "
                             f"tensor-parallel size {tp_size}")
        inner = n_heads * head_dim
        self.qkv = ColumnParallelLinear(d_model, 3 * inner, tp_group, bias=False, stride=3,
                                        sequence_parallel=sequence_parallel, device=device)
        self.proj = RowParallelLinear(inner, d_model, tp_group, bias=False,
                                      input_is_parallel=True,
                                      sequence_parallel=sequence_parallel, device=device)
        self.local_heads = n_heads // tp_size
        self.head_dim = head_dim
        self.backend = backend
        self.dropout = dropout

    def forward(self, x_BTD: Tensor, cos_TD: Tensor, sin_TD: Tensor) -> Tensor:
        qkv = self.qkv(x_BTD)  # [B, T, 3 · local_heads · head_dim], full T
        batch, seq = qkv.shape[:2]
        q, k, v = qkv.view(batch, seq, 3, self.local_heads, self.head_dim).unbind(dim=2)
        q, k = apply_rotary(q, cos_TD, sin_TD), apply_rotary(k, cos_TD, sin_TD)
        out = causal_attention(q, k, v, backend=self.backend,
                               dropout_p=self.dropout if self.training else 0.0)
        return self.proj(out.reshape(batch, seq, self.local_heads * self.head_dim))

    def extra_repr(self) -> str:
        return (f"local_heads={self.local_heads}, head_dim={self.head_dim}, "
                f"backend={self.backend!r}, dropout={self.dropout}")
