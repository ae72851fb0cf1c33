"""The proxy DRO weight update (docs/algorithms.md §2), by hand and at the edges."""

import json
import math

import numpy as np
import pytest

from draw_megatron.mixture.dro import DROState, dro_update, excess_loss


def test_two_steps_by_hand():
    c, third = 0.1, np.full(3, 1 / 3)
    # step 1: λ = (ln 2, 0, 0): α' ∝ (2, 1, 1) → (0.5, 0.25, 0.25); α1 = 0.9·that + 0.1/3
    a1 = dro_update(third, [math.log(2), 0, 0], eta=1.0, smoothing=c)
    np.testing.assert_allclose(a1, [29 / 60, 31 / 120, 31 / 120], rtol=1e-12)
    np.testing.assert_allclose(a1, [0.4833333, 0.2583333, 0.2583333], atol=1e-7)
    # step 2: λ = (0, ln 3, 0): α' = (58, 93, 31)/120 → /182; α2 = 0.9·that + 0.1/3
    a2 = dro_update(a1, [0, math.log(3), 0], eta=1.0, smoothing=c)
    np.testing.assert_allclose(a2, 0.9 * np.array([58, 93, 31]) / 182 + c / 3, rtol=1e-12)
    np.testing.assert_allclose(a2, [0.3201465, 0.4932234, 0.1866300], atol=1e-7)
    # the state does the same and averages α1, α2 (not α0)
    state = DROState(third, eta=1.0, smoothing=c)
    state.update([math.log(2), 0, 0])
    state.update([0, math.log(3), 0])
    np.testing.assert_allclose(state.alpha, a2, rtol=1e-12)
    np.testing.assert_allclose(state.average(), (a1 + a2) / 2, rtol=1e-12)
    np.testing.assert_allclose(state.average(), [0.4017399, 0.3757784, 0.2224817], atol=1e-7)
    assert state.num_steps == 2 and len(state.trajectory) == 2


def test_eta_scales_the_excess():
    a = dro_update([0.5, 0.5], [1.0, 0.0], eta=2.0, smoothing=0.0)
    np.testing.assert_allclose(a, [math.e**2 / (math.e**2 + 1), 1 / (math.e**2 + 1)], rtol=1e-12)


def test_smoothing_keeps_every_weight_above_c_over_k():
    k, c = 5, 1e-3
    rng = np.random.default_rng(0)
    state = DROState(np.full(k, 1 / k), eta=1.0, smoothing=c)
    for _ in range(300):  # always push domain 0 hard: the others decay towards c/k
        excess = np.zeros(k)
        excess[0] = rng.uniform(5, 50)
        alpha = state.update(excess)
        assert np.all(alpha >= c / k - 1e-15) and alpha.sum() == pytest.approx(1, abs=1e-12)
    assert alpha[1:].max() == pytest.approx(c / k, rel=1e-6)


@pytest.mark.parametrize("excess", [[1e6, 0.0, 0.0], [1e300, 1e300, 0.0], [1e300] * 3,
                                    [-1e300, 0.0, 0.0]])
def test_huge_excess_is_stable(excess):
    alpha = dro_update([0.2, 0.3, 0.5], excess, eta=1.0, smoothing=1e-3)
    assert np.all(np.isfinite(alpha)) and alpha.sum() == pytest.approx(1, abs=1e-12)
    assert np.all(alpha >= 1e-3 / 3 - 1e-15)
    if excess == [1e6, 0.0, 0.0]:
        np.testing.assert_allclose(alpha, [(1 - 1e-3) + 1e-3 / 3, 1e-3 / 3, 1e-3 / 3])


def test_zero_weight_stays_zero_without_smoothing():
    alpha = dro_update([0.0, 0.5, 0.5], [100.0, 0.0, 0.0], smoothing=0.0)
    np.testing.assert_allclose(alpha, [0.0, 0.5, 0.5])


def test_excess_loss_per_domain_and_empty_domains():
    lam = excess_loss([3.0, 0.0, 5.0], [2, 0, 10])
    np.testing.assert_allclose(lam, [1.5, 0.0, 0.5])
    with pytest.raises(ValueError, match="same length"):
        excess_loss([1.0, 2.0], [1, 2, 3])
    with pytest.raises(ValueError, match=">= 0"):
        excess_loss([1.0, 2.0], [1, -2])
    with pytest.raises(ValueError, match="finite"):
        excess_loss([1.0, np.inf], [1, 2])


def test_state_round_trip_continues_exactly():
    rng = np.random.default_rng(7)
    excesses = rng.uniform(0, 3, size=(8, 4))
    a = DROState(rng.dirichlet(np.ones(4)), eta=0.7, smoothing=1e-2)
    for e in excesses[:5]:
        a.update(e)
    b = DROState(np.full(4, 0.25), eta=0.7, smoothing=1e-2)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))  # plain, JSON-safe values
    for e in excesses[5:]:
        a.update(e)
        b.update(e)
    assert np.array_equal(a.alpha, b.alpha) and np.array_equal(a.average(), b.average())
    assert np.array_equal(a.alpha_init, b.alpha_init) and b.num_steps == 8
    assert all(np.array_equal(x, y) for x, y in zip(a.trajectory, b.trajectory))
    np.testing.assert_allclose(a.average(), np.mean(a.trajectory, axis=0), rtol=1e-12)


def test_state_refuses_a_different_setup():
    state = DROState([0.5, 0.5]).state_dict()
    with pytest.raises(ValueError, match="eta"):
        DROState([0.5, 0.5], eta=2.0).load_state_dict(state)
    with pytest.raises(ValueError, match="2 domains"):
        DROState([0.25] * 4).load_state_dict(state)


def test_average_before_any_step_is_an_error():
    with pytest.raises(ValueError, match="no DRO step"):
        DROState([0.5, 0.5]).average()


@pytest.mark.parametrize("kwargs, message", [
    ({"alpha_prev": [0.6, 0.6], "excess": [0, 0]}, "sums to"),
    ({"alpha_prev": [0.5, 0.5], "excess": [0, 0, 0]}, "shape"),
    ({"alpha_prev": [0.5, 0.5], "excess": [np.nan, 0]}, "finite"),
    ({"alpha_prev": [0.5, 0.5], "excess": [0, 0], "eta": 0.0}, "eta"),
    ({"alpha_prev": [0.5, 0.5], "excess": [0, 0], "smoothing": 1.0}, "smoothing"),
    ({"alpha_prev": [0.5, 0.5], "excess": [1e308, 0], "eta": 10.0}, "overflows"),
])
def test_update_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        dro_update(**kwargs)
