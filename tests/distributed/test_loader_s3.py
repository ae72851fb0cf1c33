"""Two gloo ranks read an S3 data root through one shared cache folder: the same global
stream as one process reading the local copy."""

import os

import pytest

from draw_megatron.data.domains import DomainData
from draw_megatron.data.loader import MixtureLoader
from draw_megatron.data.manifest import Manifest
from draw_megatron.mixture.kinds import schedule_for
from tests.distributed.harness import run_distributed
from tests.unit.data.s3_server import running_s3_server, upload_tree
from tests.unit.data.synthetic import decode_items, make_synthetic_root

SIZES = [40, 7, 90, 25]
URL = "s3://draw-dist/data"


def _stream(root, cache_dir, dp_rank, dp_size, steps=6):
    data = DomainData(Manifest.load(root, cache_dir=cache_dir), "train")
    try:
        sched = schedule_for("uniform", data.manifest)
        loader = MixtureLoader(data, sched, global_batch=8, seed=3, dp_rank=dp_rank,
                               dp_size=dp_size)
        return [decode_items(loader.next_batch()) for _ in range(steps)]
    finally:
        data.close()


def _rank_fn(rank, world_size, cache_dir):
    return _stream(URL, cache_dir, rank, world_size)


def test_two_ranks_share_one_cache(tmp_path):
    root = make_synthetic_root(str(tmp_path / "local"), SIZES)
    with running_s3_server() as server, pytest.MonkeyPatch.context() as mp:
        for name, value in server.env().items():
            mp.setenv(name, value)  # the spawned ranks inherit it
        upload_tree(server, root, URL)
        cache = str(tmp_path / "cache")
        r0, r1 = run_distributed(_rank_fn, 2, cache)
    single = _stream(root, None, 0, 1)
    for step in range(6):
        assert r0[step] + r1[step] == single[step]
    shards = [f for _, _, fs in os.walk(cache) for f in fs if f.endswith(".mds")]
    assert len(shards) == len(SIZES)  # every shard read went into the one shared cache
