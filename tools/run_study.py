#!/usr/bin/env python3
"""The DRAW pipeline over several seeds (and evidence values), summarised with error bars.

    python tools/run_study.py --data ROOT --proxy 70M --main 150M --seeds 1,2,3 \\
        [--evidence 1,8] [--vary all|proxy] --out DIR [run_pipeline flags] [key=value ...]
        [--lm-tasks T1,T2 [--lm-include-path DIR] [--lm-only-include-path]]

One tools/run_pipeline.py per seed, into DIR/seed_<s>/ (with --evidence, one per seed and
evidence value, into DIR/seed_<s>/evidence_<e>/). What the seed changes:

  --vary all    run.seed=S for every run of the pipeline (the default)
  --vary proxy  --proxy-seed S: only the DRO proxy stages (proxy_dro, doremi_proxy) change
                seed, so α_0 ~ Dir(β1) is drawn anew (DRAW Fig. 4 and 7); every other run
                keeps the base seed

Sharing finished runs: each pipeline is planned first (run_pipeline.plan). A training stage
whose command equals, up to the pipeline folder, the same stage of an earlier pipeline of the
study, and whose inputs come from stages that are equal in that sense too, is the same
computation; its run folder is then a relative symlink to the earlier one (made once the
earlier run is finished), and run_pipeline skips it as done. So per evidence value only the
posterior and what reads it (draw, static, online_draw) train again, and under --vary proxy
the runs that do not read the proxy (reference, natural, uniform, random, odm, dga) train
once. Tool stages (posterior, compare, plots) are cheap and rerun in every folder.

A pipeline whose stages are all done is not called again, so a rerun of the same command
only summarises. A failing pipeline stops the study, naming its folder.

The summary (DIR/study.md, study.csv, study.png, each written atomically): per method and
domain, and the average and worst-case rows, the mean ± sample sd over seeds of each run's
last eval record (metrics.jsonl; docs/algorithms.md §5); and the paired difference (method −
baseline, by seed) of DRAW, draw_dga and DGA against every baseline, with a 95 % percentile
bootstrap interval over seeds (--bootstrap resamples of the seeds with replacement, numpy's
generator seeded with --bootstrap-seed). A method that does not depend on the evidence
appears once; one that does appears per value, as "draw [s=8]".

--lm-tasks: after the pipelines, tools/eval_lm.py scores every method's final model of every
seed (into RUN/lm_eval/study_<key>/, key: the evaluation options; a finished score is
reused), offline unless HF_DATASETS_OFFLINE/HF_HUB_OFFLINE say otherwise; study.md gets a
downstream table (mean ± sd per task and metric) and the paired differences with the same
bootstrap.

--dry-run (or --plan) lists the pipelines, their commands and each stage's status (done,
todo, or shared with an earlier pipeline); it runs and writes nothing.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, field

import numpy as np

TOOLS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, TOOLS)

import run_pipeline as rp  # noqa: E402 — tools/ is not a package

TREATMENTS = ("draw", "draw_dga", "dga")
"""Methods compared with every baseline (their evidence variants too)."""


class StudyError(Exception):
    """A problem with the study's inputs or a failed pipeline (one line on stderr)."""


@dataclass
class Pipeline:
    """One run_pipeline invocation of the study."""

    seed: int
    evidence: float | None
    out: str
    argv: list[str]
    stages: list = field(default_factory=list)
    keys: dict[str, str] = field(default_factory=dict)
    """Stage name → identity of its computation (command up to the folder, and its inputs')."""
    shared: dict[str, str] = field(default_factory=dict)
    """Training stage name → the run folder of an earlier pipeline's identical stage."""

    @property
    def label(self) -> str:
        """The folder within the study's: seed_<s>, or seed_<s>/evidence_<e>."""
        parts = self.out.split(os.sep)
        return os.path.join(*parts[-2:]) if self.evidence is not None else parts[-1]

    def methods(self) -> list[str]:
        """The runs the pipeline's comparison reads, in its order."""
        compare = next(s for s in self.stages if s.name == "compare")
        runs = os.path.join(self.out, "runs") + os.sep
        return [os.path.basename(c) for c in compare.cmd if c.startswith(runs)]


