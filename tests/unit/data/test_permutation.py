import numpy as np
import pytest

from draw_megatron.data.permutation import derive_key, permute


@pytest.mark.parametrize("n", [1, 2, 3, 5, 17, 64, 1000, 4097])
def test_is_a_permutation(n):
    out = permute(np.arange(n), n, derive_key(7, 3))
    assert sorted(out.tolist()) == list(range(n))


def test_keys_give_different_orders_and_same_key_same_order():
    n = 500
    a = permute(np.arange(n), n, derive_key(1, 0, 0))
    b = permute(np.arange(n), n, derive_key(1, 0, 1))
    assert not np.array_equal(a, b)
    assert np.array_equal(a, permute(np.arange(n), n, derive_key(1, 0, 0)))


def test_mixed_sizes_and_keys_match_elementwise_calls():
    sizes = np.array([3, 100, 7, 100, 1, 33])
    keys = derive_key(5, np.arange(6))
    idx = np.array([2, 99, 0, 5, 0, 32])
    batch = permute(idx, sizes, keys)
    single = [permute(i, n, k) for i, n, k in zip(idx, sizes, keys)]
    assert batch.tolist() == [int(s) for s in single]


def test_large_domain_without_materialising():
    n = 10**9 + 7
    idx = np.array([0, 1, n - 1])
    out = permute(idx, n, derive_key(0))
    assert np.all((out >= 0) & (out < n)) and len(set(out.tolist())) == 3


def test_shuffles_well():
    # Consecutive items of one permutation land far apart on average.
    n = 10000
    out = permute(np.arange(n), n, derive_key(11))
    assert abs(np.corrcoef(np.arange(n), out)[0, 1]) < 0.05


def test_index_out_of_range_is_an_error():
    with pytest.raises(ValueError):
        permute(np.array([5]), 5, derive_key(0))
