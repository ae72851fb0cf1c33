"""Checkpoints: DeepSpeed's save/load, with our loader, mixture and train state in
``client_state``, and a completion marker so a crash mid-save never wins.

Layout: ``<run>/checkpoints/step_00000040/`` (DeepSpeed's files) + ``COMPLETE`` (written by
rank 0 after every rank finished saving). Resume picks the newest folder with the marker;
DeepSpeed's own ``latest`` file is not used, because it would name a half-written tag.

The marker is JSON: the step, the layout the checkpoint was saved at (tp, dp, ZeRO stage,
world size) and the size and xxh64 hash of every file of the checkpoint. A resume checks
them, so a file truncated or rewritten after the marker (a full disk, a copy cut short)
makes the checkpoint count as broken: the previous complete one is used, with a warning
naming the file.

**Another layout.** A checkpoint holds DeepSpeed's shards for the layout it was saved at.
With ``run.resume_layout=reshape`` a run at another (tp, dp, ZeRO 1/2) layout converts it
once into DeepSpeed's universal format (``deepspeed.checkpoint.ds_to_universal``: full
fp32 parameters and Adam moments per parameter, under ``step_N/universal/``) and loads
that; DeepSpeed cuts each rank's TP slice and ZeRO partition. Our TP layers are not
Megatron's, so the checkpoint carries what the converter needs to merge TP slices
(``universal_checkpoint_info``: which parameters are replicated, split along dim 1, or
fused blocks split along dim 0), derived from the parameters' ``partition_dim`` and
``partition_stride``. ZeRO 0 checkpoints change dp only (their optimizer state is whole on
every rank) and ZeRO 3 checkpoints do not reshape (see :func:`check_reshape`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from types import SimpleNamespace

import torch.distributed as dist
from torch import nn

from draw_megatron.utils.fs import atomic_write_json
from draw_megatron.utils.log import get_logger

log = get_logger(__name__)

MARKER = "COMPLETE"
UNIVERSAL = "universal"
_TAG = re.compile(r"^step_(\d{8})$")
_CHUNK = 1 << 22


def tag_for(step: int) -> str:
    return f"step_{step:08d}"


@dataclass(frozen=True)
class Layout:
    """The parallel layout a checkpoint is written at."""

    tp: int
    """Tensor-parallel size."""
    dp: int
    """Data-parallel size."""
    zero_stage: int
    """DeepSpeed ZeRO stage."""
    world_size: int
    """tp × dp ranks."""

    def describe(self) -> str:
        return f"tp {self.tp} x dp {self.dp} (ZeRO {self.zero_stage})"


class LayoutMismatch(RuntimeError):
    """A checkpoint's layout differs from the run's and cannot (or may not) be reshaped."""


def file_digest(path: str) -> str:
    """A fast content hash of ``path``: xxh64 if xxhash is installed, else blake2b."""
    try:
        import xxhash

        digest, name = xxhash.xxh64(), "xxh64"
    except ImportError:  # pragma: no cover - xxhash is a dependency
        import hashlib

        digest, name = hashlib.blake2b(digest_size=16), "blake2b"
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return f"{name}:{digest.hexdigest()}"


def checkpoint_files(folder: str) -> dict[str, list]:
    """{relative path: [size, hash]} of every file DeepSpeed wrote in ``folder`` (the marker
    and a universal conversion excluded)."""
    files = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        if dirpath == folder:
            dirnames[:] = [d for d in dirnames if d != UNIVERSAL and not d.startswith(".")]
        for name in filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, folder)
            if rel != MARKER:
                files[rel] = [os.path.getsize(path), file_digest(path)]
    return dict(sorted(files.items()))


def universal_info(module: nn.Module) -> dict:
    """What ``ds_to_universal`` needs to merge our TP slices into full tensors.

    Unmarked parameters are replicated over TP; row-parallel weights are split along dim 1;
    column-parallel ones along dim 0, fused blocks (stride s, rank r holds [A_r; B_r; ...])
    as s sub-parameters. Names are anchored regexes of the module's parameter names.
    """
    from deepspeed.checkpoint.constants import (PARAMETER_WITH_ROW_PARALLELISM_PATTERNS,
                                                PARAMETER_WITH_SUB_PARAMS,
                                                TP_REPLICATED_PARAMETER_PATTERNS)

    replicated, rows, fused = [], [], []
    for name, param in module.named_parameters():
        pattern = f"^{re.escape(name)}$"
        if not getattr(param, "tensor_model_parallel", False):
            replicated.append(pattern)
        elif param.partition_dim == 1:
            rows.append(pattern)
        elif getattr(param, "partition_stride", 1) > 1:
            shape = [-1] * param.dim()
            shape[param.partition_dim] = param.partition_stride
            fused.append({"patterns": [pattern], "shape": shape,
                          "partition_dim": param.partition_dim})
    return {TP_REPLICATED_PARAMETER_PATTERNS: replicated,
            PARAMETER_WITH_ROW_PARALLELISM_PATTERNS: rows, PARAMETER_WITH_SUB_PARAMS: fused}


class CheckpointManager:
    """``layout``: the run's layout, recorded in every marker and checked on load."""

    def __init__(self, root: str, keep: int, is_writer: bool, layout: Layout | None = None):
        self.root, self.keep, self.is_writer, self.layout = root, keep, is_writer, layout

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
        """The newest checkpoint with a marker (not verified: see :meth:`latest_valid`)."""
        steps = self.complete_steps()
        return steps[-1] if steps else None

    def marker(self, step: int) -> dict:
        """The marker of ``step`` ({} for a marker of the older, bare format)."""
        with open(os.path.join(self.root, tag_for(step), MARKER)) as fh:
            marker = json.load(fh)
        return marker if isinstance(marker, dict) else {}

    def verify(self, step: int) -> str | None:
        """Why checkpoint ``step`` is broken (a file missing, truncated or changed since its
        marker), or None if it is whole."""
        folder = os.path.join(self.root, tag_for(step))
        try:
            files = self.marker(step).get("files")
        except (OSError, ValueError) as exc:
            return f"its {MARKER} marker is unreadable ({exc})"
        for rel, (size, digest) in (files or {}).items():
            path = os.path.join(folder, rel)
            if not os.path.isfile(path):
                return f"{path} is missing"
            if os.path.getsize(path) != size:
                return f"{path} has {os.path.getsize(path)} bytes, {size} when it was saved"
            if file_digest(path) != digest:
                return f"{path} changed since it was saved (hash mismatch)"
        return None

    def latest_valid(self) -> int | None:
        """The newest checkpoint whose files match its marker; older ones are tried in turn,
        with a warning for each broken one. Rank 0 checks and tells the others."""
        choice: list = [None]
        if _rank() == 0:
            for step in reversed(self.complete_steps()):
                problem = self.verify(step)
                if problem is None:
                    choice[0] = step
                    break
                log.warning("checkpoint %s is broken: %s; trying the previous one", tag_for(step),
                            problem)
        if _distributed():
            dist.broadcast_object_list(choice, src=0)
        return choice[0]

    def save(self, engine, step: int, client_state: dict) -> None:
        tag = tag_for(step)
        if self.layout is not None:
            client_state = {**client_state, "layout": asdict(self.layout),
                            "universal_checkpoint_info": universal_info(engine.module)}
        engine.save_checkpoint(self.root, tag=tag, client_state=client_state, save_latest=False)
        if dist.is_initialized():
            dist.barrier()  # every rank's shards are on disk before the marker
        if self.is_writer:
            start = time.perf_counter()
            files = checkpoint_files(os.path.join(self.root, tag))
            marker = {"step": step, "files": files}
            if self.layout is not None:
                marker["layout"] = asdict(self.layout)
            atomic_write_json(os.path.join(self.root, tag, MARKER), marker)
            log.debug("hashed %d files of %s in %.3f s", len(files), tag,
                      time.perf_counter() - start)
            self._prune()
        if dist.is_initialized():
            dist.barrier()
        log.info("saved checkpoint %s", tag)

    def saved_layout(self, step: int) -> Layout | None:
        """The layout checkpoint ``step`` was saved at (None for an older marker, or none)."""
        try:
            layout = self.marker(step).get("layout")
        except FileNotFoundError:
            return None
        return None if layout is None else Layout(**layout)

    def load(self, engine, step: int, reshape: bool = False) -> dict:
        """Load checkpoint ``step`` into ``engine``; return its client state.

        A checkpoint saved at another layout than ``self.layout`` is an error naming both,
        unless ``reshape``: then it goes through DeepSpeed's universal format.
        """
        saved = self.saved_layout(step)
        if self.layout is not None and saved is not None and saved != self.layout:
            if not reshape:
                raise LayoutMismatch(
                    f"the checkpoint {tag_for(step)} was saved at {saved.describe()}; this run "
                    f"is {self.layout.describe()}: set run.resume_layout=reshape")
            return self._load_reshaped(engine, step, saved)
        path, client_state = engine.load_checkpoint(self.root, tag=tag_for(step),
                                                    load_optimizer_states=True,
                                                    load_lr_scheduler_states=True)
        if path is None:
            raise RuntimeError(f"DeepSpeed could not load {os.path.join(self.root, tag_for(step))}")
        log.info("resumed from %s", path)
        return client_state

    def _load_reshaped(self, engine, step: int, saved: Layout) -> dict:
        now = self.layout
        check_reshape(saved, now)
        folder = os.path.join(self.root, tag_for(step))
        if saved.zero_stage == 0:  # optimizer state whole on every rank: DP is free
            path, client_state = engine.load_checkpoint(self.root, tag=tag_for(step))
        else:
            if _rank() == 0 and not os.path.isdir(os.path.join(folder, UNIVERSAL)):
                to_universal(folder, inject_info=saved.tp == 1)
            if _distributed():
                dist.barrier()
            path, client_state = _load_universal(engine, folder)
        if path is None:
            raise RuntimeError(f"DeepSpeed could not load {folder} at {now.describe()}")
        log.warning("resumed from %s saved at %s, reshaped to %s", folder, saved.describe(),
                    now.describe())
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