# --------------------------------------------------------------------------- arguments


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, allow_abbrev=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, metavar="ROOT", help="data root (manifest.json)")
    p.add_argument("--proxy", required=True, metavar="PRESET", help="reference and proxy preset")
    p.add_argument("--main", required=True, metavar="PRESET", help="main and baseline preset")
    p.add_argument("--seeds", required=True, metavar="S1,S2,...",
                   help="comma-separated seeds (integers >= 0), one pipeline each")
    p.add_argument("--evidence", metavar="E1,E2,...",
                   help="evidence values s of the posterior, one pipeline per seed and value "
                        "(default: the pipeline's own, one pipeline per seed)")
    p.add_argument("--vary", choices=["all", "proxy"], default="all",
                   help="all: run.seed of every run; proxy: only the DRO proxy stages' seed")
    p.add_argument("--out", required=True, metavar="DIR", help="study folder")
    p.add_argument("--bootstrap", type=int, default=10_000, metavar="N",
                   help="bootstrap resamples of the seeds (default 10000)")
    p.add_argument("--bootstrap-seed", type=int, default=0, metavar="N",
                   help="seed of the bootstrap resampler (default 0)")
    p.add_argument("--lm-tasks", metavar="T1,T2",
                   help="after the pipelines, score every method's final model on these lm-eval "
                        "tasks (tools/eval_lm.py); the study adds their mean ± sd and the "
                        "paired differences")
    p.add_argument("--lm-include-path", action="append", default=[], metavar="DIR",
                   help="folder of task YAMLs for --lm-tasks (repeatable)")
    p.add_argument("--lm-only-include-path", action="store_true",
                   help="index only the --lm-include-path tasks, not lm-eval's own")
    p.add_argument("--lm-num-fewshot", type=int, metavar="N", help="few-shot examples per task")
    p.add_argument("--lm-limit", type=float, metavar="N", help="documents per task")
    p.add_argument("--dry-run", "--plan", dest="dry_run", action="store_true",
                   help="list the pipelines and their stages' status; run and write nothing")
    return p


def parse_seeds(text: str) -> list[int]:
    items = [t.strip() for t in text.split(",")]
    if not text.strip() or any(not t.isdigit() for t in items):
        raise StudyError(f"--seeds {text!r}: give comma-separated integers >= 0, e.g. 1,2,3")
    seeds = [int(t) for t in items]
    if len(set(seeds)) != len(seeds):
        raise StudyError(f"--seeds {text!r}: a seed is given twice")
    return seeds


def parse_evidence(text: str | None) -> list[float | None]:
    if text is None:
        return [None]
    try:
        values = [float(t) for t in text.split(",")]
    except ValueError:
        values = []
    if not values or any(not v > 0 for v in values) or len(set(values)) != len(values):
        raise StudyError(f"--evidence {text!r}: give distinct comma-separated values > 0")
    return values


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """The study's own arguments, and the rest (run_pipeline flags and key=value overrides)."""
    args, rest = build_parser().parse_known_args(argv)
    args.seed_list = parse_seeds(args.seeds)
    args.evidence_list = parse_evidence(args.evidence)
    if args.bootstrap < 1:
        raise StudyError("--bootstrap must be >= 1")
    try:
        given = rp.parse_args(["--data", args.data, "--proxy", args.proxy, "--main", args.main,
                               "--out", args.out, *rest])
    except rp.PipelineError as exc:
        raise StudyError(str(exc)) from None
    if args.vary == "all" and any(o.startswith("run.seed=") for o in given.overrides):
        raise StudyError("run.seed is set per pipeline by --seeds (--vary all)")
    if args.vary == "proxy" and given.proxy_seed is not None:
        raise StudyError("--proxy-seed is set per pipeline by --seeds (--vary proxy)")
    return args, rest


# --------------------------------------------------------------------------- planning


def pipeline_dir(out: str, seed: int, evidence: float | None) -> str:
    base = os.path.join(os.path.abspath(out), f"seed_{seed}")
    return base if evidence is None else os.path.join(base, f"evidence_{evidence:g}")


