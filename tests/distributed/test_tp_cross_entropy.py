"""Vocab-parallel cross-entropy at TP=2 (gloo) against torch's on the full logits."""

import torch
import torch.nn.functional as F

from draw_megatron.parallel import (ColumnParallelLinear, ParallelTopology, load_full_, shard_of,
                                    vocab_parallel_cross_entropy)
from tests.distributed.harness import run_distributed

TOL = 1e-5
B, T, H, V = 3, 5, 8, 16


def _check(name: str, got: torch.Tensor, want: torch.Tensor) -> None:
    assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    err = ((got - want).norm() / want.norm().clamp_min(1e-30)).item()
    assert err <= TOL, f"{name}: norm-relative error {err:.2e} > {TOL}"


def _reference(logits: torch.Tensor, labels: torch.Tensor, valid: int) -> torch.Tensor:
    """torch's per-token loss over the valid vocabulary (the padding simply absent)."""
    return F.cross_entropy(logits[..., :valid].reshape(-1, valid), labels.reshape(-1),
                           reduction="none").view(labels.shape)


def _loss_and_grad(group, valid: int | None) -> None:
    tag = f"valid_vocab={valid}"
    n_valid = valid or V
    logits = torch.randn(B, T, V) * 4
    labels = torch.randint(0, n_valid, (B, T))
    labels[0, 0] = n_valid - 1  # the last valid id, on the last rank that has any
    weights = torch.rand(B, T)  # a non-uniform upstream gradient

    ref_logits = logits.clone().requires_grad_()
    ref = _reference(ref_logits, labels, n_valid)
    (ref * weights).sum().backward()

    local = shard_of(logits, -1, group).requires_grad_()
    loss = vocab_parallel_cross_entropy(local, labels, group, valid_vocab=valid)
    (loss * weights).sum().backward()
    assert loss.dtype == torch.float32
    _check(f"{tag} loss", loss, ref)
    # Padded ids get exactly zero gradient (the reference's grad there is zero too).
    _check(f"{tag} dlogits", local.grad, shard_of(ref_logits.grad, -1, group))
    if valid is not None:
        start = torch.distributed.get_rank(group) * (V // 2)
        assert torch.all(local.grad[..., max(0, valid - start):] == 0)


def _head_then_loss(group) -> None:
    """Column-parallel head (no gather) + vocab-parallel loss = full head + torch's loss."""
    hidden, weight = torch.randn(B, T, H), torch.randn(V, H)
    labels = torch.randint(0, V, (B, T))
    h_ref, w_ref = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    ref = _reference(F.linear(h_ref, w_ref), labels, V)
    ref.sum().backward()

    head = ColumnParallelLinear(H, V, group, bias=False)
    load_full_(head.weight, weight, group)
    h_tp = hidden.clone().requires_grad_()
    loss = vocab_parallel_cross_entropy(head(h_tp), labels, group)
    loss.sum().backward()
    _check("head loss", loss, ref)
    _check("head dhidden", h_tp.grad, h_ref.grad)
    _check("head dweight", head.weight.grad, shard_of(w_ref.grad, 0, group))


def _rank_checks(rank: int, world_size: int) -> str:
    torch.manual_seed(0)  # same full tensors on every rank
    group = ParallelTopology.from_dist(tp=world_size).tp_group
    # 16 ids, 8 a rank: no padding; rank 1 partly padding; rank 1 all padding.
    for valid in (None, 13, 7):
        _loss_and_grad(group, valid)
    _head_then_loss(group)
    return "ok"


def test_tp2_cross_entropy_matches_torch():
    assert run_distributed(_rank_checks, 2) == ["ok", "ok"]
