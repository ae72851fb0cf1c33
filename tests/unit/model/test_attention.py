"""Attention: backend selection and errors, every CPU kernel (SDPA, FlexAttention, the
flash-attn plumbing through a stand-in module) against an explicit softmax under the causal
and the document mask, document ids and positions, rotary tables per token."""

from __future__ import annotations

import math
import types

import pytest
import torch

from draw_megatron.model import GPT, attention
from draw_megatron.model.attention import (AttentionMask, causal_attention, document_ids,
                                           document_positions, select_backend)
from draw_megatron.model.rotary import RotaryEmbedding, apply_rotary
from draw_megatron.parallel import ParallelTopology
from tests.unit.model.tiny import one_thread, tiny_config  # noqa: F401

CPU = torch.device("cpu")
CUDA = torch.device("cuda")
EOS = 2
needs_no_flash = pytest.mark.skipif(attention.flash_attn_module() is not None,
                                    reason="flash-attn is installed here")


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                        doc_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Explicit softmax over the keys each query may see; [B, T, H, D] in and out."""
    seq = q.shape[1]
    allowed = torch.ones(seq, seq, dtype=torch.bool).tril().expand(q.shape[0], seq, seq)
    if doc_ids is not None:
        allowed = allowed & (doc_ids[:, :, None] == doc_ids[:, None, :])
    scores = torch.einsum("bshd,bthd->bhst", q, k) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~allowed[:, None], float("-inf"))
    return torch.einsum("bhst,bthd->bshd", scores.softmax(-1), v)


def qkv_and_tokens(seq: int = 23, seed: int = 0):
    """q, k, v [2, seq, 3, 8] and tokens [2, seq] whose EOS (id 2) fall at the start, the
    end, twice in a row and mid-sequence; the second row has none."""
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(2, seq, 3, 8, generator=g) for _ in range(3))
    tokens = torch.randint(3, 50, (2, seq), generator=g)
    tokens[0, [0, 5, 6, 14, seq - 1]] = EOS
    return q, k, v, tokens


def test_backend_choice_per_device_mask_and_dropout(monkeypatch):
    for document in (False, True):
        assert select_backend("auto", CPU, torch.float32, document=document) == "sdpa"
        assert select_backend("auto", CPU, torch.bfloat16, document=document) == "sdpa"
    assert select_backend("sdpa", CUDA, torch.bfloat16) == "sdpa"
    assert select_backend("flex", CPU, torch.float32) == "flex"
    assert select_backend("auto", CUDA, torch.bfloat16) == "sdpa"
    assert select_backend("auto", CUDA, torch.bfloat16, document=True) == "flex"
    # flex has no dropout: auto's document mask then takes flash-attn, else per-document SDPA.
    monkeypatch.setattr(attention, "flash_attn_module", lambda: None)
    assert select_backend("auto", CUDA, torch.bfloat16, document=True, dropout_p=0.1) == "sdpa"
    monkeypatch.setattr(attention, "flash_attn_module", lambda: types.SimpleNamespace())
    assert select_backend("auto", CUDA, torch.bfloat16, document=True, dropout_p=0.1) == "flash"
    assert select_backend("auto", CUDA, torch.bfloat16) == "sdpa"  # causal: SDPA even so
    with pytest.raises(RuntimeError, match="needs CUDA fp16/bf16 tensors, got torch.float32"):
        select_backend("flash", CPU, torch.float32)
    with pytest.raises(ValueError, match=r"model.attention='flex' has no attention dropout"):
        GPT(tiny_config(attention="flex", dropout=0.1), ParallelTopology.single())


@needs_no_flash
def test_flash_without_flash_attn_is_a_clear_error():
    with pytest.raises(RuntimeError, match=r"model.attention='flash' but flash-attn is not "
                                           r"importable.*model.attention=sdpa"):
        select_backend("flash", CUDA, torch.bfloat16)
    with pytest.raises(RuntimeError, match="flash-attn is not importable"):
        GPT(tiny_config(attention="flash"), ParallelTopology.single())  # fails at build


def test_document_ids_and_positions():
    tokens = torch.tensor([[5, EOS, 7, 8, EOS, EOS, 9], [EOS, 4, 4, 4, 4, 4, 4]])
    ids = document_ids(tokens, EOS)
    # The EOS closes its document; the token after it opens the next.
    assert ids.tolist() == [[0, 0, 1, 1, 1, 2, 3], [0, 1, 1, 1, 1, 1, 1]]
    assert document_positions(ids).tolist() == [[0, 1, 0, 1, 2, 0, 0], [0, 0, 1, 2, 3, 4, 5]]
    cu, longest = AttentionMask.documents(tokens, EOS).cu_seqlens()
    assert cu.dtype == torch.int32 and longest == 6
    assert cu.tolist() == [0, 2, 5, 6, 7, 8, 14]  # over the flattened batch


def test_sdpa_runs_in_the_explicit_kernel_order(monkeypatch):
    seen = []
    real = attention.sdpa_kernel

    def spy(backends, set_priority=False):
        seen.append((list(backends), set_priority))
        return real(backends, set_priority=set_priority)
    monkeypatch.setattr(attention, "sdpa_kernel", spy)
    q, k, v, _ = qkv_and_tokens()
    causal_attention(q, k, v, backend="sdpa", dropout_p=0.0)
    order = [torch.nn.attention.SDPBackend.CUDNN_ATTENTION,
             torch.nn.attention.SDPBackend.FLASH_ATTENTION,
             torch.nn.attention.SDPBackend.EFFICIENT_ATTENTION,
             torch.nn.attention.SDPBackend.MATH]
    assert seen == [(order, True)]


@pytest.mark.parametrize("backend", ["sdpa", "flex", "auto"])
@pytest.mark.parametrize("document", [False, True])
def test_cpu_kernels_equal_explicit_softmax(backend, document):
    q, k, v, tokens = qkv_and_tokens()
    mask = AttentionMask.documents(tokens, EOS) if document else None
    want = reference_attention(q, k, v, document_ids(tokens, EOS) if document else None)
    with torch.no_grad():  # FlexAttention has no CPU backward
        got = attention.attention(q, k, v, backend=backend, dropout_p=0.0, mask=mask)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    if document:  # the mask matters: plain causal attention differs
        assert not torch.allclose(got, reference_attention(q, k, v), atol=1e-3)


def test_document_sdpa_gradients_equal_explicit_softmax():
    q, k, v, tokens = qkv_and_tokens(seed=1)
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    weights = torch.randn(q.shape, generator=torch.Generator().manual_seed(2))
    got = attention.attention(*leaves, backend="sdpa", dropout_p=0.0,
                              mask=AttentionMask.documents(tokens, EOS))
    (got * weights).sum().backward()
    ref_leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    (reference_attention(*ref_leaves, document_ids(tokens, EOS)) * weights).sum().backward()
    for leaf, ref in zip(leaves, ref_leaves):
        torch.testing.assert_close(leaf.grad, ref.grad, rtol=1e-5, atol=1e-5)


def test_flex_backward_on_cpu_is_a_clear_error():
    q, k, v, _ = qkv_and_tokens()
    with pytest.raises(RuntimeError, match=r"'flex' cannot backpropagate on CPU.*sdpa or auto"):
        causal_attention(q.requires_grad_(), k, v, backend="flex", dropout_p=0.0)


def test_flash_plumbing_with_a_stand_in_module(monkeypatch):
    """flash-attn needs CUDA; a stand-in with its signatures (explicit softmax inside) checks
    the layout, the causal flag and the varlen offsets handed to it."""
    calls = []

    def flash_attn_func(q, k, v, causal):
        calls.append("dense")
        assert causal
        return reference_attention(q, k, v), None  # flash-attn 3 also returns the LSE

    def flash_attn_varlen_func(q, k, v, cu_q, cu_k, max_q, max_k, causal):
        calls.append("varlen")
        assert causal and cu_q is cu_k and max_q == max_k and q.dim() == 3
        bounds = cu_q.tolist()
        assert max(b - a for a, b in zip(bounds[:-1], bounds[1:])) == max_q
        return torch.cat([reference_attention(q[None, a:b], k[None, a:b], v[None, a:b])[0]
                          for a, b in zip(bounds[:-1], bounds[1:])])

    fake = types.SimpleNamespace(__name__="flash_attn_interface", flash_attn_func=flash_attn_func,
                                 flash_attn_varlen_func=flash_attn_varlen_func)
    monkeypatch.setattr(attention, "flash_attn_module", lambda: fake)
    q, k, v, tokens = qkv_and_tokens()
    torch.testing.assert_close(attention._flash(q, k, v, AttentionMask.causal(23), 0.0),
                               reference_attention(q, k, v))
    got = attention._flash(q, k, v, AttentionMask.documents(tokens, EOS), 0.0)
    torch.testing.assert_close(got, reference_attention(q, k, v, document_ids(tokens, EOS)))
    assert calls == ["dense", "varlen"]
    with pytest.raises(RuntimeError, match="flash-attn 3 has no attention dropout"):
        attention._flash(q, k, v, AttentionMask.causal(23), 0.1)


def test_rotary_per_token_positions_are_rows_of_the_table():
    rope = RotaryEmbedding(head_dim=8, base=10000.0)
    cos, sin = rope(6, CPU)
    positions = torch.tensor([[0, 1, 2, 3, 4, 5], [0, 1, 0, 1, 2, 0]])
    cos_b, sin_b = rope.at(positions)
    assert cos_b.shape == (2, 6, 8)
    assert torch.equal(cos_b[0], cos) and torch.equal(sin_b[1, 2], sin[0])
    x = torch.randn(2, 6, 3, 8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(apply_rotary(x, cos_b, sin_b)[0], apply_rotary(x, cos, sin)[0])
    restarted = apply_rotary(x[:, 2:5], cos[:3], sin[:3])  # positions 0, 1, 2
    assert torch.equal(apply_rotary(x, cos_b, sin_b)[1, 2:5], restarted[1])


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
