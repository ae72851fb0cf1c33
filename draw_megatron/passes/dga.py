"""The DGA pass: online gradient alignment toward a specific set (docs/algorithms.md §3; DGA Alg. 1, 2).

After the optimizer step of every step t with t % T_r == 0 (``dga.every``; the paper's
line 6, so also after step 0):

- probes come from the loader's probe sampler (own cursors: the training stream is
  untouched): one probe of ``dga.probe_batch`` sequences (default ``train.micro_batch``)
  over all DP ranks, each rank holding its share, of the specific set y and of each
  reweighted unit i — a domain, or under distribution reweighting (``dga.basis``) a batch
  from mix(p_i), p_i the i-th basis histogram. The probe size does not depend on the
  world size, so neither does α's trajectory;
- a_i = ⟨∇ℓ(θ, x_i), ∇ℓ(θ, y)⟩ (``raw``, the paper) or its cosine, over all parameters,
  computed by :class:`GradientAlignment` (``torch.autograd.grad``; ḡ_y all-reduced over DP
  once; TP partial sums);
- α ← α ⊙ exp(η a) normalised, α_EMA ← (1 − w) α_EMA + w α (``mixture.dga``), identical on
  every rank because a is;
- the pass returns the sampling weights α_EMA (or P α_EMA over the k domains); the trainer
  hands them to the mixture schedule from step t + 1 (``online``: batches come from them;
  ``online_draw``: they are evidence for the Dirichlet's concentration).

α_0 = the natural weights of the training split (sequence counts × epochs) or uniform over
the N bases.

The ``alignment_monitor`` pass computes the same scores toward its own specific set and
only logs them (``alignment`` records), so it combines with any mixture owner (DRO, a
static or Dirichlet mixture).
``dga`` records carry ``alignment``, ``alpha``, ``alpha_ema`` (lists over the units: the
manifest's domains, or the basis file's bases, in order), ``specific_loss`` (the specific
probe's token-mean loss before the update, mean over DP) and, with a basis, ``weights``
(P α_EMA over the domains). At the end the mean of the sampling weights over the updates is
written as a static mixture file over the domains (``<run.dir>/dga_alpha_star.json``, usable
as α* by tools/draw_posterior.py) and the trajectory as ``<run.dir>/dga_trajectory.json``.
The probe samplers' cursors and the DGA state go into every checkpoint.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np
import torch
import torch.distributed as dist

from draw_megatron.config.base import ConfigError, check_positive, join_key, require
from draw_megatron.mixture.dga import DGAState
from draw_megatron.mixture.files import MixtureFileError, MixtureSpec
from draw_megatron.passes.alignment import GradientAlignment
from draw_megatron.passes.base import PassConfig, PassContext, StepInfo, StepOutput, StepPass
from draw_megatron.utils.fs import atomic_write_json
from draw_megatron.utils.log import get_logger

if TYPE_CHECKING:
    from draw_megatron.config.run import RunConfig
    from draw_megatron.data.loader import Batch
    from draw_megatron.data.manifest import Manifest

log = get_logger(__name__)

ALPHA_STAR_NAME = "dga_alpha_star.json"
TRAJECTORY_NAME = "dga_trajectory.json"
TRAJECTORY_FORMAT = "draw-dga-trajectory/v1"


def check_basis_support(basis, sizes: np.ndarray, split: str) -> None:
    """A basis may only put weight on domains that hold ``split`` sequences (the loader could
    not draw from the others); ValueError names the first basis and domain that do not."""
    empty = (basis.matrix > 0) & (np.asarray(sizes)[:, None] == 0)
    if empty.any():
        j = int(np.flatnonzero(empty.any(axis=0))[0])
        d = int(np.flatnonzero(empty[:, j])[0])
        raise ValueError(f"basis {basis.names[j]!r} puts weight on domain {basis.domains[d]!r}, "
                         f"which has no {split!r} sequence (tools/importance_histograms.py "
                         "--data ROOT moves such mass)")


class AlignmentProbes:
    """The probes and gradient products shared by the DGA pass and the monitor: a specific
    set, one probe sampler over the training split, and :class:`GradientAlignment` on the
    live model."""

    def __init__(self, cfg: AlignmentSection, ctx: PassContext, basis=None):
        from draw_megatron.data.specific import open_specific

        self.cfg, self.basis = cfg, basis
        self.num = cfg.probe_batch or ctx.micro_batch
        self.probes = ctx.probe_sampler()
        self.specific = open_specific(cfg.specific, ctx.manifest, train_split=ctx.train_split,
                                      eval_split=ctx.eval_split, run_dir=ctx.run_dir)
        topology = ctx.topology
        self.specific_probes = self.specific.sampler(ctx.seed, topology.dp_rank,
                                                     topology.dp_size)
        self.model = ctx.model
        self.aligner = GradientAlignment(ctx.model, topology, cfg.alignment)
        self.dp_group, self.dp_size = topology.dp_group, topology.dp_size
        self.device = ctx.device

    def probe_batch(self, unit: int) -> Batch:
        """This rank's share of unit ``unit``'s probe (a domain, or mix(p_unit))."""
        if self.basis is None:
            return self.probes.domain_batch(unit, self.num)
        return self.probes.mixed_batch(self.num, self.basis.matrix[:, unit])

    def specific_batch(self) -> Batch:
        """This rank's share of the specific set's probe."""
        return self.specific.batch(self.specific_probes, self.num)

    def probe_loss(self, module: torch.nn.Module, batch: Batch) -> torch.Tensor:
        """This rank's weighted token-mean loss of ``batch`` under ``module``: its DP mean is
        the mean over the whole probe (see ProbeSampler)."""
        tokens = batch.tokens.to(self.device, non_blocking=True)
        labels = batch.labels.to(self.device, non_blocking=True)
        loss = module(tokens, labels).float().mean()
        return loss if batch.probe_weight == 1.0 else loss * batch.probe_weight

    def scores(self, num_units: int) -> tuple[np.ndarray, float]:
        """(a, one per unit; the specific probe's loss over the whole probe), identical on
        every rank."""
        module = self.model
        try:
            target_loss = self.probe_loss(module, self.specific_batch())
            self.aligner.set_target(target_loss)
            scores = self.aligner.scores(lambda i: self.probe_loss(module, self.probe_batch(i)),
                                         num_units)
        finally:
            self.aligner.release()
        specific_loss = target_loss.detach().double()
        if self.dp_size > 1:
            dist.all_reduce(specific_loss, group=self.dp_group)
            specific_loss /= self.dp_size
        return scores.double().cpu().numpy(), float(specific_loss)

    def state_dict(self) -> dict:
        return {"probes": self.probes.state_dict(),
                "specific_probes": self.specific_probes.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.probes.load_state_dict(state["probes"])
        self.specific_probes.load_state_dict(state["specific_probes"])

    def close(self) -> None:
        self.specific.close()


class DGAPass(StepPass):
    """Owns the mixture: gradient alignment every ``dga.every`` steps sets the weights."""

    name = "dga"
    owns_mixture = True

    def __init__(self, cfg: DGAConfig):
        self.cfg = cfg
        self.state: DGAState | None = None
        self.basis = None
        self.align: AlignmentProbes | None = None

    # ------------------------------------------------------------------ set-up

    def setup(self, ctx: PassContext) -> None:
        manifest = ctx.manifest
        self.domains = list(manifest.domain_names)
        if self.cfg.basis is not None:
            from draw_megatron.mixture.basis import load_basis

            self.basis = load_basis(self.cfg.basis, self.domains)
            check_basis_support(self.basis, ctx.train_data.num_sequences, ctx.train_split)
            self.units = list(self.basis.names)
            alpha_init = np.full(len(self.units), 1.0 / len(self.units))
        else:
            self.units = self.domains
            alpha_init = manifest.natural_weights(ctx.train_split)
        self.state = DGAState(alpha_init, self.cfg.eta, self.cfg.ema_weight)
        self.align = AlignmentProbes(self.cfg, ctx, self.basis)
        self.seed, self.run_dir, self.is_writer = ctx.seed, ctx.run_dir, ctx.is_writer
        log.info("DGA pass: %d %s, every %d steps, eta=%g, ema_weight=%g, %s products, "
                 "specific set %s, %d probe sequences per unit over %d DP rank(s)",
                 len(self.units), "bases" if self.basis else "domains", self.cfg.every,
                 self.cfg.eta, self.cfg.ema_weight, self.cfg.alignment,
                 self.align.specific.description, self.align.num, ctx.topology.dp_size)

    def initial_weights(self) -> np.ndarray:
        return self.sampling_weights(self.state.alpha_ema)

    def sampling_weights(self, alpha_ema: np.ndarray) -> np.ndarray:
        """The k domain weights batches come from: α_EMA, or P α_EMA over a basis."""
        if self.basis is None:
            return alpha_ema
        weights = self.basis.matrix @ alpha_ema
        return weights / weights.sum()

    # ------------------------------------------------------------------ the update

    def acts_at(self, step: int) -> bool:
        return step % self.cfg.every == 0

    def after_step(self, info: StepInfo) -> StepOutput:
        if not self.acts_at(info.step):
            return StepOutput()
        scores, specific_loss = self.align.scores(len(self.units))
        alpha, alpha_ema = self.state.update(scores, info.step)
        weights = self.sampling_weights(alpha_ema)
        record = {"kind": "dga", "step": info.step, "alignment": scores.tolist(),
                  "alpha": alpha.tolist(), "alpha_ema": alpha_ema.tolist(),
                  "specific_loss": specific_loss}
        if self.basis is not None:
            record["weights"] = weights.tolist()
        return StepOutput([record], weights=weights)

    # ------------------------------------------------------------------ outputs and state

    def finish(self, ctx: PassContext) -> None:
        if not self.is_writer:
            return
        mean = self.sampling_weights(self.state.mean_sampling_weights())
        provenance = {
            "method": "DGA (docs/algorithms.md §3): mean of the sampling weights over the "
                      "updates",
            "run_dir": os.path.abspath(self.run_dir),
            "specific": self.align.specific.description,
            "basis": None if self.cfg.basis is None else os.path.abspath(self.cfg.basis),
            "every": self.cfg.every, "eta": self.cfg.eta, "ema_weight": self.cfg.ema_weight,
            "alignment": self.cfg.alignment, "updates": self.state.num_updates,
            "probe_batch": self.align.num, "seed": self.seed,
        }
        MixtureSpec("static", list(self.domains), mean, provenance=provenance).save(
            os.path.join(self.run_dir, ALPHA_STAR_NAME))
        atomic_write_json(os.path.join(self.run_dir, TRAJECTORY_NAME), {
            "format": TRAJECTORY_FORMAT, "units": list(self.units),
            "domains": list(self.domains), **self.state.state_dict(),
            "mean_weights": mean.tolist(), "provenance": provenance})
        log.info("DGA: mean sampling weights over %d updates written to %s",
                 self.state.num_updates, os.path.join(self.run_dir, ALPHA_STAR_NAME))

    def state_dict(self) -> dict:
        return {"state": self.state.state_dict(), **self.align.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.state.load_state_dict(state["state"])
        self.align.load_state_dict(state)
        # The schedule's own state (restored with the loader) already holds these weights.

    def close(self) -> None:
        if self.align is not None:
            self.align.close()


class AlignmentMonitorPass(StepPass):
    """Observes: DGA's alignment scores of every domain toward a specific set, logged as
    ``alignment`` records every ``alignment_monitor.every`` steps; sets nothing."""

    name = "alignment_monitor"

    def __init__(self, cfg: AlignmentMonitorConfig):
        self.cfg = cfg
        self.align: AlignmentProbes | None = None

    def setup(self, ctx: PassContext) -> None:
        self.num_domains = ctx.manifest.num_domains
        self.align = AlignmentProbes(self.cfg, ctx)

    def acts_at(self, step: int) -> bool:
        return step % self.cfg.every == 0

    def after_step(self, info: StepInfo) -> StepOutput:
        if not self.acts_at(info.step):
            return StepOutput()
        scores, specific_loss = self.align.scores(self.num_domains)
        return StepOutput([{"kind": "alignment", "step": info.step,
                            "alignment": scores.tolist(), "specific_loss": specific_loss}])

    def state_dict(self) -> dict:
        return self.align.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.align.load_state_dict(state)

    def close(self) -> None:
        if self.align is not None:
            self.align.close()


# ---------------------------------------------------------------------------------------
# Config sections.


@dataclass(kw_only=True)
class AlignmentSection(PassConfig):
    """What the DGA pass and the alignment monitor share: the specific set and the probes."""

    every: int = 100
    """T_r: steps between alignment computations (after steps t with t % every == 0)."""

    specific: str | None = None
    """The specific (target) set y: a held-out split (`test`), one of its domains
    (`test:Domain Name`), or a folder / file of Pile-format jsonl(.zst) documents (converted
    with the run's tokenizer and cached under run.dir)."""

    alignment: Literal["raw", "cosine"] = "raw"
    """a_i as the paper's raw inner product, or the scale-free cosine."""

    probe_batch: int | None = None
    """Sequences of each probe (one per unit, one of the specific set) over all DP ranks,
    each rank holding its share. null: train.micro_batch. Independent of the world size,
    so a run rescheduled on more GPUs keeps its trajectory."""

    def validate(self, prefix: str | None = None) -> None:
        check_positive(self, prefix, "every")
        require(self.probe_batch is None or self.probe_batch > 0,
                f"{self._key(prefix, 'probe_batch')}={self.probe_batch} must be > 0")

    def _key(self, prefix: str | None, name: str) -> str:
        return join_key(self.SECTION if prefix is None else prefix, name)

    def check(self, run_cfg: RunConfig, manifest: Manifest) -> None:
        from draw_megatron.data.specific import KEY, parse_specific

        super().check(run_cfg, manifest)
        key = self._key(None, "specific")
        require(self.specific is not None,
                f"{key} is not set: the {self.SECTION} pass needs a specific (target) set to "
                "align with")
        require(run_cfg.zero.stage <= 2, f"zero.stage={run_cfg.zero.stage}: the {self.SECTION} "
                                         "pass supports ZeRO stages 0-2 only (gradients of "
                                         "partitioned parameters are not gathered)")
        try:
            parse_specific(self.specific, manifest, train_split=run_cfg.data.split,
                           eval_split=run_cfg.eval_split)
        except ConfigError as exc:
            raise ConfigError(str(exc).replace(KEY, key)) from None


@dataclass(kw_only=True)
class DGAConfig(AlignmentSection):
    """Dynamic Gradient Alignment (docs/algorithms.md §3): ``passes: [dga]``
    (launch/dga_align.py)."""

    SECTION: ClassVar[str] = "dga"
    PASS: ClassVar[type[StepPass]] = DGAPass

    eta: float | None = None
    """Step size of α ← α ⊙ exp(η a). No default on purpose: raw products scale with the
    model, so a run with the DGA pass must set it."""

    ema_weight: float = 0.1
    """w in α_EMA ← (1 − w) α_EMA + w α (the paper's β)."""

    basis: str | None = None
    """Basis file (draw-basis/v1) for distribution reweighting; null: reweight domains."""

    def validate(self, prefix: str | None = None) -> None:
        super().validate(prefix)
        require(self.eta is None or (np.isfinite(self.eta) and self.eta > 0),
                f"{self._key(prefix, 'eta')}={self.eta} must be finite and > 0")
        require(0 < self.ema_weight <= 1,
                f"{self._key(prefix, 'ema_weight')}={self.ema_weight} must be in (0, 1]")

    def check(self, run_cfg: RunConfig, manifest: Manifest) -> None:
        super().check(run_cfg, manifest)
        require(self.eta is not None,
                "dga.eta is not set: the DGA pass has no default step size (raw products scale "
                "with the model; docs/algorithms.md §3); set it in the config or as "
                "dga.eta=<value>")
        require(run_cfg.mixture.kind != "online" or run_cfg.mixture.file is None,
                f"mixture.file={run_cfg.mixture.file!r}: the DGA pass starts from the natural "
                "weights and reads no mixture file; drop mixture.file")
        if self.basis is not None:
            from draw_megatron.mixture.basis import load_basis

            try:
                basis = load_basis(self.basis, manifest.domain_names)
                check_basis_support(basis, manifest.num_sequences(run_cfg.data.split),
                                    run_cfg.data.split)
            except (MixtureFileError, ValueError, OSError) as exc:
                raise ConfigError(f"dga.basis={self.basis!r}: {exc}") from None


@dataclass(kw_only=True)
class AlignmentMonitorConfig(AlignmentSection):
    """The alignment monitor (``passes: [..., alignment_monitor]``): DGA's scores toward
    ``alignment_monitor.specific`` logged every ``every`` steps, next to any mixture."""

    SECTION: ClassVar[str] = "alignment_monitor"
    PASS: ClassVar[type[StepPass]] = AlignmentMonitorPass
