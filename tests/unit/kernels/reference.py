"""A float64 reference for the fused output layer + cross-entropy: full logits, autograd."""

from __future__ import annotations

import os

# Triton reads TRITON_INTERPRET when a kernel is decorated, i.e. when the kernel module is
# first imported: every test module of the kernels imports this one before the kernels.
os.environ.setdefault("TRITON_INTERPRET", "1")

import torch  # noqa: E402

TOL = 1e-5


def reference_losses(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                     upstream: torch.Tensor, valid_vocab: int | None = None,
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(per-token loss, ∂/∂hidden, ∂/∂weight) of Σ upstream · loss, in float64; ids at or
    above ``valid_vocab`` excluded (their logits dropped)."""
    h = hidden.detach().double().requires_grad_()
    w = weight.detach().double().requires_grad_()
    logits = (h @ w.T)[..., :valid_vocab]
    loss = torch.logsumexp(logits, dim=-1) - logits.gather(-1, labels[..., None])[..., 0]
    (loss * upstream.double()).sum().backward()
    return loss.detach(), h.grad, w.grad


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    """‖got − want‖ / ‖want‖ in float64."""
    return ((got.double() - want).norm() / want.norm().clamp_min(1e-30)).item()


def assert_close(name: str, got: torch.Tensor, want: torch.Tensor, tol: float = TOL) -> None:
    assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    err = rel_err(got, want)
    assert err <= tol, f"{name}: norm-relative error {err:.2e} > {tol}"


def assert_losses_close(name: str, got: torch.Tensor, want: torch.Tensor,
                        tol: float = TOL) -> None:
    """Every token's loss within ``tol`` (relative, absolute below 1)."""
    assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    err = ((got.double() - want).abs() / want.abs().clamp_min(1.0)).max().item()
    assert err <= tol, f"{name}: per-token relative error {err:.2e} > {tol}"
