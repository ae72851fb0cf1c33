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
    shape = index.shape
    index, n, key = index.ravel(), n.ravel(), key.ravel()
    # The network runs on the smallest bit width covering n (so fewer than 2 walks expected):
    # an unbalanced Feistel network whose halves trade widths every round.
    n_int = n.astype(np.int64)
    bits = np.maximum(np.ceil(np.log2(np.maximum(n_int, 1))).astype(np.int64), 1)
    bits += np.left_shift(np.int64(1), bits) < n_int  # log2 may round down for huge n
    width_right = (bits // 2).astype(np.uint64)
    width_left = (bits - bits // 2).astype(np.uint64)
    with np.errstate(over="ignore"):
        round_keys = np.stack([mix64(key ^ (np.uint64(r + 1) * _GOLDEN)) for r in range(_ROUNDS)])

    out = np.empty_like(index)
    x = index.copy()
    todo = np.arange(index.size)  # cycle-walk until every value lands below n
    while todo.size:
        y = _feistel(x[todo], width_left[todo], width_right[todo], round_keys[:, todo])
        x[todo] = y
        done = y < n[todo]
        out[todo[done]] = y[done]
        todo = todo[~done]
    return out.astype(np.int64).reshape(shape)


def _feistel(x: np.ndarray, width_left: np.ndarray, width_right: np.ndarray,
             round_keys: np.ndarray) -> np.ndarray:
    one = np.uint64(1)
    left, right = x >> width_right, x & ((one << width_right) - one)
    wl, wr = width_left, width_right
    for rk in round_keys:
        # (L: wl bits, R: wr bits) -> (R: wr bits, L ^ F(R): wl bits); invertible.
        left, right = right, left ^ (mix64(right ^ rk) & ((one << wl) - one))
        wl, wr = wr, wl
    return (left << wr) | right
