#!/usr/bin/env python3
"""Converter throughput against bare SentencePiece encoding of the same documents, one run.

"bare" encodes the corpus's documents (already in memory) with the same tokenizer in this
process; "convert xN" is the whole converter (read, decompress, parse, tokenize, pack,
write MDS, manifest) with N workers. Rounds alternate and medians are reported.
Targets: convert x1 / bare >= 0.7; convert x2 is >= 1.5x faster than x1.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", required=True, help="a folder in The Pile's layout")
    p.add_argument("--tokenizer", required=True, help="SentencePiece .model")
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = p.parse_args(argv)

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from convert_pile import pile_layout

    from draw_megatron.data.convert import ConvertConfig, convert_corpus
    from draw_megatron.data.pile import BadInputLog, iter_documents
    from draw_megatron.data.tokenizer import Tokenizer

    splits = pile_layout(args.corpus)
    texts = [t for paths in splits.values() for _, t in iter_documents(paths, BadInputLog())]
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    tok = Tokenizer(args.tokenizer)
    scratch = tempfile.mkdtemp(prefix="bench_convert_")

    def bare() -> float:
        t0 = time.perf_counter()
        tok.encode_batch(texts)
        return time.perf_counter() - t0

    def convert(workers: int) -> float:
        out = os.path.join(scratch, f"w{workers}")
        t0 = time.perf_counter()
        convert_corpus(splits, args.tokenizer, out, ConvertConfig(seq_len=args.seq_len,
                                                                  workers=workers),
                       overwrite=True)
        return time.perf_counter() - t0

    times: dict[str, list[float]] = {"bare": []} | {f"x{w}": [] for w in args.workers}
    try:
        for _ in range(args.rounds):
            times["bare"].append(bare())
            for w in args.workers:
                times[f"x{w}"].append(convert(w))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"corpus {args.corpus}: {len(texts)} documents, {mb:.2f} MB of text; "
          f"seq_len {args.seq_len}; {args.rounds} rounds; {os.cpu_count()} CPUs")
    print(f"bare SentencePiece encode : {med['bare']:7.2f} s  {mb / med['bare']:6.2f} MB/s")
    for w in args.workers:
        s = med[f"x{w}"]
        print(f"convert, {w} worker(s)     : {s:7.2f} s  {mb / s:6.2f} MB/s")
    if 1 in args.workers:
        print(f"ratio convert x1 / bare   : {med['bare'] / med['x1']:7.3f}  (target >= 0.7)")
        for w in args.workers:
            if w > 1:
                print(f"speed-up x{w} over x1      : {med['x1'] / med[f'x{w}']:7.3f}  "
                      "(target >= 1.5 for x2)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
