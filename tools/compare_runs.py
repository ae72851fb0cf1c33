#!/usr/bin/env python3
"""Per-domain validation loss of runs side by side, with average and worst-case rows.

    python tools/compare_runs.py runs/natural runs/draw runs/uniform [--out DIR] [--step N]
        [--lm-eval [RUN=]FILE ...]

Reads each run's metrics.jsonl (the last eval record, or the one at --step) and its
config.yaml; every run must use the same data (the same fixed evaluation sequences).
Prints the table (DRAW Table 5's layout: a row per domain, then average and worst-case)
and writes it as Markdown and CSV under --out.

--lm-eval adds downstream results (docs/algorithms.md §5): each FILE is a results JSON as the
lm-eval harness writes it (`lm_eval ... --output_path RUN_DIR/lm_eval` gives
RUN_DIR/lm_eval/<model>/results_<date>.json, a "results" dict of task → metric → value).
A file belongs to the run whose RUN_DIR/lm_eval/ folder holds it, or to the run named by
RUN= (its directory as given, or its column name). Then a second table, a row per run,
puts the average and worst-case loss beside one column per task and metric ("TASK N-shot
METRIC", standard errors left out; a group with subtasks shows the group's own figure):
printed, appended to comparison.md and written to downstream.csv.
"""

from __future__ import annotations

import argparse
import csv
import json
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


def lm_eval_columns(path: str) -> dict[str, float]:
    """Column name → value of one lm-eval results file: the top-level tasks (a group with
    subtasks counts once, unless it has no figure of its own), numeric metrics, no stderr."""
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SystemExit(f"error: --lm-eval {path}: cannot read it as JSON ({exc})") from None
    results = doc.get("results") if isinstance(doc, dict) else None
    if not isinstance(results, dict) or not results:
        raise SystemExit(f"error: --lm-eval {path}: no 'results' dict of task -> metric -> "
                         "value (is it lm-eval's results_*.json?)")
    children = doc.get("group_subtasks") or {}
    nested = {c for subs in children.values() for c in subs}

    def metrics(task: str) -> dict[str, float]:
        out = {}
        for key, value in (results.get(task) or {}).items():
            name, _, filt = key.partition(",")
            if (isinstance(value, (int, float)) and not isinstance(value, bool)
                    and not name.endswith("_stderr")):
                out[name if filt in ("", "none") else f"{name} ({filt})"] = float(value)
        return out

    def shown(task: str) -> list[str]:
        if metrics(task) or not children.get(task):
            return [task]
        return [t for c in children[task] for t in shown(c)]

    shots = doc.get("n-shot") or {}
    columns = {}
    for task in (t for top in results if top not in nested for t in shown(top)):
        shot = f" {shots[task]}-shot" if task in shots else ""
        for metric, value in metrics(task).items():
            columns[f"{task}{shot} {metric}"] = value
    return columns


def match_lm_eval(items: list[str], runs: list[str]) -> dict[str, list[str]]:
    """Run → its lm-eval files: RUN=FILE, or a FILE under RUN_DIR/lm_eval/."""
    names = {os.path.basename(os.path.normpath(r)): r for r in runs}
    real = {os.path.realpath(r): r for r in runs}
    matched: dict[str, list[str]] = {r: [] for r in runs}
    for item in items:
        run_arg, eq, path = item.partition("=")
        if eq and not os.path.isfile(item):
            run = real.get(os.path.realpath(run_arg)) or names.get(run_arg)
            if run is None:
                raise SystemExit(f"error: --lm-eval {item}: {run_arg!r} is not one of the runs")
        else:
            path, here = item, os.path.realpath(item)
            run = next((r for rr, r in real.items()
                        if here.startswith(os.path.join(rr, "lm_eval") + os.sep)), None)
            if run is None:
                raise SystemExit(f"error: --lm-eval {item} is not under any run's lm_eval/ "
                                 "folder; give RUN=FILE")
        matched[run].append(path)
    return matched


def downstream_table(runs: list[str], header: list[str], rows: list[list[str]],
                     matched: dict[str, list[str]]) -> tuple[list[str], list[list[str]]]:
    """A row per run: its average and worst-case loss, then its lm-eval columns."""
    per_run: dict[str, dict[str, float]] = {}
    order: dict[str, None] = {}
    for run in runs:
        per_run[run] = {}
        for path in matched.get(run, []):
            for column, value in lm_eval_columns(path).items():
                if column in per_run[run]:
                    raise SystemExit(f"error: --lm-eval: {column!r} of {run} is in two files")
                per_run[run][column] = value
                order[column] = None
    losses = {r[0]: r[1:] for r in rows}
    out_header = ["run", "average loss", "worst-case loss", *order]
    out_rows = [[header[i + 1], losses["average"][i], losses["worst-case"][i]]
                + [_fmt(per_run[run].get(c)) for c in order] for i, run in enumerate(runs)]
    return out_header, out_rows


def print_table(header: list[str], rows: list[list[str]]) -> None:
    width = max(len(r[0]) for r in [header, *rows]) + 2
    print("".join([f"{header[0]:<{width}}"] + [f"{h[:14]:>15}" for h in header[1:]]))
    for r in rows:
        print("".join([f"{r[0]:<{width}}"] + [f"{v:>15}" for v in r[1:]]))


def write_csv(path: str, header: list[str], rows: list[list[str]]) -> None:
    from draw_megatron.utils.fs import atomic_open

    with atomic_open(path) as fh:
        csv.writer(fh).writerows([header] + rows)


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
    p.add_argument("--lm-eval", nargs="+", default=[], metavar="[RUN=]FILE",
                   help="lm-eval results JSON files: downstream columns beside the losses")
    args = p.parse_args(argv)
    header, rows = build_table(args.runs, args.step)
    down = None
    if args.lm_eval:
        down = downstream_table(args.runs, header, rows, match_lm_eval(args.lm_eval, args.runs))
    print_table(header, rows)
    if down:
        print()
        print_table(*down)
    if args.out:
        from draw_megatron.utils.fs import atomic_write_text

        text = to_markdown(header, rows)
        if down:
            text += "\n## Downstream (lm-eval)\n\n" + to_markdown(*down)
            write_csv(os.path.join(args.out, "downstream.csv"), *down)
        atomic_write_text(os.path.join(args.out, "comparison.md"), text)
        write_csv(os.path.join(args.out, "comparison.csv"), header, rows)
        print(f"wrote {args.out}/comparison.md and comparison.csv"
              + (" and downstream.csv" if down else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
