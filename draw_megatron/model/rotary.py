"""Rotary position embedding (RoPE), "rotate-half" layout.

For a head vector x ∈ R^D (D even) at position t, pair dimension i with i + D/2 and rotate
each pair by the angle t·θ_i, θ_i = base^(−2i/D):

    x'_i       = x_i cos(tθ_i) − x_{i+D/2} sin(tθ_i)
    x'_{i+D/2} = x_{i+D/2} cos(tθ_i) + x_i sin(tθ_i)

so ⟨q'_s, k'_t⟩ depends on s − t only. This is the GPT-NeoX / Hugging Face Llama layout
(``rotate_half``), which keeps a later Hugging Face export a plain copy of the weights.
The whole head is rotated. The tables and the rotation are computed in fp32 whatever the
activations' dtype, since bf16 angles lose the position at long context.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class RotaryEmbedding(nn.Module):
    """cos/sin tables [T, D] for positions 0..T−1, or gathered per token; no parameters.

    One table per device, grown to the longest length asked for and sliced (evaluation
    asks for many lengths: one table each would pile up).
    """

    def __init__(self, head_dim: int, base: float) -> None:
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rotary embedding needs an even head_dim, got {head_dim}")
        self.head_dim = head_dim
        self.base = base
        # A plain dict, not buffers: nothing to save, and .to()/to_empty() cannot stale it.
        self._cache: dict[torch.device, tuple[Tensor, Tensor]] = {}

    def forward(self, seq_len: int, device: torch.device) -> tuple[Tensor, Tensor]:
        device = torch.device(device)
        cos, sin = self._cache.get(device, (None, None))
        if cos is None or cos.shape[0] < seq_len:
            cos, sin = self._cache[device] = self._tables(seq_len, device)
        return cos[:seq_len], sin[:seq_len]

    def at(self, positions_BT: Tensor) -> tuple[Tensor, Tensor]:
        """cos/sin [B, T, D] for per-token positions [B, T] (each below T); the rows are the
        table's own, so a position gets the same angles as in :meth:`forward`."""
        cos, sin = self(positions_BT.shape[1], positions_BT.device)
        return cos[positions_BT], sin[positions_BT]

    def _tables(self, seq_len: int, device: torch.device) -> tuple[Tensor, Tensor]:
        half = self.head_dim // 2
        exponents = torch.arange(half, device=device, dtype=torch.float64) * 2 / self.head_dim
        inv_freq = self.base ** -exponents
        angles = torch.outer(torch.arange(seq_len, device=device, dtype=torch.float64), inv_freq)
        angles = torch.cat([angles, angles], dim=-1).float()  # [T, D]
        return angles.cos(), angles.sin()

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, base={self.base}"


def apply_rotary(x_BTHD: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate ``x`` [B, T, H, D] by the position angles (see the module docstring); the
    tables are [T, D] (the same positions in every sequence) or [B, T, D] (per token)."""
    x = x_BTHD.float()
    cos, sin = cos.unsqueeze(-2), sin.unsqueeze(-2)  # broadcast over heads
    first, second = x.chunk(2, dim=-1)
    rotated_half = torch.cat([-second, first], dim=-1)
    return (x * cos + rotated_half * sin).to(x_BTHD.dtype)
