"""The Pile's jsonl / jsonl.zst -> one tokenized, token-packed MDS dataset per domain and split.

Layout and format are docs/architecture.md, Contract 1. Documents are tokenized, each followed by EOS,
joined into one stream per (split, domain), and cut into windows of seq_len + 1 tokens that
start every seq_len tokens (so consecutive windows share one token and every token after
the first is a label exactly once). The tail shorter than a window is dropped and counted.

Parallelism: the main process reads raw lines in input order and writes the shards; worker
processes parse and tokenize chunks of lines (``Pool.imap`` keeps chunk order), so the output
is byte-identical for any number of workers.
"""

from __future__ import annotations

import errno
import multiprocessing as mp
import os
import shutil
import tempfile
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
from streaming import MDSWriter
from tqdm import tqdm

from draw_megatron.data import remote
from draw_megatron.data.manifest import (INDEX_NAME, MANIFEST_FORMAT, MANIFEST_NAME,
                                         SHARD_HASH, natural_weights)
from draw_megatron.data.pile import PILE_EPOCHS, BadInputLog, iter_raw_lines, parse_line, slugify
from draw_megatron.data.encode_worker import EncodeTask, init_worker
from draw_megatron.data.tokenizer import Tokenizer
from draw_megatron.utils.fs import atomic_output_dir, atomic_write_json
from draw_megatron.utils.log import get_logger

log = get_logger(__name__)

TOKENIZER_NAME = "tokenizer.model"


class ConversionError(RuntimeError):
    """The input cannot give a usable dataset (the message says why)."""


@dataclass
class ConvertConfig:
    seq_len: int = 1024
    """Tokens per training sequence; windows on disk hold seq_len + 1."""
    workers: int = 1
    """Tokenizer processes; 1 tokenizes in the main process. Output is identical for any N."""
    domains: list[str] | None = None
    """Allow-list of display names; other domains are skipped and counted."""
    epochs: dict[str, float] = field(default_factory=dict)
    """Epoch overrides by display name, on top of The Pile's own (PILE_EPOCHS)."""
    shard_size: int = 1 << 25
    """Bytes per MDS shard (lower it for thousands of domains: each open domain buffers one)."""
    chunk_bytes: int = 1 << 17
    """Raw input bytes per work item sent to a tokenizer process."""
    single_domain: str | None = None
    """Put every document in one domain of this display name, whatever its ``pile_set_name``
    (documents without one are then accepted); None: one domain per ``pile_set_name``."""
    staging_dir: str | None = None
    """Remote output only: local folder that holds each shard until it is uploaded (None:
    the system's temporary folder). It needs room for a few dozen shards (those queued)."""

    def __post_init__(self) -> None:
        if self.seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, got {self.seq_len}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.single_domain is not None and (not self.single_domain or self.domains):
            raise ValueError("single_domain must be a non-empty name, and cannot be combined "
                             "with a domains allow-list")
        for name, value in self.epochs.items():
            if not value > 0:
                raise ValueError(f"epochs for {name!r} must be > 0, got {value}")


# ---------------------------------------------------------------------------------------
# Main side: windows per (split, domain), shards, manifest.


class _DomainPacker:
    """Packs one domain's token stream of one split into overlapping windows in MDS shards."""

    def __init__(self, out_dir: str, seq_len: int, dtype: str, shard_size: int,
                 publish: Callable[[str], None] | None = None):
        # publish: given a file name of out_dir, uploads it (remote output)
        self.out_dir, self.seq_len, self.publish = out_dir, seq_len, publish
        self.dtype, self.shard_size = dtype, shard_size
        self.writer: MDSWriter | None = None
        self.pending: list[np.ndarray] = []
        self.num_pending = 0
        self.documents = self.tokens = self.sequences = 0

    def add(self, tokens: np.ndarray) -> None:
        self.documents += 1
        self.tokens += len(tokens)
        self.pending.append(tokens)
        self.num_pending += len(tokens)
        if self.num_pending > self.seq_len:
            self._flush()

    def _flush(self) -> None:
        stream = np.concatenate(self.pending) if len(self.pending) > 1 else self.pending[0]
        num_windows = (len(stream) - 1) // self.seq_len
        if self.writer is None:
            kind = MDSWriter if self.publish is None else _PublishingMDSWriter
            # The shard hashes let the loader catch a damaged shard (flipped bytes are still
            # valid token ids) the first time it reads one.
            self.writer = kind(out=self.out_dir, columns={"tokens": f"ndarray:{self.dtype}"},
                               size_limit=self.shard_size, compression=None,
                               hashes=[SHARD_HASH])
            if self.publish is not None:
                self.writer.publish = self.publish
        span = self.seq_len + 1
        for i in range(num_windows):
            start = i * self.seq_len
            self.writer.write({"tokens": stream[start:start + span]})
        self.sequences += num_windows
        rest = stream[num_windows * self.seq_len:]  # starts with the last window's last token
        self.pending, self.num_pending = [rest], len(rest)

    def close(self) -> dict:
        if self.writer is not None:
            self.writer.finish()
        # A token is dropped when no window holds it; the first pending token is the last
        # window's last label whenever a window was written.
        dropped = self.num_pending - (1 if self.sequences else 0)
        return {"documents": self.documents, "tokens": self.tokens,
                "sequences": self.sequences, "dropped_tokens": dropped}


