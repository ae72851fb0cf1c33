"""The fused output layer + cross-entropy (Triton on CUDA, else in the CPU interpreter; the chunked
PyTorch reference) against float64 autograd on full logits: per-token losses, and the
gradients of hidden and weight under a non-uniform per-token upstream gradient, with
vocabulary padding. Shapes are deliberately not multiples of the kernels' tiles."""

from __future__ import annotations

import pytest
import torch

from tests.unit.kernels.reference import (DEVICE, assert_close,  # sets the env
                                          assert_losses_close, reference_losses)
from draw_megatron.kernels import fused_linear_ce  # noqa: I001
from draw_megatron.kernels.fused_linear_ce import (fused_linear_cross_entropy,
                                                   triton_interpreted, triton_runs)


def _inputs(n: int, d: int, vocab: int, valid: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, d, generator=g)
    weight = torch.randn(vocab, d, generator=g) * 0.3
    labels = torch.randint(0, valid, (n,), generator=g)
    upstream = torch.rand(n, generator=g) * 2.0 - 0.5  # non-uniform, some negative
    return tuple(t.to(DEVICE) for t in (hidden, weight, labels, upstream))


def _run(backend: str, hidden, weight, labels, upstream, valid):
    """``backend``: torch, or triton-<backward> (chunked, atomic)."""
    h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    backend, _, backward = backend.partition("-")
    loss = fused_linear_cross_entropy(h, w, labels, None, valid, backend=backend,
                                      backward=backward or "chunked")
    (loss * upstream).sum().backward()
    return loss.detach(), h.grad, w.grad


HALF = [torch.float16] + ([torch.bfloat16] if DEVICE.type == "cuda" else [])


def test_triton_is_what_runs():
    # Otherwise the "triton" cases below would fail loudly rather than test the reference.
    assert all(triton_runs(DEVICE, dtype) for dtype in [torch.float32, *HALF])
    assert not triton_runs(DEVICE, torch.float64)
    assert triton_interpreted() == (DEVICE.type == "cpu")
    # The interpreter's bfloat16 products are wrong: there the reference serves.
    assert triton_runs(DEVICE, torch.bfloat16) == (DEVICE.type == "cuda")


@pytest.mark.parametrize("dtype", HALF)
def test_half_precision_inputs(dtype):
    hidden, weight, labels, upstream = _inputs(37, 40, 70, 61, seed=3)
    hidden, weight = hidden.to(dtype), weight.to(dtype)
    want_loss, want_h, want_w = reference_losses(hidden, weight, labels, upstream, 61)
    loss, grad_h, grad_w = _run("triton-chunked", hidden, weight, labels, upstream, 61)
    assert loss.dtype == torch.float32 and grad_h.dtype == grad_w.dtype == dtype
    # Products accumulate in fp32; the logits' gradient is rounded to the input dtype.
    assert_losses_close("loss", loss, want_loss, tol=1e-5)
    assert_close("grad hidden", grad_h, want_h, tol=1e-2)
    assert_close("grad weight", grad_w, want_w, tol=1e-2)


@pytest.mark.parametrize("backend", ["triton-chunked", "triton-atomic", "torch"])
@pytest.mark.parametrize("n, d, vocab, valid", [
    (37, 40, 70, 61),     # padding inside the last tile
    (16, 32, 96, 96),     # no padding, whole tiles
    (5, 24, 300, 280),    # two forward splits of the vocabulary (Triton: 256 ids each)
])
def test_losses_and_gradients_match_float64(backend, n, d, vocab, valid, monkeypatch):
    # Several chunks of the reference and of the chunked backward (32 and 16 · 2 ids wide),
    # with chunk boundaries inside and beside the padding.
    monkeypatch.setattr(fused_linear_ce, "REFERENCE_CHUNK", 32)
    monkeypatch.setattr(fused_linear_ce, "GRAD_CHUNK_ELEMENTS", 32 * n)
    hidden, weight, labels, upstream = _inputs(n, d, vocab, valid)
    want_loss, want_h, want_w = reference_losses(hidden, weight, labels, upstream, valid)
    loss, grad_h, grad_w = _run(backend, hidden, weight, labels, upstream, valid)
    assert loss.dtype == torch.float32
    assert_losses_close("loss", loss, want_loss)
    assert_close("grad hidden", grad_h, want_h)
    assert_close("grad weight", grad_w, want_w)
    assert torch.all(grad_w[valid:] == 0), "padding rows got a gradient"


def test_leading_dims_and_frozen_forward():
    hidden, weight, labels, upstream = _inputs(24, 16, 48, 40, seed=1)
    hidden, labels = hidden.view(2, 12, 16), labels.view(2, 12)
    want, _, _ = reference_losses(hidden, weight, labels, upstream.view(2, 12), 40)
    with torch.no_grad():
        loss = fused_linear_cross_entropy(hidden, weight, labels, valid_vocab=40)
    assert loss.shape == (2, 12)
    assert_losses_close("loss", loss, want)


def test_reference_gradcheck_in_float64():
    hidden, weight, labels, _ = _inputs(6, 5, 11, 9, seed=2)
    h = hidden.cpu().double().requires_grad_()
    w = weight.cpu().double().requires_grad_()
    torch.autograd.gradcheck(
        lambda a, b: fused_linear_cross_entropy(a, b, labels.cpu(), valid_vocab=9), (h, w))


def test_bad_inputs_raise():
    hidden, weight, labels, _ = _inputs(4, 8, 16, 16)
    with pytest.raises(ValueError, match="disagree"):
        fused_linear_cross_entropy(hidden, weight, labels[:3])
    with pytest.raises(ValueError, match="weight"):
        fused_linear_cross_entropy(hidden, weight[:, :4], labels)
    with pytest.raises(ValueError, match="backward"):
        fused_linear_cross_entropy(hidden, weight, labels, backward="tiles")
    with pytest.raises(RuntimeError, match="Triton"):
        fused_linear_cross_entropy(hidden.double(), weight.double(), labels, backend="triton")
