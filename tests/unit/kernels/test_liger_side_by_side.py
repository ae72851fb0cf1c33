"""Liger-Kernel's fused linear cross-entropy (reduction="none", Triton under the CPU
interpreter, or on CUDA) against the same float64 reference as ours: per-token losses and the gradients
of a non-uniformly weighted loss. Liger has no vocabulary-parallel mode: TP = 1 only."""

from __future__ import annotations

import torch

from tests.unit.kernels.reference import (DEVICE, assert_close,  # sets the env
                                          assert_losses_close, reference_losses)
from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss  # noqa: I001


def test_liger_per_token_losses_and_weighted_gradients():
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(37, 40, generator=g)
    weight = torch.randn(70, 40, generator=g) * 0.3
    labels = torch.randint(0, 70, (37,), generator=g)
    upstream = torch.rand(37, generator=g) * 2.0 - 0.5
    hidden, weight, labels, upstream = (t.to(DEVICE) for t in (hidden, weight, labels, upstream))
    want_loss, want_h, want_w = reference_losses(hidden, weight, labels, upstream)

    h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    loss = LigerFusedLinearCrossEntropyLoss(reduction="none")(w, h, labels)
    (loss * upstream).sum().backward()
    assert_losses_close("liger loss", loss.detach(), want_loss)
    assert_close("liger grad hidden", h.grad, want_h)
    assert_close("liger grad weight", w.grad, want_w)
