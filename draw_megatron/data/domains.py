"""One split of the data as ONE StreamingDataset over its k domain folders (Contract 1).

Domain d's item j is global index ``offsets[d] + j``. One object per split, never one per
domain: each StreamingDataset holds shared memory, and DGA runs k = 4,096 domains.
Construction is collective when torch.distributed is initialised (the library synchronises
local ranks with barriers), so every rank opens the same splits in the same order.

A remote root's domains are streams with a remote URL and a local cache folder: opening the
split downloads each domain's index.json, and ``ds[i]`` downloads the shard holding item i
the first time it is read (random access needs no iteration state), then reads it locally.
"""

from __future__ import annotations

import gc
import os

import numpy as np
from streaming import Stream, StreamingDataset
from streaming.base.storage.download import CloudDownloader


from draw_megatron.data import remote
from draw_megatron.data.host_lock import serialised_open
from draw_megatron.data.manifest import INDEX_NAME, Manifest, ManifestError


class DomainData:
    """Random access to the sequences of every domain of one split."""

    def __init__(self, manifest: Manifest, split: str):
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

    @property
    def dataset(self) -> StreamingDataset:
        """The underlying StreamingDataset (global index = ``offsets[d] + j``)."""
        return self._ds

    @property
    def num_domains(self) -> int:
        return self.num_sequences.size

    def read(self, global_indices: np.ndarray) -> np.ndarray:
        """Rows [n, seq_len + 1] of the given global sample indices."""
        rows = np.empty((len(global_indices), self.seq_len + 1), dtype=self.dtype)
        get_item = self._ds.get_item  # ds[i] without the Array indexing dispatch
        for i, idx in enumerate(global_indices.tolist()):
            rows[i] = get_item(idx)["tokens"]
        return rows

    def close(self) -> None:
        """Release the dataset so the same folders can be opened again in this process."""
        self._ds = None
        gc.collect()


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
