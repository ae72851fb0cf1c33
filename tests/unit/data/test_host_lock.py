"""serialised_open: a job's dataset opening waits while another job on the host opens one,
and gives up waiting after its timeout (so two multi-host jobs cannot deadlock)."""

from __future__ import annotations

import fcntl
import os
import tempfile
import threading
import time

from draw_megatron.data.host_lock import LOCK_NAME, serialised_open


def _hold_lock():
    fd = os.open(os.path.join(tempfile.gettempdir(), LOCK_NAME), os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _release(fd):
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def test_open_waits_for_the_other_job():
    fd = _hold_lock()  # "another job" in the middle of its open
    released = []

    def other_job_finishes():
        time.sleep(0.3)
        released.append(time.monotonic())
        _release(fd)

    thread = threading.Thread(target=other_job_finishes)
    thread.start()
    opened_at = serialised_open(time.monotonic, timeout=30)
    thread.join()
    assert released and opened_at >= released[0]


def test_open_goes_ahead_after_the_timeout():
    fd = _hold_lock()
    try:
        start = time.monotonic()
        assert serialised_open(lambda: "opened", timeout=0.2) == "opened"
        assert 0.2 <= time.monotonic() - start < 10
    finally:
        _release(fd)
    assert serialised_open(lambda: "again", timeout=0.2) == "again"  # lock free: no wait
