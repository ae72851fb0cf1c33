#!/usr/bin/env python
"""Write the project's demo corpus (text shipped with CPython, The Pile's layout).

    python tools/make_demo_corpus.py --out demo_out/corpus [--seed 0] [--max-mb-per-domain 0.8]

Writes DIR/train/00.jsonl.zst, DIR/val.jsonl.zst, DIR/test.jsonl.zst and DIR/SUMMARY.json.
"""

from __future__ import annotations

import argparse
import sys
import time

from draw_megatron.data.demo_corpus import (DEFAULT_MAX_MB_PER_DOMAIN, DemoCorpusConfig,
                                            build_demo_corpus, format_summary)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder (must not exist)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the subsets and generated domains (default 0)")
    parser.add_argument("--max-mb-per-domain", type=float, default=DEFAULT_MAX_MB_PER_DOMAIN,
                        help=f"cap per domain in MB of text (default {DEFAULT_MAX_MB_PER_DOMAIN})")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    try:
        cfg = DemoCorpusConfig(seed=args.seed, max_mb_per_domain=args.max_mb_per_domain)
        summary = build_demo_corpus(args.out, cfg, overwrite=args.overwrite, progress=True)
    except (ValueError, FileExistsError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_summary(summary))
    print(f"wrote {args.out} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