def stage_keys(stages: list, out: str) -> dict[str, str]:
    """Each stage's identity: its command and environment with the pipeline folder replaced,
    and the identities of the earlier stages whose outputs it reads (so a draw run whose
    draw.json comes from another posterior is another computation)."""
    keys: dict[str, str] = {}
    produced: list[tuple[str, str]] = []  # (path prefix, producing stage)
    for stage in stages:
        cmd = list(stage.cmd)
        reads = sorted({name for c in cmd for path, name in produced
                        if path in c and name != stage.name})
        body = json.dumps([[c.replace(out, "{OUT}") for c in cmd], sorted(stage.env.items()),
                           [keys[n] for n in reads]])
        keys[stage.name] = hashlib.sha256(body.encode()).hexdigest()
        if stage.run_dir:
            produced.append((stage.run_dir + os.sep, stage.name))
        produced += [(o, stage.name) for o in stage.outputs]
    return keys


def plan_study(args: argparse.Namespace, rest: list[str]) -> list[Pipeline]:
    pipelines: list[Pipeline] = []
    first_with_key: dict[tuple[str, str], str] = {}  # (stage, key) → run folder
    for seed in args.seed_list:
        for evidence in args.evidence_list:
            out = pipeline_dir(args.out, seed, evidence)
            argv = ["--data", os.path.abspath(args.data), "--proxy", args.proxy,
                    "--main", args.main, "--out", out, *rest]
            if evidence is not None:
                argv += ["--evidence", f"{evidence:g}"]
            argv += ([f"run.seed={seed}"] if args.vary == "all"
                     else ["--proxy-seed", str(seed)])
            pipe = Pipeline(seed, evidence, out, argv)
            try:
                pipe.stages = rp.plan(rp.parse_args(argv))
            except rp.PipelineError as exc:
                raise StudyError(f"{pipe.label}: {exc}") from None
            pipe.keys = stage_keys(pipe.stages, out)
            for stage in pipe.stages:
                if stage.kind != "train":
                    continue
                earlier = first_with_key.setdefault((stage.name, pipe.keys[stage.name]),
                                                    stage.run_dir)
                if earlier != stage.run_dir:
                    pipe.shared[stage.name] = earlier
            pipelines.append(pipe)
    return pipelines


def finished(pipe: Pipeline) -> bool:
    return all(rp.is_done(s) for s in pipe.stages)


def link_shared(pipe: Pipeline) -> list[str]:
    """Symlink each shared stage's run folder to the earlier, finished one (a folder already
    there is left alone: it resumes itself). Returns the stages linked."""
    linked = []
    for stage in pipe.stages:
        target = pipe.shared.get(stage.name)
        if target is None or os.path.lexists(stage.run_dir):
            continue
        done = rp.Stage(stage.name, stage.cmd, "train",
                        [o.replace(stage.run_dir, target) for o in stage.outputs], target,
                        stage.steps)
        if not rp.is_done(done):
            continue
        os.makedirs(os.path.dirname(stage.run_dir), exist_ok=True)
        os.symlink(os.path.relpath(os.path.realpath(target), os.path.dirname(stage.run_dir)),
                   stage.run_dir)
        linked.append(stage.name)
    return linked


def run_pipeline_process(argv: list[str]) -> int:
    """One tools/run_pipeline.py run (its output goes to this process's stdout)."""
    return subprocess.call([sys.executable, os.path.join(TOOLS, "run_pipeline.py"), *argv],
                           cwd=rp.REPO)


def execute(pipelines: list[Pipeline]) -> None:
    for pipe in pipelines:
        if finished(pipe):
            print(f"[study] {pipe.label}: finished, reused", flush=True)
            continue
        linked = link_shared(pipe)
        if linked:
            print(f"[study] {pipe.label}: sharing {', '.join(linked)}", flush=True)
        print(f"[study] {pipe.label}: running the pipeline", flush=True)
        rc = run_pipeline_process(pipe.argv)
        if rc != 0:
            raise StudyError(f"the pipeline of {pipe.label} failed (exit status {rc}); see "
                             f"{os.path.join(pipe.out, 'logs')}")


