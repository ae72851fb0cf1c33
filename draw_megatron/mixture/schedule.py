"""Mixture schedules: which domain weights α_t a training step uses (DESIGN.md Contract 3).

Pure numpy, no torch.distributed: a Dirichlet schedule takes a ``broadcast`` callable that
the data layer wires to ``torch.distributed.broadcast`` from global rank 0.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

# Distinct streams of randomness derived from the run seed (see np.random.SeedSequence).
DIRICHLET_STREAM = 0x44495220  # "DIR "

Broadcast = Callable[[np.ndarray], np.ndarray]


def _as_weights(alpha, k: int | None = None) -> np.ndarray:
    alpha = np.asarray(alpha, dtype=np.float64)
    if alpha.ndim != 1 or (k is not None and alpha.size != k):
        raise ValueError(f"weights must be a vector of {k or 'k'} values, got shape {alpha.shape}")
    if not np.all(np.isfinite(alpha)) or np.any(alpha < 0) or abs(alpha.sum() - 1.0) > 1e-6:
        raise ValueError(f"weights must be finite, >= 0 and sum to 1; got {alpha.tolist()}")
    return alpha / alpha.sum()


class StaticSchedule:
    """The same weights at every step (natural, uniform, a file's fixed α, DoReMi's α*)."""

    kind = "static"

    def __init__(self, weights):
        self.alpha = _as_weights(weights)

    @property
    def num_domains(self) -> int:
        return self.alpha.size

    def weights(self, step: int) -> np.ndarray:
        return self.alpha

    def changes_at(self, step: int) -> bool:
        return step == 0

    def state_dict(self) -> dict:
        return {"kind": self.kind, "alpha": self.alpha.tolist()}

    def load_state_dict(self, state: dict) -> None:
        _check_kind(self.kind, state)


class DirichletSchedule:
    """α_t ~ Dir(β), redrawn every ``redraw_every`` steps (DRAW Algorithm 1, Phase 3).

    The draw for window w = ⌊t / N⌋ comes from a generator seeded by (seed, w), made on the
    source rank (global rank 0) and handed to ``broadcast``, so every rank holds rank 0's
    draw, and a resumed run redraws nothing it already used.
    """

    kind = "dirichlet"

    def __init__(self, concentration, redraw_every: int, seed: int,
                 broadcast: Broadcast | None = None, is_source: bool = True):
        beta = np.asarray(concentration, dtype=np.float64)
        if beta.ndim != 1 or not np.all(np.isfinite(beta)) or np.any(beta <= 0):
            raise ValueError(f"concentration must be finite and > 0, got {beta.tolist()}")
        if redraw_every < 1:
            raise ValueError(f"redraw_every must be >= 1, got {redraw_every}")
        self.beta, self.redraw_every, self.seed = beta, int(redraw_every), int(seed)
        self.broadcast, self.is_source = broadcast, is_source
        self._window: int | None = None
        self._alpha = np.zeros_like(beta)

    @property
    def num_domains(self) -> int:
        return self.beta.size

    def draw(self, window: int) -> np.ndarray:
        """The window's draw, computed locally (what the source rank broadcasts)."""
        rng = np.random.default_rng([self.seed, DIRICHLET_STREAM, window])
        alpha = rng.dirichlet(self.beta)
        return alpha / alpha.sum()

    def weights(self, step: int) -> np.ndarray:
        window = step // self.redraw_every
        if window != self._window:
            alpha = self.draw(window) if self.is_source else np.zeros_like(self.beta)
            self._alpha = self.broadcast(alpha) if self.broadcast is not None else alpha
            self._window = window
        return self._alpha

    def changes_at(self, step: int) -> bool:
        return step % self.redraw_every == 0

    def state_dict(self) -> dict:
        return {"kind": self.kind, "window": self._window, "alpha": self._alpha.tolist()}

    def load_state_dict(self, state: dict) -> None:
        _check_kind(self.kind, state)
        self._window = state["window"]
        self._alpha = np.asarray(state["alpha"], dtype=np.float64)


class OnlineSchedule:
    """Weights set by an online method (DRO, DGA) through :meth:`set_weights`.

    Weights set after step t's optimizer step apply from step t + 1 on; ``version`` counts
    the updates so a prefetcher can tell that a batch it built early is stale.
    """

    kind = "online"

    def __init__(self, initial):
        self._alpha = _as_weights(initial)
        self._from_step = 0
        self.version = 0

    @property
    def num_domains(self) -> int:
        return self._alpha.size

    def set_weights(self, alpha, from_step: int) -> None:
        self._alpha = _as_weights(alpha, self._alpha.size)
        self._from_step = int(from_step)
        self.version += 1

    def weights(self, step: int) -> np.ndarray:
        if step < self._from_step:
            raise RuntimeError(f"step {step} asked for after weights were set from step "
                               f"{self._from_step}: the loader ran ahead of the schedule")
        return self._alpha

    def changes_at(self, step: int) -> bool:
        return step == self._from_step

    def state_dict(self) -> dict:
        return {"kind": self.kind, "alpha": self._alpha.tolist(), "from_step": self._from_step,
                "version": self.version}

    def load_state_dict(self, state: dict) -> None:
        _check_kind(self.kind, state)
        self._alpha = np.asarray(state["alpha"], dtype=np.float64)
        self._from_step, self.version = int(state["from_step"]), int(state["version"])


def _check_kind(kind: str, state: dict) -> None:
    if state.get("kind") != kind:
        raise ValueError(f"checkpoint holds a {state.get('kind')!r} mixture schedule, but this "
                         f"run uses {kind!r}")


MixtureSchedule = StaticSchedule | DirichletSchedule | OnlineSchedule
