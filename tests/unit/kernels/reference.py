"""A float64 reference for the fused output layer + cross-entropy: full logits, autograd.

Importing this module picks where the Triton kernels run: on CUDA when there is a GPU, else
in Triton's CPU interpreter. Triton reads ``TRITON_INTERPRET`` when a kernel is decorated,
i.e. when the kernel module is first imported, so every test module of the kernels imports
this one before the kernels. (Set only without a GPU: it would turn every later Triton
kernel of the process, torch's compiled ones included, into interpreted ones.)
"""

from __future__ import annotations

import os

import torch

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
if DEVICE.type == "cpu":
    os.environ.setdefault("TRITON_INTERPRET", "1")

TOL = 1e-5


def reference_losses(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                     upstream: torch.Tensor, valid_vocab: int | None = None,
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(per-token loss, ∂/∂hidden, ∂/∂weight) of Σ upstream · loss, in float64; ids at or
    above ``valid_vocab`` excluded (their logits dropped)."""
    h = hidden.detach().cpu().double().requires_grad_()
    w = weight.detach().cpu().double().requires_grad_()
    labels, upstream = labels.cpu(), upstream.cpu()
    logits = (h @ w.T)[..., :valid_vocab]
    loss = torch.logsumexp(logits, dim=-1) - logits.gather(-1, labels[..., None])[..., 0]
    (loss * upstream.double()).sum().backward()
    return loss.detach(), h.grad, w.grad


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    """‖got − want‖ / ‖want‖ in float64."""
    got, want = got.cpu().double(), want.cpu().double()
    return ((got - want).norm() / want.norm().clamp_min(1e-30)).item()


def assert_close(name: str, got: torch.Tensor, want: torch.Tensor, tol: float = TOL) -> None:
    assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    err = rel_err(got, want)
    assert err <= tol, f"{name}: norm-relative error {err:.2e} > {tol}"


def assert_losses_close(name: str, got: torch.Tensor, want: torch.Tensor,
                        tol: float = TOL) -> None:
    """Every token's loss within ``tol`` (relative, absolute below 1)."""
    assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    got, want = got.cpu().double(), want.cpu().double()
    err = ((got - want).abs() / want.abs().clamp_min(1.0)).max().item()
    assert err <= tol, f"{name}: per-token relative error {err:.2e} > {tol}"
