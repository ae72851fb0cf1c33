"""Atomic outputs: write to a temporary sibling, move into place only when complete.

A crash or Ctrl-C leaves the previous output (or nothing), never a half-written one that
looks whole.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def atomic_output_dir(path: str, overwrite: bool = False) -> Iterator[str]:
    """Yield a fresh temporary folder that replaces ``path`` when the block succeeds.

    Raises FileExistsError if ``path`` exists and ``overwrite`` is false (checked before any
    work, so a long job does not fail at its end). On any exception the temporary folder is
    removed and ``path`` is left as it was.
    """
    path = os.path.abspath(path)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite to replace it")
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.tmp-", dir=parent)
    try:
        yield tmp
        _replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _replace_dir(src: str, dst: str) -> None:
    if not os.path.exists(dst):
        os.rename(src, dst)
        return
    old = tempfile.mkdtemp(prefix=f".{os.path.basename(dst)}.old-", dir=os.path.dirname(dst))
    os.rmdir(old)
    os.rename(dst, old)  # two renames: a crash between them leaves both folders on disk
    os.rename(src, dst)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_open(path: str, mode: str = "w") -> Iterator:
    """A file object on a temporary sibling of ``path`` ("w" text, utf-8, or "wb") that
    replaces ``path`` when the block succeeds; on any exception ``path`` is left as it was."""
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.tmp-", dir=parent)
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~umask())  # mkstemp makes 0600; give the usual mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder."""
    with atomic_open(path) as fh:
        fh.write(text)


def umask() -> int:
    """The process's umask (read without changing it for good)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_json(path: str, obj: object) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")
