"""One split of the data as ONE StreamingDataset over its k domain folders (Contract 1).

Domain d's item j is global index ``offsets[d] + j``. One object per split, never one per
domain: each StreamingDataset holds shared memory, and DGA runs k = 4,096 domains.
Construction is collective when torch.distributed is initialised (the library synchronises
local ranks with barriers), so every rank opens the same splits in the same order.

A remote root's domains are streams with a remote URL and a local cache folder: opening the
split downloads each domain's index.json, and ``ds[i]`` downloads the shard holding item i
the first time it is read (random access needs no iteration state), then reads it locally.

Every shard is checked the first time this process reads from it (``verify_shards``): the
file is present, has the size index.json records and, when the converter recorded one, the
same xxh64 hash. A flipped byte of a token shard is still a valid token id, so without the
hash a damaged shard would train on garbage without a sign. A local shard is checked before
the library opens it; a remote one after the library has downloaded it into the cache
(where the library itself also checks the hash of every download).
"""

from __future__ import annotations

import gc
import os

import numpy as np
import xxhash
from streaming import Stream, StreamingDataset
from streaming.base.format.base.reader import FileInfo
from streaming.base.storage.download import CloudDownloader

from draw_megatron.data import remote
from draw_megatron.data.host_lock import serialised_open
from draw_megatron.data.manifest import INDEX_NAME, SHARD_HASH, Manifest, ManifestError

_HASH_BLOCK = 1 << 22  # bytes hashed per read: a shard is never held in memory whole


class ShardError(ManifestError):
    """A shard file that is missing, has the wrong size or not the bytes it was written with."""


class DomainData:
    """Random access to the sequences of every domain of one split; ``verify_shards``
    checks each shard on its first read (module docstring), raising ShardError."""

    def __init__(self, manifest: Manifest, split: str, verify_shards: bool = True):
        manifest.check_split(split)
        self.manifest, self.split = manifest, split
        self.num_sequences = manifest.num_sequences(split)  # (k,) in manifest order
        present = np.flatnonzero(self.num_sequences > 0)
        if present.size == 0:
            raise ManifestError(f"split {split!r} of {manifest.root} holds no sequence")
        self._ds = _open(manifest, split, present)
        self.offsets = np.full(manifest.num_domains, -1, dtype=np.int64)
        self.offsets[present] = np.asarray(self._ds.sample_offset_per_stream[: present.size])
        on_disk = np.asarray(self._ds.samples_per_stream[: present.size])
        if not np.array_equal(on_disk, self.num_sequences[present]):
            pos = int(np.flatnonzero(on_disk != self.num_sequences[present])[0])
            bad = int(present[pos])
            raise ManifestError(
                f"{manifest.domain_dir(split, bad)} holds {on_disk[pos]} sequences "
                f"but manifest.json says {self.num_sequences[bad]}: the data root is "
                "inconsistent (re-run the converter)")
        self.seq_len = manifest.seq_len
        self.dtype = np.dtype(manifest.dtype)
        self._checker = _ShardChecker(self._ds, manifest, split, present) if verify_shards \
            else None

    @property
    def dataset(self) -> StreamingDataset:
        """The underlying StreamingDataset (global index = ``offsets[d] + j``)."""
        return self._ds

    @property
    def num_domains(self) -> int:
        return self.num_sequences.size

    def read(self, global_indices: np.ndarray) -> np.ndarray:
        """Rows [n, seq_len + 1] of the given global sample indices."""
        if self._checker is not None:
            self._checker.check(global_indices)
        rows = np.empty((len(global_indices), self.seq_len + 1), dtype=self.dtype)
        get_item = self._ds.get_item  # ds[i] without the Array indexing dispatch
        for i, idx in enumerate(global_indices.tolist()):
            rows[i] = get_item(idx)["tokens"]
        return rows

    def close(self) -> None:
        """Release the dataset so the same folders can be opened again in this process."""
        self._ds = self._checker = None
        gc.collect()


