#!/usr/bin/env python3
"""Convert The Pile's jsonl / jsonl.zst into packed MDS domain datasets + manifest.json.

Examples:
  python tools/convert_pile.py /data/pile --tokenizer sp.model --seq-len 1024 --out /data/mds
  python tools/convert_pile.py --split train=a.jsonl.zst,b.jsonl.zst --split val=v.jsonl \\
      --tokenizer sp.model --seq-len 1024 --out /data/mds --workers 8
  python tools/convert_pile.py /data/pile --tokenizer sp.model --seq-len 1024 \\
      --out s3://bucket/pile-mds --staging-dir /scratch/stage

With PILE_DIR, its own layout is used: train/*.jsonl[.zst], val.jsonl[.zst], test.jsonl[.zst].
An --out URL (s3://, gs://, ...) is written through the MDS library's uploaders, manifest.json
last; credentials come from the environment or ~/.aws (S3 endpoint: S3_ENDPOINT_URL).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

# Heavy imports live in main(): the converter's workers are spawned, and spawning re-imports
# this file, so its top level stays light.


def parse_size(text: str) -> int:
    units = {"kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30, "b": 1}
    low = text.strip().lower()
    for unit, mult in units.items():
        if low.endswith(unit):
            return int(float(low[: -len(unit)]) * mult)
    return int(low)


def pile_layout(root: str) -> dict[str, list[str]]:
    """The Pile's own layout: train/NN.jsonl.zst, val.jsonl.zst, test.jsonl.zst."""
    from draw_megatron.data.pile import pile_layout as find_layout

    try:
        return find_layout(root)
    except FileNotFoundError as exc:
        raise SystemExit(f"error: {exc}") from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pile_dir", nargs="?", help="a folder in The Pile's layout")
    p.add_argument("--split", action="append", default=[], metavar="NAME=PATH[,PATH...]",
                   help="files (paths, globs or folders) of one split; repeatable")
    p.add_argument("--tokenizer", required=True, help="SentencePiece .model file")
    p.add_argument("--seq-len", type=int, required=True, help="tokens per training sequence")
    p.add_argument("--out", required=True,
                   help="output data root: a folder, or a URL such as s3://bucket/prefix")
    p.add_argument("--staging-dir", help="--out URL only: local folder holding shards until "
                                         "they are uploaded (default: the temporary folder)")
    p.add_argument("--workers", type=int, default=1, help="tokenizer processes (default 1)")
    p.add_argument("--domains", nargs="+", metavar="NAME",
                   help="keep only these domains (display names, e.g. 'Wikipedia (en)'); "
                        "@FILE reads names from FILE, one a line, '#' starting a comment "
                        "line (e.g. @configs/data/pile17.txt, DRAW's 17 Pile domains)")
    p.add_argument("--epochs", action="append", default=[], metavar="NAME=X",
                   help="epochs of a domain for its natural weight; repeatable")
    p.add_argument("--shard-size", type=parse_size, default="32mb",
                   help="bytes per MDS shard, e.g. 32mb (lower it for thousands of domains)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = p.parse_args(argv)
    if not args.pile_dir and not args.split:
        p.error("give PILE_DIR or at least one --split NAME=PATH")
    if args.pile_dir and args.split:
        p.error("give PILE_DIR or --split, not both")
    return args


def read_domain_file(path: str) -> list[str]:
    """Domain names of an @FILE: one a line, blank lines and lines starting with '#' skipped
    (names may hold spaces and parentheses, so a line is a name as it stands, stripped)."""
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise SystemExit(f"error: --domains @{path}: cannot read it ({exc})") from None
    names = [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
    if not names:
        raise SystemExit(f"error: --domains @{path}: the file names no domain")
    return names


def expand_domains(items: list[str] | None) -> tuple[list[str] | None, list[str]]:
    """--domains with every @FILE replaced by its names; also the files read. A name given
    twice is an error (a list copied twice into a file is likely a mistake)."""
    if not items:
        return None, []
    names, files = [], []
    for item in items:
        if item.startswith("@"):
            files.append(item[1:])
            names.extend(read_domain_file(item[1:]))
        else:
            names.append(item)
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise SystemExit(f"error: --domains names {twice} more than once")
    return names, files


def _key_values(items: list[str], flag: str) -> list[tuple[str, str]]:
    pairs = []
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise SystemExit(f"error: {flag} {item!r} is not NAME=VALUE")
        pairs.append((name, value))
    return pairs


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Past a file-size limit the kernel's default is to kill the process, leaving the
    # temporary output behind; ignored, the write fails with EFBIG and is cleaned up.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    from draw_megatron.data.convert import ConversionError, ConvertConfig, convert_corpus
    from draw_megatron.data.pile import expand_inputs

    domains, domain_files = expand_domains(args.domains)
    try:
        if args.pile_dir:
            splits = pile_layout(args.pile_dir)
        else:
            splits = {}
            for name, paths in _key_values(args.split, "--split"):
                splits.setdefault(name, []).extend(expand_inputs(paths.split(",")))
        epochs = {}
        for name, value in _key_values(args.epochs, "--epochs"):
            try:
                epochs[name] = float(value)
            except ValueError:
                raise SystemExit(f"error: --epochs {name}={value}: {value!r} is not a number")
        cfg = ConvertConfig(seq_len=args.seq_len, workers=args.workers, domains=domains,
                            epochs=epochs, shard_size=args.shard_size,
                            staging_dir=args.staging_dir)
        if not os.path.isfile(args.tokenizer):
            raise SystemExit(f"error: tokenizer model {args.tokenizer!r} does not exist")
        t0 = time.time()
        manifest = convert_corpus(splits, args.tokenizer, args.out, cfg, overwrite=args.overwrite)
    except (ConversionError, ValueError, FileNotFoundError, FileExistsError) as exc:
        # a name the input lacks: say which file it came from
        origin = (f" (--domains read from {', '.join(domain_files)})"
                  if domain_files and str(exc).startswith("--domains names") else "")
        print(f"error: {exc}{origin}", file=sys.stderr)
        return 1
    print_summary(manifest, args.out, time.time() - t0)
    return 0


def print_summary(manifest: dict, out: str, seconds: float) -> None:
    splits = manifest["splits"]
    print(f"\nwrote {out} in {seconds:.1f} s: {len(manifest['domains'])} domains, "
          f"seq_len {manifest['seq_len']}, {manifest['dtype']}")
    header = f"{'domain':<28}" + "".join(f"{s + ' docs':>12}{s + ' seqs':>12}" for s in splits)
    print(header + f"{'weight':>9}")
    for d in manifest["domains"]:
        row = f"{d['name'][:27]:<28}"
        for s in splits:
            c = d["splits"][s]
            row += f"{c['documents']:>12}{c['sequences']:>12}"
        print(row + f"{d['splits'][splits[0]]['natural_weight']:>9.4f}")
    for split in splits:
        tokens = sum(d["splits"][split]["tokens"] for d in manifest["domains"])
        dropped = sum(d["splits"][split]["dropped_tokens"] for d in manifest["domains"])
        bad = manifest["bad_input"][split]
        bad_text = ", ".join(f"{v['count']} {k} (first at {v['first'][0]})"
                             for k, v in bad.items()) or "none"
        print(f"{split}: {tokens} tokens, {dropped} dropped in tails; bad input: {bad_text}")
        if split in manifest["filtered"]:
            print(f"{split}: skipped (not in --domains): {manifest['filtered'][split]}")


if __name__ == "__main__":
    sys.exit(main())
