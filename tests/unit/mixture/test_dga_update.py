"""DGA's weight update (docs/algorithms.md §3): mirror descent, EMA, simplex, sign, state round trip."""

import math

import numpy as np
import pytest

from draw_megatron.mixture.dga import DGAState, ema_step, mirror_step


def test_mirror_step_matches_hand_computed_values():
    alpha, a, eta = np.array([0.5, 0.3, 0.2]), np.array([1.0, 0.0, -1.0]), 0.5
    raw = [0.5 * math.exp(0.5), 0.3, 0.2 * math.exp(-0.5)]
    want = np.array(raw) / sum(raw)
    np.testing.assert_allclose(mirror_step(alpha, a, eta), want, rtol=1e-14)


def test_ema_matches_hand_computed_values():
    got = ema_step(np.array([0.5, 0.5]), np.array([0.9, 0.1]), 0.1)
    np.testing.assert_allclose(got, [0.9 * 0.5 + 0.1 * 0.9, 0.9 * 0.5 + 0.1 * 0.1], rtol=1e-14)


def test_sign_up_weights_aligned_domains_and_stays_on_the_simplex():
    state = DGAState(np.full(4, 0.25), eta=2.0, ema_weight=0.1)
    for step in range(0, 50, 10):
        alpha, ema = state.update(np.array([0.0, 1.0, -1.0, 0.0]), step)
        for w in (alpha, ema):
            assert np.all(w >= 0) and abs(w.sum() - 1) < 1e-12
    assert np.argmax(state.alpha) == 1 and np.argmin(state.alpha) == 2
    # The EMA trails α: it moved the same way, less far.
    assert 0.25 < state.alpha_ema[1] < state.alpha[1]
    assert state.alpha[2] < state.alpha_ema[2] < 0.25


def test_first_update_by_hand():
    state = DGAState(np.array([0.6, 0.4]), eta=1.0, ema_weight=0.25)
    alpha, ema = state.update(np.array([0.0, math.log(3.0)]), step=0)
    np.testing.assert_allclose(alpha, [0.6 / 1.8, 1.2 / 1.8], rtol=1e-14)
    np.testing.assert_allclose(ema, 0.75 * np.array([0.6, 0.4]) + 0.25 * alpha, rtol=1e-14)


def test_huge_scores_do_not_overflow_and_zero_weights_stay_zero():
    got = mirror_step(np.array([0.5, 0.5, 0.0]), np.array([1e6, -1e6, 1e9]), 10.0)
    assert np.all(np.isfinite(got)) and got[2] == 0.0 and got[0] == pytest.approx(1.0)


def test_mean_of_sampling_weights_and_state_round_trip():
    state = DGAState(np.full(3, 1 / 3), eta=1.0, ema_weight=0.5)
    np.testing.assert_allclose(state.mean_sampling_weights(), np.full(3, 1 / 3))
    emas = [state.update(np.array(a), s)[1].copy() for s, a in
            enumerate([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 2.0]])]
    np.testing.assert_allclose(state.mean_sampling_weights(), np.mean(emas, axis=0), rtol=1e-12)
    other = DGAState(np.full(3, 1 / 3), eta=1.0, ema_weight=0.5)
    other.load_state_dict(state.state_dict())
    assert other.state_dict() == state.state_dict() and other.num_updates == 3
    with pytest.raises(ValueError, match="has 3 weights; this run reweights 2"):
        DGAState(np.full(2, 0.5), 1.0, 0.5).load_state_dict(state.state_dict())


@pytest.mark.parametrize("args, message", [
    ((np.array([0.5, 0.6]), 1.0, 0.1), "simplex"),
    ((np.array([0.5, 0.5]), 0.0, 0.1), "eta"),
    ((np.array([0.5, 0.5]), float("nan"), 0.1), "eta"),
    ((np.array([0.5, 0.5]), 1.0, 0.0), "ema_weight"),
])
def test_bad_state_arguments(args, message):
    with pytest.raises(ValueError, match=message):
        DGAState(*args)


def test_bad_scores():
    with pytest.raises(ValueError, match="2 weights but 3 alignment scores"):
        mirror_step(np.array([0.5, 0.5]), np.zeros(3), 1.0)
    with pytest.raises(ValueError, match="finite"):
        mirror_step(np.array([0.5, 0.5]), np.array([0.0, np.nan]), 1.0)
