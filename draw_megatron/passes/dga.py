"""The DGA pass: online gradient alignment toward a specific set (SPEC.md §3; DGA Alg. 1, 2).

After the optimizer step of every step t with t % T_r == 0 (``dga.every``; the paper's
line 6, so also after step 0):

- probes come from the loader's probe sampler (own cursors: the training stream is
  untouched): per rank one micro-batch (``train.micro_batch`` sequences, or
  ``dga.probe_batch`` / DP) of the specific set y and one of each reweighted unit i — a
  domain, or under distribution reweighting (``dga.basis``) a batch from mix(p_i), p_i the
  i-th basis histogram;
- a_i = ⟨∇ℓ(θ, x_i), ∇ℓ(θ, y)⟩ (``raw``, the paper) or its cosine, over all parameters,
  computed by :class:`GradientAlignment` (``torch.autograd.grad``; ḡ_y all-reduced over DP
  once; TP partial sums);
- α ← α ⊙ exp(η a) normalised, α_EMA ← (1 − w) α_EMA + w α (``mixture.dga``), identical on
  every rank because a is;
- the loader's online schedule gets the sampling weights α_EMA (or P α_EMA over the k
  domains), applying from step t + 1.

α_0 = the natural weights of the training split (domains) or uniform over the N bases.
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
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.distributed as dist

from draw_megatron.config.run import DGAConfig
from draw_megatron.data.loader import ProbeSampler
from draw_megatron.mixture.dga import DGAState
from draw_megatron.mixture.files import MixtureSpec
from draw_megatron.passes.alignment import GradientAlignment
from draw_megatron.passes.base import StepPass
from draw_megatron.utils.fs import atomic_write_json
from draw_megatron.utils.log import get_logger

if TYPE_CHECKING:
    from draw_megatron.data.loader import Batch
    from draw_megatron.train.trainer import Trainer

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


class DGAPass(StepPass):
    """Sets the loader's weights from gradient alignment every ``dga.every`` steps."""

    name = "dga"

    def __init__(self, cfg: DGAConfig):
        cfg.validate_for_pass("dga")
        self.cfg = cfg
        self.state: DGAState | None = None
        self.basis = None
        self.specific = None

    # ------------------------------------------------------------------ set-up

    def setup(self, trainer: Trainer) -> None:
        from draw_megatron.data.specific import open_specific

        cfg, manifest = trainer.cfg, trainer.manifest
        schedule = trainer.loader.schedule
        if schedule.kind != "online":
            raise ValueError(f"the DGA pass needs mixture.kind=online (it sets the weights); "
                             f"this run has mixture.kind={cfg.mixture.kind}")
        self.domains = list(manifest.domain_names)
        sizes = trainer.train_data.num_sequences.astype(np.float64)
        if self.cfg.basis is not None:
            from draw_megatron.mixture.basis import load_basis

            self.basis = load_basis(self.cfg.basis, self.domains)
            check_basis_support(self.basis, sizes, cfg.data.split)
            self.units = list(self.basis.names)
            alpha_init = np.full(len(self.units), 1.0 / len(self.units))
        else:
            self.units = self.domains
            alpha_init = sizes / sizes.sum()  # the natural weights of the training split
        self.state = DGAState(alpha_init, self.cfg.eta, self.cfg.ema_weight)
        schedule.set_weights(self.sampling_weights(self.state.alpha_ema), 0)

        topology = trainer.topology
        self.per_rank = cfg.train.micro_batch
        if self.cfg.probe_batch is not None:
            if self.cfg.probe_batch % topology.dp_size:
                raise ValueError(f"dga.probe_batch={self.cfg.probe_batch} does not split over "
                                 f"{topology.dp_size} data-parallel ranks")
            self.per_rank = self.cfg.probe_batch // topology.dp_size
        self.probes = ProbeSampler(trainer.train_data, cfg.run.seed, topology.dp_rank,
                                   topology.dp_size)
        self.specific = open_specific(self.cfg.specific, cfg, manifest)
        self.specific_probes = self.specific.sampler(cfg.run.seed, topology.dp_rank,
                                                     topology.dp_size)
        self.aligner = GradientAlignment(trainer.engine.module, topology, self.cfg.alignment)
        self.dp_group, self.dp_size = topology.dp_group, topology.dp_size
        self.device = trainer.env.device
        self.run_dir, self.is_writer = cfg.run.dir, trainer.is_writer
        log.info("DGA pass: %d %s, every %d steps, eta=%g, ema_weight=%g, %s products, "
                 "specific set %s, %d probe sequences per unit per rank",
                 len(self.units), "bases" if self.basis else "domains", self.cfg.every,
                 self.cfg.eta, self.cfg.ema_weight, self.cfg.alignment,
                 self.specific.description, self.per_rank)

    def sampling_weights(self, alpha_ema: np.ndarray) -> np.ndarray:
        """The k domain weights batches come from: α_EMA, or P α_EMA over a basis."""
        if self.basis is None:
            return alpha_ema
        weights = self.basis.matrix @ alpha_ema
        return weights / weights.sum()

    # ------------------------------------------------------------------ the update

    def probe_batch(self, unit: int) -> Batch:
        """This rank's probe micro-batch of unit ``unit`` (a domain, or mix(p_unit))."""
        if self.basis is None:
            return self.probes.domain_batch(unit, self.per_rank)
        return self.probes.mixed_batch(self.per_rank, self.basis.matrix[:, unit])

    def specific_batch(self) -> Batch:
        """This rank's probe micro-batch of the specific set."""
        return self.specific.batch(self.specific_probes, self.per_rank)

    def probe_loss(self, module: torch.nn.Module, batch: Batch) -> torch.Tensor:
        """The token-mean loss of ``batch`` (moved to the training device) under ``module``."""
        tokens = batch.tokens.to(self.device, non_blocking=True)
        labels = batch.labels.to(self.device, non_blocking=True)
        return module(tokens, labels).float().mean()

    def alignment_scores(self, trainer: Trainer) -> tuple[np.ndarray, float]:
        """(a, one per unit; the specific probe's loss, mean over DP), identical on every rank."""
        module = trainer.engine.module
        try:
            target_loss = self.probe_loss(module, self.specific_batch())
            self.aligner.set_target(target_loss)
            scores = self.aligner.scores(lambda i: self.probe_loss(module, self.probe_batch(i)),
                                         len(self.units))
        finally:
            self.aligner.release()
        specific_loss = target_loss.detach().double()
        if self.dp_size > 1:
            dist.all_reduce(specific_loss, group=self.dp_group)
            specific_loss /= self.dp_size
        return scores.double().cpu().numpy(), float(specific_loss)

    def after_step(self, trainer: Trainer, step: int, batch: Batch, sums: np.ndarray,
                   counts: np.ndarray) -> list[dict]:
        if step % self.cfg.every:
            return []
        scores, specific_loss = self.alignment_scores(trainer)
        alpha, alpha_ema = self.state.update(scores, step)
        weights = self.sampling_weights(alpha_ema)
        trainer.loader.schedule.set_weights(weights, step + 1)  # applies from the next step
        record = {"kind": "dga", "step": step, "alignment": scores.tolist(),
                  "alpha": alpha.tolist(), "alpha_ema": alpha_ema.tolist(),
                  "specific_loss": specific_loss}
        if self.basis is not None:
            record["weights"] = weights.tolist()
        return [record]

    # ------------------------------------------------------------------ outputs and state

    def finish(self, trainer: Trainer) -> None:
        if not self.is_writer:
            return
        mean = self.sampling_weights(self.state.mean_sampling_weights())
        provenance = {
            "method": "DGA (SPEC.md §3): mean of the sampling weights over the updates",
            "run_dir": os.path.abspath(self.run_dir), "specific": self.specific.description,
            "basis": None if self.cfg.basis is None else os.path.abspath(self.cfg.basis),
            "every": self.cfg.every, "eta": self.cfg.eta, "ema_weight": self.cfg.ema_weight,
            "alignment": self.cfg.alignment, "updates": self.state.num_updates,
            "seed": trainer.cfg.run.seed,
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
        return {"state": self.state.state_dict(), "probes": self.probes.state_dict(),
                "specific_probes": self.specific_probes.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.state.load_state_dict(state["state"])
        self.probes.load_state_dict(state["probes"])
        self.specific_probes.load_state_dict(state["specific_probes"])
        # The schedule's own state (restored with the loader) already holds these weights.

    def close(self) -> None:
        if self.specific is not None:
            self.specific.close()
