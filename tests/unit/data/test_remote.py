"""Data roots on S3: conversion to s3:// (manifest last), reading through the cache, errors.

Against a real S3 server (moto's) on 127.0.0.1; see tests/unit/data/s3_server.py.
"""

from __future__ import annotations

import os
import threading

import pytest
from boto3.session import Session
from streaming.base.storage.upload import S3Uploader

from draw_megatron.config.base import ConfigError
from draw_megatron.config.run import DataConfig, RunConfig
from draw_megatron.data.convert import ConvertConfig, convert_corpus
from draw_megatron.data.domains import DomainData
from draw_megatron.data.loader import MixtureLoader
from draw_megatron.data.manifest import MANIFEST_NAME, Manifest, ManifestError
from draw_megatron.mixture.kinds import schedule_for
from draw_megatron.train.trainer import check_config_against_data
from tests.unit.data.s3_server import s3_environment
from tests.unit.tools.conftest import load_tool

SEQ_LEN = 32
SHARD_SIZE = 4096  # several shards per domain, so reads cross shards and eviction happens
BUCKET = "draw-data"
ROOT = f"s3://{BUCKET}/pile/v1"


def _splits(corpus: str) -> dict[str, list[str]]:
    return {"train": [os.path.join(corpus, "train", "00.jsonl.zst")],
            "val": [os.path.join(corpus, "val.jsonl.zst")]}


@pytest.fixture(scope="module")
def s3():
    """The server, with this process's environment pointing at it (credentials in env)."""
    with s3_environment() as server:
        server.client().create_bucket(Bucket=BUCKET)
        yield server


class _UploadLog:
    """Every object the library uploads, in order; the bucket's keys when the manifest goes."""

    def __init__(self, s3):
        self.s3, self.keys, self.lock = s3, [], threading.Lock()
        self.before_manifest: list[str] | None = None
        self.clients: list = []  # boto3 clients built during the conversion

    def wrap(self, upload):
        log = self

        def upload_file(uploader, filename):
            key = f"{uploader.remote.split('://', 1)[1].split('/', 1)[1]}/{filename}"
            if filename == MANIFEST_NAME:
                listing = log.s3.client().list_objects_v2(Bucket=BUCKET)
                log.before_manifest = [o["Key"] for o in listing.get("Contents", [])]
            upload(uploader, filename)
            with log.lock:
                log.keys.append(key)
        return upload_file


@pytest.fixture(scope="module")
def converted(s3, demo_corpus_dir, demo_tokenizer_path, tmp_path_factory):
    """The demo corpus converted twice: to a local folder, and to S3 through the CLI."""
    local = str(tmp_path_factory.mktemp("local") / "data")
    convert_corpus(_splits(demo_corpus_dir), demo_tokenizer_path, local,
                   ConvertConfig(seq_len=SEQ_LEN, shard_size=SHARD_SIZE))
    stage = str(tmp_path_factory.mktemp("stage"))
    uploads = _UploadLog(s3)
    client = Session.client
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(S3Uploader, "upload_file", uploads.wrap(S3Uploader.upload_file))
        mp.setattr(Session, "client", lambda self, *a, **k: uploads.clients.append(a) or
                   client(self, *a, **k))
        inputs = [f"--split={split}={','.join(paths)}"
                  for split, paths in _splits(demo_corpus_dir).items()]
        argv = [*inputs, "--tokenizer", demo_tokenizer_path, "--seq-len", str(SEQ_LEN),
                "--shard-size", str(SHARD_SIZE), "--out", ROOT, "--staging-dir", stage]
        assert load_tool("convert_pile").main(argv) == 0
    return local, uploads, stage


def _bucket_objects(s3) -> dict[str, bytes]:
    client = s3.client()
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET)["Contents"]]
    return {k: client.get_object(Bucket=BUCKET, Key=k)["Body"].read() for k in keys}


def _local_files(root: str) -> dict[str, bytes]:
    out = {}
    for base, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(base, name), "rb") as fh:
                out[os.path.relpath(os.path.join(base, name), root)] = fh.read()
    return out


