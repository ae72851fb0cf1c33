"""Vocab-parallel cross-entropy at tp = 1: torch's values and gradients, padding masked."""

import pytest
import torch
import torch.nn.functional as F

from draw_megatron.parallel import vocab_parallel_cross_entropy


def _ref(logits, labels, valid):
    return F.cross_entropy(logits[..., :valid].flatten(0, -2), labels.flatten(),
                           reduction="none").view(labels.shape)


@pytest.mark.parametrize("valid", [None, 13])
def test_matches_torch(valid):
    torch.manual_seed(0)
    logits = (torch.randn(3, 4, 16) * 5).requires_grad_()
    labels = torch.randint(0, valid or 16, (3, 4))
    weights = torch.rand(3, 4)
    loss = vocab_parallel_cross_entropy(logits, labels, None, valid_vocab=valid)
    assert loss.shape == labels.shape and loss.dtype == torch.float32
    (loss * weights).sum().backward()
    ref_logits = logits.detach().clone().requires_grad_()
    ref = _ref(ref_logits, labels, valid or 16)
    (ref * weights).sum().backward()
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(logits.grad, ref_logits.grad, rtol=1e-6, atol=1e-7)
    if valid:
        assert torch.all(logits.grad[..., valid:] == 0)


@pytest.mark.parametrize("valid", [None, 13])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_frozen_path_matches_the_training_path(valid, dtype):
    """Without a gradient to compute (no_grad, inference_mode, or logits that need none) the
    unsharded loss takes the log-sum-exp path; same values, padding excluded, fp32 out."""
    torch.manual_seed(2)
    logits = (torch.randn(3, 4, 16) * 5).to(dtype)
    labels = torch.randint(0, valid or 16, (3, 4))
    want = _ref(logits.float(), labels, valid or 16)
    trained = vocab_parallel_cross_entropy(logits.clone().requires_grad_(), labels, None, valid)
    for ctx in (torch.no_grad, torch.inference_mode, torch.enable_grad):
        with ctx():
            got = vocab_parallel_cross_entropy(logits, labels, None, valid_vocab=valid)
        assert got.dtype == torch.float32 and not got.requires_grad
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-5)
        torch.testing.assert_close(got, trained.detach(), rtol=1e-6, atol=1e-5)


def test_stable_for_huge_logits_and_low_precision():
    logits = torch.tensor([[1e4, 0.0, -1e4]], dtype=torch.bfloat16, requires_grad=True)
    loss = vocab_parallel_cross_entropy(logits, torch.tensor([1]), None)
    assert loss.dtype == torch.float32 and torch.isfinite(loss).all()
    loss.sum().backward()
    assert logits.grad.dtype == torch.bfloat16 and torch.isfinite(logits.grad.float()).all()


def test_gradcheck_fp64():
    torch.manual_seed(1)
    logits = torch.randn(2, 3, 8, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 6, (2, 3))
    assert torch.autograd.gradcheck(
        lambda z: vocab_parallel_cross_entropy(z, labels, None, valid_vocab=6), (logits,))


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="labels"):
        vocab_parallel_cross_entropy(torch.zeros(2, 3, 8), torch.zeros(2, 4, dtype=torch.long),
                                     None)
