"""Online DRAW's schedule: β ← ρ·β + s·α_ev, draws constant within N-windows, s = 0 equal to
plain DRAW, exact state, and the mixture kinds registry."""

import json

import numpy as np
import pytest

from draw_megatron.mixture.draw import dirichlet_moments
from draw_megatron.mixture.kinds import KINDS, ScheduleInputs, build_schedule
from draw_megatron.mixture.schedule import (DirichletSchedule, OnlineDrawSchedule, Schedule,
                                            StaticSchedule)

BETA = np.array([2.0, 3.0, 5.0])


def test_update_is_rho_beta_plus_s_evidence():
    sched = OnlineDrawSchedule(BETA, redraw_every=4, seed=1, evidence=2.0, forget=0.5)
    sched.update([0.2, 0.3, 0.5], from_step=4)
    assert np.allclose(sched.beta, 0.5 * BETA + 2.0 * np.array([0.2, 0.3, 0.5]))
    sched.update([1.0, 0.0, 0.0], from_step=8)
    expected = 0.5 * (0.5 * BETA + 2.0 * np.array([0.2, 0.3, 0.5])) + 2.0 * np.array([1, 0, 0])
    assert np.allclose(sched.beta, expected)
    record = sched.record()
    mean, var = dirichlet_moments(expected)
    assert record["concentration"] == pytest.approx(expected.tolist())
    assert record["mean"] == pytest.approx(mean.tolist())
    assert record["var"] == pytest.approx(var.tolist())
    assert record["updates"] == 2
    with pytest.raises(ValueError, match="sum to 1"):
        sched.update([0.5, 0.5, 0.5], from_step=9)


def test_draws_are_constant_within_windows_and_updates_wait_for_the_next():
    sched = OnlineDrawSchedule(BETA, redraw_every=4, seed=3)
    first = [sched.weights(t).copy() for t in range(4)]
    assert all(np.array_equal(first[0], a) for a in first)
    sched.update([0.9, 0.05, 0.05], from_step=2)  # mid-window: the window keeps its draw
    assert np.array_equal(sched.weights(2), first[0]) and np.array_equal(sched.weights(3),
                                                                         first[0])
    assert sched.changes_at(2) and sched.changes_at(4) and not sched.changes_at(3)
    nxt = sched.weights(4)
    assert not np.array_equal(nxt, first[0])
    plain = DirichletSchedule(sched.beta, 4, seed=3)  # window 1's draw from the updated β
    assert np.array_equal(nxt, plain.weights(4))


def test_no_evidence_equals_plain_draw():
    online = OnlineDrawSchedule(BETA, redraw_every=2, seed=7, evidence=0.0, forget=1.0)
    plain = DirichletSchedule(BETA, 2, seed=7)
    for t in range(12):
        if t % 3 == 2:
            online.update([0.1, 0.1, 0.8], from_step=t + 1)
        assert np.array_equal(online.weights(t), plain.weights(t))
    assert np.array_equal(online.beta, BETA)


def test_state_round_trip_is_exact():
    sched = OnlineDrawSchedule(BETA, redraw_every=3, seed=5, evidence=1.5, forget=0.9)
    for t in range(7):
        sched.weights(t)
        if t == 4:
            sched.update([0.3, 0.3, 0.4], from_step=5)
    again = OnlineDrawSchedule(BETA, redraw_every=3, seed=5, evidence=1.5, forget=0.9)
    again.load_state_dict(json.loads(json.dumps(sched.state_dict())))
    assert np.array_equal(again.beta, sched.beta)
    for t in range(7, 20):
        assert np.array_equal(again.weights(t), sched.weights(t))
    with pytest.raises(ValueError, match="'online_draw'.*'dirichlet'"):
        DirichletSchedule(BETA, 3, 5).load_state_dict(sched.state_dict())


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="forget"):
        OnlineDrawSchedule(BETA, 2, 0, forget=0.0)
    with pytest.raises(ValueError, match="evidence"):
        OnlineDrawSchedule(BETA, 2, 0, evidence=-1.0)


def _inputs(tmp_path, **kw):
    return ScheduleInputs(domain_names=["a", "b", "c"], natural_weights=np.array([.5, .3, .2]),
                          width=64, seed=2, **kw)


def test_every_registered_kind_builds_a_schedule(tmp_path):
    static = tmp_path / "s.json"
    static.write_text(json.dumps({"format": "draw-mixture/v1", "domains": ["c", "b", "a"],
                                  "kind": "static", "weights": [0.2, 0.3, 0.5]}))
    diri = tmp_path / "d.json"
    diri.write_text(json.dumps({"format": "draw-mixture/v1", "domains": ["a", "b", "c"],
                                "kind": "dirichlet", "concentration": [1, 2, 3]}))
    files = {"static": str(static), "dirichlet": str(diri)}
    for name, kind in KINDS.items():
        if name == "hierarchical_dirichlet":
            continue  # its file format is tested with the hierarchical maths
        sched = build_schedule(name, _inputs(tmp_path, file=files.get(name)))
        assert isinstance(sched, Schedule)
        assert sched.kind == {"natural": "static", "uniform": "static",
                              "random": "dirichlet"}.get(name, name)
        assert sched.accepts_updates == kind.online
        w = sched.weights(0)
        assert w.shape == (3,) and abs(w.sum() - 1) < 1e-12
        assert sched.expected_weights().shape == (3,)
    assert np.allclose(build_schedule("static", _inputs(tmp_path, file=str(static))).weights(0),
                       [0.5, 0.3, 0.2])  # reordered to the data's domains
    default = build_schedule("online_draw", _inputs(tmp_path))
    assert np.allclose(default.beta, np.sqrt(64) / 3)  # the prior at this width
    from_file = build_schedule("online_draw", _inputs(tmp_path, file=str(diri), evidence=2.0))
    assert from_file.beta.tolist() == [1, 2, 3] and from_file.evidence == 2.0


def test_kind_and_file_mismatches_are_named(tmp_path):
    with pytest.raises(ValueError, match="mixture.kind=static needs mixture.file"):
        build_schedule("static", _inputs(tmp_path))
    with pytest.raises(ValueError, match="not read by mixture.kind=online"):
        build_schedule("online", _inputs(tmp_path, file="x.json"))
    with pytest.raises(ValueError, match="one of natural"):
        build_schedule("doremi", _inputs(tmp_path))
    static = tmp_path / "s.json"
    static.write_text(json.dumps({"format": "draw-mixture/v1", "domains": ["a", "b", "c"],
                                  "kind": "static", "weights": [0.2, 0.3, 0.5]}))
    with pytest.raises(ValueError, match="online_draw.*holds a 'static'"):
        build_schedule("online_draw", _inputs(tmp_path, file=str(static)))
    assert isinstance(build_schedule("natural", _inputs(tmp_path)), StaticSchedule)
