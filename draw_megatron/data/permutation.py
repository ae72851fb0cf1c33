"""Seeded permutations of [0, n) evaluated pointwise, vectorised, in O(1) memory.

A domain of The Pile holds up to ~10^8 sequences; materialising a permutation per domain
and epoch would cost gigabytes per rank. Instead ``permute(i, n, key)`` evaluates a keyed
bijection: a 4-round Feistel network on the smallest even number of bits covering n, with
cycle-walking to stay inside [0, n) (Black & Rogaway, "Ciphers with arbitrary finite
domains"). Each element may have its own n and key, so one call serves a whole batch drawn
from many domains and epochs.
"""

from __future__ import annotations

import numpy as np

_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_ROUNDS = 4


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijective, well-mixing hash of uint64 values."""
    x = np.asarray(x, dtype=np.uint64)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def derive_key(*parts) -> np.ndarray:
    """A uint64 key (or array of keys) from integer parts, e.g. (seed, stream, domain, epoch)."""
    key = np.uint64(0)
    with np.errstate(over="ignore"):
        for part in parts:
            key = mix64(np.asarray(part).astype(np.uint64) ^ (key * _GOLDEN + _GOLDEN))
    return key


def permute(index, n, key) -> np.ndarray:
    """π_key(index) for the keyed permutation π_key of [0, n); index < n elementwise.

    ``index``, ``n`` and ``key`` broadcast against each other. Deterministic across
    platforms (pure uint64 arithmetic).
    """
    index, n, key = np.broadcast_arrays(np.asarray(index, dtype=np.uint64),
                                        np.asarray(n, dtype=np.uint64),
                                        np.asarray(key, dtype=np.uint64))
    if np.any(index >= n):
        raise ValueError("permute: index must be < n")
    n_int = n.astype(np.int64)
    bits = np.maximum(np.ceil(np.log2(np.maximum(n_int, 2))).astype(np.int64), 2)
    bits += bits & 1  # even split into two halves
    # np.log2 of large n may round down: make sure 2**bits >= n.
    bits += 2 * (np.left_shift(np.int64(1), bits, dtype=np.int64) < n_int)
    half = (bits // 2).astype(np.uint64)
    mask = (np.uint64(1) << half) - np.uint64(1)
    with np.errstate(over="ignore"):
        round_keys = [mix64(key ^ (np.uint64(r + 1) * _GOLDEN)) for r in range(_ROUNDS)]

    out = index.copy()
    todo = np.ones(out.shape, dtype=bool)  # cycle-walk until every value lands below n
    x = out.copy()
    while todo.any():
        x = np.where(todo, _feistel(x, half, mask, round_keys), x)
        done_now = todo & (x < n)
        out[done_now] = x[done_now]
        todo &= ~done_now
    return out.astype(np.int64)


def _feistel(x: np.ndarray, half: np.ndarray, mask: np.ndarray, round_keys) -> np.ndarray:
    left, right = x >> half, x & mask
    for rk in round_keys:
        left, right = right, left ^ (mix64(right ^ rk) & mask)
    return (left << half) | right