def _load_universal(engine, folder: str) -> tuple[str | None, dict]:
    config = engine._config  # DeepSpeed reads this flag at load time only
    config.load_universal_checkpoint = True
    try:
        return engine.load_checkpoint(folder, tag=UNIVERSAL, load_optimizer_states=True,
                                      load_lr_scheduler_states=True)
    finally:
        config.load_universal_checkpoint = False


def check_reshape(saved: Layout, now: Layout) -> None:
    """Raise :class:`LayoutMismatch` for a change of layout that cannot be made faithfully."""
    if 3 in (saved.zero_stage, now.zero_stage):
        # DeepSpeed 0.19's ZeRO 3 universal load restores the weights but not Adam's state
        # faithfully: a dp 2 -> dp 1 resume drifted by 3.8e-4 (relative loss) within 5 steps,
        # as against 5e-9 at ZeRO 1/2.
        raise LayoutMismatch(f"cannot reshape a checkpoint saved at {saved.describe()} to "
                             f"{now.describe()}: ZeRO 3 checkpoints resume only at their own "
                             "layout")
    if 0 in (saved.zero_stage, now.zero_stage) and (saved.zero_stage != now.zero_stage
                                                    or saved.tp != now.tp):
        raise LayoutMismatch(f"cannot reshape a checkpoint saved at {saved.describe()} to "
                             f"{now.describe()}: a ZeRO 0 checkpoint resumes at ZeRO 0 with its "
                             f"tp {saved.tp} (any dp)")


def to_universal(folder: str, inject_info: bool = False) -> str:
    """Convert the DeepSpeed checkpoint in ``folder`` to the universal format in
    ``folder/universal`` (through a temporary folder, so a crash leaves none)."""
    from deepspeed.checkpoint import ds_to_universal

    start = time.perf_counter()
    out = os.path.join(folder, UNIVERSAL)
    tmp = tempfile.mkdtemp(prefix=f".{UNIVERSAL}.tmp-", dir=folder)
    try:
        ds_to_universal.main(SimpleNamespace(
            input_folder=folder, output_folder=tmp, num_extract_workers=1, num_merge_workers=1,
            keep_temp_folder=False, strict=True, inject_missing_state=inject_info))
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        latest = os.path.join(folder, "latest_universal")  # the converter's pointer: unused
        if os.path.exists(latest):
            os.unlink(latest)
    log.info("converted %s to DeepSpeed's universal format in %.1f s", folder,
             time.perf_counter() - start)
    return out


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
