"""DGA's weight update (docs/algorithms.md §3; DGA paper Eq. 6 and Algorithm 1), without any torch.

Every T_r steps, given alignment scores a (one per reweighted unit: a domain, or a basis
distribution under distribution reweighting):

    α ← α ⊙ exp(η a) / Σ(α ⊙ exp(η a))          (mirror descent; the paper's line 9 prints
                                                  exp(−η a): a typo, docs/algorithms.md §3)
    α_EMA ← (1 − w) α_EMA + w α                   (w = dga.ema_weight)

Batches come from mix(α_EMA) (or mix(P α_EMA) over a basis P). The trajectory of the
sampling weights is kept; its mean is the run's alignment-based α* (docs/algorithms.md §3.10).
"""

from __future__ import annotations

import numpy as np

from draw_megatron.mixture.files import SIMPLEX_TOL


def mirror_step(alpha: np.ndarray, scores: np.ndarray, eta: float) -> np.ndarray:
    """α ⊙ exp(η a), normalised; computed in log space so large η·a cannot overflow."""
    alpha = np.asarray(alpha, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    if alpha.shape != scores.shape:
        raise ValueError(f"{alpha.size} weights but {scores.size} alignment scores")
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"alignment scores must be finite, got {scores.tolist()}")
    with np.errstate(divide="ignore"):  # a weight of exactly 0 stays 0
        logits = np.log(alpha) + eta * scores
    logits -= logits.max()
    new = np.exp(logits)
    return new / new.sum()


def ema_step(alpha_ema: np.ndarray, alpha: np.ndarray, weight: float) -> np.ndarray:
    """(1 − w) α_EMA + w α, renormalised against rounding."""
    out = (1.0 - weight) * np.asarray(alpha_ema, dtype=np.float64) + weight * np.asarray(alpha)
    return out / out.sum()


class DGAState:
    """α, α_EMA and the trajectory of updates; everything a checkpoint needs."""

    def __init__(self, alpha_init: np.ndarray, eta: float, ema_weight: float):
        alpha_init = np.asarray(alpha_init, dtype=np.float64)
        if alpha_init.ndim != 1 or alpha_init.size < 1:
            raise ValueError("alpha_init must be a non-empty vector")
        if np.any(alpha_init < 0) or abs(alpha_init.sum() - 1.0) > SIMPLEX_TOL:
            raise ValueError(f"alpha_init must lie on the simplex, got {alpha_init.tolist()}")
        if not (eta > 0 and np.isfinite(eta)):
            raise ValueError(f"eta must be finite and > 0, got {eta}")
        if not 0 < ema_weight <= 1:
            raise ValueError(f"ema_weight must be in (0, 1], got {ema_weight}")
        self.eta, self.ema_weight = float(eta), float(ema_weight)
        self.alpha_init = alpha_init / alpha_init.sum()
        self.alpha = self.alpha_init.copy()
        self.alpha_ema = self.alpha_init.copy()
        self.steps: list[int] = []
        self.scores: list[np.ndarray] = []
        self.alphas: list[np.ndarray] = []
        self.emas: list[np.ndarray] = []

    def update(self, scores: np.ndarray, step: int) -> tuple[np.ndarray, np.ndarray]:
        """One DGA update after step ``step``; returns (α, α_EMA)."""
        self.alpha = mirror_step(self.alpha, scores, self.eta)
        self.alpha_ema = ema_step(self.alpha_ema, self.alpha, self.ema_weight)
        self.steps.append(int(step))
        self.scores.append(np.asarray(scores, dtype=np.float64).copy())
        self.alphas.append(self.alpha.copy())
        self.emas.append(self.alpha_ema.copy())
        return self.alpha, self.alpha_ema

    @property
    def num_updates(self) -> int:
        return len(self.steps)

    def mean_sampling_weights(self) -> np.ndarray:
        """Mean of α_EMA over the updates (the weights batches came from); α_0 if none."""
        if not self.emas:
            return self.alpha_init.copy()
        mean = np.mean(np.stack(self.emas), axis=0)
        return mean / mean.sum()

    def state_dict(self) -> dict:
        return {"alpha_init": self.alpha_init.tolist(), "alpha": self.alpha.tolist(),
                "alpha_ema": self.alpha_ema.tolist(), "steps": list(self.steps),
                "scores": [s.tolist() for s in self.scores],
                "alphas": [a.tolist() for a in self.alphas],
                "emas": [a.tolist() for a in self.emas]}

    def load_state_dict(self, state: dict) -> None:
        alpha_init = np.asarray(state["alpha_init"], dtype=np.float64)
        if alpha_init.shape != self.alpha_init.shape:
            raise ValueError(f"the checkpoint's DGA state has {alpha_init.size} weights; this run "
                             f"reweights {self.alpha_init.size}")
        self.alpha_init = alpha_init
        self.alpha = np.asarray(state["alpha"], dtype=np.float64)
        self.alpha_ema = np.asarray(state["alpha_ema"], dtype=np.float64)
        self.steps = [int(s) for s in state["steps"]]
        self.scores = [np.asarray(s, dtype=np.float64) for s in state["scores"]]
        self.alphas = [np.asarray(a, dtype=np.float64) for a in state["alphas"]]
        self.emas = [np.asarray(a, dtype=np.float64) for a in state["emas"]]
