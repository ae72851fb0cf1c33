"""Online DRAW's DRO evidence: excess losses of the model being trained against a frozen
reference (docs/algorithms.md §7.1).

After every ``dro_evidence.every`` (M) steps — after steps t with (t + 1) % M == 0 — the
pass scores one probe of ``probe_batch`` sequences (default ``train.micro_batch``, over all
DP ranks) of every domain under the live model and the reference, both forward-only under
``inference_mode``; per-domain clipped excess λ_i = Σ max(ℓ_θ − ℓ_ref, 0) / tokens over the
whole probe (sums and counts all-reduced over DP, so λ is identical everywhere and
independent of the DP size); and takes one DRO mirror step α ← dro_update(α, λ, η, c)
(the proxy DRO's rule, docs/algorithms.md §2) from the schedule's mean at the start. α is
the evidence α_ev it returns; under ``mixture.kind=online_draw`` the schedule folds it into
the Dirichlet's concentration (β ← ρ·β + s·α_ev); under ``online`` the run samples from α
directly (an online DRO mixture for the main model).

Cost per update: 2k forward passes of ``probe_batch`` sequences, no backward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch

from draw_megatron.config.base import check_positive, join_key, require
from draw_megatron.losses import DomainLoss
from draw_megatron.mixture.dro import DROState, excess_loss
from draw_megatron.passes.base import PassConfig, PassContext, StepInfo, StepOutput, StepPass
from draw_megatron.passes.dro import check_reference, load_reference, reference_file
from draw_megatron.utils.log import get_logger

if TYPE_CHECKING:
    from draw_megatron.config.run import RunConfig
    from draw_megatron.data.manifest import Manifest

log = get_logger(__name__)

EVIDENCE_STREAM = 0x45564944  # "EVID": the evidence probes' own random stream


class DROEvidencePass(StepPass):
    """Owns the mixture: every M steps, DRO weights from the model's excess loss."""

    name = "dro_evidence"
    owns_mixture = True

    def __init__(self, cfg: DROEvidenceConfig):
        self.cfg = cfg
        self.state: DROState | None = None

    def setup(self, ctx: PassContext) -> None:
        self.num_domains = ctx.manifest.num_domains
        self.num = self.cfg.probe_batch or ctx.micro_batch
        self.model = ctx.model
        self.reference = load_reference(ctx, reference_file(self.cfg.reference),
                                        "dro_evidence.reference")
        self.probes = ctx.probe_sampler(EVIDENCE_STREAM)
        self.excess = DomainLoss(self.num_domains, ctx.device)
        self.dp_group, self.device = ctx.topology.dp_group, ctx.device
        self.state = DROState(ctx.initial_weights, self.cfg.eta, self.cfg.smoothing,
                              keep_trajectory=False)
        log.info("DRO evidence: every %d steps, %d probe sequences per domain, eta=%g, c=%g, "
                 "reference %s", self.cfg.every, self.num, self.cfg.eta, self.cfg.smoothing,
                 reference_file(self.cfg.reference))

    def domain_excess(self) -> np.ndarray:
        """λ: per-domain clipped excess over one probe of each domain (identical on every
        rank)."""
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                for domain in range(self.num_domains):
                    batch = self.probes.domain_batch(domain, self.num)
                    if batch.probe_weight == 0:
                        continue  # an empty share: nothing of this rank counts
                    tokens = batch.tokens.to(self.device, non_blocking=True)
                    labels = batch.labels.to(self.device, non_blocking=True)
                    gap = self.model(tokens, labels).float() - self.reference(tokens, labels).float()
                    self.excess.add(gap.clamp_min(0), batch.domain_ids)
        finally:
            self.model.train(was_training)
        sums, counts = self.excess.all_reduce(self.dp_group)
        self.excess.reset()
        return excess_loss(sums, counts)

    def acts_at(self, step: int) -> bool:
        return (step + 1) % self.cfg.every == 0

    def after_step(self, info: StepInfo) -> StepOutput:
        if not self.acts_at(info.step):
            return StepOutput()
        excess = self.domain_excess()
        alpha = self.state.update(excess)
        return StepOutput([{"kind": "dro_evidence", "step": info.step, "excess": excess.tolist(),
                            "alpha": alpha.tolist()}], weights=alpha)

    def state_dict(self) -> dict:
        return {"state": self.state.state_dict(), "probes": self.probes.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.state.load_state_dict(state["state"])
        self.probes.load_state_dict(state["probes"])


@dataclass(kw_only=True)
class DROEvidenceConfig(PassConfig):
    """DRO evidence for online DRAW (``passes: [dro_evidence]``, ``mixture.kind=online_draw``;
    docs/algorithms.md §7.1)."""

    SECTION: ClassVar[str] = "dro_evidence"
    PASS: ClassVar[type[StepPass]] = DROEvidencePass

    every: int = 100
    """M: steps between evidence updates (after steps t with (t + 1) % M == 0)."""

    reference: str | None = None
    """The frozen reference (the main model's architecture, trained on the natural weights):
    a consolidated model.safetensors or its run folder. Required."""

    eta: float = 1.0
    """Step size of the DRO mirror step α ← α ⊙ exp(η λ)."""

    smoothing: float = 1e-3
    """c in α = (1 − c) α'/Σα' + c/k."""

    probe_batch: int | None = None
    """Sequences of each domain's probe over all DP ranks; null: train.micro_batch."""

    def validate(self, prefix: str | None = None) -> None:
        check_positive(self, prefix, "every", "eta")
        key = prefix if prefix is not None else self.SECTION
        require(0 <= self.smoothing < 1,
                f"{join_key(key, 'smoothing')}={self.smoothing} must be in [0, 1)")
        require(self.probe_batch is None or self.probe_batch > 0,
                f"{join_key(key, 'probe_batch')}={self.probe_batch} must be > 0")

    def check(self, run_cfg: RunConfig, manifest: Manifest) -> None:
        super().check(run_cfg, manifest)
        check_reference(self.reference, "dro_evidence.reference")