class _ShardChecker:
    """Checks each shard of a split's dataset the first time this process reads from it."""

    def __init__(self, ds: StreamingDataset, manifest: Manifest, split: str,
                 present: np.ndarray):
        self.ds, self.manifest, self.split = ds, manifest, split
        self.domain_of_stream = present  # stream s of the dataset is manifest domain present[s]
        self.shard_start = np.asarray(ds.sample_offset_per_shard, dtype=np.int64)
        self.verified = np.zeros(len(ds.shards), dtype=bool)
        if manifest.is_remote:
            # The library checks each download itself when told which hash to use; an index
            # written before hashes were recorded has none, and naming one would fail.
            for stream_id, stream in enumerate(ds.streams):
                if self._stream_has_hashes(stream_id):
                    stream.validate_hash = SHARD_HASH

    def _stream_has_hashes(self, stream_id: int) -> bool:
        begin = int(self.ds.shard_offset_per_stream[stream_id])
        end = begin + int(self.ds.shards_per_stream[stream_id])
        return all(SHARD_HASH in raw.hashes for shard in self.ds.shards[begin:end]
                   for raw, _ in shard.file_pairs)

    def check(self, global_indices: np.ndarray) -> None:
        """Raise ShardError unless every shard holding one of ``global_indices`` is intact."""
        shards = np.searchsorted(self.shard_start, global_indices, side="right") - 1
        new = shards[~self.verified[shards]]
        for shard_id in np.unique(new).tolist():
            self.verified[shard_id] = self._verify(shard_id)

    def _verify(self, shard_id: int) -> bool:
        """Raise ShardError if the shard is damaged; False if it could not be checked yet."""
        shard = self.ds.shards[shard_id]
        for raw, _ in shard.file_pairs:
            path = os.path.join(shard.dirname, shard.split, raw.basename)
            if self.manifest.is_remote and not os.path.exists(path):
                self._download(shard_id, path)
                if not os.path.exists(path):
                    # Evicted by another rank under cache_limit already: the library downloads
                    # it again (checking its hash), and the next read here checks it.
                    return False
            problem = _shard_problem(path, raw)
            if problem:
                raise self._error(shard_id, path, problem)
        return True

    def _download(self, shard_id: int, path: str) -> None:
        try:
            self.ds.prepare_shard(shard_id)
        except ValueError as exc:
            # The library's own hash check of the download (it deletes the bad copy).
            if "Checksum failure" not in str(exc):
                raise
            raise self._error(shard_id, path, f"{SHARD_HASH} hash mismatch after download"
                              ) from None

    def _error(self, shard_id: int, path: str, problem: str) -> ShardError:
        stream_id = int(self.ds.stream_per_shard[shard_id])
        name = self.manifest.domain_names[int(self.domain_of_stream[stream_id])]
        if self.manifest.is_remote:
            fix = (f"delete {path} so that it is downloaded again; if the error persists, "
                   f"re-run the converter (tools/convert_pile.py) into {self.manifest.root}")
        else:
            fix = ("re-run the converter (tools/convert_pile.py) to rewrite the data root "
                   f"{self.manifest.root}")
        return ShardError(f"shard {path} of domain {name!r}, split {self.split!r}: {problem}; "
                          f"{fix}")


def _shard_problem(path: str, raw: FileInfo) -> str | None:
    """What is wrong with the shard file at ``path`` against its index entry, or None."""
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        return "missing"
    if size < raw.bytes:
        return f"truncated: {size} of {raw.bytes} bytes"
    if size > raw.bytes:
        return f"wrong size: {size} bytes, index.json says {raw.bytes}"
    expected = raw.hashes.get(SHARD_HASH)
    if expected is not None and shard_hash(path) != expected:
        return f"{SHARD_HASH} hash mismatch (the bytes changed since the converter wrote them)"
    return None


def shard_hash(path: str) -> str:
    """The xxh64 hex digest of a file, as the MDS library records it in index.json."""
    digest = xxhash.xxh64()
    with open(path, "rb") as fh:
        while block := fh.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _open(manifest: Manifest, split: str, present: np.ndarray) -> StreamingDataset:
    """ONE StreamingDataset over the domains ``present`` of ``split``."""
    streams = [Stream(remote=manifest.domain_remote(split, int(d)),
                      local=manifest.domain_dir(split, int(d))) for d in present]
    if manifest.is_remote:
        _prefetch_indexes(streams)
        # The library gives each stream its own downloader, and each builds its own boto3
        # client on first use (~0.2-0.4 s apiece: 4,096 domains would spend minutes there).
        # One downloader serves them all; boto3 clients are thread-safe.
        shared = CloudDownloader.get(manifest.root)
        for stream in streams:
            stream._downloader = shared
    try:
        # batch_size is required by the library's partitioning even though only random
        # access (ds[i]) is used here.
        return serialised_open(lambda: StreamingDataset(
            streams=streams, shuffle=False, batch_size=1, cache_limit=manifest.cache_limit))
    except Exception as exc:
        if not manifest.is_remote:
            raise
        # The library reports a failed download with its own long text; one line instead.
        where = remote.join(manifest.root, split)
        raise ManifestError(f"cannot open split {split!r}: "
                            f"{remote.describe_error(exc, where)}") from exc


def _prefetch_indexes(streams: list[Stream]) -> None:
    """Download the domains' missing index.json files in parallel (the library fetches them
    one by one). Only the node's first local rank does it: the others wait in the library
    for the files, as they would for its own downloads."""
    if os.environ.get("LOCAL_RANK", "0") != "0":
        return
    missing = [(remote.join(s.remote, INDEX_NAME), os.path.join(s.local, INDEX_NAME))
               for s in streams if not os.path.isfile(os.path.join(s.local, INDEX_NAME))]
    try:
        remote.download_many(missing)
    except remote.RemoteError as exc:
        raise ManifestError(f"cannot open the data: {exc}") from None
