"""A truncated, altered or missing MDS shard is caught the first time a process reads from it,
by name (shard file, domain, split), with the fix; the other shards still read. Flipped
bytes of a token shard are still valid token ids: without the recorded xxh64 hash they
would be read silently, as ``verify_shards=False`` shows."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from draw_megatron.data.domains import DomainData, ShardError
from draw_megatron.data.manifest import INDEX_NAME, SHARD_HASH, Manifest
from tests.distributed.test_launchers import CONFIG, LAUNCHER, REPO, _base_env, _free_port
from tests.unit.data.s3_server import s3_environment, upload_tree
from tests.unit.data.synthetic import make_synthetic_root

SEQ_LEN = 64
SIZES = [40, 30]  # sequences of Domain 0 and Domain 1
SHARD_SIZE = 2000  # about 14 sequences a shard: several shards per domain
DAMAGED = 1  # Domain 0's second shard


def _expected(domain: int, item: int) -> np.ndarray:
    row = np.arange(item, item + SEQ_LEN + 1) % 65536
    row[0], row[1] = domain, item
    return row


def _root(tmp_path_factory, name: str, hashes: bool = True) -> str:
    return make_synthetic_root(str(tmp_path_factory.mktemp(name) / "data"), SIZES,
                               seq_len=SEQ_LEN, shard_size=SHARD_SIZE, hashes=hashes)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> str:
    return _root(tmp_path_factory, "bad_shards")


@pytest.fixture(scope="module")
def root_without_hashes(tmp_path_factory) -> str:
    return _root(tmp_path_factory, "bad_shards_nohash", hashes=False)


def _shards(root: str, slug: str = "d00000") -> list[dict]:
    with open(os.path.join(root, "train", slug, INDEX_NAME)) as fh:
        return json.load(fh)["shards"]


def _items_of(shards: list[dict], k: int) -> range:
    """Domain items held by shard k of a domain."""
    start = sum(s["samples"] for s in shards[:k])
    return range(start, start + shards[k]["samples"])


def truncate(path: str) -> str:
    size = os.path.getsize(path)
    with open(path, "r+b") as fh:
        fh.truncate(size - 100)
    return f"truncated: {size - 100} of {size} bytes"


def flip(path: str) -> str:
    with open(path, "r+b") as fh:
        data = bytearray(fh.read())
        middle = len(data) // 2
        data[middle:middle + 16] = bytes(b ^ 0x5A for b in data[middle:middle + 16])
        fh.seek(0)
        fh.write(data)  # same size: only the hash can tell
    return f"{SHARD_HASH} hash mismatch"


def delete(path: str) -> str:
    os.remove(path)
    return "missing"


def _damaged_copy(root: str, tmp_path, damage) -> tuple[str, str, str]:
    """(copy of root with Domain 0's shard DAMAGED damaged, that shard's path, the problem)."""
    copy = str(tmp_path / "data")
    shutil.copytree(root, copy)
    path = os.path.join(copy, "train", "d00000", _shards(copy)[DAMAGED]["raw_data"]["basename"])
    return copy, path, damage(path)


@pytest.mark.parametrize("damage", [truncate, flip, delete])
def test_damaged_shard_is_named_and_intact_shards_still_read(root, tmp_path, damage):
    copy, path, problem = _damaged_copy(root, tmp_path, damage)
    shards = _shards(copy)
    assert len(shards) >= 3 and len(_shards(copy, "d00001")) >= 2
    data = DomainData(Manifest.load(copy), "train")
    try:
        before = _items_of(shards, DAMAGED - 1)
        assert np.array_equal(data.read(np.array(before))[-1], _expected(0, before[-1]))
        for attempt in range(2):  # a damaged shard is never marked as checked
            with pytest.raises(ShardError) as info:
                data.read(np.array([0, _items_of(shards, DAMAGED)[attempt]]))
            message = str(info.value)
            assert path in message and "'Domain 0'" in message and "split 'train'" in message
            assert problem in message and "re-run the converter" in message
            assert "\n" not in message
        # Every other shard, of this domain and the other, still reads correctly.
        after = _items_of(shards, DAMAGED + 1)
        other = data.offsets[1] + np.arange(SIZES[1])
        rows = data.read(np.concatenate([np.array(after), other]))
        want = [_expected(0, j) for j in after] + [_expected(1, j) for j in range(SIZES[1])]
        assert np.array_equal(rows, np.stack(want))
    finally:
        data.close()


def test_without_the_check_flipped_bytes_are_read_silently(root, tmp_path):
    copy, _, _ = _damaged_copy(root, tmp_path, flip)
    items = np.array(_items_of(_shards(copy), DAMAGED))
    data = DomainData(Manifest.load(copy), "train", verify_shards=False)
    try:
        rows = data.read(items)  # no error: garbage tokens are still token ids
    finally:
        data.close()
    want = np.stack([_expected(0, j) for j in items])
    assert rows.shape == want.shape and not np.array_equal(rows, want)


@pytest.mark.parametrize("damage", [truncate, delete])
def test_root_without_hashes_still_checks_presence_and_size(root_without_hashes, tmp_path,
                                                            damage):
    assert _shards(root_without_hashes)[0]["raw_data"]["hashes"] == {}
    copy, path, problem = _damaged_copy(root_without_hashes, tmp_path, damage)
    data = DomainData(Manifest.load(copy), "train")
    try:
        assert data.read(np.array([0]))[0, 1] == 0
        with pytest.raises(ShardError, match=problem) as info:
            data.read(np.array(_items_of(_shards(copy), DAMAGED)))
        assert path in str(info.value)
    finally:
        data.close()


def test_root_without_hashes_reads_when_intact(root_without_hashes):
    data = DomainData(Manifest.load(root_without_hashes), "train")
    try:
        rows = data.read(np.arange(SIZES[0]))
    finally:
        data.close()
    assert np.array_equal(rows, np.stack([_expected(0, j) for j in range(SIZES[0])]))


# ---------------------------------------------------------------------------------------
# Remote roots: the library checks each download's hash; a damaged file already in the
# cache is caught before it is read.

@pytest.fixture(scope="module")
def s3():
    with s3_environment() as server:
        yield server


def test_remote_shard_altered_in_the_bucket_fails_its_download_check(s3, root, tmp_path):
    copy, path, _ = _damaged_copy(root, tmp_path, flip)
    url = "s3://shards-altered/data"
    upload_tree(s3, copy, url)
    data = DomainData(Manifest.load(url, cache_dir=str(tmp_path / "cache")), "train")
    try:
        assert all(s.validate_hash == SHARD_HASH for s in data.dataset.streams)
        shards = _shards(copy)
        with pytest.raises(ShardError, match="hash mismatch after download") as info:
            data.read(np.array([_items_of(shards, DAMAGED)[0]]))
        message = str(info.value)
        assert os.path.basename(path) in message and "'Domain 0'" in message
        assert "so that it is downloaded again" in message
        item = _items_of(shards, DAMAGED + 1)[0]
        assert np.array_equal(data.read(np.array([item]))[0], _expected(0, item))
    finally:
        data.close()


def test_remote_shard_damaged_in_the_cache_is_caught_before_it_is_read(s3, root, tmp_path):
    url = "s3://shards-intact/data"
    upload_tree(s3, root, url)
    cache = str(tmp_path / "cache")
    item = _items_of(_shards(root), DAMAGED)[0]
    data = DomainData(Manifest.load(url, cache_dir=cache), "train")
    try:
        assert np.array_equal(data.read(np.array([item]))[0], _expected(0, item))
        cached = os.path.join(data.manifest.domain_dir("train", 0),
                              _shards(root)[DAMAGED]["raw_data"]["basename"])
    finally:
        data.close()
    flip(cached)  # e.g. a disk error in the cache after a previous run
    data = DomainData(Manifest.load(url, cache_dir=cache), "train")
    try:
        with pytest.raises(ShardError, match=f"{SHARD_HASH} hash mismatch") as info:
            data.read(np.array([item]))
        assert cached in str(info.value)
    finally:
        data.close()


# ---------------------------------------------------------------------------------------
# End to end: a training run stops with the message.


def test_training_run_stops_with_the_shard_named(tmp_path_factory, tmp_path):
    # One shard per domain (the default shard size), so the first batches read the damaged one.
    root = make_synthetic_root(str(tmp_path_factory.mktemp("train_bad") / "data"), [24, 16],
                               seq_len=16, vocab_size=384, splits=("train", "val"))
    path = os.path.join(root, "train", "d00001", _shards(root, "d00001")[0]["raw_data"]["basename"])
    flip(path)
    env = _base_env()
    env.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())})
    args = [sys.executable, LAUNCHER, "--config", CONFIG, f"run.dir={tmp_path / 'run'}",
            f"data.root={root}", "train.steps=8", "model.preset=null", "model.n_layers=1",
            "model.n_heads=2", "model.head_dim=16", "model.d_model=32", "model.ffn_hidden=64",
            "model.vocab_size=384", "model.seq_len=16", "train.global_batch=4",
            "train.micro_batch=2", "eval.sequences_per_domain=2", "eval.every=0",
            "checkpoint.every=0", "log.every=1", "log.tensorboard=false"]
    proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 1, proc.stderr[-3000:]
    line = next((ln for ln in proc.stderr.splitlines() if ln.startswith("data error")), "")
    assert f"shard {path} of domain 'Domain 1', split 'train': {SHARD_HASH} hash mismatch" \
        in line, proc.stderr[-3000:]
    assert "re-run the converter" in line