class _PublishingMDSWriter(MDSWriter):
    """An MDSWriter into a local folder that hands each finished shard, then the index, to
    ``publish`` (which uploads and deletes it), so the folder holds about one shard."""

    publish: Callable[[str], None]

    def flush_shard(self) -> None:
        super().flush_shard()
        self.publish(self.shards[-1]["raw_data"]["basename"])

    def finish(self) -> None:
        super().finish()
        self.publish(INDEX_NAME)


def _iter_chunks(paths: list[str], bad: BadInputLog, chunk_bytes: int
                 ) -> Iterator[tuple[str, int, list[bytes]]]:
    """(path, first line number, consecutive raw lines) of about ``chunk_bytes`` each."""
    for path in paths:
        lines: list[bytes] = []
        first, size = 1, 0
        for lineno, raw in iter_raw_lines(path, bad):
            if not lines:
                first = lineno
            lines.append(raw)
            size += len(raw)
            if size >= chunk_bytes:
                yield path, first, lines
                lines, size = [], 0
        if lines:
            yield path, first, lines


class _SplitWriter:
    """The packers, bad-input log and skipped-domain counts of one split."""

    def __init__(self, split: str, out_root: str, cfg: ConvertConfig, dtype: str,
                 publisher: remote.Publisher | None = None):
        self.split, self.out_root, self.cfg, self.dtype = split, out_root, cfg, dtype
        self.publisher = publisher
        self.bad = BadInputLog()
        self.packers: dict[str, _DomainPacker] = {}
        self.filtered: dict[str, int] = {}
        self.stats: dict[str, dict] = {}  # display name -> counts, once closed
        self.allowed = set(cfg.domains) if cfg.domains else None

    def add(self, docs: list[tuple[str, np.ndarray]], slugs: dict[str, str]) -> None:
        for domain, tokens in docs:
            if self.allowed is not None and domain not in self.allowed:
                self.filtered[domain] = self.filtered.get(domain, 0) + 1
                continue
            packer = self.packers.get(domain)
            if packer is None:
                slug = slugs.get(domain) or _new_slug(domain, slugs)
                packer = self.packers[domain] = _DomainPacker(
                    os.path.join(self.out_root, self.split, slug), self.cfg.seq_len,
                    self.dtype, self.cfg.shard_size, self._publish_fn(slug))
            packer.add(tokens)

    def _publish_fn(self, slug: str) -> Callable[[str], None] | None:
        if self.publisher is None:
            return None
        publisher, folder = self.publisher, os.path.join(self.split, slug)
        return lambda name: publisher.submit(os.path.join(folder, name))

    def close(self) -> None:
        self.stats = {domain: packer.close() for domain, packer in self.packers.items()}


def _token_dtype(vocab_size: int) -> str:
    # Contract 1: uint16, and uint32 once the vocabulary exceeds 65,535 ids.
    return "uint16" if vocab_size <= 65535 else "uint32"


def _new_slug(domain: str, slugs: dict[str, str]) -> str:
    base = slugify(domain)
    taken = set(slugs.values())
    slug, n = base, 1
    while slug in taken:
        n += 1
        slug = f"{base}_{n}"
    slugs[domain] = slug
    return slug


