#!/usr/bin/env python3
"""Importance-sampling histograms over embedding clusters: DGA's basis and the IS baseline.

DGA paper Eq. 4: p_i = share of a set's units (documents, or chunks of --chunk-chars) whose
nearest leaf centroid c(x) is cluster i. One histogram per basis set gives the basis P of
distribution reweighting (Eq. 9; docs/algorithms.md §3); the specific set's histogram is α^IS, the
importance-sampling baseline (§2.3).

Inputs are Pile-format files, folders or globs (`tools/cluster_domains.py` made the clusters):
  --specific [NAME=]PATH[,PATH...]     the specific (target) set; --specific-domain keeps only
                                       documents of the given pile_set_name(s)
  --basis NAME=PATH[,PATH...]          one basis set (repeatable)
  --basis-from-domains PATH[,PATH...]  one basis set per pile_set_name found there
  --basis-from-clustered PATH[,...]    a split written by cluster_domains.py: one basis set per
                                       meta.source_pile_set_name, binned by its leaf as written
                                       (no embedding; the clusters must be the same)
  --include-specific                   the specific histogram as one more basis (the paper's N=23)

Writes --out DIR: basis.json (draw-basis/v1, domains = the leaves holding training data, in
the converted data's order), importance_sampling.json (draw-mixture/v1, kind static: α^IS)
and SUMMARY.json. With --data ROOT (the converted clusters, manifest.json) the domains are
the manifest's, and mass on domains without train sequences is moved off (renormalised).

Example:
  python tools/importance_histograms.py --clusters demo_out/dga4096/corpus \\
      --basis-from-clustered demo_out/dga4096/corpus/train \\
      --specific 'Python Docs (test)=demo_out/corpus/test.jsonl.zst' \\
      --specific-domain 'Python Docs' --include-specific --data demo_out/dga4096/data \\
      --out demo_out/dga4096/basis
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np

BASIS_NAME = "basis.json"
IS_NAME = "importance_sampling.json"
CLUSTERED_SUMMARY_FORMAT = "draw-clustered-corpus/v1"  # tools/cluster_domains.py's SUMMARY


class ToolError(Exception):
    """A problem with the inputs, reported as one line on stderr (exit status 1)."""


@dataclass
class UnitSet:
    """One set's units, as leaf indices, with where they came from."""

    name: str
    leaves: np.ndarray
    info: dict = field(default_factory=dict)


def build_parser() -> argparse.ArgumentParser:
    from draw_megatron.data.clusters import add_output_arguments

    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clusters", required=True, metavar="PATH",
                   help="clusters.npz, or the cluster_domains.py output folder holding it")
    p.add_argument("--specific", required=True, metavar="[NAME=]PATH[,PATH...]",
                   help="the specific set (Pile-format files, folders or globs)")
    p.add_argument("--specific-domain", action="append", default=[], metavar="NAME",
                   help="keep only specific-set documents of this pile_set_name; repeatable")
    p.add_argument("--basis", action="append", default=[], metavar="NAME=PATH[,PATH...]",
                   help="one basis set; repeatable")
    p.add_argument("--basis-from-domains", action="append", default=[],
                   metavar="PATH[,PATH...]", help="one basis set per pile_set_name in these files")
    p.add_argument("--basis-from-clustered", action="append", default=[],
                   metavar="PATH[,PATH...]",
                   help="files of a cluster_domains.py output split: one basis set per "
                        "meta.source_pile_set_name, binned by the leaf they were written with")
    p.add_argument("--include-specific", action="store_true",
                   help="add the specific set's histogram as one more basis")
    p.add_argument("--chunk-chars", type=int, metavar="N",
                   help="cut documents into chunks of at most N characters (default: the "
                        "clusters file's, so sets are cut as the clustered corpus was)")
    p.add_argument("--data", metavar="ROOT",
                   help="the converted clusters (manifest.json): use its domains and move "
                        "mass off domains without train sequences")
    add_output_arguments(p)
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = build_parser()
    args = p.parse_args(argv)
    if not (args.basis or args.basis_from_domains or args.basis_from_clustered
            or args.include_specific):
        p.error("give at least one basis set (--basis, --basis-from-domains, "
                "--basis-from-clustered or --include-specific)")
    if args.chunk_chars is not None and args.chunk_chars < 0:
        p.error(f"--chunk-chars must be >= 0, got {args.chunk_chars}")
    return args


