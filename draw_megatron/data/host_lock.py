"""One job at a time per host opens a StreamingDataset.

The streaming library names its shared memory ``/<prefix>_locals`` etc., with the prefix
the first number no other dataset on the host has registered. Two jobs that open their
datasets at the same moment (a pipeline's parallel stages, a test suite beside a run) can
both find the same number free, and the second one's registration fails with
``FileExistsError: '/000051_locals'``. The library's own retries cover ranks of one job,
not two jobs.

:func:`serialised_open` makes the search-and-register of one job finish before another
job's starts: the node's first local rank takes an exclusive ``flock`` on a file in the
temp folder, then every rank of the job passes a barrier (so no rank scans before its
leader holds the lock), opens, and passes a second barrier before the lock is released.
A job spanning several hosts takes one lock per host; two such jobs could each hold one
and wait for the other, so the wait is bounded (``timeout``) and the open then goes ahead
unlocked, as it did before.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import torch.distributed as dist

from draw_megatron.utils.log import get_logger

log = get_logger(__name__)

T = TypeVar("T")

LOCK_NAME = "draw_megatron_streaming_open.lock"


@contextlib.contextmanager
def _host_lock(timeout: float) -> Iterator[bool]:
    """Hold the host's lock file (True), or give up after ``timeout`` seconds (False)."""
    path = os.path.join(tempfile.gettempdir(), LOCK_NAME)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    held = False
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held = True
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    log.warning("another job has held %s for %.0f s; opening the data without "
                                "it", path, timeout)
                    break
                time.sleep(0.05)
        yield held
    finally:
        if held:
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def serialised_open(open_fn: Callable[[], T], timeout: float = 300.0) -> T:
    """``open_fn()`` (a StreamingDataset construction, collective over the job's ranks)
    while no other job on this host runs one."""
    distributed = dist.is_available() and dist.is_initialized()
    leader = os.environ.get("LOCAL_RANK", "0") == "0"
    lock = _host_lock(timeout) if leader else contextlib.nullcontext(False)
    with lock:
        if distributed:
            dist.barrier()  # no rank searches for a prefix before its node's leader holds the lock
        opened = open_fn()  # a rank that fails here takes the job down: no barrier to keep
        if distributed:
            dist.barrier()  # every rank has registered before the lock goes
        return opened
