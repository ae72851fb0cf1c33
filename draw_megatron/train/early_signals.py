"""SIGTERM and SIGUSR1 recorded from the moment a launch script starts.

Their default action kills the process, and a rank spends its first seconds to minutes
importing torch and DeepSpeed, opening the data and building the engine before the
training loop installs its own handlers (:class:`draw_megatron.train.stopping.StopSignals`).
A SLURM warning (``--signal=USR1@120``) landing in that time would kill one rank and leave
the others waiting in a collective. :func:`catch_early` records the signal instead;
StopSignals starts from what was recorded, and the trainer acts on it at the first step
boundary (before the first step: checkpoint, exit 75, requeue). This module imports nothing
heavy, so the launch scripts call it first.
"""

from __future__ import annotations

import signal
import threading

SIGNALS = ("SIGTERM", "SIGUSR1")

_received: list[str] = []


def _record(signum, _frame) -> None:
    _received.append(signal.Signals(signum).name)


def catch_early() -> None:
    """Record SIGTERM/SIGUSR1 instead of dying (main thread only, as Python requires)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for name in SIGNALS:
        sig = getattr(signal, name, None)
        if sig is not None:
            signal.signal(sig, _record)


def early_signal() -> str | None:
    """The first signal recorded since :func:`catch_early`, if any."""
    return _received[0] if _received else None
