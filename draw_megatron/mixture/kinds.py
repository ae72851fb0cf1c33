"""The mixture kinds a run can name (``mixture.kind``), in one registry.

Each kind builds a :class:`~draw_megatron.mixture.schedule.Schedule` from the run's mixture
section, the data's domains and natural weights, the model width and the seed. Pure numpy:
random kinds receive the ``broadcast`` callable (global rank 0's draw to every rank) and
``is_source`` from the caller (the trainer passes ``draw_megatron.parallel.broadcast_from_rank0``).

| kind | α_t | mixture.file |
|---|---|---|
| natural | the training split's sequence counts × epochs, normalised | — |
| uniform | 1/k | — |
| static | the file's weights | required (static) |
| dirichlet | ~ Dir(β) redrawn every ``redraw_every`` steps (DRAW's main run) | required (dirichlet) |
| random | ~ Dir((√n/k)·1) redrawn every ``redraw_every`` steps (DRAW's Random baseline) | — |
| hierarchical_dirichlet | groups ~ Dir(γ), within group ~ Dir(β_g), redrawn every N steps | required (hierarchical) |
| online | set by the run's mixture-owning pass (DRO, DGA, ODM), from the natural weights | — |
| online_draw | ~ Dir(β) redrawn every N steps, β updated by a pass's evidence | optional (dirichlet; default the prior (√n/k)·1) |

A new kind is a builder function and one entry in :data:`KINDS`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from draw_megatron.mixture.files import load_mixture
from draw_megatron.mixture.schedule import (Broadcast, DirichletSchedule, OnlineDrawSchedule,
                                            OnlineSchedule, Schedule, StaticSchedule)


@dataclass(frozen=True)
class ScheduleInputs:
    """What a kind's builder may use."""

    domain_names: list[str]
    """The data's domains, in manifest order."""
    natural_weights: np.ndarray
    """The training split's natural weights."""
    file: str | None = None
    """mixture.file."""
    redraw_every: int = 10
    """N: steps between Dirichlet draws."""
    evidence: float = 1.0
    """s: pseudo-counts per unit of evidence (online_draw)."""
    forget: float = 1.0
    """ρ: the factor on β before each evidence update (online_draw)."""
    width: int | None = None
    """The model's d_model (random, and online_draw's default prior)."""
    seed: int = 0
    broadcast: Broadcast | None = None
    is_source: bool = True

    @property
    def num_domains(self) -> int:
        return len(self.domain_names)

    def prior(self) -> np.ndarray:
        """(√n/k)·1, DRAW's prior at this model's width."""
        if not self.width:
            raise ValueError("this mixture kind needs the model width (d_model)")
        return np.full(self.num_domains, math.sqrt(self.width) / self.num_domains)


@dataclass(frozen=True)
class MixtureKind:
    name: str
    build: Callable[[ScheduleInputs], Schedule]
    file: Literal["required", "optional", "none"]
    """Whether mixture.file is read."""
    online: bool = False
    """True: a mixture-owning step pass must feed the schedule."""
    doc: str = ""


def _file_values(inputs: ScheduleInputs, kind: str, file_kind: str) -> np.ndarray:
    spec = load_mixture(inputs.file, inputs.domain_names)
    if spec.kind != file_kind:
        raise ValueError(f"mixture.kind={kind} but {inputs.file} holds a {spec.kind!r} mixture "
                         f"(it needs a {file_kind!r} one)")
    return spec.values


def _dirichlet(inputs: ScheduleInputs, beta: np.ndarray) -> DirichletSchedule:
    return DirichletSchedule(beta, inputs.redraw_every, inputs.seed, broadcast=inputs.broadcast,
                             is_source=inputs.is_source)


def _online_draw(inputs: ScheduleInputs) -> OnlineDrawSchedule:
    beta = (_file_values(inputs, "online_draw", "dirichlet") if inputs.file
            else inputs.prior())
    return OnlineDrawSchedule(beta, inputs.redraw_every, inputs.seed, evidence=inputs.evidence,
                              forget=inputs.forget, broadcast=inputs.broadcast,
                              is_source=inputs.is_source)


def _hierarchical(inputs: ScheduleInputs) -> Schedule:
    from draw_megatron.mixture.hierarchical import (HierarchicalDirichletSchedule,
                                                    load_hierarchical)

    spec = load_hierarchical(inputs.file, inputs.domain_names)
    return HierarchicalDirichletSchedule(spec, inputs.redraw_every, inputs.seed,
                                         broadcast=inputs.broadcast, is_source=inputs.is_source)


KINDS: dict[str, MixtureKind] = {k.name: k for k in (
    MixtureKind("natural", lambda i: StaticSchedule(i.natural_weights), "none",
                doc="sequence counts × epochs of the training split"),
    MixtureKind("uniform", lambda i: StaticSchedule(np.full(i.num_domains, 1 / i.num_domains)),
                "none", doc="1/k"),
    MixtureKind("static", lambda i: StaticSchedule(_file_values(i, "static", "static")),
                "required", doc="a mixture file's fixed weights"),
    MixtureKind("dirichlet", lambda i: _dirichlet(i, _file_values(i, "dirichlet", "dirichlet")),
                "required", doc="Dir(β) of a mixture file, redrawn every N steps"),
    MixtureKind("random", lambda i: _dirichlet(i, i.prior()), "none",
                doc="Dir((√d_model/k)·1), redrawn every N steps"),
    MixtureKind("hierarchical_dirichlet", _hierarchical, "required",
                doc="group weights ~ Dir(γ), within group ~ Dir(β_g), redrawn every N steps"),
    MixtureKind("online", lambda i: OnlineSchedule(i.natural_weights), "none", online=True,
                doc="weights set by the mixture-owning pass"),
    MixtureKind("online_draw", _online_draw, "optional", online=True,
                doc="Dir(β) redrawn every N steps, β updated by the mixture-owning pass"),
)}


def get_kind(name: str) -> MixtureKind:
    """The registered kind ``name``; ValueError lists the known ones."""
    if name not in KINDS:
        raise ValueError(f"mixture.kind must be one of {', '.join(KINDS)}; got {name!r}")
    return KINDS[name]


def build_schedule(kind: str, inputs: ScheduleInputs) -> Schedule:
    """The schedule of ``kind``; checks that ``inputs.file`` fits the kind."""
    spec = get_kind(kind)
    if spec.file == "required" and not inputs.file:
        raise ValueError(f"mixture.kind={kind} needs mixture.file")
    if spec.file == "none" and inputs.file:
        raise ValueError(f"mixture.file is not read by mixture.kind={kind}; kinds that read "
                         f"it: {', '.join(n for n, k in KINDS.items() if k.file != 'none')}")
    return spec.build(inputs)


def schedule_for(kind: str, manifest, *, file: str | None = None, redraw_every: int = 10,
                 seed: int = 0, width: int | None = None, split: str = "train",
                 evidence: float = 1.0, forget: float = 1.0, broadcast: Broadcast | None = None,
                 is_source: bool = True) -> Schedule:
    """:func:`build_schedule` from a data manifest (anything with ``domain_names`` and
    ``natural_weights(split)``); under torch.distributed pass
    ``*draw_megatron.parallel.rank0_broadcaster()`` as (broadcast, is_source)."""
    return build_schedule(kind, ScheduleInputs(
        domain_names=list(manifest.domain_names), natural_weights=manifest.natural_weights(split),
        file=file, redraw_every=redraw_every, evidence=evidence, forget=forget, width=width,
        seed=seed, broadcast=broadcast, is_source=is_source))
