#!/usr/bin/env python3
"""Per-domain validation loss of runs side by side, with average and worst-case rows.

    python tools/compare_runs.py runs/natural runs/draw runs/uniform [--out DIR] [--step N]

Reads each run's metrics.jsonl (the last eval record, or the one at --step) and its
config.yaml; every run must use the same data (the same fixed evaluation sequences).
Prints the table (DRAW Table 5's layout: a row per domain, then average and worst-case)
and writes it as Markdown and CSV under --out.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys


def load_eval(run_dir: str, step: int | None) -> dict:
    from draw_megatron.train.metrics import METRICS_NAME, read_metrics

    path = os.path.join(run_dir, METRICS_NAME)
    if not os.path.isfile(path):
        raise SystemExit(f"error: {run_dir} has no {METRICS_NAME}")
    evals = read_metrics(path, "eval")
    if step is not None:
        evals = [r for r in evals if r["step"] == step]
    if not evals:
        raise SystemExit(f"error: {path} has no eval record" + (f" at step {step}" if step else ""))
    return evals[-1]


def domain_names(run_dir: str) -> list[str]:
    import yaml

    from draw_megatron.data.manifest import Manifest

    with open(os.path.join(run_dir, "config.yaml"), encoding="utf-8") as fh:
        root = yaml.safe_load(fh)["data"]["root"]
    return Manifest.load(root).domain_names


def build_table(runs: list[str], step: int | None) -> tuple[list[str], list[list[str]]]:
    names = None
    columns = []
    for run in runs:
        these = domain_names(run)
        if names is not None and these != names:
            raise SystemExit(f"error: {run} was evaluated on other domains than {runs[0]}")
        names = these
        columns.append(load_eval(run, step))
    header = ["domain"] + [os.path.basename(os.path.normpath(r)) for r in runs]
    rows = [[name] + [_fmt(c["domain_loss"][d]) for c in columns] for d, name in enumerate(names)]
    rows.append(["average"] + [_fmt(c["avg"]) for c in columns])
    rows.append(["worst-case"] + [_fmt(c["worst"]) for c in columns])
    rows.append(["(step)"] + [str(c["step"]) for c in columns])
    return header, rows


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4f}"


def to_markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="run directories")
    p.add_argument("--step", type=int, help="compare the evals at this step (default: last)")
    p.add_argument("--out", help="folder for comparison.md and comparison.csv")
    args = p.parse_args(argv)
    header, rows = build_table(args.runs, args.step)
    width = max(len(r[0]) for r in rows) + 2
    print("".join([f"{header[0]:<{width}}"] + [f"{h[:14]:>15}" for h in header[1:]]))
    for r in rows:
        print("".join([f"{r[0]:<{width}}"] + [f"{v:>15}" for v in r[1:]]))
    if args.out:
        from draw_megatron.utils.fs import atomic_write_text

        atomic_write_text(os.path.join(args.out, "comparison.md"), to_markdown(header, rows))
        tmp = os.path.join(args.out, ".comparison.csv.tmp")
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            csv.writer(fh).writerows([header] + rows)
        os.replace(tmp, os.path.join(args.out, "comparison.csv"))
        print(f"wrote {args.out}/comparison.md and comparison.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
