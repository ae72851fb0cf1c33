"""The GPT with ``model.loss_kernel=fused`` (Triton: on CUDA, else in the CPU interpreter) against the
default ``torch`` loss path, same weights: per-token losses and every parameter's gradient
under a non-uniform per-token weighting (as the DRO pass and DGA weight losses)."""

from __future__ import annotations

import pytest
import torch

from tests.unit.kernels.reference import (DEVICE, assert_close,  # sets the env
                                          assert_losses_close)
from draw_megatron.config.base import ConfigError  # noqa: I001
from draw_megatron.kernels.fused_linear_ce import triton_runs
from draw_megatron.model import GPT
from draw_megatron.parallel import ParallelTopology
from tests.unit.model.tiny import batch, one_thread, tiny_config  # noqa: F401


@pytest.mark.parametrize("fields", [dict(), dict(tie_embeddings=False, mlp="swiglu")])
def test_fused_loss_equals_torch_loss(fields):
    assert triton_runs(DEVICE, torch.float32)  # the kernels, not the reference
    tokens, labels = (t.to(DEVICE) for t in batch(seed=3))
    weights = torch.rand(tokens.shape, generator=torch.Generator().manual_seed(4)).to(DEVICE)
    models = {kind: GPT(tiny_config(loss_kernel=kind, **fields), ParallelTopology.single(),
                        seed=7, device=DEVICE) for kind in ("torch", "fused")}
    losses = {}
    for kind, model in models.items():
        losses[kind] = model(tokens, labels)
        (losses[kind] * weights).sum().backward()
    assert_losses_close("loss", losses["fused"].detach(), losses["torch"].detach().double())
    want = dict(models["torch"].named_parameters())
    for name, param in models["fused"].named_parameters():
        assert_close(f"grad {name}", param.grad, want[name].grad.double())
    with torch.no_grad():  # logits are still the torch path's
        assert torch.equal(models["fused"](tokens), models["torch"](tokens))


def test_fused_head_is_an_external_parameter():
    untied = GPT(tiny_config(loss_kernel="fused", tie_embeddings=False),
                 ParallelTopology.single(), seed=0)
    assert untied.external_parameters() == [(untied, untied.head.weight)]


def test_unknown_loss_kernel_names_the_key():
    with pytest.raises(ConfigError, match="model.loss_kernel"):
        tiny_config(loss_kernel="liger")
