"""A rank-aware logger: rank 0 logs at INFO, other ranks only warnings and errors."""

from __future__ import annotations

import logging
import os
import sys

_FORMAT = "%(asctime)s [%(name)s%(rank)s] %(levelname)s %(message)s"


class _RankFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        rank = _global_rank()
        record.rank = "" if rank is None else f" r{rank}"
        return rank in (None, 0) or record.levelno >= logging.WARNING


def _global_rank() -> int | None:
    dist = sys.modules.get("torch.distributed")  # never import torch just to log
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    rank = os.environ.get("RANK")
    return int(rank) if rank is not None else None


def get_logger(name: str) -> logging.Logger:
    """The project's logger for ``name`` (``draw_megatron.<name>``), configured once."""
    root = logging.getLogger("draw_megatron")
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%H:%M:%S"))
        handler.addFilter(_RankFilter())
        root.addHandler(handler)
        root.setLevel(os.environ.get("DRAW_LOG_LEVEL", "INFO"))
        root.propagate = False
    return root if name == "draw_megatron" else root.getChild(name.removeprefix("draw_megatron."))
