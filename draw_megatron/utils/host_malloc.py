"""glibc malloc settings for training on the CPU.

A CPU training step allocates and frees tensors of megabytes every micro-batch (activations,
gradients, logits). With glibc's defaults a freed block above the dynamic mmap threshold goes
back to the kernel (``munmap``) and the top of the heap is trimmed, so the next step faults
the same pages in again, zero-filled by the kernel: measured on the 2-core machine, a fifth
of a tiny model's step went to system time. Keeping freed memory in the process (as
jemalloc or tcmalloc do) removes most of that: :func:`keep_freed_memory` raises the mmap
threshold to 1 GiB (so even the logits of a micro-batch come from the heap and are reused),
the trim threshold and the heap's top pad, through ``mallopt`` (the parameters of the
MALLOC_*_ environment variables, set at run time; glibc 2.36 accepts them, an older glibc
that caps the mmap threshold at 32 MiB makes this a warning). The cost: freed memory stays
in the process, so its RSS is its peak, not its current use.

Only the CPU path calls it (on a GPU the host allocates little); DRAW_MEGATRON_MALLOC=default
leaves glibc's defaults (for comparisons). Without glibc (musl, macOS) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

from draw_megatron.utils.log import get_logger

log = get_logger(__name__)

# mallopt parameter numbers (glibc's malloc.h).
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3

MMAP_THRESHOLD = 1 << 30
TRIM_THRESHOLD = 1 << 30
TOP_PAD = 64 << 20

ENV = "DRAW_MEGATRON_MALLOC"


def keep_freed_memory() -> bool:
    """Apply the settings above; True if glibc accepted them all."""
    if os.environ.get(ENV, "") == "default":
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # not glibc
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = all(mallopt(param, value) == 1 for param, value in
             ((M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD),
              (M_TOP_PAD, TOP_PAD)))
    if not ok:
        log.warning("glibc refused a malloc setting; CPU steps may spend time in page faults")
    return ok
