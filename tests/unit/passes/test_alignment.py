"""GradientAlignment in one process: brute-force agreement with and without (non-reentrant)
activation checkpointing, no .grad touched, and its usage errors."""

import numpy as np
import pytest
import torch

from draw_megatron.model import GPT
from draw_megatron.parallel import ParallelTopology
from draw_megatron.passes.alignment import GradientAlignment
from tests.unit.model.tiny import batch, one_thread, tiny_config  # noqa: F401


def _loss(model, seed):
    tokens, labels = batch(seed=seed)
    return model(tokens, labels).mean()


def _brute_force(model, units):
    params = [p for p in model.parameters() if p.requires_grad]

    def flat(seed):
        grads = torch.autograd.grad(_loss(model, seed), params)
        return torch.cat([g.reshape(-1) for g in grads]).double().numpy()

    target = flat(100)
    gs = [flat(u) for u in units]
    raw = np.array([g @ target for g in gs])
    return raw, raw / (np.array([np.linalg.norm(g) for g in gs]) * np.linalg.norm(target))


@pytest.mark.parametrize("checkpointing", [False, True])
@pytest.mark.parametrize("mode", ["raw", "cosine"])
def test_scores_equal_brute_force(checkpointing, mode):
    model = GPT(tiny_config(activation_checkpointing=checkpointing), ParallelTopology.single(),
                seed=3)
    units = [1, 2, 3]
    aligner = GradientAlignment(model, ParallelTopology.single(), mode)
    aligner.set_target(_loss(model, 100))
    got = aligner.scores(lambda i: _loss(model, units[i]), len(units)).double().numpy()
    want = _brute_force(GPT(tiny_config(), ParallelTopology.single(), seed=3), units)
    np.testing.assert_allclose(got, want[0 if mode == "raw" else 1], rtol=1e-5)
    assert all(p.grad is None for p in model.parameters())
    aligner.release()
    assert aligner.target is None


def test_usage_errors():
    model = GPT(tiny_config(), ParallelTopology.single(), seed=3)
    with pytest.raises(ValueError, match="alignment must be 'raw' or 'cosine'"):
        GradientAlignment(model, ParallelTopology.single(), "dot")
    aligner = GradientAlignment(model, ParallelTopology.single())
    with pytest.raises(RuntimeError, match="set_target"):
        aligner.scores(lambda i: _loss(model, i), 2)
