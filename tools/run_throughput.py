#!/usr/bin/env python3
"""Median step throughput of a finished run, from its metrics.jsonl (Contract 5).

    python tools/run_throughput.py runs/gpu_bench [--skip 5]

Skips the first --skip train records (allocator warm-up, first-step compilation) and prints
the median step time, tokens/s and, for GPU runs, MFU (÷ 989 TFLOP/s, one H100 SXM's dense bf16 peak) and
its ratio to the 790 TFLOP/s this workplace measured on an 8192³ bf16 matrix product.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

PEAK_MEASURED = 790e12


def summarize(run_dir: str, skip: int) -> dict:
    from draw_megatron.train.metrics import METRICS_NAME, read_metrics
    from draw_megatron.train.trainer import PEAK_FLOPS

    path = os.path.join(run_dir, METRICS_NAME)
    if not os.path.isfile(path):
        raise SystemExit(f"error: {run_dir} has no {METRICS_NAME}")
    train = read_metrics(path, "train")
    if len(train) <= skip:
        raise SystemExit(f"error: {path} has {len(train)} train record(s); need more than "
                         f"--skip {skip}")
    timed = train[skip:]
    tok_s = statistics.median(r["tokens_per_s"] for r in timed)
    mfus = [r["mfu"] for r in timed if r.get("mfu") is not None]
    mfu = statistics.median(mfus) if mfus else None
    return {"steps": len(timed), "tokens_per_s": tok_s, "mfu": mfu,
            "mfu_vs_measured": None if mfu is None else mfu * PEAK_FLOPS / PEAK_MEASURED,
            "last_loss": timed[-1]["loss"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir")
    p.add_argument("--skip", type=int, default=5, help="first train records left out")
    args = p.parse_args(argv)
    s = summarize(args.run_dir, args.skip)
    line = (f"{args.run_dir}: median of {s['steps']} steps: {s['tokens_per_s']:,.0f} tokens/s")
    if s["mfu"] is not None:
        line += f", MFU {s['mfu']:.3f} (vs 989), {s['mfu_vs_measured']:.3f} (vs 790 measured)"
    print(line + f", last loss {s['last_loss']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