def test_s3_objects_equal_local_conversion_and_manifest_is_last(s3, converted):
    local, uploads, stage = converted
    objects = _bucket_objects(s3)
    prefix = "pile/v1/"
    remote = {k[len(prefix):]: v for k, v in objects.items()}
    files = _local_files(local)
    assert sorted(remote) == sorted(files) and len(files) > 10
    for name, data in files.items():
        if name != MANIFEST_NAME:
            assert remote[name] == data, name  # shards, index files, tokenizer byte-equal
    assert sum(name.endswith(".mds") for name in files) > 2 * 8  # several shards per domain
    # manifest.json was uploaded last, after every shard and index of every split...
    assert uploads.keys[-1] == prefix + MANIFEST_NAME
    assert len(uploads.keys) == len(objects)
    # ...and the bucket held all of them, and no manifest, just before it.
    assert sorted(uploads.before_manifest) == sorted(k for k in objects if
                                                     not k.endswith(MANIFEST_NAME))
    assert os.listdir(stage) == []  # the staging folder is cleaned
    # One uploader for all 16 domain datasets (plus a client that checks the prefix, and
    # this test's own listing), not one per dataset: each costs ~0.3 s and ~20 MB.
    assert len(uploads.clients) <= 3


def _batches(data: DomainData, steps: int, state: dict | None = None) -> tuple[list, dict]:
    schedule = schedule_for("random", data.manifest, width=64, seed=5, redraw_every=2)
    loader = MixtureLoader(data, schedule, global_batch=24, seed=11)
    if state is not None:
        loader.load_state_dict(state)
    out = []
    for _ in range(steps):
        b = loader.next_batch()
        out.append((b.tokens.numpy().tobytes(), b.labels.numpy().tobytes(),
                    b.domain_ids.numpy().tobytes()))
    return out, loader.state_dict()


def _remote_data(tmp_path, split="train", cache_limit=None) -> DomainData:
    manifest = Manifest.load(ROOT, cache_dir=str(tmp_path / "cache"), cache_limit=cache_limit)
    return DomainData(manifest, split)


def test_loader_stream_from_s3_equals_local(converted, tmp_path):
    local, _, _ = converted
    local_data = DomainData(Manifest.load(local), "train")
    remote_data = _remote_data(tmp_path)
    try:
        assert remote_data.manifest.root == ROOT
        assert remote_data.manifest.domain_dir("train", 0).startswith(str(tmp_path / "cache"))
        with open(remote_data.manifest.tokenizer_path, "rb") as got, \
                open(local_data.manifest.tokenizer_path, "rb") as want:
            assert got.read() == want.read()  # downloaded into the cache on first use
        expected, _ = _batches(local_data, steps=8)
        got, _ = _batches(remote_data, steps=8)
        assert got == expected
        cached = [f for _, _, fs in os.walk(tmp_path / "cache") for f in fs if f.endswith(".mds")]
        assert cached  # the shards read were downloaded on demand into the cache
    finally:
        local_data.close()
        remote_data.close()


def test_one_s3_client_per_split_not_per_domain(converted, tmp_path, monkeypatch):
    # Building a boto3 client costs a few tenths of a second: one per domain would make
    # thousands of domains slow to open and to read.
    made = []
    client = Session.client
    monkeypatch.setattr(Session, "client", lambda self, *a, **k: made.append(a) or
                        client(self, *a, **k))
    data = _remote_data(tmp_path)
    try:
        data.read(data.offsets[data.offsets >= 0])  # item 0 of every domain
        assert data.num_domains == 8 and len(made) <= 3  # manifest, index files, shards
    finally:
        data.close()


def test_cache_limit_evicts_and_reads_stay_equal(converted, tmp_path):
    local, _, _ = converted
    local_data = DomainData(Manifest.load(local), "train")
    remote_data = _remote_data(tmp_path, cache_limit="64kb")
    try:
        expected, _ = _batches(local_data, steps=12)
        assert _batches(remote_data, steps=12)[0] == expected
        ds = remote_data.dataset
        assert ds.cache_usage <= 64 * 1024
        cached = [f for _, _, fs in os.walk(tmp_path / "cache") for f in fs if f.endswith(".mds")]
        assert len(cached) < ds.num_shards  # some shards were evicted
    finally:
        local_data.close()
        remote_data.close()


def test_resume_against_s3(converted, tmp_path):
    data = _remote_data(tmp_path)
    try:
        straight, _ = _batches(data, steps=7)
        _, state = _batches(data, steps=4)
    finally:
        data.close()
    resumed_data = _remote_data(tmp_path)
    try:
        rest, _ = _batches(resumed_data, steps=3, state=state)
    finally:
        resumed_data.close()
    assert rest == straight[4:]


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and text
    return text


