"""Online Data Mixing (ODM; Albalak et al., 2023): the mixture as a multi-armed bandit.

EXP3 over the k domains with the training loss as the reward — a domain whose loss is
high still has something to teach. After every step t (1-based count n = t + 1):

    ε_n   = min(1/k, √(ln k / (k·n)))                         exploration rate
    r_i   = L_i · c_i / (G·π_i)                                 reward estimate
    R̂_i  ← w·R̂_i + (1 − w)·r_i   for the domains in the batch   smoothed estimate
    π_i   = (1 − k·ε_n) · softmax(ε_{n−1}·R̂)_i + ε_n             the next step's weights

L_i is domain i's token-mean training loss over the global batch, c_i its number of
sequences in it and G the global batch. Decision: the paper draws each batch from one
domain and importance-weights the reward by 1/π_i; our batches mix domains (G categorical
draws from π), so the estimate weights by c_i/(G·π_i), whose expectation is 1 — the same
unbiased estimate, and exactly the paper's for G = 1. Domains absent from a batch keep their
estimate. π starts uniform; every number is a function of the all-reduced per-domain sums,
so all ranks agree without a collective of the pass's own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from draw_megatron.config.base import join_key, require
from draw_megatron.passes.base import PassConfig, PassContext, StepInfo, StepOutput, StepPass


def exploration_rate(num_domains: int, n: int) -> float:
    """ε_n = min(1/k, √(ln k / (k·n))), n ≥ 1."""
    return min(1.0 / num_domains, math.sqrt(math.log(num_domains) / (num_domains * n)))


def exp3_policy(estimate: np.ndarray, eps_prev: float, eps: float) -> np.ndarray:
    """(1 − k·ε)·softmax(ε_prev·R̂) + ε."""
    z = eps_prev * estimate
    p = np.exp(z - z.max())
    return (1.0 - estimate.size * eps) * p / p.sum() + eps


class ODMPass(StepPass):
    """Owns the mixture: the EXP3 policy over domains, updated after every step."""

    name = "odm"
    owns_mixture = True

    def __init__(self, cfg: ODMConfig):
        self.cfg = cfg

    def setup(self, ctx: PassContext) -> None:
        k = ctx.manifest.num_domains
        if k < 2:
            raise ValueError("ODM needs at least 2 domains")
        self.estimate = np.zeros(k)
        self.policy = np.full(k, 1.0 / k)
        self.num_updates = 0

    def initial_weights(self) -> np.ndarray:
        return self.policy

    def after_step(self, info: StepInfo) -> StepOutput:
        k = self.policy.size
        counts = np.asarray(info.batch.domain_counts, dtype=np.float64)
        seen = (counts > 0) & (info.counts > 0)
        losses = np.divide(info.sums, info.counts, out=np.zeros(k), where=info.counts > 0)
        reward = np.where(seen, losses * counts / (counts.sum() * self.policy), 0.0)
        w = self.cfg.smoothing
        self.estimate = np.where(seen, w * self.estimate + (1.0 - w) * reward, self.estimate)
        n = self.num_updates + 1
        eps_prev = exploration_rate(k, max(n - 1, 1))
        self.policy = exp3_policy(self.estimate, eps_prev, exploration_rate(k, n))
        self.num_updates = n
        return StepOutput([{"kind": "odm", "step": info.step, "reward": reward.tolist(),
                            "estimate": self.estimate.tolist(), "alpha": self.policy.tolist()}],
                          weights=self.policy)

    def state_dict(self) -> dict:
        return {"estimate": self.estimate.tolist(), "policy": self.policy.tolist(),
                "num_updates": self.num_updates}

    def load_state_dict(self, state: dict) -> None:
        self.estimate = np.asarray(state["estimate"], dtype=np.float64)
        self.policy = np.asarray(state["policy"], dtype=np.float64)
        self.num_updates = int(state["num_updates"])


@dataclass(kw_only=True)
class ODMConfig(PassConfig):
    """Online Data Mixing, an EXP3 bandit over domains (``passes: [odm]``,
    ``mixture.kind=online``)."""

    SECTION: ClassVar[str] = "odm"
    PASS: ClassVar[type[StepPass]] = ODMPass

    smoothing: float = 0.9
    """w in R̂ ← w·R̂ + (1 − w)·r (the paper's reward smoothing)."""

    def validate(self, prefix: str | None = None) -> None:
        key = join_key(prefix if prefix is not None else self.SECTION, "smoothing")
        require(0 <= self.smoothing < 1, f"{key}={self.smoothing} must be in [0, 1)")
