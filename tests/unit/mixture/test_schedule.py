import numpy as np
import pytest

from draw_megatron.mixture.schedule import DirichletSchedule, OnlineSchedule, StaticSchedule


def test_dirichlet_redraws_exactly_every_n_steps():
    sched = DirichletSchedule([0.5, 1.0, 2.0, 4.0], redraw_every=5, seed=3)
    alphas = [sched.weights(t).copy() for t in range(23)]
    for t in range(1, 23):
        same = np.array_equal(alphas[t], alphas[t - 1])
        assert same == (t % 5 != 0), t
        assert sched.changes_at(t) == (t % 5 == 0)
    for a in alphas:
        assert abs(a.sum() - 1) < 1e-12 and np.all(a >= 0)


def test_dirichlet_draw_depends_on_seed_and_window_only():
    a = DirichletSchedule([1.0] * 4, 10, seed=1)
    b = DirichletSchedule([1.0] * 4, 10, seed=1)
    assert np.array_equal(a.weights(37), b.weights(30))
    assert not np.array_equal(a.weights(37), DirichletSchedule([1.0] * 4, 10, 2).weights(37))


def test_dirichlet_mean_approaches_expectation():
    beta = np.array([1.0, 2.0, 3.0, 4.0])
    sched = DirichletSchedule(beta, 1, seed=0)
    mean = np.mean([sched.weights(t) for t in range(4000)], axis=0)
    assert np.allclose(mean, beta / beta.sum(), atol=0.01)


def test_dirichlet_state_round_trip_and_broadcast_hook():
    received = []
    sched = DirichletSchedule([1.0, 1.0], 4, seed=0, broadcast=lambda a: received.append(a) or a * 0 + [0.25, 0.75],
                              is_source=False)
    assert sched.weights(0).tolist() == [0.25, 0.75]
    assert received[0].tolist() == [0.0, 0.0]  # a non-source rank sends nothing of its own
    state = sched.state_dict()
    again = DirichletSchedule([1.0, 1.0], 4, seed=0)
    again.load_state_dict(state)
    assert again.weights(3).tolist() == [0.25, 0.75]  # same window: no redraw after resume


def test_online_schedule_applies_from_the_next_step():
    sched = OnlineSchedule([0.5, 0.5])
    assert sched.weights(0).tolist() == [0.5, 0.5]
    sched.set_weights([0.9, 0.1], from_step=1)
    assert sched.weights(1).tolist() == [0.9, 0.1] and sched.version == 1
    with pytest.raises(RuntimeError, match="ran ahead"):
        sched.weights(0)
    with pytest.raises(ValueError):
        sched.set_weights([0.9, 0.2], from_step=2)


def test_validation():
    with pytest.raises(ValueError):
        StaticSchedule([0.5, 0.6])
    with pytest.raises(ValueError):
        DirichletSchedule([1.0, 0.0], 1, 0)
    with pytest.raises(ValueError):
        DirichletSchedule([1.0, 1.0], 0, 0)
    with pytest.raises(ValueError, match="dirichlet"):
        StaticSchedule([1.0]).load_state_dict({"kind": "dirichlet"})