def print_dry_run(pipelines: list[Pipeline], out: str) -> None:
    for pipe in pipelines:
        state = "finished (reused)" if finished(pipe) else "to run"
        print(f"[{state}] {pipe.label}\n    python tools/run_pipeline.py {shlex.join(pipe.argv)}")
        for stage in pipe.stages:
            if stage.name in pipe.shared and not rp.is_done(stage):
                status = f"shared with {os.path.relpath(pipe.shared[stage.name], out)}"
            else:
                status = "done" if rp.is_done(stage) else "todo"
            print(f"      [{status}] {stage.name}")


# --------------------------------------------------------------------------- results


@dataclass
class Results:
    """Last eval records per method, one per seed, in seed order."""

    seeds: list[int]
    domains: list[str]
    methods: list[str]
    records: dict[str, list[dict]]
    runs: dict[str, list[str]] = field(default_factory=dict)
    """Method → its run folder per seed."""
    downstream: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    """Method → per seed, lm-eval column ("TASK METRIC") → value (with --lm-tasks)."""
    higher_is_better: dict[str, bool] = field(default_factory=dict)


def method_names(pipelines: list[Pipeline]) -> list[tuple[str, float | None, str]]:
    """(column, evidence, run name): a run that is the same computation under every evidence
    value of a seed is one column; otherwise one column per value."""
    first_seed = [p for p in pipelines if p.seed == pipelines[0].seed]
    columns = []
    for name in first_seed[0].methods():
        same = all(p.keys[name] == first_seed[0].keys[name] for p in first_seed)
        if same or len(first_seed) == 1:
            columns.append((name, first_seed[0].evidence, name))
        else:
            columns += [(f"{name} [s={p.evidence:g}]", p.evidence, name) for p in first_seed]
    return columns


def collect(pipelines: list[Pipeline], data: str, seeds: list[int]) -> Results:
    import compare_runs

    from draw_megatron.data.manifest import Manifest

    domains = Manifest.load(data).domain_names
    columns = method_names(pipelines)
    records: dict[str, list[dict]] = {}
    runs: dict[str, list[str]] = {}
    for column, evidence, name in columns:
        for seed in seeds:
            pipe = next(p for p in pipelines if p.seed == seed and p.evidence == evidence)
            run = os.path.join(pipe.out, "runs", name)
            rec = compare_runs.load_eval(run, None)
            if len(rec["domain_loss"]) != len(domains):
                raise StudyError(f"{run}: its eval has {len(rec['domain_loss'])} domains, "
                                 f"the data {len(domains)}")
            records.setdefault(column, []).append(rec)
            runs.setdefault(column, []).append(run)
    return Results(seeds, domains, [c for c, _, _ in columns], records, runs)


# --------------------------------------------------------------------------- downstream


def eval_argv(args: argparse.Namespace) -> list[str]:
    """tools/eval_lm.py's options of the study (without the model and --out)."""
    argv = ["--tasks", args.lm_tasks]
    for folder in args.lm_include_path:
        argv += ["--include-path", os.path.abspath(folder)]
    if args.lm_only_include_path:
        argv.append("--only-include-path")
    if args.lm_num_fewshot is not None:
        argv += ["--num-fewshot", str(args.lm_num_fewshot)]
    if args.lm_limit is not None:
        argv += ["--limit", f"{args.lm_limit:g}"]
    return argv


def eval_dir(run: str, argv: list[str]) -> str:
    """Where a run's scores under these options go: one folder per option set, so another
    task list never reuses them."""
    key = hashlib.sha256(json.dumps(argv).encode()).hexdigest()[:12]
    return os.path.join(run, "lm_eval", f"study_{key}")


def run_eval_process(argv: list[str]) -> int:
    """One tools/eval_lm.py run, offline unless the environment says otherwise (its table
    is not printed: the study shows the summary)."""
    env = dict(os.environ, HF_DATASETS_OFFLINE=os.environ.get("HF_DATASETS_OFFLINE", "1"),
               HF_HUB_OFFLINE=os.environ.get("HF_HUB_OFFLINE", "1"))
    return subprocess.call([sys.executable, os.path.join(TOOLS, "eval_lm.py"), *argv],
                           cwd=rp.REPO, env=env, stdout=subprocess.DEVNULL)


