"""Learning-rate schedule: linear warm-up, then exponential decay to min_lr (docs/algorithms.md §4)."""

from __future__ import annotations

import math


def lr_at(step: int, *, lr: float, min_lr: float, total_steps: int, warmup_steps: int) -> float:
    """LR of optimizer step ``step`` (0-based): warm-up to ``lr`` over ``warmup_steps``, then
    lr·(min_lr/lr)^progress, reaching ``min_lr`` at the last step."""
    if warmup_steps > 0 and step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    decay_steps = max(total_steps - warmup_steps - 1, 1)
    progress = min(max(step - warmup_steps, 0) / decay_steps, 1.0)
    return lr * math.exp(progress * math.log(min_lr / lr))


def warmup_steps(total_steps: int, warmup_fraction: float) -> int:
    return int(round(total_steps * warmup_fraction))
