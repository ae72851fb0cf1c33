"""The proxy DRO pass (SPEC.md §2; DRAW Eq. 2, following DoReMi).

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
  (SPEC.md §2: no extra forward pass).

α_0 ~ Dir(β1), β1 = (√n1/k)·1 (the DRAW prior, n1 the proxy's d_model), drawn from a
generator seeded by the run seed on global rank 0 and broadcast. The run's online mixture
schedule only mirrors α (train records show the α_{t−1} that weighted step t; a ``mixture``
record marks each update); it never drives sampling. At the end the average α* = mean of
α_1 … α_T is written as a static mixture file (DESIGN.md Contract 2) to
``<run.dir>/alpha_star.json`` and the trajectory to ``<run.dir>/dro_trajectory.json``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.distributed as dist

from draw_megatron.config.run import DROConfig, RunConfig
from draw_megatron.data.schedules import broadcast_from_rank0
from draw_megatron.losses import DomainLoss
from draw_megatron.mixture.draw import prior_concentration
from draw_megatron.mixture.dro import DROState, excess_loss
from draw_megatron.mixture.files import MixtureSpec
from draw_megatron.model import GPT, load_consolidated_into
from draw_megatron.parallel import ParallelTopology
from draw_megatron.passes.base import StepPass
from draw_megatron.utils.fs import atomic_write_json
from draw_megatron.utils.log import get_logger

if TYPE_CHECKING:
    from draw_megatron.data.loader import Batch
    from draw_megatron.train.trainer import Trainer

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
    if dist.is_available() and dist.is_initialized():
        alpha = broadcast_from_rank0(alpha if dist.get_rank() == 0 else np.zeros_like(alpha))
    return alpha


def load_reference(path: str, cfg: RunConfig, topology: ParallelTopology,
                   device: torch.device, dtype: torch.dtype) -> GPT:
    """The frozen reference: the proxy's architecture and TP layout, weights from ``path``."""
    model = GPT(cfg.model, topology, sequence_parallel=cfg.parallel.sequence_parallel,
                seed=cfg.run.seed, device=device)
    try:
        load_consolidated_into(path, model, topology)
    except ValueError as exc:
        raise ValueError(f"dro.reference={path!r} does not fit the proxy: {exc}") from None
    model.to(dtype).eval().requires_grad_(False)
    return model


def token_means(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per-domain token means (0 where a domain had no token)."""
    return excess_loss(sums, counts)  # the same guarded ratio


class DROPass(StepPass):
    """Owns the proxy's loss (α-weighted per-domain means) and updates α after each step."""

    name = "dro"
    owns_loss = True
    stratified_batches = True

    def __init__(self, cfg: DROConfig):
        cfg.validate_for_pass("dro")
        self.cfg = cfg
        self.state: DROState | None = None
        self.reference: GPT | None = None

    # ------------------------------------------------------------------ set-up

    def setup(self, trainer: Trainer) -> None:
        schedule = trainer.loader.schedule
        if schedule.kind != "online":
            raise ValueError(f"the DRO pass needs mixture.kind=online (it sets the weights); "
                             f"this run has mixture.kind={trainer.cfg.mixture.kind}")
        self.domains = trainer.manifest.domain_names
        self.n1 = trainer.model_cfg.d_model
        self.prior = prior_concentration(len(self.domains), self.n1)
        alpha_init = draw_initial_weights(self.prior, trainer.cfg.run.seed)
        self.state = DROState(alpha_init, self.cfg.eta, self.cfg.smoothing)
        schedule.set_weights(alpha_init, 0)
        engine, topology = trainer.engine, trainer.topology
        # Undo DeepSpeed's averaging: 1/GAS per micro-batch (backward), 1/DP (all-reduce).
        self.grad_scale = engine.gradient_accumulation_steps() * topology.dp_size
        dtype = next(engine.module.parameters()).dtype
        self.reference = load_reference(self.cfg.reference_file, trainer.cfg, topology,
                                        trainer.env.device, dtype)
        self.excess = DomainLoss(len(self.domains), trainer.env.device)
        self.dp_group = topology.dp_group
        self.run_dir, self.is_writer = trainer.cfg.run.dir, trainer.is_writer
        log.info("DRO pass: k=%d, n1=%d, eta=%g, c=%g, alpha_0=%s, reference %s",
                 len(self.domains), self.n1, self.cfg.eta, self.cfg.smoothing,
                 np.round(alpha_init, 4).tolist(), self.cfg.reference_file)

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

    def after_step(self, trainer: Trainer, step: int, batch: Batch, sums: np.ndarray,
                   counts: np.ndarray) -> list[dict]:
        excess_sums, excess_counts = self.excess.all_reduce(self.dp_group)
        self.excess.reset()
        excess = excess_loss(excess_sums, excess_counts)
        objective = float(np.dot(self.state.alpha, token_means(sums, counts)))
        alpha = self.state.update(excess)
        trainer.loader.schedule.set_weights(alpha, step + 1)  # applies from the next step
        return [{"kind": "dro", "step": step, "excess": excess.tolist(), "alpha": alpha.tolist(),
                 "objective": objective}]

    # ------------------------------------------------------------------ outputs and state

    def finish(self, trainer: Trainer) -> None:
        if not self.is_writer:
            return
        alpha_star = self.state.average()
        provenance = {
            "method": "proxy DRO (SPEC.md §2; DRAW Eq. 2)",
            "run_dir": os.path.abspath(self.run_dir),
            "reference": os.path.abspath(self.cfg.reference_file), "n1": self.n1,
            "k": len(self.domains), "eta": self.cfg.eta, "smoothing": self.cfg.smoothing,
            "steps": self.state.num_steps, "prior": self.prior.tolist(),
            "alpha_init": self.state.alpha_init.tolist(), "seed": trainer.cfg.run.seed,
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