def _paths(text: str, flag: str) -> list[str]:
    from draw_megatron.data.pile import expand_inputs

    parts = [p for p in text.split(",") if p]
    if not parts:
        raise ToolError(f"{flag} {text!r} names no file")
    try:
        return expand_inputs(parts)
    except FileNotFoundError as exc:
        raise ToolError(f"{flag}: {exc}") from None


def _named(text: str, flag: str, default: str | None = None) -> tuple[str, list[str]]:
    """(NAME, files) of NAME=PATH[,PATH...]; NAME may be omitted when ``default`` is given."""
    name, sep, rest = text.partition("=")
    if not sep:
        if default is None:
            raise ToolError(f"{flag} {text!r} is not NAME=PATH[,PATH...]")
        return default, _paths(text, flag)
    if not name or not rest:
        raise ToolError(f"{flag} {text!r} is not NAME=PATH[,PATH...]")
    return name, _paths(rest, flag)


class Assigner:
    """Embeds the units of Pile files and maps them to leaves with c(x) (loaded on first use)."""

    def __init__(self, tree, chunk_chars: int, device: str, batch_size: int):
        self.tree, self.chunk_chars = tree, chunk_chars
        self.device, self.batch_size = device, batch_size
        self._embedder = None

    def units(self, paths: list[str], flag: str, keep: set[str] | None = None
              ) -> tuple[np.ndarray, np.ndarray, dict]:
        """(leaf per unit, source domain per unit, info) of the files' units whose domain is
        in ``keep`` (all when None)."""
        from tqdm import tqdm

        from draw_megatron.data.clusters import Embedder, embed_stream, iter_units
        from draw_megatron.data.pile import BadInputLog

        if self._embedder is None:
            self._embedder = Embedder(self.device, self.batch_size)
            self.tree.check_model(self._embedder)
        log, counts, seen = BadInputLog(), {"documents": 0}, {}

        def kept():
            for domain, text in iter_units(paths, self.chunk_chars, log, counts):
                seen[domain] = seen.get(domain, 0) + 1
                if keep is None or domain in keep:
                    yield domain, text

        with tqdm(desc="embed", unit="unit", dynamic_ncols=True, mininterval=2.0) as bar:
            emb, domains = embed_stream(self._embedder, kept(), progress=bar)
        if not len(emb):
            why = (f"none of its domains {sorted(seen)} is among {sorted(keep)}" if seen
                   else log.describe() if log.total else "the files hold no document")
            raise ToolError(f"{flag}: no usable unit in {', '.join(paths[:3])}: {why}")
        info = {"inputs": [os.path.abspath(p) for p in paths], "documents": counts["documents"],
                "bad_input": log.to_dict()}
        return self.tree.assign(emb), np.asarray(domains, dtype=object), info


