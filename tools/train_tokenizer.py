#!/usr/bin/env python
"""Train the project's SentencePiece tokenizer on a seeded, domain-balanced sample.

    python tools/train_tokenizer.py --input 'demo_out/corpus/train/*.jsonl.zst' \\
        --vocab-size 8000 --out demo_out/tokenizer/sp

Writes PREFIX.model, PREFIX.vocab and PREFIX.json (options, seed, sample per domain, sha256).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from draw_megatron.data.tokenizer import (DEFAULT_NUM_THREADS, DEFAULT_SAMPLE_MB,
                                          train_tokenizer)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", nargs="+", required=True, metavar="FILE",
                        help="Pile jsonl / jsonl.zst files, globs or folders")
    parser.add_argument("--vocab-size", type=int, required=True, help="pieces in the model")
    parser.add_argument("--out", required=True, metavar="PREFIX",
                        help="output prefix: writes PREFIX.model, PREFIX.vocab, PREFIX.json")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample (default 0)")
    parser.add_argument("--sample-mb", type=float, default=DEFAULT_SAMPLE_MB,
                        help=f"millions of characters to train on (default {DEFAULT_SAMPLE_MB})")
    parser.add_argument("--num-threads", type=int, default=DEFAULT_NUM_THREADS,
                        help=f"SentencePiece trainer threads (default {DEFAULT_NUM_THREADS})")
    return parser.parse_args(argv)


def _summary(info: dict) -> str:
    lines = [f"{'domain':<24}{'docs seen':>10}{'sample chunks':>15}{'sample chars':>14}"]
    for name, s in info["sample"]["domains"].items():
        lines.append(f"{name:<24}{s['documents_seen']:>10}{s['chunks']:>15}{s['chars']:>14,}")
    lines.append(f"vocab {info['vocab_size']}, sha256 {info['sha256'][:16]}…")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    try:
        model = train_tokenizer(args.input, args.vocab_size, args.out, seed=args.seed,
                                sample_mb=args.sample_mb, num_threads=args.num_threads,
                                progress=True)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    with open(args.out + ".json", encoding="utf-8") as fh:
        print(_summary(json.load(fh)))
    print(f"wrote {model} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