def test_missing_bucket_is_one_clear_line(s3, tmp_path, demo_corpus_dir, demo_tokenizer_path):
    with pytest.raises(ManifestError) as err:
        Manifest.load("s3://no-such-bucket/data", cache_dir=str(tmp_path))
    assert "bucket 'no-such-bucket' does not exist" in _one_line(err.value)
    with pytest.raises(ValueError, match="bucket 'no-such-bucket' does not exist"):
        convert_corpus(_splits(demo_corpus_dir), demo_tokenizer_path, "s3://no-such-bucket/d",
                       ConvertConfig(seq_len=SEQ_LEN))


def test_missing_manifest_is_one_clear_line(s3, tmp_path):
    s3.client().put_object(Bucket=BUCKET, Key="half/train/a/shard.00000.mds", Body=b"x")
    with pytest.raises(ManifestError) as err:
        Manifest.load(f"s3://{BUCKET}/half", cache_dir=str(tmp_path))
    line = _one_line(err.value)
    assert f"no object 'half/{MANIFEST_NAME}' in bucket '{BUCKET}'" in line
    assert "tools/convert_pile.py --out" in line


def test_wrong_credentials_are_one_line_without_secrets(s3, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret-123")
    with pytest.raises(ManifestError) as err:
        Manifest.load(ROOT, cache_dir=str(tmp_path))
    line = _one_line(err.value)
    assert "refused (SignatureDoesNotMatch)" in line and "check the credentials" in line
    assert "not-the-secret-123" not in line and s3.secret not in line
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAUNKNOWN")
    with pytest.raises(ManifestError, match=r"refused \(InvalidAccessKeyId\)"):
        Manifest.load(ROOT, cache_dir=str(tmp_path))


def test_launch_check_downloads_the_manifest(converted, tmp_path):
    cfg = RunConfig.from_dict({"run": {"dir": str(tmp_path / "run")},
                               "model": {"preset": "tiny-64", "seq_len": SEQ_LEN,
                                         "vocab_size": 1024},
                               "data": {"root": ROOT, "cache_dir": str(tmp_path / "cache")},
                               "train": {"steps": 2, "global_batch": 8, "micro_batch": 2}},
                              prefix="")
    cfg.validate_layout(1)  # passes: the manifest is there
    check_config_against_data(cfg)  # the launchers' check against the data's manifest
    cfg.model.seq_len = 2 * SEQ_LEN
    with pytest.raises(ConfigError, match=f"but the data at {ROOT} was packed with seq_len 32"):
        check_config_against_data(cfg)
    cfg.data.root = "s3://no-such-bucket/x"
    with pytest.raises(ConfigError) as err:
        cfg.validate_layout(1)
    assert _one_line(err.value).startswith("data.root='s3://no-such-bucket/x': bucket ")


def test_existing_prefix_needs_overwrite(s3, converted, demo_corpus_dir, demo_tokenizer_path,
                                         tmp_path):
    root = f"s3://{BUCKET}/again"
    splits = {"val": _splits(demo_corpus_dir)["val"]}
    cfg = ConvertConfig(seq_len=SEQ_LEN, shard_size=SHARD_SIZE, staging_dir=str(tmp_path))
    convert_corpus(splits, demo_tokenizer_path, root, cfg)
    with pytest.raises(FileExistsError, match="pass --overwrite"):
        convert_corpus(splits, demo_tokenizer_path, root, cfg)
    stale = "again/val/old-domain/shard.00000.mds"
    s3.client().put_object(Bucket=BUCKET, Key=stale, Body=b"stale")
    convert_corpus(splits, demo_tokenizer_path, root, cfg, overwrite=True)
    keys = [o["Key"] for o in s3.client().list_objects_v2(Bucket=BUCKET, Prefix="again/")
            ["Contents"]]
    assert stale not in keys and f"again/{MANIFEST_NAME}" in keys


def test_data_config_needs_a_cache_for_remote_roots():
    with pytest.raises(ConfigError, match="data.root='s3://b/p' is remote: set data.cache_dir"):
        DataConfig(root="s3://b/p").validate()
    with pytest.raises(ConfigError, match="data.cache_dir applies to a remote data.root only"):
        DataConfig(root="/data", cache_dir="/cache").validate()
    with pytest.raises(ConfigError, match="data.cache_limit='lots' is not a size"):
        DataConfig(root="s3://b/p", cache_dir="/c", cache_limit="lots").validate()
    DataConfig(root="gs://b/p", cache_dir="/c", cache_limit="20gb").validate()
