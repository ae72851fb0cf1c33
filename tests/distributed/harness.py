"""A CPU gloo harness: run ``fn(rank, world_size, *args)`` in ``world_size`` processes.

Each process gets the launcher's environment (RANK, WORLD_SIZE, LOCAL_RANK,
LOCAL_WORLD_SIZE, MASTER_ADDR/PORT), as deepspeed/torchrun would set it, and an initialised
gloo default group. Return values come back in rank order; an exception in any rank fails
the caller with that rank's traceback.
"""

from __future__ import annotations

import os
import socket
import traceback

import torch.distributed as dist
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, world_size: int, port: int, fn, args, queue) -> None:
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world_size),
                       "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(world_size),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                       "OMP_NUM_THREADS": "1"})
    try:
        dist.init_process_group("gloo", rank=rank, world_size=world_size)
        result = fn(rank, world_size, *args)
        queue.put((rank, True, result))
    except BaseException:
        queue.put((rank, False, traceback.format_exc()))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def run_distributed(fn, world_size: int = 2, *args, timeout: float = 120.0) -> list:
    """Run ``fn`` on ``world_size`` gloo ranks; return its results in rank order."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_entry, args=(r, world_size, port, fn, args, queue))
             for r in range(world_size)]
    for p in procs:
        p.start()
    results: dict[int, object] = {}
    try:
        for _ in range(world_size):
            rank, ok, value = queue.get(timeout=timeout)
            if not ok:
                raise AssertionError(f"rank {rank} failed:\n{value}")
            results[rank] = value
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    return [results[r] for r in range(world_size)]


class Killed(Exception):
    """Raised inside a run to stand for the process being killed."""


def fit_until_killed(trainer, kill_at: int | None = None) -> None:
    """``trainer.fit()``, "killed" before step ``kill_at`` if given; closes the trainer and
    waits for every rank, so a restarted run sees all checkpoints and metrics."""
    if kill_at is not None:
        step_fn = trainer.train_step

        def dying_step():
            if trainer.state.step == kill_at:
                raise Killed
            return step_fn()

        trainer.train_step = dying_step
    try:
        trainer.fit()
    except Killed:
        pass
    finally:
        trainer.close()
    dist.barrier()
