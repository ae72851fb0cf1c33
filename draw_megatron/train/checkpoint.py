"""Checkpoints: DeepSpeed's save/load, with our loader, mixture and train state in
``client_state``, and a completion marker so a crash mid-save never wins.

Layout: ``<run>/checkpoints/step_00000040/`` (DeepSpeed's files) + ``COMPLETE`` (written by
rank 0 after every rank finished saving). Resume picks the newest folder with the marker;
DeepSpeed's own ``latest`` file is not used, because it would name a half-written tag.
"""

from __future__ import annotations

import os
import re
import shutil

import torch.distributed as dist

from draw_megatron.utils.fs import atomic_write_json
from draw_megatron.utils.log import get_logger

log = get_logger(__name__)

MARKER = "COMPLETE"
_TAG = re.compile(r"^step_(\d{8})$")


def tag_for(step: int) -> str:
    return f"step_{step:08d}"


class CheckpointManager:
    def __init__(self, root: str, keep: int, is_writer: bool):
        self.root, self.keep, self.is_writer = root, keep, is_writer

    def complete_steps(self) -> list[int]:
        if not os.path.isdir(self.root):
            return []
        steps = []
        for name in os.listdir(self.root):
            m = _TAG.match(name)
            if m and os.path.isfile(os.path.join(self.root, name, MARKER)):
                steps.append(int(m.group(1)))
        return sorted(steps)

    def latest(self) -> int | None:
        steps = self.complete_steps()
        return steps[-1] if steps else None

    def save(self, engine, step: int, client_state: dict) -> None:
        tag = tag_for(step)
        engine.save_checkpoint(self.root, tag=tag, client_state=client_state, save_latest=False)
        if dist.is_initialized():
            dist.barrier()  # every rank's shards are on disk before the marker
        if self.is_writer:
            atomic_write_json(os.path.join(self.root, tag, MARKER), {"step": step})
            self._prune()
        if dist.is_initialized():
            dist.barrier()
        log.info("saved checkpoint %s", tag)

    def load(self, engine, step: int) -> dict:
        """Load checkpoint ``step`` into ``engine``; return its client state."""
        path, client_state = engine.load_checkpoint(self.root, tag=tag_for(step),
                                                    load_optimizer_states=True,
                                                    load_lr_scheduler_states=True)
        if path is None:
            raise RuntimeError(f"DeepSpeed could not load {os.path.join(self.root, tag_for(step))}")
        log.info("resumed from %s", path)
        return client_state

    def _prune(self) -> None:
        steps = self.complete_steps()
        for step in (steps[: max(len(steps) - self.keep, 0)] if self.keep > 0 else []):  # 0: all
            shutil.rmtree(os.path.join(self.root, tag_for(step)), ignore_errors=True)
        # Folders without a marker are saves that died; older than the latest, they are junk.
        latest = steps[-1] if steps else None
        for name in os.listdir(self.root):
            m = _TAG.match(name)
            if m and latest is not None and int(m.group(1)) < latest and \
                    not os.path.isfile(os.path.join(self.root, name, MARKER)):
                shutil.rmtree(os.path.join(self.root, name), ignore_errors=True)

