"""Attention backends (selection, errors), the SDPA path against a naive reference, rotary."""

from __future__ import annotations

import math
import types

import pytest
import torch

from draw_megatron.model import GPT, attention
from draw_megatron.model.attention import causal_attention, select_backend
from draw_megatron.model.rotary import RotaryEmbedding, apply_rotary
from draw_megatron.parallel import ParallelTopology
from tests.unit.model.tiny import one_thread, tiny_config  # noqa: F401

CPU = torch.device("cpu")
CUDA = torch.device("cuda")
needs_no_flash = pytest.mark.skipif(attention.flash_attn_module() is not None,
                                    reason="flash-attn is installed here")


def test_auto_and_sdpa_pick_sdpa_on_cpu():
    assert select_backend("auto", CPU, torch.float32) == "sdpa"
    assert select_backend("auto", CPU, torch.bfloat16) == "sdpa"
    assert select_backend("sdpa", CUDA, torch.bfloat16) == "sdpa"


@needs_no_flash
def test_flash_without_flash_attn_is_a_clear_error():
    with pytest.raises(RuntimeError, match=r"model.attention='flash' but flash-attn is not "
                                           r"importable.*model.attention=sdpa"):
        select_backend("flash", CUDA, torch.bfloat16)
    with pytest.raises(RuntimeError, match="flash-attn is not importable"):
        GPT(tiny_config(attention="flash"), ParallelTopology.single())  # fails at build
    assert select_backend("auto", CUDA, torch.bfloat16) == "sdpa"


def test_auto_prefers_flash_only_for_cuda_half_precision(monkeypatch):
    fake = types.SimpleNamespace(flash_attn_func=None)
    monkeypatch.setattr(attention, "flash_attn_module", lambda: fake)
    assert select_backend("auto", CUDA, torch.bfloat16) == "flash"
    assert select_backend("auto", CUDA, torch.float32) == "sdpa"
    assert select_backend("auto", CPU, torch.bfloat16) == "sdpa"
    with pytest.raises(RuntimeError, match="needs CUDA fp16/bf16 tensors, got torch.float32"):
        select_backend("flash", CPU, torch.float32)


def test_sdpa_is_causal_softmax_attention():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 7, 3, 8, generator=g) for _ in range(3))  # [B, T, H, D]
    out = causal_attention(q, k, v, backend="sdpa", dropout_p=0.0)
    scores = torch.einsum("bshd,bthd->bhst", q, k) / math.sqrt(8)
    scores = scores.masked_fill(~torch.ones(7, 7, dtype=torch.bool).tril(), float("-inf"))
    want = torch.einsum("bhst,bthd->bshd", scores.softmax(-1), v)
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-6)


def test_rotary_scores_depend_on_relative_position_only():
    rope = RotaryEmbedding(head_dim=16, base=10000.0)
    cos, sin = rope(32, CPU)
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(16, generator=g), torch.randn(16, generator=g)

    def score(s: int, t: int) -> float:
        qs = apply_rotary(q.expand(1, 32, 1, 16), cos, sin)[0, s, 0]
        kt = apply_rotary(k.expand(1, 32, 1, 16), cos, sin)[0, t, 0]
        return float(qs @ kt)
    assert score(9, 4) == pytest.approx(score(25, 20), rel=1e-5)
    assert score(9, 4) != pytest.approx(score(9, 5), rel=1e-3)
    rotated = apply_rotary(q.expand(1, 32, 1, 16), cos, sin)
    torch.testing.assert_close(rotated.norm(dim=-1), q.norm().expand(1, 32, 1))
    torch.testing.assert_close(rotated[0, 0, 0], q)  # position 0: no rotation
    # One table per device, sliced: shorter lengths are views of it.
    assert rope(8, CPU)[0].data_ptr() == cos.data_ptr()
    torch.testing.assert_close(rope(64, CPU)[1][:32], sin)
