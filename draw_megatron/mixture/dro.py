"""The proxy DRO weight update (docs/algorithms.md §2, DRAW Eq. 2 following DoReMi). Pure numpy.

Each proxy step t turns the per-domain excess losses λ (already clipped per token and
reduced over the whole global batch, all DP ranks, by the caller) into new weights:

    α' = α_{t−1} ⊙ exp(η λ)
    α_t = (1 − c)·α'/Σα' + c/k

and the proxy's output is α* = (1/T)·Σ_{t=1..T} α_t, with the whole trajectory.
"""

from __future__ import annotations

import math

import numpy as np

from draw_megatron.mixture.draw import check_simplex


def _check_step_size(eta: float, smoothing: float) -> None:
    if not (math.isfinite(eta) and eta > 0):
        raise ValueError(f"eta={eta} must be finite and > 0")
    if not 0 <= smoothing < 1:
        raise ValueError(f"smoothing c={smoothing} must be in [0, 1)")


def excess_loss(sums, counts) -> np.ndarray:
    """Per-domain excess λ_i = sums_i / counts_i (docs/algorithms.md §2).

    ``sums`` holds each domain's summed per-token excess (clipped at 0) and ``counts`` its
    token count, both over the whole global batch. A domain with no token (count 0) gets
    λ_i = 0: no evidence moves its weight multiplicatively, so it only shrinks relative to
    domains with positive excess. (The DRO batch is stratified, so this is a guard, not the
    normal case.)
    """
    sums = np.asarray(sums, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.float64)
    if sums.ndim != 1 or sums.shape != counts.shape:
        raise ValueError(f"sums and counts must be vectors of the same length, got shapes "
                         f"{sums.shape} and {counts.shape}")
    if not (np.all(np.isfinite(sums)) and np.all(np.isfinite(counts))):
        raise ValueError(f"sums and counts must be finite, got {sums.tolist()} and "
                         f"{counts.tolist()}")
    if np.any(counts < 0):
        raise ValueError(f"counts must be >= 0, got {counts.tolist()}")
    out = np.zeros_like(sums)
    present = counts > 0
    out[present] = sums[present] / counts[present]
    return out


def dro_update(alpha_prev, excess, eta: float = 1.0, smoothing: float = 1e-3) -> np.ndarray:
    """One DRO step: α' = α_{t−1} ⊙ exp(η λ); α_t = (1 − c)·α'/Σα' + c/k (docs/algorithms.md §2).

    Computed in log space with the maximum m subtracted,
    α'_i ∝ exp(log α_{t−1,i} + ηλ_i − m), so exp never overflows however large the excess
    (the largest term is exp(0) = 1). With c > 0 every α_t,i ≥ c/k.
    """
    _check_step_size(eta, smoothing)
    alpha_prev = check_simplex(alpha_prev, "alpha_prev")
    excess = np.asarray(excess, dtype=np.float64)
    if excess.shape != alpha_prev.shape:
        raise ValueError(f"excess has shape {excess.shape} but alpha has {alpha_prev.shape}")
    if not np.all(np.isfinite(excess)):
        raise ValueError(f"excess losses must be finite, got {excess.tolist()}")
    with np.errstate(over="ignore"):  # reported below as a ValueError
        scaled = eta * excess
    if not np.all(np.isfinite(scaled)):
        raise ValueError(f"eta·excess overflows float64 (eta={eta}, excess={excess.tolist()})")
    with np.errstate(divide="ignore"):  # a zero weight (possible with c = 0) stays zero
        logits = np.log(alpha_prev) + scaled
    weights = np.exp(logits - logits.max())
    k = alpha_prev.size
    return (1.0 - smoothing) * weights / weights.sum() + smoothing / k


class DROState:
    """The DRO pass's weights: the current α_t, the running mean α* and the trajectory.

    Step t's loss is weighted with :attr:`alpha` (= α_{t−1}); :meth:`update` then applies
    step t's excess losses. α* averages α_1 … α_T, the weights the updates produced; α_0 (the
    draw from the DRAW prior) is not a DRO output and is not counted.
    """

    def __init__(self, alpha_init, eta: float = 1.0, smoothing: float = 1e-3,
                 keep_trajectory: bool = True):
        _check_step_size(eta, smoothing)
        self.eta, self.smoothing = float(eta), float(smoothing)
        self.keep_trajectory = keep_trajectory
        self.alpha_init = check_simplex(alpha_init, "alpha_init")
        self.alpha = self.alpha_init.copy()
        self.num_steps = 0
        self._alpha_sum = np.zeros_like(self.alpha)
        self.trajectory: list[np.ndarray] = []

    @property
    def num_domains(self) -> int:
        return self.alpha.size

    def update(self, excess) -> np.ndarray:
        """Apply one step's per-domain excess λ; return the new α_t."""
        self.alpha = dro_update(self.alpha, excess, self.eta, self.smoothing)
        self.num_steps += 1
        self._alpha_sum += self.alpha
        if self.keep_trajectory:
            self.trajectory.append(self.alpha.copy())
        return self.alpha

    def average(self) -> np.ndarray:
        """α* = mean of α_t over the steps taken so far (renormalised against round-off)."""
        if self.num_steps == 0:
            raise ValueError("no DRO step taken yet: α* is the mean of α_1 … α_T, T >= 1")
        mean = self._alpha_sum / self.num_steps
        return mean / mean.sum()

    def state_dict(self) -> dict:
        """Plain Python values (lists, floats), exact for float64."""
        return {"alpha_init": self.alpha_init.tolist(), "alpha": self.alpha.tolist(),
                "num_steps": self.num_steps, "alpha_sum": self._alpha_sum.tolist(),
                "eta": self.eta, "smoothing": self.smoothing,
                "trajectory": [a.tolist() for a in self.trajectory]}

    def load_state_dict(self, state: dict) -> None:
        alpha = np.asarray(state["alpha"], dtype=np.float64)
        if alpha.shape != self.alpha.shape:
            raise ValueError(f"checkpoint holds DRO weights for {alpha.size} domains, this run "
                             f"has {self.alpha.size}")
        if (state["eta"], state["smoothing"]) != (self.eta, self.smoothing):
            raise ValueError(f"checkpoint's DRO used eta={state['eta']}, smoothing="
                             f"{state['smoothing']}; this run sets eta={self.eta}, "
                             f"smoothing={self.smoothing}")
        self.alpha_init = np.asarray(state["alpha_init"], dtype=np.float64)
        self.alpha = alpha
        self.num_steps = int(state["num_steps"])
        self._alpha_sum = np.asarray(state["alpha_sum"], dtype=np.float64)
        self.trajectory = [np.asarray(a, dtype=np.float64) for a in state["trajectory"]]
