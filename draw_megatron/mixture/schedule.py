"""Mixture schedules: which domain weights α_t a training step uses (docs/architecture.md,
Contract 3). Every kind implements the :class:`Schedule` protocol; the kinds a config may
name are registered in ``draw_megatron.mixture.kinds``.

Pure numpy, no torch.distributed: a Dirichlet schedule takes a ``broadcast`` callable that
the trainer wires to ``draw_megatron.parallel.broadcast_from_rank0``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import numpy as np

from draw_megatron.mixture.draw import dirichlet_moments
from draw_megatron.mixture.files import SIMPLEX_TOL

# Distinct streams of randomness derived from the run seed (see np.random.SeedSequence).
DIRICHLET_STREAM = 0x44495220  # "DIR "

Broadcast = Callable[[np.ndarray], np.ndarray]


@runtime_checkable
class Schedule(Protocol):
    """What the loader and the trainer need of a mixture schedule.

    ``weights(step)`` is asked for steps in increasing order; every rank must get the same
    vector (a random kind draws on one source rank and broadcasts). ``changes_at(step)``
    says when a ``mixture`` record is due; ``record()`` adds the kind's own fields to it.
    """

    kind: str
    accepts_updates: bool
    """True: a mixture-owning step pass feeds it through ``update`` (online kinds)."""

    @property
    def num_domains(self) -> int: ...

    def weights(self, step: int) -> np.ndarray: ...

    def expected_weights(self) -> np.ndarray:
        """E[α_t] now (the weights themselves for deterministic kinds); no collective."""
        ...

    def changes_at(self, step: int) -> bool: ...

    def record(self) -> dict: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


def as_weights(alpha, k: int | None = None) -> np.ndarray:
    """``alpha`` as float64 weights on the simplex (≥ 0, Σ = 1 ± SIMPLEX_TOL), renormalised."""
    alpha = np.asarray(alpha, dtype=np.float64)
    if alpha.ndim != 1 or (k is not None and alpha.size != k):
        raise ValueError(f"weights must be a vector of {k or 'k'} values, got shape {alpha.shape}")
    if (not np.all(np.isfinite(alpha)) or np.any(alpha < 0)
            or abs(alpha.sum() - 1.0) > SIMPLEX_TOL):
        raise ValueError(f"weights must be finite, >= 0 and sum to 1; got {alpha.tolist()}")
    return alpha / alpha.sum()


class StaticSchedule:
    """The same weights at every step (natural, uniform, a file's fixed α, DoReMi's α*)."""

    kind = "static"
    accepts_updates = False

    def __init__(self, weights):
        self.alpha = as_weights(weights)

    @property
    def num_domains(self) -> int:
        return self.alpha.size

    def weights(self, step: int) -> np.ndarray:
        return self.alpha

    def expected_weights(self) -> np.ndarray:
        return self.alpha

    def changes_at(self, step: int) -> bool:
        return step == 0

    def record(self) -> dict:
        return {}

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
    accepts_updates = False

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

    def expected_weights(self) -> np.ndarray:
        return self.beta / self.beta.sum()

    def changes_at(self, step: int) -> bool:
        return step % self.redraw_every == 0

    def record(self) -> dict:
        return {}

    def state_dict(self) -> dict:
        return {"kind": self.kind, "window": self._window, "alpha": self._alpha.tolist()}

    def load_state_dict(self, state: dict) -> None:
        _check_kind(self.kind, state)
        self._window = state["window"]
        self._alpha = np.asarray(state["alpha"], dtype=np.float64)


class OnlineSchedule:
    """Weights set by the run's mixture-owning step pass (DRO, DGA, ODM) through
    :meth:`update`; they start from ``initial`` (the natural weights) until the pass gives
    its α_0 (:meth:`start_from`).

    Weights set after step t's optimizer step apply from step t + 1 on; ``version`` counts
    the updates so a prefetcher can tell that a batch it built early is stale.
    """

    kind = "online"
    accepts_updates = True

    def __init__(self, initial):
        self._alpha = as_weights(initial)
        self._from_step = 0
        self.version = 0

    @property
    def num_domains(self) -> int:
        return self._alpha.size

    def start_from(self, alpha) -> None:
        """The owning pass's α_0, used from step 0."""
        self.update(alpha, 0)

    def update(self, alpha, from_step: int) -> None:
        """The owning pass's new weights, used from ``from_step`` on."""
        self._alpha = as_weights(alpha, self._alpha.size)
        self._from_step = int(from_step)
        self.version += 1

    set_weights = update

    def weights(self, step: int) -> np.ndarray:
        if step < self._from_step:
            raise RuntimeError(f"step {step} asked for after weights were set from step "
                               f"{self._from_step}: the loader ran ahead of the schedule")
        return self._alpha

    def expected_weights(self) -> np.ndarray:
        return self._alpha

    def changes_at(self, step: int) -> bool:
        return step == self._from_step

    def record(self) -> dict:
        return {}

    def state_dict(self) -> dict:
        return {"kind": self.kind, "alpha": self._alpha.tolist(), "from_step": self._from_step,
                "version": self.version}

    def load_state_dict(self, state: dict) -> None:
        _check_kind(self.kind, state)
        self._alpha = np.asarray(state["alpha"], dtype=np.float64)
        self._from_step, self.version = int(state["from_step"]), int(state["version"])


