"""The step-pass interface: what a training variant may change in the step (STYLE.md 6).

The trainer's step is fixed — loader → micro-batches → engine forward → backward →
optimizer step → per-domain (sum, count) all-reduced over DP. A pass plugs in at four points:

- ``stratified_batches``: the pass needs every domain in every global batch (DRO);
- ``micro_loss(loss_BT, micro)``: called after each micro-batch's forward; a pass with
  ``owns_loss = True`` returns the scalar to back-propagate (at most one pass per run owns
  it; without one the step back-propagates the token mean);
- ``after_step(trainer, step, batch, sums, counts)``: after the optimizer step, with the
  proxy's per-domain loss sums and token counts over the global batch; returns metrics
  records (``metrics.jsonl``);
- ``finish(trainer)``: once, when training reached ``train.steps``; ``close()`` always.

State goes through ``state_dict()`` / ``load_state_dict()``, stored in every checkpoint
under ``client_state["passes"][name]``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch

if TYPE_CHECKING:  # the trainer imports the passes' interface, never the reverse at runtime
    from draw_megatron.data.loader import Batch
    from draw_megatron.train.trainer import Trainer


class StepPass:
    """Base class: every hook is optional and does nothing."""

    name: ClassVar[str] = "pass"
    """Key of the pass's state in checkpoints; unique within a run."""

    owns_loss: ClassVar[bool] = False
    """True: :meth:`micro_loss` returns the loss the step back-propagates."""

    stratified_batches: ClassVar[bool] = False
    """True: the loader gives every domain ⌊G/k⌋ (or one more) sequences of each global
    batch (stratified batches)."""

    def setup(self, trainer: Trainer) -> None:
        """Called once the trainer is built (engine, loader), before any resume."""

    def micro_loss(self, loss_BT: torch.Tensor, micro: Batch) -> torch.Tensor | None:
        """``loss_BT``: the per-token losses [B, T] of this rank's micro-batch ``micro``
        (tensors on the training device); the scalar to back-propagate if ``owns_loss``."""
        return None

    def after_step(self, trainer: Trainer, step: int, batch: Batch, sums: np.ndarray,
                   counts: np.ndarray) -> list[dict]:
        """After step ``step``'s optimizer step; ``sums``/``counts``: per-domain token-loss
        sums and token counts over the whole global batch. Returns metrics records."""
        return []

    def finish(self, trainer: Trainer) -> None:
        """Once, after the last step (not after an interrupted run)."""

    def close(self) -> None:
        """Release what the pass opened (datasets); the trainer's close() calls it."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def check_passes(passes: tuple[StepPass, ...]) -> StepPass | None:
    """Raise ValueError for duplicate names or several loss owners; return the owner."""
    names = [p.name for p in passes]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"step passes must have distinct names; repeated: {duplicates}")
    owners = [p.name for p in passes if p.owns_loss]
    if len(owners) > 1:
        raise ValueError(f"only one step pass may own the loss, got {owners}")
    return next((p for p in passes if p.owns_loss), None)
