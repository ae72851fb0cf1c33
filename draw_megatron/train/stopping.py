"""Stopping a run cleanly: preemption signals and non-finite losses.

**Signals.** SLURM sends a signal before a job's time limit (``--signal=USR1@120``) and
SIGTERM on preemption or ``scancel``. :class:`StopSignals` turns SIGTERM and SIGUSR1 into a
flag; after every step the ranks agree on it (one MAX all-reduce of an int over a gloo group,
so no GPU synchronisation), and the trainer saves a checkpoint at that step boundary and
raises :class:`Preempted`. The launch scripts exit with :data:`EXIT_PREEMPTED` (75,
EX_TEMPFAIL), which ``launch/slurm/pretrain.sbatch`` answers with ``scontrol requeue``;
the requeued job resumes from that checkpoint exactly.

**Non-finite losses** (``train.nonfinite``). Under ZeRO 1 and 2 DeepSpeed's optimizer skips
a step whose gradient norm is inf or NaN (its overflow check, switched on for every
precision), so the parameters stay good. ``stop`` then saves a checkpoint of that last good
state (the loader as before the bad batch) and raises :class:`NonFiniteLoss` naming the step
and the domains whose loss was not finite; ``skip`` logs a ``skipped`` record, counts the
batch as consumed and goes on, and stops as above after ``train.max_skipped`` skipped steps
in a row. Under ZeRO 0 and 3 the update cannot be withheld: ``stop`` exits at once (the last
complete checkpoint is the good state) and ``skip`` is refused by the config check.
"""

from __future__ import annotations

import signal
import threading

import torch
import torch.distributed as dist

from draw_megatron.parallel.broadcast import host_group
from draw_megatron.train.early_signals import SIGNALS, early_signal

EXIT_PREEMPTED = 75
"""Launchers' exit status after a signal-triggered checkpoint (EX_TEMPFAIL: requeue me)."""

EXIT_NONFINITE = 3
"""Launchers' exit status when training stopped on a non-finite loss."""


class Preempted(Exception):
    """Training stopped at a step boundary after a signal; a checkpoint was saved."""

    def __init__(self, step: int, signame: str):
        super().__init__(f"stopped by {signame} after step {step}: checkpoint saved, rerun the "
                         "same command (or requeue the job) to resume")
        self.step, self.signame = step, signame


class NonFiniteLoss(Exception):
    """Training stopped because a step's loss was inf or NaN."""


class StopSignals:
    """SIGTERM and SIGUSR1 set a flag (the handlers only record; no work in a handler)."""

    SIGNALS = SIGNALS

    def __init__(self, group=None):
        self.received: str | None = early_signal()  # one that arrived before training
        self.group = group
        self._previous = {}
        if threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                sig = getattr(signal, name, None)
                if sig is not None:
                    self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, _frame) -> None:
        self.received = signal.Signals(signum).name

    def agreed(self) -> str | None:
        """The signal any rank received (None if none): the same answer on every rank."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return self.received
        flag = torch.tensor([0 if self.received is None else
                             1 + self.SIGNALS.index(self.received)], dtype=torch.int64)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.group)
        return None if int(flag) == 0 else self.SIGNALS[int(flag) - 1]

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def control_group():
    """A gloo group over all ranks for host-side agreement (None when not distributed or
    when the default group is gloo already)."""
    return host_group()
