import json

import numpy as np
import pytest
import torch

from draw_megatron.data.domains import DomainData
from draw_megatron.data.loader import (TRAIN_STREAM, MixtureLoader, ProbeSampler, draw_domains,
                                       occurrence_index)
from draw_megatron.data.manifest import Manifest
from draw_megatron.mixture.kinds import schedule_for as build_schedule
from draw_megatron.mixture.schedule import DirichletSchedule, OnlineSchedule, StaticSchedule
from tests.unit.data.synthetic import decode_items, make_synthetic_root

SIZES = [3, 40, 200, 0, 17]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = make_synthetic_root(str(tmp_path_factory.mktemp("synth")), SIZES)
    data = DomainData(Manifest.load(root), "train")
    yield data
    data.close()


WEIGHTS = np.array([0.1, 0.3, 0.4, 0.0, 0.2])


def _loader(data, dp_rank=0, dp_size=1, global_batch=16, seed=5, schedule=None):
    return MixtureLoader(data, schedule or StaticSchedule(WEIGHTS), global_batch, seed,
                         dp_rank, dp_size)


def _run(loader, steps):
    return [decode_items(loader.next_batch()) for _ in range(steps)]


def test_batch_shapes_and_labels(data):
    batch = _loader(data).next_batch()
    assert batch.tokens.shape == (16, 8) and batch.labels.shape == (16, 8)
    assert batch.tokens.dtype == torch.int64 and batch.domain_ids.dtype == torch.int64
    assert torch.equal(batch.tokens[:, 1:], batch.labels[:, :-1])
    assert batch.domain_ids.tolist() == batch.tokens[:, 0].tolist()


def test_stream_is_the_same_for_dp1_and_dp2(data):
    one = _run(_loader(data), 12)
    r0, r1 = _run(_loader(data, 0, 2), 12), _run(_loader(data, 1, 2), 12)
    assert one == [a + b for a, b in zip(r0, r1)]


def test_stream_is_the_same_for_any_micro_batch(data):
    batch = _loader(data).next_batch()
    for micro in (1, 2, 4, 16):
        parts = batch.micro_batches(micro)
        assert len(parts) == 16 // micro
        assert torch.equal(torch.cat([p.tokens for p in parts]), batch.tokens)
    with pytest.raises(ValueError, match="micro batches of 3"):
        batch.micro_batches(3)


def test_epochs_cover_each_domain_once_then_reshuffle(data):
    loader = _loader(data, global_batch=32)
    uses = {d: [] for d in range(len(SIZES))}
    for _ in range(60):
        for d, j in decode_items(loader.next_batch()):
            uses[d].append(j)
    small = uses[0]  # 3 sequences: a small domain repeats, each epoch a full permutation
    epochs = [small[i:i + 3] for i in range(0, len(small) - 2, 3)]
    assert all(sorted(e) == [0, 1, 2] for e in epochs)
    assert len({tuple(e) for e in epochs}) > 1  # reshuffled across epochs
    big = uses[2]
    assert len(set(big[:200])) == min(200, len(big))  # no repeat inside an epoch
    assert np.allclose(loader.sampler.epochs()[0], len(small) / 3)
    assert uses[3] == []


def test_resume_mid_epoch_reproduces_next_batches(data):
    sched = lambda: DirichletSchedule([0.5, 1, 1, 1e-3, 2], redraw_every=3, seed=9)  # noqa: E731
    full = _loader(data, schedule=sched())
    expected = _run(full, 12)
    first = _loader(data, schedule=sched())
    _run(first, 7)
    state = json.loads(json.dumps(first.state_dict()))  # checkpoints store it as JSON-like
    resumed = _loader(data, schedule=sched())
    resumed.load_state_dict(state)
    assert _run(resumed, 5) == expected[7:]


def test_resume_refuses_other_seed_or_data(data):
    state = _loader(data).state_dict()
    with pytest.raises(ValueError, match="seed"):
        _loader(data, seed=6).load_state_dict(state)
    state["sampler"]["num_sequences"][0] += 1
    with pytest.raises(ValueError, match="other data"):
        _loader(data).load_state_dict(state)


def test_probes_leave_the_training_stream_unchanged(data):
    expected = _run(_loader(data), 6)
    loader = _loader(data)
    probes = ProbeSampler(data, seed=5)
    got = []
    for _ in range(6):
        got.append(decode_items(loader.next_batch()))
        for d in (0, 1, 2, 4):
            batch = probes.domain_batch(d, 2)
            assert {x[0] for x in decode_items(batch)} == {d}
        probes.mixed_batch(3)
    assert got == expected


def test_probe_state_round_trip(data):
    probes = ProbeSampler(data, seed=1, dp_rank=1, dp_size=2)
    probes.domain_batch(2, 4)
    probes.mixed_batch(4)
    again = ProbeSampler(data, seed=1, dp_rank=1, dp_size=2)
    again.load_state_dict(json.loads(json.dumps(probes.state_dict())))
    assert decode_items(again.mixed_batch(4)) == decode_items(probes.mixed_batch(4))
    assert decode_items(again.domain_batch(1, 4)) == decode_items(probes.domain_batch(1, 4))