def convert_corpus(splits: dict[str, list[str]], tokenizer_path: str, out: str,
                   cfg: ConvertConfig, overwrite: bool = False) -> dict:
    """Convert each split's files into ``out`` (Contract 1) and return the manifest.

    ``splits`` maps a split name to its input files, in order. A local ``out`` appears only
    when everything succeeded. A remote ``out`` (``s3://bucket/prefix``, ``gs://...``) gets
    the shards and index files as they are written and manifest.json last, so a reader
    never takes a partial upload for a dataset.
    """
    if not splits:
        raise ConversionError("no split to convert")
    try:
        return _convert(splits, tokenizer_path, out, cfg, overwrite)
    except OSError as exc:
        # Raised after atomic_output_dir removed its temporary folder: nothing half-written.
        if exc.errno not in _DISK_FULL:
            raise
        where = out if remote.is_remote(out) else os.path.abspath(out)
        raise ConversionError(f"no room to write {where} ({os.strerror(exc.errno)}): nothing "
                              "was written there and a "
                              "previous output is intact; free space and rerun") from exc


# A full disk, a quota, a file-size limit (RLIMIT_FSIZE, with SIGXFSZ ignored).
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _convert(splits: dict[str, list[str]], tokenizer_path: str, out: str, cfg: ConvertConfig,
             overwrite: bool) -> dict:
    if remote.is_remote(out):
        _prepare_remote_root(out, overwrite)
        with _staging_dir(cfg.staging_dir) as stage:
            publisher = remote.Publisher(stage, out)
            try:
                manifest = _convert_into(stage, splits, tokenizer_path, cfg, publisher)
                for name in (TOKENIZER_NAME, MANIFEST_NAME):
                    # Each waits for all before it: until the manifest exists, the prefix
                    # is no dataset.
                    publisher.wait()
                    publisher.submit(name)
                publisher.wait()
            finally:
                publisher.close()
        return manifest
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        return _convert_into(tmp, splits, tokenizer_path, cfg)


def _convert_into(root: str, splits: dict[str, list[str]], tokenizer_path: str,
                  cfg: ConvertConfig, publisher: remote.Publisher | None = None) -> dict:
    """Write the shards under ``root`` (each handed to ``publisher`` when given), then the
    tokenizer and manifest.json into ``root``; return the manifest."""
    tok = Tokenizer(tokenizer_path)
    dtype = _token_dtype(tok.vocab_size)
    slugs: dict[str, str] = {}
    writers = {split: _SplitWriter(split, root, cfg, dtype, publisher) for split in splits}

    def tagged_chunks():
        # All splits in one ordered stream, so workers never idle at a split's end.
        for split, paths in splits.items():
            for chunk in _iter_chunks(paths, writers[split].bad, cfg.chunk_bytes):
                yield split, chunk

    bar = tqdm(desc="convert", unit="doc", dynamic_ncols=True, mininterval=1.0)
    with _encoder(tokenizer_path, cfg.workers, EncodeTask(dtype, cfg.single_domain)) as encode:
        for split, (docs, chunk_bad) in encode(tagged_chunks()):
            writer = writers[split]
            writer.bad.merge(chunk_bad)
            writer.add(docs, slugs)
            bar.update(len(docs))
    bar.close()
    for split, writer in writers.items():
        writer.close()
        if not writer.stats:
            _check_allow_list(cfg, writers)  # a misspelt --domains name says so first
            raise ConversionError(_no_document_message(split, splits[split], writer))
    _check_allow_list(cfg, writers)
    shutil.copyfile(tokenizer_path, os.path.join(root, TOKENIZER_NAME))
    manifest = _manifest(writers, slugs, tok, cfg, dtype, splits)
    atomic_write_json(os.path.join(root, MANIFEST_NAME), manifest)
    return manifest


def _prepare_remote_root(out: str, overwrite: bool) -> None:
    """Refuse a remote root that holds data unless ``overwrite``; then delete the old data,
    its manifest first. Checked before any work, so a long job does not fail at its end."""
    if remote.scheme(out) != "s3":
        if remote.exists(remote.join(out, MANIFEST_NAME)):
            raise FileExistsError(f"{out} holds a dataset; replacing one is supported on s3:// "
                                  "only: delete it first")
        return
    keys = remote.list_keys(out)
    if keys and not overwrite:
        raise FileExistsError(f"{out} holds {len(keys)} objects; pass --overwrite to replace "
                              "them")
    if keys:
        log.info("deleting the %d objects under %s (manifest first)", len(keys), out)
        remote.delete_prefix(out, first=MANIFEST_NAME)


