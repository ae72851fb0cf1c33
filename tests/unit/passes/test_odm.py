"""ODM (EXP3 over domains, the training loss as reward) against hand-computed numbers."""

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest

from draw_megatron.passes.base import StepInfo
from draw_megatron.passes.odm import ODMConfig, exp3_policy, exploration_rate


def _pass(k=3, smoothing=0.9):
    p = ODMConfig.from_dict({"smoothing": smoothing}).build()
    p.setup(SimpleNamespace(manifest=SimpleNamespace(num_domains=k)))
    return p


def _info(step, counts, losses, seq_len=4):
    counts = np.asarray(counts, dtype=np.float64)
    tokens = counts * seq_len
    batch = SimpleNamespace(domain_counts=counts.astype(np.int64))
    return StepInfo(step, batch, np.asarray(losses) * tokens, tokens)


def test_exploration_rate():
    assert exploration_rate(4, 1) == 0.25  # capped at 1/k
    assert exploration_rate(4, 100) == pytest.approx(math.sqrt(math.log(4) / 400))


def test_one_update_by_hand():
    p = _pass()
    assert np.allclose(p.initial_weights(), 1 / 3)
    out = p.after_step(_info(0, [2, 2, 0], [3.0, 1.0, 9.0]))
    # Reward L_i·c_i/(G·π_i) for the domains present, G = 4, π = 1/3.
    reward = np.array([3.0 * 2 / (4 / 3), 1.0 * 2 / (4 / 3), 0.0])
    estimate = np.array([0.1 * reward[0], 0.1 * reward[1], 0.0])
    eps = exploration_rate(3, 1)
    z = eps * estimate
    expected = (1 - 3 * eps) * np.exp(z) / np.exp(z).sum() + eps
    assert out.records[0]["reward"] == pytest.approx(reward.tolist())
    assert out.records[0]["estimate"] == pytest.approx(estimate.tolist())
    assert out.weights == pytest.approx(expected)
    assert np.allclose(exp3_policy(estimate, eps, eps), expected)


def test_high_loss_domains_gain_weight_and_weights_stay_on_the_simplex():
    p = _pass(k=4)
    for t in range(300):
        out = p.after_step(_info(t, [3, 3, 3, 3], [4.0, 2.0, 2.0, 1.0]))
        assert abs(out.weights.sum() - 1) < 1e-12 and (out.weights > 0).all()
    w = out.weights
    assert w[0] > w[1] > w[3] and w[1] == pytest.approx(w[2])


def test_state_round_trip():
    p = _pass()
    for t in range(5):
        p.after_step(_info(t, [1, 2, 1], [2.0, 3.0, 1.0]))
    q = _pass()
    q.load_state_dict(json.loads(json.dumps(p.state_dict())))
    a = p.after_step(_info(5, [2, 1, 1], [1.0, 1.0, 5.0])).weights
    b = q.after_step(_info(5, [2, 1, 1], [1.0, 1.0, 5.0])).weights
    assert np.array_equal(a, b)


def test_smoothing_is_validated():
    from draw_megatron.config.base import ConfigError

    with pytest.raises(ConfigError, match="odm.smoothing=1.0 must be in"):
        ODMConfig.from_dict({"smoothing": 1.0})