def evaluate_downstream(res: Results, args: argparse.Namespace) -> None:
    """Score each (method, seed) run with tools/eval_lm.py (a finished score is reused),
    then read the columns into ``res.downstream``."""
    import compare_runs

    argv = eval_argv(args)
    for method in res.methods:
        for run in res.runs[method]:
            out = eval_dir(run, argv)
            results = os.path.join(out, "results.json")
            if not os.path.isfile(results):
                print(f"[study] lm-eval: {os.path.relpath(run, os.path.abspath(args.out))}",
                      flush=True)
                rc = run_eval_process([run, *argv, "--out", out, "--overwrite"])
                if rc != 0:
                    raise StudyError(f"tools/eval_lm.py failed on {run} (exit status {rc})")
            res.downstream.setdefault(method, []).append(compare_runs.lm_eval_columns(results))
            with open(results, encoding="utf-8") as fh:
                better = json.load(fh).get("higher_is_better") or {}
            for task, flags in better.items():
                for metric, flag in (flags or {}).items():
                    res.higher_is_better[f"{task} {metric}"] = bool(flag)


def downstream_columns(res: Results) -> list[str]:
    """The metrics every run has, in lm-eval's order; counts that lm-eval reports beside
    them (``sample_len``: no better direction) are left out."""
    first = next(iter(res.downstream.values()))[0]
    return [c for c in first if all(c in d for ds in res.downstream.values() for d in ds)
            and _better(res, c) != "?"]


def downstream_values(res: Results, method: str, column: str) -> np.ndarray:
    return np.array([d[column] for d in res.downstream[method]], dtype=float)


def _better(res: Results, column: str) -> str:
    for name, flag in res.higher_is_better.items():
        task, _, metric = name.partition(" ")
        if column.startswith(task + " ") and column.endswith(" " + metric):
            return "higher" if flag else "lower"
    return "?"


def downstream_differences(res: Results, resamples: int, seed: int) -> list[dict]:
    """Paired (by seed) differences method − baseline of every downstream column."""
    rows = []
    treated = [m for m in res.methods if _base(m) in TREATMENTS]
    baselines = [m for m in res.methods if _base(m) in rp.BASELINES]
    for method in treated:
        for base in (b for b in baselines if _comparable(method, b)):
            for column in downstream_columns(res):
                diff = (downstream_values(res, method, column)
                        - downstream_values(res, base, column))
                lo, hi = bootstrap_interval(diff, resamples, seed)
                rows.append({"method": method, "baseline": base, "metric": column,
                             "mean": float(diff.mean()), "low": lo, "high": hi,
                             "n": len(diff)})
    return rows