class OnlineDrawSchedule(DirichletSchedule):
    """Online DRAW: α_t ~ Dir(β) redrawn every N steps as in :class:`DirichletSchedule`, with
    a concentration β that evidence updates during the run (docs/algorithms.md §7.1).

    The run's mixture-owning pass gives evidence α_ev ∈ Δ^k through :meth:`update` (DRO
    excess losses of the model against a reference, or DGA alignment weights), and

        β ← ρ·β + s·α_ev

    (ρ = ``forget``, s = ``evidence``): ρ = 1 applies the DRAW posterior (Eq. 3) again with
    every piece of evidence, so the total concentration grows by s per update and the draws
    tighten around the evidence; ρ < 1 discounts old evidence, bounding Σβ by
    ρ^m·Σβ_0 + s/(1 − ρ). An update applies from the next window: α_t stays constant within
    each N-step window. With s = 0 and ρ = 1 the draws equal a plain Dirichlet schedule's.
    """

    kind = "online_draw"
    accepts_updates = True

    def __init__(self, concentration, redraw_every: int, seed: int, *, evidence: float = 1.0,
                 forget: float = 1.0, broadcast: Broadcast | None = None,
                 is_source: bool = True):
        super().__init__(concentration, redraw_every, seed, broadcast, is_source)
        if not (np.isfinite(evidence) and evidence >= 0):
            raise ValueError(f"evidence s={evidence} must be finite and >= 0")
        if not 0 < forget <= 1:
            raise ValueError(f"forget rho={forget} must be in (0, 1]")
        self.evidence, self.forget = float(evidence), float(forget)
        self.num_updates = 0
        self._updated_from: int | None = None

    def start_from(self, alpha) -> None:
        """Nothing: the draws start from β, not from the owning pass's α_0."""

    def update(self, evidence, from_step: int) -> None:
        """β ← ρ·β + s·α_ev; the next window's draw uses the new β."""
        alpha_ev = as_weights(evidence, self.beta.size)
        self.beta = self.forget * self.beta + self.evidence * alpha_ev
        self.num_updates += 1
        self._updated_from = int(from_step)

    def changes_at(self, step: int) -> bool:
        return step % self.redraw_every == 0 or step == self._updated_from

    def record(self) -> dict:
        mean, var = dirichlet_moments(self.beta)
        return {"concentration": self.beta.tolist(), "mean": mean.tolist(), "var": var.tolist(),
                "updates": self.num_updates}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "concentration": self.beta.tolist(),
                "num_updates": self.num_updates, "updated_from": self._updated_from}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.beta = np.asarray(state["concentration"], dtype=np.float64)
        self.num_updates = int(state["num_updates"])
        self._updated_from = state["updated_from"]


def _check_kind(kind: str, state: dict) -> None:
    if state.get("kind") != kind:
        raise ValueError(f"checkpoint holds a {state.get('kind')!r} mixture schedule, but this "
                         f"run uses {kind!r}")