def clustered_units(paths: list[str], tree, flag: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """(leaf, source domain) of each line of a cluster_domains.py output split, read as written."""
    from draw_megatron.data.pile import BadInputLog, iter_raw_lines

    _check_clustered_origin(paths, tree, flag)
    index = {name: i for i, name in enumerate(tree.leaf_names())}
    leaves, sources = [], []
    log = BadInputLog()
    for path in paths:
        for lineno, raw in iter_raw_lines(path, log):
            if not raw.strip():
                continue
            try:
                meta = json.loads(raw)["meta"]
                leaf, source = index[meta["pile_set_name"]], meta["source_pile_set_name"]
            except (ValueError, KeyError, TypeError):
                raise ToolError(f"{flag}: {path}:{lineno} is not a line written by "
                                "cluster_domains.py with these clusters (meta.pile_set_name "
                                "a leaf, meta.source_pile_set_name)") from None
            leaves.append(leaf)
            sources.append(source)
    if log.total or not leaves:
        raise ToolError(f"{flag}: {', '.join(paths[:3])}: "
                        + (log.describe() if log.total else "no lines"))
    info = {"inputs": [os.path.abspath(p) for p in paths], "clustered": True}
    return np.asarray(leaves, dtype=np.int64), np.asarray(sources, dtype=object), info


def _check_clustered_origin(paths: list[str], tree, flag: str) -> None:
    """The files' SUMMARY.json (their folder or the one above) must name these clusters."""
    for path in paths:
        folder = os.path.dirname(os.path.abspath(path))
        for candidate in (folder, os.path.dirname(folder)):
            summary = os.path.join(candidate, "SUMMARY.json")
            if os.path.isfile(summary):
                with open(summary, encoding="utf-8") as fh:
                    raw = json.load(fh)
                if raw.get("format") == CLUSTERED_SUMMARY_FORMAT:
                    if raw.get("fingerprint") != tree.fingerprint():
                        raise ToolError(f"{flag}: {path} was clustered with other clusters "
                                        f"than --clusters (see {summary})")
                    break
        else:
            raise ToolError(f"{flag}: {path} has no cluster_domains.py SUMMARY.json beside it "
                            "or one folder up: not a clustered corpus")


def by_domain(leaves: np.ndarray, sources: np.ndarray, info: dict) -> list[UnitSet]:
    """One set per source domain, in name order."""
    return [UnitSet(str(d), leaves[sources == d], {**info, "pile_set_name": str(d)})
            for d in sorted(set(sources.tolist()))]


def collect_sets(args: argparse.Namespace, tree, assigner: Assigner
                 ) -> tuple[UnitSet, list[UnitSet]]:
    """The specific set and the basis sets (the specific one last with --include-specific)."""
    keep = set(args.specific_domain) or None
    default = (" + ".join(args.specific_domain) + " (specific)") if keep else "specific"
    name, paths = _named(args.specific, "--specific", default)
    leaves, _, info = assigner.units(paths, "--specific", keep)
    specific = UnitSet(name, leaves, {**info, "pile_set_names": sorted(keep or [])})
    bases: list[UnitSet] = []
    for item in args.basis:
        bname, bpaths = _named(item, "--basis")
        bleaves, _, binfo = assigner.units(bpaths, "--basis")
        bases.append(UnitSet(bname, bleaves, binfo))
    for item in args.basis_from_domains:
        bases.extend(by_domain(*assigner.units(_paths(item, "--basis-from-domains"),
                                               "--basis-from-domains")))
    for item in args.basis_from_clustered:
        flag = "--basis-from-clustered"
        bases.extend(by_domain(*clustered_units(_paths(item, flag), tree, flag)))
    if args.include_specific:
        bases.append(UnitSet(specific.name, specific.leaves, {**specific.info,
                                                              "specific": True}))
    names = [b.name for b in bases]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ToolError(f"basis names must be distinct, {dupes} repeat (name the sets with "
                        "--basis NAME=PATH or --specific NAME=PATH)")
    return specific, bases


@dataclass
class Domains:
    """The basis domains: leaf indices in output order, and which may carry mass."""

    names: list[str]
    leaves: np.ndarray
    usable: np.ndarray
    """False where the data has no train sequence: mass there is moved off."""
    source: str


def target_domains(tree, data_root: str | None) -> Domains:
    """Without --data, the leaves holding train units; with it, the manifest's domains."""
    names = tree.leaf_names()
    if data_root is None:
        active = tree.active_leaves()
        return Domains([names[i] for i in active], active, np.ones(active.size, bool),
                       "clusters file (leaves with training units)")
    from draw_megatron.data.manifest import Manifest

    manifest = Manifest.load(data_root)
    index = {n: i for i, n in enumerate(names)}
    unknown = [n for n in manifest.domain_names if n not in index]
    if unknown:
        raise ToolError(f"{data_root}: {len(unknown)} of its {manifest.num_domains} domains "
                        f"are not clusters of --clusters (first: {unknown[:5]}): the data was "
                        "not converted from this clustering")
    if "train" not in manifest.splits:
        raise ToolError(f"{data_root} has no train split (it has {list(manifest.splits)})")
    leaves = np.array([index[n] for n in manifest.domain_names], dtype=np.int64)
    return Domains(manifest.domain_names, leaves, manifest.num_sequences("train") > 0,
                   f"manifest of {os.path.abspath(data_root)}")


def histogram(unit_set: UnitSet, domains: Domains, num_leaves: int) -> tuple[np.ndarray, dict]:
    """Eq. 4 over ``domains``, with mass off unusable domains moved (renormalised)."""
    counts = np.bincount(unit_set.leaves, minlength=num_leaves).astype(np.float64)
    total = counts.sum()
    kept = np.where(domains.usable, counts[domains.leaves], 0.0)
    if kept.sum() == 0:
        raise ToolError(f"set {unit_set.name!r}: all {int(total)} of its units fall in clusters "
                        "without train sequences; nothing is left to sample")
    moved = 1.0 - kept.sum() / total
    stats = {"units": int(total), "nonzero_domains": int((kept > 0).sum()),
             "moved_mass": float(moved), "max_weight": float(kept.max() / kept.sum())}
    return kept / kept.sum(), stats


def provenance(args: argparse.Namespace, tree, chunk_chars: int, domains: Domains,
               specific: UnitSet, specific_stats: dict) -> dict:
    """What the basis and the IS mixture were made from (written into both files)."""
    clusters = {"path": os.path.abspath(args.clusters), "fingerprint": tree.fingerprint(),
                "k": tree.k, "levels": tree.levels,
                "model": tree.meta.get("model", {}).get("id"),
                "chunk_chars": tree.meta.get("chunk_chars")}
    return {"tool": "tools/importance_histograms.py",
            "method": "importance-sampling histograms (DGA paper Eq. 4)",
            "clusters": clusters, "chunk_chars": chunk_chars, "domains_from": domains.source,
            "domains_without_train_sequences": int((~domains.usable).sum()),
            "specific": {"name": specific.name, **specific_stats, **specific.info},
            "include_specific": bool(args.include_specific)}


def run(args: argparse.Namespace) -> dict:
    from draw_megatron.data.clusters import ClusterTree
    from draw_megatron.mixture.basis import BasisSpec
    from draw_megatron.mixture.files import MixtureSpec
    from draw_megatron.utils.fs import atomic_output_dir, atomic_write_json

    t_start = time.time()
    tree = ClusterTree.load(args.clusters)
    chunk_chars = tree.meta.get("chunk_chars", 0) if args.chunk_chars is None else args.chunk_chars
    domains = target_domains(tree, args.data)
    with atomic_output_dir(args.out, overwrite=args.overwrite) as tmp:
        assigner = Assigner(tree, chunk_chars, args.device, args.batch_size)
        specific, bases = collect_sets(args, tree, assigner)
        is_weights, is_stats = histogram(specific, domains, tree.num_leaves)
        rows, basis_info = [], []
        for b in bases:
            weights, stats = histogram(b, domains, tree.num_leaves)
            rows.append(weights)
            basis_info.append({"name": b.name, **stats, **b.info})
        prov = provenance(args, tree, chunk_chars, domains, specific, is_stats)
        BasisSpec(domains.names, [b.name for b in bases], np.stack(rows),
                  {**prov, "bases": basis_info}).save(os.path.join(tmp, BASIS_NAME))
        MixtureSpec("static", domains.names, is_weights, provenance=prov).save(
            os.path.join(tmp, IS_NAME))
        result = {"num_domains": len(domains.names), "num_bases": len(bases),
                  "specific": {"name": specific.name, **is_stats}, "bases": basis_info,
                  "provenance": prov, "seconds": time.time() - t_start}
        atomic_write_json(os.path.join(tmp, "SUMMARY.json"), result)
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from draw_megatron.data.clusters import ClusterError
    from draw_megatron.data.manifest import ManifestError
    from draw_megatron.mixture.files import MixtureFileError

    try:
        result = run(args)
    except (ToolError, ClusterError, ManifestError, MixtureFileError, FileExistsError,
            OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print_summary(result, args.out)
    return 0


def print_summary(result: dict, out: str) -> None:
    print(f"\nwrote {out}: {result['num_bases']} bases over {result['num_domains']} domains "
          f"({result['provenance']['domains_from']}) in {result['seconds']:.1f} s")
    print(f"{'set':<32}{'units':>8}{'nonzero':>9}{'max w':>8}{'moved':>8}")
    rows = [{**result["specific"], "name": "[specific] " + result["specific"]["name"]}]
    for row in rows + result["bases"]:
        print(f"{row['name'][:31]:<32}{row['units']:>8}{row['nonzero_domains']:>9}"
              f"{row['max_weight']:>8.3f}{row['moved_mass']:>8.4f}")


if __name__ == "__main__":
    sys.exit(main())