def test_probe_batches_split_over_dp_ranks(data):
    whole = ProbeSampler(data, seed=3).domain_batch(2, 4)
    halves = [ProbeSampler(data, seed=3, dp_rank=r, dp_size=2).domain_batch(2, 4) for r in (0, 1)]
    assert decode_items(whole) == decode_items(halves[0]) + decode_items(halves[1])
    assert whole.probe_weight == halves[0].probe_weight == halves[1].probe_weight == 1.0


@pytest.mark.parametrize("num,dp", [(5, 3), (2, 3), (1, 2)])
def test_probe_shares_may_be_unequal(data, num, dp):
    """Any global probe size splits over any DP size; the weights make the DP mean of
    per-rank means the mean over the whole probe, and an empty share weighs 0."""
    whole = decode_items(ProbeSampler(data, seed=3).mixed_batch(num))
    shares = [ProbeSampler(data, seed=3, dp_rank=r, dp_size=dp).mixed_batch(num)
              for r in range(dp)]
    kept = [decode_items(b) for b in shares if b.probe_weight > 0]
    assert sum(kept, []) == whole
    sizes = [len(decode_items(b)) if b.probe_weight > 0 else 0 for b in shares]
    assert sizes == [(r + 1) * num // dp - r * num // dp for r in range(dp)]
    assert [b.probe_weight for b in shares] == pytest.approx([n * dp / num for n in sizes])
    assert all(b.tokens.shape[0] >= 1 for b in shares)


def test_empirical_domain_frequencies_match_weights(data):
    # Pearson's chi-square over 20,000 positions; 0.999 quantile of chi2 with 3 dof = 16.27.
    loader = _loader(data, global_batch=200)
    counts = np.zeros(len(SIZES))
    for _ in range(100):
        counts += np.bincount(loader.next_batch().domain_ids.numpy(), minlength=len(SIZES))
    expected = WEIGHTS * counts.sum()
    nz = expected > 0
    chi2 = float(((counts[nz] - expected[nz]) ** 2 / expected[nz]).sum())
    assert counts[3] == 0
    assert chi2 < 16.27, (counts, expected)


def test_schedule_redraws_exactly_every_n_steps_in_the_loader(data):
    loader = _loader(data, schedule=DirichletSchedule([1, 1, 1, 1e-6, 1], 4, seed=2))
    alphas = [loader.next_batch().alpha.copy() for _ in range(13)]
    changed = [not np.array_equal(alphas[t], alphas[t - 1]) for t in range(1, 13)]
    assert changed == [t % 4 == 0 for t in range(1, 13)]


def test_online_weights_apply_from_the_next_step(data):
    sched = OnlineSchedule(WEIGHTS)
    loader = _loader(data, schedule=sched)
    loader.next_batch()
    sched.set_weights([0, 0, 1.0, 0, 0], from_step=loader.step)
    assert set(loader.next_batch().domain_ids.tolist()) == {2}


def test_a_domain_without_sequences_cannot_get_weight(data):
    loader = _loader(data, schedule=StaticSchedule([0, 0, 0, 1.0, 0]))
    with pytest.raises(ValueError, match="'Domain 3', which has no sequence"):
        loader.next_batch()


def test_bad_layouts_are_refused(data):
    with pytest.raises(ValueError, match="multiple of the data-parallel size 3"):
        _loader(data, dp_size=3, global_batch=16)
    with pytest.raises(ValueError, match="mixture has 2 domains"):
        _loader(data, schedule=StaticSchedule([0.5, 0.5]))


def test_build_schedule_kinds(data, tmp_path):
    m = data.manifest
    assert np.allclose(build_schedule("natural", m).weights(0), np.array(SIZES) / sum(SIZES))
    assert np.allclose(build_schedule("uniform", m).weights(0), 0.2)
    rand = build_schedule("random", m, width=256, redraw_every=10, seed=1)
    assert np.allclose(rand.beta, 16 / 5)
    with pytest.raises(ValueError, match="needs mixture.file"):
        build_schedule("dirichlet", m)
    with pytest.raises(ValueError, match="one of"):
        build_schedule("doremi", m)
    path = tmp_path / "mix.json"
    path.write_text(json.dumps({"format": "draw-mixture/v1", "domains": m.domain_names,
                                "kind": "dirichlet", "concentration": [1, 2, 3, 4, 5]}))
    assert build_schedule("dirichlet", m, file=str(path)).beta.tolist() == [1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="holds a 'dirichlet' mixture"):
        build_schedule("static", m, file=str(path))


def test_occurrence_index_and_draws():
    d = np.array([2, 0, 2, 2, 1, 0])
    assert occurrence_index(d, 3).tolist() == [0, 0, 1, 2, 0, 1]
    a = draw_domains(np.array([0.5, 0.0, 0.5]), 1000, 1, TRAIN_STREAM, 0)
    assert 1 not in set(a.tolist())
    assert np.array_equal(a, draw_domains(np.array([0.5, 0.0, 0.5]), 1000, 1, TRAIN_STREAM, 0))


def test_many_domains_load_and_sample(tmp_path):
    k = 4096
    root = make_synthetic_root(str(tmp_path), [1 + d % 3 for d in range(k)], seq_len=4)
    data = DomainData(Manifest.load(root), "train")
    try:
        loader = MixtureLoader(data, build_schedule("uniform", data.manifest), 512, seed=0)
        seen = set()
        for _ in range(4):
            seen.update(decode_items(loader.next_batch()))
        assert len({d for d, _ in seen}) > 1000
        assert all(j < 1 + d % 3 for d, j in seen)
    finally:
        data.close()
