"""The proxy DRO pass (docs/algorithms.md §2; DRAW Eq. 2, following DoReMi).

Each step t, on stratified global batches of G sequences (every domain present):

- the frozen reference model (same architecture, trained on the natural weights, loaded from
  its run's consolidated file into this run's TP layout; eval mode, no grads, no optimizer,
  not wrapped by DeepSpeed) scores each micro-batch under ``inference_mode``;
- per-token excess max(ℓ_θ − ℓ_ref, 0) is summed per domain, with token counts, over all
  micro-batches and all-reduced over DP: λ_i = sum_i / count_i over the whole global batch;
- the proxy minimises Σ_i α_{t−1,i} L_i, L_i its token-mean loss on domain i's N_i tokens of
  the global batch. DeepSpeed divides each micro-batch's gradient by the accumulation steps
  (GAS) and averages over DP, so each token's loss is weighted by GAS·DP·α_{t−1,d}/N_d: the
  gradient is then exactly ∇ Σ_i α_{t−1,i} L_i. N_d is known before the forward (the loader
  gives the global batch's per-domain sequence counts; all sequences have one length);
- after the optimizer step α_t = dro_update(α_{t−1}, λ, η, c) (``mixture.dro``), identical on
  every rank because its inputs are; step t's weights are those before step t's update
  (docs/algorithms.md §2: no extra forward pass).

α_0 ~ Dir(β1), β1 = (√n1/k)·1 (the DRAW prior, n1 the proxy's d_model), drawn from a
generator seeded by the run seed on global rank 0 and broadcast; or, with
``dro.init=uniform``, α_0 = 1/k (DoReMi's start, for the faithful DoReMi baseline). The
pass owns the run's mixture: the online schedule holds α (train records show the α_{t−1}
that weighted step t; a ``mixture`` record marks each update) but never drives sampling,
since batches are stratified. At the end the average α* = mean of
α_1 … α_T is written as a static mixture file (docs/architecture.md, Contract 2) to
``<run.dir>/alpha_star.json`` and the trajectory to ``<run.dir>/dro_trajectory.json``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np
import torch

from draw_megatron.config.base import ConfigError, check_positive, join_key, require
from draw_megatron.losses import DomainLoss
from draw_megatron.mixture.draw import prior_concentration
from draw_megatron.mixture.dro import DROState, excess_loss
from draw_megatron.mixture.files import MixtureSpec
from draw_megatron.model import CONSOLIDATED_NAME
from draw_megatron.parallel.broadcast import broadcast_from_rank0, is_distributed
from draw_megatron.passes.base import PassConfig, PassContext, StepInfo, StepOutput, StepPass
from draw_megatron.utils.fs import atomic_write_json
from draw_megatron.utils.log import get_logger

if TYPE_CHECKING:
    from draw_megatron.config.run import RunConfig
    from draw_megatron.data.loader import Batch
    from draw_megatron.data.manifest import Manifest

log = get_logger(__name__)

ALPHA_STAR_NAME = "alpha_star.json"
TRAJECTORY_NAME = "dro_trajectory.json"
TRAJECTORY_FORMAT = "draw-dro-trajectory/v1"
DRO_PRIOR_STREAM = 0x44524F  # "DRO": α_0's draw, apart from every other stream of the seed


def draw_initial_weights(prior: np.ndarray, seed: int) -> np.ndarray:
    """α_0 ~ Dir(prior) from a generator seeded by (seed, DRO_PRIOR_STREAM), drawn on global
    rank 0 and broadcast when torch.distributed is up (every rank gets rank 0's draw)."""
    alpha = np.random.default_rng([int(seed), DRO_PRIOR_STREAM]).dirichlet(prior)
    alpha = alpha / alpha.sum()
    if is_distributed():
        import torch.distributed as dist

        alpha = broadcast_from_rank0(alpha if dist.get_rank() == 0 else np.zeros_like(alpha))
    return alpha


def load_reference(ctx: PassContext, path: str, key: str) -> torch.nn.Module:
    """The frozen reference: the model's architecture and TP layout, weights from ``path``."""
    try:
        return ctx.load_frozen(path)
    except ValueError as exc:
        raise ValueError(f"{key}={path!r} does not fit the model: {exc}") from None


def reference_file(reference: str | None) -> str:
    """``reference`` itself if it names a .safetensors file, else its model.safetensors."""
    ref = reference or ""
    return ref if ref.endswith(".safetensors") else os.path.join(ref, CONSOLIDATED_NAME)


def check_reference(reference: str | None, key: str) -> None:
    """ConfigError unless ``reference`` names an existing consolidated model."""
    require(bool(reference),
            f"{key} is not set: the pass needs the reference run's model "
            f"(launch/train_reference.py writes <run.dir>/{CONSOLIDATED_NAME}); set {key}=PATH")
    require(os.path.isfile(reference_file(reference)),
            f"{key}={reference!r}: no such file ({reference_file(reference)}); train the "
            "reference first (launch/train_reference.py)")


def check_stratifiable(run_cfg: RunConfig, manifest: Manifest) -> None:
    """A stratified batch holds every domain: ConfigError if the global batch is smaller."""
    from draw_megatron.data.loader import check_stratifiable_size

    try:
        check_stratifiable_size(manifest.num_domains, run_cfg.train.global_batch)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def token_means(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per-domain token means (0 where a domain had no token)."""
    return excess_loss(sums, counts)  # the same guarded ratio


class DROPass(StepPass):
    """Owns the proxy's loss (α-weighted per-domain means) and its mixture: α is updated
    after each step (the online schedule only reports it; batches are stratified)."""

    name = "dro"
    owns_loss = True
    owns_mixture = True
    stratified_batches = True

    def __init__(self, cfg: DROConfig):
        self.cfg = cfg
        self.state: DROState | None = None
        self.reference: torch.nn.Module | None = None

    # ------------------------------------------------------------------ set-up

    def setup(self, ctx: PassContext) -> None:
        self.domains = ctx.manifest.domain_names
        self.n1 = ctx.model_cfg.d_model
        self.prior = prior_concentration(len(self.domains), self.n1)
        self.seed = ctx.seed
        k = len(self.domains)
        alpha_init = (np.full(k, 1.0 / k) if self.cfg.init == "uniform"
                      else draw_initial_weights(self.prior, ctx.seed))
        self.state = DROState(alpha_init, self.cfg.eta, self.cfg.smoothing)
        # Undo DeepSpeed's averaging: 1/GAS per micro-batch (backward), 1/DP (all-reduce).
        self.grad_scale = ctx.gradient_accumulation_steps * ctx.topology.dp_size
        self.reference = load_reference(ctx, self.cfg.reference_file, "dro.reference")
        self.excess = DomainLoss(len(self.domains), ctx.device)
        self.dp_group = ctx.topology.dp_group
        self.run_dir, self.is_writer = ctx.run_dir, ctx.is_writer
        log.info("DRO pass: k=%d, n1=%d, eta=%g, c=%g, alpha_0=%s, reference %s",
                 len(self.domains), self.n1, self.cfg.eta, self.cfg.smoothing,
                 np.round(alpha_init, 4).tolist(), self.cfg.reference_file)

    def initial_weights(self) -> np.ndarray:
        return self.state.alpha_init

    # ------------------------------------------------------------------ the step

    def micro_loss(self, loss_BT: torch.Tensor, micro: Batch) -> torch.Tensor:
        with torch.inference_mode():
            ref_BT = self.reference(micro.tokens, micro.labels)
        self.excess.add((loss_BT.detach() - ref_BT.to(loss_BT.dtype)).clamp_min(0),
                        micro.domain_ids)
        weight_B = self._token_weights(micro, loss_BT.shape[1])[micro.domain_ids]
        return (loss_BT.sum(dim=1) * weight_B).sum()

    def _token_weights(self, micro: Batch, seq_len: int) -> torch.Tensor:
        """[k] GAS·DP·α_{t−1,d}/N_d, N_d = domain d's tokens in the whole global batch."""
        if micro.domain_counts is None:
            raise RuntimeError("the DRO pass needs the global batch's per-domain counts")
        num_tokens = micro.domain_counts.astype(np.float64) * seq_len
        weights = np.divide(self.grad_scale * self.state.alpha, num_tokens,
                            out=np.zeros_like(num_tokens), where=num_tokens > 0)
        return torch.from_numpy(weights).to(device=micro.domain_ids.device, dtype=torch.float32)

    def after_step(self, info: StepInfo) -> StepOutput:
        excess_sums, excess_counts = self.excess.all_reduce(self.dp_group)
        self.excess.reset()
        excess = excess_loss(excess_sums, excess_counts)
        objective = float(np.dot(self.state.alpha, token_means(info.sums, info.counts)))
        alpha = self.state.update(excess)
        return StepOutput([{"kind": "dro", "step": info.step, "excess": excess.tolist(),
                            "alpha": alpha.tolist(), "objective": objective}], weights=alpha)

    # ------------------------------------------------------------------ outputs and state

    def finish(self, ctx: PassContext) -> None:
        if not self.is_writer:
            return
        alpha_star = self.state.average()
        provenance = {
            "method": "proxy DRO (docs/algorithms.md §2; DRAW Eq. 2)",
            "run_dir": os.path.abspath(self.run_dir),
            "reference": os.path.abspath(self.cfg.reference_file), "n1": self.n1,
            "k": len(self.domains), "eta": self.cfg.eta, "smoothing": self.cfg.smoothing,
            "steps": self.state.num_steps, "prior": self.prior.tolist(),
            "alpha_init": self.state.alpha_init.tolist(), "init": self.cfg.init,
            "seed": self.seed,
        }
        MixtureSpec("static", list(self.domains), alpha_star, provenance=provenance).save(
            os.path.join(self.run_dir, ALPHA_STAR_NAME))
        atomic_write_json(os.path.join(self.run_dir, TRAJECTORY_NAME), {
            "format": TRAJECTORY_FORMAT, "domains": list(self.domains),
            "alpha_init": self.state.alpha_init.tolist(),
            "trajectory": [a.tolist() for a in self.state.trajectory],
            "alpha_star": alpha_star.tolist(), "provenance": provenance})
        log.info("DRO: alpha* over %d steps = %s (%s)", self.state.num_steps,
                 np.round(alpha_star, 4).tolist(), os.path.join(self.run_dir, ALPHA_STAR_NAME))

    def state_dict(self) -> dict:
        return self.state.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.state.load_state_dict(state)


@dataclass(kw_only=True)
class DROConfig(PassConfig):
    """The proxy DRO pass (docs/algorithms.md §2): ``passes: [dro]`` (launch/proxy_dro.py)."""

    SECTION: ClassVar[str] = "dro"
    PASS: ClassVar[type[StepPass]] = DROPass

    eta: float = 1.0
    """Step size of α' = α ⊙ exp(η λ)."""

    smoothing: float = 1e-3
    """c in α = (1 − c) α'/Σα' + c/k."""

    reference: str | None = None
    """The reference model (same architecture, trained on the natural weights): its run's
    consolidated ``model.safetensors``, or the run folder holding it. Required by the pass."""

    init: Literal["prior", "uniform"] = "prior"
    """α_0: ``prior`` draws it from DRAW's prior Dir((√n1/k)·1) (DRAW's proxy); ``uniform``
    is 1/k, DoReMi's own start (the faithful DoReMi baseline)."""

    def validate(self, prefix: str | None = None) -> None:
        check_positive(self, prefix, "eta")
        require(0 <= self.smoothing < 1,
                f"{join_key(self.SECTION if prefix is None else prefix, 'smoothing')}="
                f"{self.smoothing} must be in [0, 1)")

    def check(self, run_cfg: RunConfig, manifest: Manifest) -> None:
        super().check(run_cfg, manifest)
        check_reference(self.reference, "dro.reference")
        require(run_cfg.mixture.kind == "online",
                f"mixture.kind={run_cfg.mixture.kind}: the DRO proxy's weights weight its loss "
                "and are not drawn from; it needs mixture.kind=online")
        require(run_cfg.mixture.file is None,
                f"mixture.file={run_cfg.mixture.file!r}: the DRO pass draws α_0 from the DRAW "
                "prior and reads no mixture file; drop mixture.file")
        check_stratifiable(run_cfg, manifest)

    @property
    def reference_file(self) -> str:
        """``reference`` itself if it names a .safetensors file, else its model.safetensors."""
        return reference_file(self.reference)
