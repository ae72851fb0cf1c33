"""Stratified batches (the DRO proxy's, docs/algorithms.md §2): equal shares of every domain, the
remainder to distinct seeded domains, shuffled positions, independent of DP size, resumable."""

import json

import numpy as np
import pytest
import torch

from draw_megatron.data.domains import DomainData
from draw_megatron.data.loader import MixtureLoader, stratified_domains
from draw_megatron.data.manifest import Manifest
from draw_megatron.mixture.schedule import OnlineSchedule, StaticSchedule
from tests.unit.data.synthetic import decode_items, make_synthetic_root

SIZES = [3, 40, 200, 17]
K = len(SIZES)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = make_synthetic_root(str(tmp_path_factory.mktemp("strat")), SIZES)
    data = DomainData(Manifest.load(root), "train")
    yield data
    data.close()


def _loader(data, global_batch=10, dp_rank=0, dp_size=1, seed=3, schedule=None):
    return MixtureLoader(data, schedule or StaticSchedule([0.7, 0.1, 0.1, 0.1]), global_batch,
                         seed, dp_rank, dp_size, stratified=True)


def _global_domains(data, steps, global_batch=10):
    loader = _loader(data, global_batch)
    return [loader.next_batch().domain_ids.numpy() for _ in range(steps)]


def test_every_domain_gets_an_equal_share_and_the_rest_to_distinct_domains(data):
    extras = set()
    for domains in _global_domains(data, 20):  # G = 10, k = 4: 2 each, 2 more
        counts = np.bincount(domains, minlength=K)
        assert sorted(counts.tolist()) == [2, 2, 3, 3]
        extras.add(tuple(np.flatnonzero(counts == 3)))
    assert len(extras) > 1  # the remainder's domains change with the step's seed


def test_exact_multiple_has_no_remainder_and_weights_do_not_matter(data):
    for domains in _global_domains(data, 5, global_batch=8):
        assert np.bincount(domains, minlength=K).tolist() == [2, 2, 2, 2]
    skewed = _loader(data, 8, schedule=StaticSchedule([1.0, 0.0, 0.0, 0.0])).next_batch()
    assert np.bincount(skewed.domain_ids.numpy(), minlength=K).tolist() == [2, 2, 2, 2]
    assert skewed.alpha.tolist() == [1.0, 0.0, 0.0, 0.0]  # reported, not sampled from


def test_positions_are_shuffled(data):
    orders = [tuple(d) for d in _global_domains(data, 10, global_batch=40)]
    assert all(list(o) != sorted(o) for o in orders)
    assert len(set(orders)) == len(orders)


def test_domain_counts_of_the_global_batch_reach_every_rank_and_micro_batch(data):
    whole = _loader(data).next_batch()
    want = np.bincount(whole.domain_ids.numpy(), minlength=K)
    for rank in range(2):
        batch = _loader(data, dp_rank=rank, dp_size=2).next_batch()
        assert batch.domain_counts.tolist() == want.tolist()
        assert all(m.domain_counts.tolist() == want.tolist() for m in batch.micro_batches(1))


def test_stream_is_the_same_for_dp1_and_dp2(data):
    one, r0, r1 = _loader(data), _loader(data, dp_rank=0, dp_size=2), \
        _loader(data, dp_rank=1, dp_size=2)
    for _ in range(12):
        assert decode_items(one.next_batch()) == \
            decode_items(r0.next_batch()) + decode_items(r1.next_batch())


def test_seeded_by_seed_and_step():
    a = stratified_domains(4, 10, seed=1, stream=0, counter=5)
    assert np.array_equal(a, stratified_domains(4, 10, seed=1, stream=0, counter=5))
    assert not np.array_equal(a, stratified_domains(4, 10, seed=1, stream=0, counter=6))
    assert not np.array_equal(a, stratified_domains(4, 10, seed=2, stream=0, counter=5))


def test_resume_reproduces_next_batches(data):
    first = _loader(data, schedule=OnlineSchedule([0.25] * 4))
    for _ in range(7):
        first.next_batch()
    state = json.loads(json.dumps(first.state_dict()))
    resumed = _loader(data, schedule=OnlineSchedule([0.25] * 4))
    resumed.load_state_dict(state)
    for _ in range(5):
        a, b = first.next_batch(), resumed.next_batch()
        assert torch.equal(a.tokens, b.tokens) and torch.equal(a.domain_ids, b.domain_ids)


def test_resume_refuses_the_other_draw_mode(data):
    plain = MixtureLoader(data, StaticSchedule([0.7, 0.1, 0.1, 0.1]), 10, 3)
    with pytest.raises(ValueError, match="mixture-drawn batches, this run stratified"):
        _loader(data).load_state_dict(plain.state_dict())
    with pytest.raises(ValueError, match="stratified batches, this run mixture-drawn"):
        plain.load_state_dict(_loader(data).state_dict())


def test_global_batch_smaller_than_k_is_an_error(data):
    with pytest.raises(ValueError, match=r"train.global_batch=3 is smaller than the 4 domains"):
        _loader(data, global_batch=3)
    with pytest.raises(ValueError, match="train.global_batch=2"):
        stratified_domains(4, 2, seed=0, stream=0, counter=0)


def test_an_empty_domain_cannot_be_stratified(tmp_path):
    root = make_synthetic_root(str(tmp_path), [5, 0, 5])
    data = DomainData(Manifest.load(root), "train")
    try:
        with pytest.raises(ValueError, match=r"\['Domain 1'\] have no sequence"):
            MixtureLoader(data, StaticSchedule([0.5, 0, 0.5]), 6, 0, stratified=True)
    finally:
        data.close()
