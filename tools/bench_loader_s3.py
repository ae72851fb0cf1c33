#!/usr/bin/env python3
"""Mixture loader tokens/s from object storage (cache warm) against local files, one run.

--data is a local data root. The same data on S3 is either --remote (already converted
there with tools/convert_pile.py --out s3://...; endpoint and credentials from the
environment), or, with --moto, a moto S3 server this tool starts on 127.0.0.1 and fills
with a copy of --data (manifest.json last). Both loaders have the same seed and mixture, so
they read the same sequences (checked). The first remote round runs on an empty cache
(reported apart); then every shard is cached and rounds alternate local / remote, medians
reported. Target: ratio remote/local >= 0.8 once the cache is warm.

  python tools/bench_loader_s3.py --data demo_out/data --moto --cache-dir /tmp/draw-cache
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator

MANIFEST = "manifest.json"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="local data root (manifest.json)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--remote", help="the same data on object storage, e.g. s3://b/prefix")
    where.add_argument("--moto", action="store_true",
                       help="start a moto S3 server on 127.0.0.1 and copy --data into it")
    p.add_argument("--cache-dir", help="local cache of the remote root (default: a temporary "
                                       "folder, removed afterwards)")
    p.add_argument("--split", default="train")
    p.add_argument("--global-batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=50, help="loader steps per round")
    p.add_argument("--rounds", type=int, default=5)
    return p.parse_args(argv)


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """A moto S3 server on a free port of 127.0.0.1, with this process's env pointing at it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.environ.update({"S3_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                       "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"})
    try:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        for _ in range(600):
            try:
                opener.open(f"{endpoint}/moto-api/", timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait()


def upload_root(local: str, url: str) -> None:
    """Copy a local data root to ``url`` (creating the bucket), manifest.json last."""
    from draw_megatron.data.remote import bucket_and_key, s3_client, upload_tree

    s3_client().create_bucket(Bucket=bucket_and_key(url)[0])
    upload_tree(local, url, last=MANIFEST)


def make_loader(data, args):
    from draw_megatron.data.loader import MixtureLoader
    from draw_megatron.mixture.kinds import schedule_for

    schedule = schedule_for("random", data.manifest, width=256, seed=0, split=args.split)
    return MixtureLoader(data, schedule, args.global_batch, seed=0)


def timed_round(loader, steps: int, seq_len: int) -> tuple[float, list[bytes]]:
    """Tokens/s of ``steps`` steps, and the token bytes of each batch."""
    t0 = time.perf_counter()
    batches = [loader.next_batch() for _ in range(steps)]
    rate = len(batches) * batches[0].tokens.shape[0] * seq_len / (time.perf_counter() - t0)
    return rate, [b.tokens.numpy().tobytes() for b in batches]


def compare(args: argparse.Namespace, url: str, cache_dir: str) -> None:
    from draw_megatron.data.domains import DomainData
    from draw_megatron.data.manifest import Manifest

    local_data = DomainData(Manifest.load(args.data), args.split)
    remote_data = DomainData(Manifest.load(url, cache_dir=cache_dir), args.split)
    seq_len = local_data.seq_len
    local, remote = make_loader(local_data, args), make_loader(remote_data, args)
    cold, remote_batches = timed_round(remote, args.steps, seq_len)
    _, local_batches = timed_round(local, args.steps, seq_len)
    if remote_batches != local_batches:
        raise SystemExit("error: the remote loader read other sequences than the local one")
    t0 = time.perf_counter()
    for i in range(int(remote_data.num_sequences.sum())):
        remote_data.dataset.get_item(i)  # every shard into the cache
    warm_s = time.perf_counter() - t0
    rates: dict[str, list[float]] = {"local": [], "remote": []}
    for _ in range(args.rounds):
        for name, loader in (("local", local), ("remote", remote)):
            rates[name].append(timed_round(loader, args.steps, seq_len)[0])
    report(args, url, local_data, cold, warm_s, rates)
    local_data.close()
    remote_data.close()


def report(args, url, data, cold: float, warm_s: float, rates: dict[str, list[float]]) -> None:
    local, remote = (statistics.median(rates[k]) for k in ("local", "remote"))
    print(f"data: {args.data} and {url}, split {args.split}: {data.num_domains} domains, "
          f"{int(data.num_sequences.sum())} sequences of {data.seq_len} tokens; global batch "
          f"{args.global_batch}, {args.rounds} rounds x {args.steps} steps")
    print(f"remote, first round (cold cache)  : {cold / 1e6:8.2f} M tokens/s")
    print(f"filling the cache with every shard: {warm_s:8.2f} s")
    print(f"local files                      : {local / 1e6:8.2f} M tokens/s (median)")
    print(f"remote, warm cache               : {remote / 1e6:8.2f} M tokens/s (median)")
    print(f"ratio remote/local               : {remote / local:8.3f}  (target >= 0.8)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    own_cache = args.cache_dir is None
    cache_dir = args.cache_dir or tempfile.mkdtemp(prefix="draw-bench-cache-")
    try:
        if args.moto:
            with moto_server():
                url = "s3://draw-bench/data"
                upload_root(args.data, url)
                compare(args, url, cache_dir)
        else:
            compare(args, args.remote, cache_dir)
    finally:
        if own_cache:
            shutil.rmtree(cache_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