@contextmanager
def _staging_dir(parent: str | None) -> Iterator[str]:
    """A fresh local folder for shards on their way to object storage, removed afterwards."""
    if parent is not None:
        os.makedirs(parent, exist_ok=True)
    stage = tempfile.mkdtemp(prefix="draw-convert-", dir=parent)
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


class _encoder:
    """Context manager giving ``encode(items)``: (tag, chunk) -> (tag, EncodeTask result), in
    input order."""

    def __init__(self, model_path: str, workers: int, task: EncodeTask):
        self.model_path, self.workers, self.task = model_path, workers, task
        self.pool = None

    def __enter__(self):
        task = self.task
        if self.workers == 1:
            init_worker(self.model_path)
            return lambda items: ((tag, task(chunk)) for tag, chunk in items)
        # spawn, not fork: the parent holds torch's threads, which fork would copy. Workers
        # import only encode_worker (numpy + SentencePiece), so they start fast.
        ctx = mp.get_context("spawn")
        self.pool = ctx.Pool(self.workers, initializer=init_worker,
                             initargs=(self.model_path,))
        return lambda items: _ordered_map(self.pool, task, items, depth=2 * self.workers)

    def __exit__(self, exc_type, *_):
        if self.pool is not None:
            if exc_type is None:
                self.pool.close()
            else:
                self.pool.terminate()
            self.pool.join()


def _ordered_map(pool, task, items: Iterator, depth: int) -> Iterator:
    """(tag, task(x)) for (tag, x) in items, in order, with at most ``depth`` in flight
    (``pool.imap`` would read its whole input eagerly)."""
    pending: deque = deque()
    for tag, item in items:
        pending.append((tag, pool.apply_async(task, (item,))))
        if len(pending) >= depth:
            tag0, result = pending.popleft()
            yield tag0, result.get()
    while pending:
        tag0, result = pending.popleft()
        yield tag0, result.get()


def _no_document_message(split: str, paths: list[str], res: _SplitWriter) -> str:
    why = [res.bad.describe()] if res.bad.total else []
    if res.filtered:
        why.append(f"{sum(res.filtered.values())} documents of domains outside --domains "
                   f"({', '.join(sorted(res.filtered))})")
    if not why:
        why.append("the input files hold no lines")
    return (f"split {split!r} yields no usable document from {len(paths)} file(s) "
            f"({', '.join(paths[:3])}{', ...' if len(paths) > 3 else ''}): " + "; ".join(why))


def _check_allow_list(cfg: ConvertConfig, results: dict[str, _SplitWriter]) -> None:
    if not cfg.domains:
        return
    seen = {d for res in results.values() for d in res.stats}
    missing = [d for d in cfg.domains if d not in seen]
    if missing:
        found = sorted(seen | {d for res in results.values() for d in res.filtered})
        raise ConversionError(f"--domains names {missing} but the input has no such domain "
                              f"(it has: {', '.join(found)})")


def _manifest(results: dict[str, _SplitWriter], slugs: dict[str, str], tok: Tokenizer,
              cfg: ConvertConfig, dtype: str, splits: dict[str, list[str]]) -> dict:
    names = sorted({d for res in results.values() for d in res.stats})
    epochs = [cfg.epochs.get(n, PILE_EPOCHS.get(n, 1.0)) for n in names]
    per_domain = {n: {} for n in names}
    for split, res in results.items():
        empty = {"documents": 0, "tokens": 0, "sequences": 0, "dropped_tokens": 0}
        counts = [res.stats.get(n, empty) for n in names]
        weights = natural_weights([c["sequences"] for c in counts], epochs)
        for name, c, w in zip(names, counts, weights):
            per_domain[name][split] = {**c, "natural_weight": w}
    return {
        "format": MANIFEST_FORMAT,
        "tokenizer": {"path": TOKENIZER_NAME, "sha256": tok.sha256,
                      "vocab_size": tok.vocab_size, "eos_id": tok.eos_id},
        "seq_len": cfg.seq_len,
        "dtype": dtype,
        "splits": list(results),
        "domains": [{"name": n, "slug": slugs[n], "epochs": e, "splits": per_domain[n]}
                    for n, e in zip(names, epochs)],
        "bad_input": {split: res.bad.to_dict() for split, res in results.items()},
        "filtered": {split: res.filtered for split, res in results.items() if res.filtered},
        "inputs": {split: [os.path.basename(p) for p in paths] for split, paths in splits.items()},
    }
