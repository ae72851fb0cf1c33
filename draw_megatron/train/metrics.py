"""metrics.jsonl (docs/architecture.md, Contract 5) and TensorBoard events, written by global rank 0.

One JSON object a line, appended and flushed per record. After a resume the steps after
the checkpoint are logged again: readers keep the last record per (kind, step) and skip
a truncated last line (:func:`read_metrics`).
"""

from __future__ import annotations

import json
import math
import os

from draw_megatron.utils.log import get_logger

log = get_logger(__name__)

METRICS_NAME = "metrics.jsonl"


class MetricsLog:
    def __init__(self, run_dir: str, is_writer: bool, tensorboard: bool = False):
        self.is_writer = is_writer
        self._fh = None
        self._tb = None
        if not is_writer:
            return
        os.makedirs(run_dir, exist_ok=True)
        self._fh = open(os.path.join(run_dir, METRICS_NAME), "a", encoding="utf-8")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(os.path.join(run_dir, "tensorboard"))

    def write(self, record: dict) -> None:
        if not self.is_writer:
            return
        self._fh.write(json.dumps(record, allow_nan=False, default=_plain) + "\n")
        self._fh.flush()
        if self._tb is not None:
            self._scalars(record)

    def _scalars(self, record: dict) -> None:
        kind, step = record["kind"], record["step"]
        # A record naming its task and metric (lm_eval) is one scalar per (task, metric).
        prefix = (f"{kind}/{record['task']}/{record['metric']}" if "task" in record
                  and "metric" in record else kind)
        for key, value in record.items():
            if isinstance(value, (int, float)) and key != "step" and math.isfinite(value):
                self._tb.add_scalar(prefix if prefix != kind and key == "value"
                                    else f"{prefix}/{key}", value, step)
        self._tb.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
        if self._tb is not None:
            self._tb.close()


def _plain(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to metrics.jsonl")


def read_metrics(path: str, kind: str | None = None) -> list[dict]:
    """Records of ``path`` (last one per (kind, step) — and per task and metric for records
    that name them, such as ``lm_eval``), in step order; a truncated last line (a crash
    mid-write) is skipped."""
    latest: dict[tuple, dict] = {}
    with open(path, encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            if i >= len(lines) - 2:  # only the last line may be cut short
                continue
            raise ValueError(f"{path}:{i + 1} is not JSON") from None
        if kind is None or rec.get("kind") == kind:
            latest[(rec["kind"], rec["step"], rec.get("task"), rec.get("metric"))] = rec
    return sorted(latest.values(), key=lambda r: (r["step"], r["kind"]))
