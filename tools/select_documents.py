#!/usr/bin/env python3
"""The documents of chosen Pile domains (meta.pile_set_name) as one Pile-format jsonl file.

    python tools/select_documents.py demo_out/corpus/test.jsonl.zst --domain "Python Docs" \\
        --out demo_out/dga4096/specific/python_docs_test.jsonl

For DGA's specific set (dga.specific=PATH: converted with the run's tokenizer) when the
target is one domain of raw Pile files rather than of a converted data root. Lines the
reader rejects are counted and reported, never copied. The output is written to a temporary
file and moved into place; an existing --out is refused unless --overwrite.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", help="Pile-format files, folders or globs")
    p.add_argument("--domain", action="append", required=True, metavar="NAME",
                   help="pile_set_name to keep (repeatable)")
    p.add_argument("--out", required=True, help="output .jsonl file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = p.parse_args(argv)

    from draw_megatron.data.pile import BadInputLog, expand_inputs, iter_documents
    from draw_megatron.utils.fs import atomic_write_text

    if os.path.exists(args.out) and not args.overwrite:
        print(f"error: {args.out} exists; pass --overwrite to replace it", file=sys.stderr)
        return 2
    try:
        files = expand_inputs(args.inputs)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    keep, log, seen = set(args.domain), BadInputLog(), set()
    lines = []
    for domain, text in iter_documents(files, log):
        seen.add(domain)
        if domain in keep:
            lines.append(json.dumps({"text": text, "meta": {"pile_set_name": domain}}) + "\n")
    missing = sorted(keep - seen)
    if missing:
        print(f"error: no document of {missing} in {len(files)} file(s) (domains there: "
              f"{sorted(seen)})", file=sys.stderr)
        return 2
    atomic_write_text(args.out, "".join(lines))
    print(f"{len(lines)} documents of {sorted(keep)} from {len(files)} file(s) -> {args.out}"
          + (f"; skipped bad lines: {log.describe()}" if log.total else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