def downstream_markdown(res: Results, args: argparse.Namespace) -> list[str]:
    columns = downstream_columns(res)
    lines = ["", "## Downstream (lm-eval)", "",
             f"`tools/eval_lm.py RUN {shlex.join(eval_argv(args))}` on every run's final model; "
             "mean ± sample sd over seeds. Better: "
             + ", ".join(f"{c} {_better(res, c)}" for c in columns) + ".", "",
             "| method | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for m in res.methods:
        lines.append(f"| {m} | " + " | ".join(_cell(downstream_values(res, m, c))
                                             for c in columns) + " |")
    diffs = downstream_differences(res, args.bootstrap, args.bootstrap_seed)
    if diffs:
        lines += ["", "Paired differences (method − baseline, by seed), 95 % bootstrap "
                  "interval as above:", "",
                  "| method | baseline | metric | mean difference | 95 % interval |",
                  "|---|---|---|---:|---|"]
        lines += [f"| {d['method']} | {d['baseline']} | {d['metric']} | {d['mean']:+.4f} | "
                  f"[{d['low']:+.4f}, {d['high']:+.4f}] |" for d in diffs]
    return lines


def values(res: Results, method: str) -> dict[str, np.ndarray]:
    """Row → the per-seed losses of one method: every domain, then average and worst-case."""
    recs = res.records[method]
    rows = {d: np.array([r["domain_loss"][i] for r in recs], dtype=float)
            for i, d in enumerate(res.domains)}
    rows["average"] = np.array([r["avg"] for r in recs], dtype=float)
    rows["worst-case"] = np.array([r["worst"] for r in recs], dtype=float)
    return rows


def mean_sd(x: np.ndarray) -> tuple[float, float]:
    """Mean and sample standard deviation (n − 1; nan for one seed)."""
    return float(x.mean()), (float(x.std(ddof=1)) if len(x) > 1 else float("nan"))


def bootstrap_interval(diff: np.ndarray, resamples: int, seed: int) -> tuple[float, float]:
    """95 % percentile interval of the mean of ``diff`` over ``resamples`` resamples of its
    entries with replacement (a generator seeded by ``seed``: reproducible)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(diff), size=(resamples, len(diff)))
    lo, hi = np.percentile(diff[idx].mean(axis=1), [2.5, 97.5])
    return float(lo), float(hi)


def _base(method: str) -> str:
    return method.split(" [")[0]


def _evidence_tag(method: str) -> str | None:
    return method.partition(" [")[2] or None


def _comparable(method: str, baseline: str) -> bool:
    """Evidence variants meet baselines of the same evidence value (or of none)."""
    mine, theirs = _evidence_tag(method), _evidence_tag(baseline)
    return mine is None or theirs is None or mine == theirs


def differences(res: Results, resamples: int, seed: int) -> list[dict]:
    """Paired (by seed) differences method − baseline on average and worst case."""
    rows = []
    treated = [m for m in res.methods if _base(m) in TREATMENTS]
    baselines = [m for m in res.methods if _base(m) in rp.BASELINES]
    for method in treated:
        mine = values(res, method)
        for base in (b for b in baselines if _comparable(method, b)):
            theirs = values(res, base)
            for metric in ("average", "worst-case"):
                diff = mine[metric] - theirs[metric]
                lo, hi = bootstrap_interval(diff, resamples, seed)
                rows.append({"method": method, "baseline": base, "metric": metric,
                             "mean": float(diff.mean()), "low": lo, "high": hi,
                             "n": len(diff)})
    return rows


# --------------------------------------------------------------------------- outputs


def _cell(x: np.ndarray) -> str:
    mean, sd = mean_sd(x)
    return f"{mean:.4f} ± {sd:.4f}" if sd == sd else f"{mean:.4f}"


def markdown(res: Results, diffs: list[dict], args: argparse.Namespace,
             folders: list[str]) -> str:
    vary = ("run.seed of every run" if args.vary == "all"
            else "the DRO proxy stages' seed only (--proxy-seed)")
    table = {m: values(res, m) for m in res.methods}
    steps = sorted({r["step"] for recs in res.records.values() for r in recs})
    lines = [f"# Seed study: proxy {args.proxy} → main {args.main}", "",
             f"Seeds {', '.join(map(str, res.seeds))} (n = {len(res.seeds)}; the seed sets "
             f"{vary}). Each cell: mean ± sample sd (n − 1) over seeds of the run's last "
             f"eval record (step {', '.join(map(str, steps))}); average and worst-case are "
             "each run's own, then averaged over seeds (docs/algorithms.md §5).", "",
             "| domain | " + " | ".join(res.methods) + " |",
             "|---|" + "---|" * len(res.methods)]
    for row in [*res.domains, "average", "worst-case"]:
        lines.append(f"| {row} | " + " | ".join(_cell(table[m][row]) for m in res.methods)
                     + " |")
    lines += ["", "## Paired differences (method − baseline, by seed; negative: lower loss)", "",
              f"95 % percentile bootstrap interval of the mean difference: {args.bootstrap:,} "
              f"resamples of the {len(res.seeds)} seeds with replacement, numpy's generator "
              f"seeded with {args.bootstrap_seed}. With few seeds the interval is coarse "
              "(n seeds give at most C(2n−1, n) distinct resample means).", ""]
    if not diffs:
        lines.append("(no DRAW or DGA run beside a baseline)")
    else:
        lines += ["| method | baseline | metric | mean difference | 95 % interval | seeds |",
                  "|---|---|---|---:|---|---:|"]
        lines += [f"| {d['method']} | {d['baseline']} | {d['metric']} | {d['mean']:+.4f} | "
                  f"[{d['low']:+.4f}, {d['high']:+.4f}] | {d['n']} |" for d in diffs]
    if res.downstream:
        lines += downstream_markdown(res, args)
    lines += ["", "Pipelines (each a tools/run_pipeline.py folder; shared runs are symlinks): "
              + ", ".join(f"`{f}/`" for f in folders)]
    return "\n".join(lines) + "\n"


def csv_rows(res: Results, diffs: list[dict]) -> list[list]:
    rows = [["kind", "method", "baseline", "row", "n", "mean", "sd", "ci_low", "ci_high"]]
    for m in res.methods:
        for row, x in values(res, m).items():
            mean, sd = mean_sd(x)
            rows.append(["loss", m, "", row, len(x), f"{mean:.6f}",
                         "" if sd != sd else f"{sd:.6f}", "", ""])
    rows += [["difference", d["method"], d["baseline"], d["metric"], d["n"], f"{d['mean']:.6f}",
              "", f"{d['low']:.6f}", f"{d['high']:.6f}"] for d in diffs]
    if res.downstream:
        for m in res.methods:
            for column in downstream_columns(res):
                mean, sd = mean_sd(downstream_values(res, m, column))
                rows.append(["downstream", m, "", column, len(res.seeds), f"{mean:.6f}",
                             "" if sd != sd else f"{sd:.6f}", "", ""])
    return rows


def plot(res: Results, path: str, title: str) -> None:
    from plot_mixture import _pyplot, save_png

    plt = _pyplot()
    x = np.arange(len(res.methods))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(res.methods) + 2), 4.2))
    ends = []
    for offset, metric in ((-0.2, "average"), (0.2, "worst-case")):
        stats = [mean_sd(values(res, m)[metric]) for m in res.methods]
        sds = [0.0 if sd != sd else sd for _, sd in stats]  # one seed: no error bar
        ax.bar(x + offset, [mean for mean, _ in stats], width=0.4, label=metric, yerr=sds,
               capsize=3)
        ends += [mean - sd for (mean, _), sd in zip(stats, sds)]
        ends += [mean + sd for (mean, _), sd in zip(stats, sds)]
    ax.set_xticks(x, res.methods, rotation=30, ha="right")
    ax.set_ylabel("validation loss (mean ± sd over seeds)")
    pad = 0.1 * (max(ends) - min(ends) + 1e-9)  # bars start near the data, not at zero
    ax.set_ylim(min(ends) - pad, max(ends) + pad)
    ax.set_title(title)
    ax.legend()
    save_png(fig, path)
    plt.close(fig)


def write_outputs(res: Results, diffs: list[dict], args: argparse.Namespace,
                  folders: list[str]) -> str:
    from draw_megatron.utils.fs import atomic_open, atomic_write_text

    out = os.path.abspath(args.out)
    text = markdown(res, diffs, args, folders)
    atomic_write_text(os.path.join(out, "study.md"), text)
    with atomic_open(os.path.join(out, "study.csv")) as fh:
        csv.writer(fh).writerows(csv_rows(res, diffs))
    plot(res, os.path.join(out, "study.png"),
         f"{args.proxy} → {args.main}, {len(res.seeds)} seeds")
    return text


def main(argv: list[str] | None = None) -> int:
    try:
        args, rest = parse_args(argv)
        pipelines = plan_study(args, rest)
        if args.dry_run:
            print_dry_run(pipelines, os.path.abspath(args.out))
            return 0
        execute(pipelines)
        res = collect(pipelines, args.data, args.seed_list)
        if args.lm_tasks:
            evaluate_downstream(res, args)
        text = write_outputs(res, differences(res, args.bootstrap, args.bootstrap_seed), args,
                             [p.label for p in pipelines])
    except StudyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\n" + text.rstrip())
    print(f"\n[study] wrote {os.path.join(os.path.abspath(args.out), 'study.md')}, study.csv, "
          "study.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
