#!/usr/bin/env python3
"""Mixture loader throughput against raw MDS random reads of the same shards, in one run.

Both sides read the same StreamingDataset: "raw" is ``ds.get_item(i)`` (what ``ds[i]``
calls) at uniformly random global indices; "loader" is MixtureLoader.next_batch() (domain draws, permutations, cursors,
reads, int64 tensors). Rounds alternate A/B and the median of each is reported, since this
machine is noisy. Tokens count seq_len per sequence on both sides.
Targets: ratio >= 0.5 and >= 4.5M tokens/s per rank on the 2-core CPU machine.

--verify-cost instead compares the loader with shard verification (data.verify_shards) on
and off on the same data: each round opens the split afresh in one mode, runs a first
loader round (with verification on, it hashes every shard that round touches) and then a
second one (every shard it touches already checked); rounds alternate on/off. It also
prints the xxh64 rate over every shard file of the split (read from the page cache).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="data root (manifest.json)")
    p.add_argument("--split", default="train")
    p.add_argument("--global-batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=50, help="loader steps per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--mixture", default="random", choices=["natural", "uniform", "random"],
                   help="schedule for the loader (random = Dirichlet redrawn every 10 steps)")
    p.add_argument("--verify-cost", action="store_true",
                   help="loader tokens/s with shard verification on vs off, and xxh64 MB/s")
    args = p.parse_args(argv)
    if args.verify_cost:
        return verify_cost(args)

    import numpy as np

    from draw_megatron.data.domains import DomainData
    from draw_megatron.data.loader import MixtureLoader
    from draw_megatron.data.manifest import Manifest
    from draw_megatron.mixture.kinds import schedule_for as build_schedule

    manifest = Manifest.load(args.data)
    data = DomainData(manifest, args.split)
    ds = data.dataset
    total = int(data.num_sequences.sum())
    seq_len = manifest.seq_len
    loader = MixtureLoader(data, build_schedule(args.mixture, manifest, width=256, seed=0,
                                                split=args.split),
                           args.global_batch, seed=0)
    rng = np.random.default_rng(0)
    num = args.global_batch * args.steps

    def raw_round() -> float:
        idx = rng.integers(0, total, size=num).tolist()
        get_item = ds.get_item  # the library's fastest random read (ds[i] adds a dispatch)
        t0 = time.perf_counter()
        for i in idx:
            get_item(i)
        return num * seq_len / (time.perf_counter() - t0)

    def loader_round() -> float:
        t0 = time.perf_counter()
        for _ in range(args.steps):
            loader.next_batch()
        return num * seq_len / (time.perf_counter() - t0)

    raw_round(), loader_round()  # warm the page cache and the code paths
    raw, ours = [], []
    for _ in range(args.rounds):
        raw.append(raw_round())
        ours.append(loader_round())
    raw_med, ours_med = statistics.median(raw), statistics.median(ours)
    print(f"data: {args.data} split {args.split}: {manifest.num_domains} domains, {total} "
          f"sequences of {seq_len} tokens; global batch {args.global_batch}, "
          f"{args.rounds} rounds x {num} sequences")
    print(f"raw MDS random reads : {raw_med / 1e6:8.2f} M tokens/s (median)")
    print(f"mixture loader       : {ours_med / 1e6:8.2f} M tokens/s (median)")
    print(f"ratio loader/raw     : {ours_med / raw_med:8.3f}  (target >= 0.5)")
    print(f"per-sequence overhead: {(1 / ours_med - 1 / raw_med) * seq_len * 1e6:8.2f} us")
    data.close()
    return 0


def verify_cost(args: argparse.Namespace) -> int:
    """Loader tokens/s with shard verification on and off (see the module docstring)."""
    from draw_megatron.data.domains import DomainData, shard_hash
    from draw_megatron.data.loader import MixtureLoader
    from draw_megatron.data.manifest import Manifest
    from draw_megatron.mixture.kinds import schedule_for as build_schedule

    manifest = Manifest.load(args.data)
    schedule = build_schedule(args.mixture, manifest, width=256, seed=0, split=args.split)
    num = args.global_batch * args.steps * manifest.seq_len  # tokens per loader round

    def one_round(loader) -> float:
        t0 = time.perf_counter()
        for _ in range(args.steps):
            loader.next_batch()
        return num / (time.perf_counter() - t0)

    def measure(verify: bool) -> tuple[float, float]:
        data = DomainData(manifest, args.split, verify_shards=verify)
        loader = MixtureLoader(data, schedule, args.global_batch, seed=0)
        try:
            return one_round(loader), one_round(loader)  # (first, steady)
        finally:
            data.close()

    measure(False)  # warm the page cache and the code paths
    on, off = [], []
    for _ in range(args.rounds):
        on.append(measure(True))
        off.append(measure(False))
    first_on, first_off, steady_on, steady_off = (
        statistics.median(r[i] for r in runs) for i, runs in ((0, on), (0, off), (1, on),
                                                               (1, off)))
    shards = [os.path.join(base, name) for base, _, files in
              os.walk(os.path.join(manifest.local_root, args.split))
              for name in files if name.endswith(".mds")]
    size = sum(os.path.getsize(f) for f in shards)
    t0 = time.perf_counter()
    for path in shards:
        shard_hash(path)
    hash_rate = size / (time.perf_counter() - t0)
    total = int(manifest.num_sequences(args.split).sum())
    print(f"data: {args.data} split {args.split}: {manifest.num_domains} domains, {total} "
          f"sequences of {manifest.seq_len} tokens, {len(shards)} shards, {size / 1e6:.1f} MB; "
          f"global batch {args.global_batch}, {args.rounds} rounds x {args.steps} steps")
    print(f"loader, verify off, first round : {first_off / 1e6:8.2f} M tokens/s (median)")
    print(f"loader, verify on,  first round : {first_on / 1e6:8.2f} M tokens/s (median; "
          "hashes the shards it touches)")
    print(f"ratio first round on/off        : {first_on / first_off:8.3f}")
    print(f"loader, verify off, steady      : {steady_off / 1e6:8.2f} M tokens/s (median)")
    print(f"loader, verify on,  steady      : {steady_on / 1e6:8.2f} M tokens/s (median)")
    print(f"ratio steady on/off             : {steady_on / steady_off:8.3f}")
    print(f"xxh64 over the split's shards   : {hash_rate / 1e6:8.1f} MB/s "
          f"({size / 1e6:.1f} MB in {len(shards)} files, page cache)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
