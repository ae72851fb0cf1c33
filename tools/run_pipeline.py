#!/usr/bin/env python3
"""The DRAW pipeline end to end, one command (docs/algorithms.md §1, §2, §5).

    python tools/run_pipeline.py --data demo_out/data --proxy tiny-64 --main tiny-128 \\
        --out demo_out/pipeline [--steps 120] [--proxy-steps 80] [key=value ...]

Stages, each a subprocess of the project's own launchers and tools, run in order:

  reference     launch/train_reference.py, the proxy preset on the natural weights
  proxy_dro     launch/proxy_dro.py, dro.reference = the reference's model.safetensors
                (α_0 from DRAW's prior)
  doremi_proxy  (with the doremi baseline) the same DRO proxy started from uniform weights
                (dro.init=uniform, DoReMi's own start): its α* is the doremi mixture
  dga           with --dga-specific SPEC: launch/dga_align.py, the main preset, online
                gradient alignment toward SPEC (dga.specific, e.g. "test:Python Docs")
  posterior     tools/draw_posterior.py → OUT/mixtures/draw.json (Dir(β2)) and static.json
                from the evidence α* of --evidence-from (dro: the proxy's; dga: the DGA
                run's mean weights; dro,dga: both, the second as draw_dga.json)
  draw          launch/pretrain_main.py, the main preset, mixture.kind=dirichlet (draw.json)
                (draw_dga likewise from draw_dga.json)
  natural, uniform, random, doremi (static α* of doremi_proxy), static (E[α] under
  Dir(β2)), odm (the ODM bandit: passes=[odm]), online_draw (Dir(β) from draw.json, β
  updated every --online-every steps by DRO evidence against the natural run's model)
                the baselines, the main preset (--baselines picks them; online_draw brings
                natural along: its model is online DRAW's reference)
  compare       tools/compare_runs.py over draw + baselines (+ dga) → OUT/comparison.md/.csv
  plots         tools/plot_mixture.py → OUT/plots/{alpha_dro,simplex,losses}.png
                (+ alpha_doremi.png, alpha_dga.png)

Training runs live in OUT/runs/<stage> (run.dir), every stage's stdout+stderr in
OUT/logs/<stage>.log. Every training run gets the base --config, then the key=value
overrides given here, then the stage's own keys (run.dir, model.preset, data.root,
train.steps, mixture.kind, mixture.file, dro.reference; those are set with the flags).

Resume: a stage whose outputs are complete is skipped — a training run whose
model.safetensors exists and whose metrics.jsonl's last train step is its train.steps
(dro: also alpha_star.json); the posterior when both mixture files exist, are newer than
α* and have the same evidence; compare and plots when their outputs are newer than every
run's metrics. An unfinished stage is rerun with the same command (the launchers resume
from their latest checkpoint). A failing stage stops the pipeline, naming the stage and
its log. At the end a stage-by-stage wall-time table is printed and written to
OUT/timings.json and OUT/timings.md (a skipped stage shows its time from an earlier run).

--plan prints the stages, their status (todo / done) and commands, and runs nothing; per
training stage also its tokens (steps × global batch × seq_len), model FLOPs
(draw_megatron.model.stats.flops_per_token × tokens) and, where a tokens/s figure for its
preset is known, an estimated time (see plan_estimate).
--proxy-seed N sets run.seed of the DRO proxy stages only (proxy_dro, doremi_proxy): their
α_0 draw, model init and data order; every other run keeps the base seed.
On a machine without a CUDA GPU the deepspeed launcher runs with DS_ACCELERATOR=cpu.

--slurm submits every unfinished stage as a batch job instead, with
--dependency=afterok edges wherever a stage reads another's outputs, and returns at once
(the job ids and a squeue command are printed). Training stages go through
launch/slurm/pretrain.sbatch (srun, one task per GPU: --nodes × --nproc tasks, the stage's
launcher as LAUNCHER, the same overrides; preempted jobs requeue themselves and resume),
posterior, compare and plots run as one-task jobs of this script with --stage NAME. Stage
logs go to OUT/logs/<stage>.slurm-<jobid>.out and the job ids to OUT/slurm_jobs.json; a
rerun submits only the unfinished stages, keeps those still queued from the last
submission (when what they wait for is kept too) and leaves out edges to finished stages.
--plan --slurm prints the sbatch commands as a shell script and submits nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join("configs", "experiments", "pipeline_cpu.yaml")
SIMPLEX_PLACEHOLDER = "{SIMPLEX_DOMAINS}"
BASELINES = ("natural", "uniform", "random", "doremi", "static", "odm", "online_draw")
EVIDENCE_SOURCES = ("dro", "dga")
TRAIN_STAGES = ("reference", "proxy_dro", "doremi_proxy", "dga", "draw", "draw_dga",
                *BASELINES)
# keys the pipeline sets per stage: a user override of one of them is an error
OWNED_KEYS = {"run.dir": "--out", "model.preset": "--proxy / --main", "data.root": "--data",
              "train.steps": "--steps / --proxy-steps", "mixture.kind": "(per stage)",
              "mixture.file": "(per stage)", "passes": "(per stage)",
              "dro.reference": "(the reference stage)", "dro.init": "(per stage)",
              "mixture.redraw_every": "--redraw-every",
              "dga.specific": "--dga-specific", "dga.eta": "--dga-eta",
              "dga.every": "--dga-every", "dro_evidence.reference": "(the natural run)",
              "dro_evidence.every": "--online-every"}


class PipelineError(Exception):
    """A problem with the pipeline's inputs or a failed stage (one line on stderr)."""


@dataclass
class Stage:
    name: str
    cmd: list[str]
    kind: str  # "train" | "tool"
    outputs: list[str] = field(default_factory=list)
    run_dir: str | None = None
    steps: int | None = None
    inputs: list[str] = field(default_factory=list)  # for tools: outputs must be newer
    evidence: float | None = None  # posterior only
    env: dict[str, str] = field(default_factory=dict)
    inputs_alpha_star: str | None = None  # plots only: picks the simplex's domains
    preset: str | None = None  # training stages: model.preset


# One-H200 tokens/s of launch/pretrain_main.py (DeepSpeed ZeRO-1, bf16, seq 1024, micro-batch
# 16 at 150M and 8 at 1B), measured by tools/gpu_check.sh on 2026-11-26: BENCHMARKS.md,
# "GPU: tokens/s and MFU". Other presets need --plan-tokens-per-s PRESET=N.
MEASURED_TOKENS_PER_S = {"150M": 546_211.0, "1B": 59_879.0}
# A DRO proxy step over a plain step of the same model: 1.39 (150M bf16, one H200;
# BENCHMARKS.md, "DRO proxy step vs plain step"). The DGA pass costs 1 + (k+1)/T_r plain
# steps (docs/algorithms.md §3.9).
DRO_STEP_RATIO = 1.39
# Process start-up, imports and engine set-up of one training stage: about 15 s on the CPU
# machine (BENCHMARKS.md, "The demo pipeline's wall time"); not measured on a GPU.
DEFAULT_STARTUP_S = 15.0


# --------------------------------------------------------------------------- arguments


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, metavar="ROOT", help="data root (manifest.json)")
    p.add_argument("--proxy", required=True, metavar="PRESET",
                   help="model preset of the reference and the DRO proxy (e.g. 70M, tiny-64)")
    p.add_argument("--main", required=True, metavar="PRESET",
                   help="model preset of the main DRAW run and the baselines (e.g. 150M)")
    p.add_argument("--out", required=True, metavar="DIR", help="pipeline folder")
    p.add_argument("--config", default=DEFAULT_CONFIG, metavar="YAML",
                   help=f"base experiment config of every run (default {DEFAULT_CONFIG})")
    p.add_argument("--steps", type=int, default=120,
                   help="train steps of the main run and the baselines (default 120)")
    p.add_argument("--proxy-steps", type=int, default=80,
                   help="train steps of the reference and the DRO proxy (default 80)")
    p.add_argument("--redraw-every", type=int, default=10, metavar="N",
                   help="Dirichlet redraw period of the DRAW and random runs (default 10)")
    p.add_argument("--evidence", type=float, default=None, metavar="s",
                   help="evidence s given to α* by the posterior and online DRAW (default: "
                        "the base config's mixture.evidence, 1 unless set: the paper's)")
    p.add_argument("--evidence-from", default="dro", metavar="SOURCES",
                   help="where the posterior's α* comes from: dro (the proxy DRO run), dga "
                        "(the DGA run's mean weights; needs --dga-specific) or dro,dga (both: "
                        "a draw and a draw_dga run side by side); default dro")
    p.add_argument("--online-every", type=int, default=20, metavar="M",
                   help="online_draw: steps between DRO evidence updates (default 20)")
    p.add_argument("--nproc", type=int, default=2, help="processes per run (default 2)")
    p.add_argument("--launcher", choices=["deepspeed", "torchrun"], default="deepspeed",
                   help="how each training run is launched (default deepspeed)")
    p.add_argument("--baselines", default=",".join(BASELINES),
                   help=f"comma-separated subset of {','.join(BASELINES)} "
                        "(default all; empty for none)")
    p.add_argument("--dga-specific", metavar="SPEC",
                   help="add a DGA run of the main preset aligned toward SPEC (dga.specific: "
                        "a held-out split, SPLIT:Domain, or a folder of jsonl); default none")
    p.add_argument("--dga-eta", type=float, default=4.0,
                   help="dga.eta of the DGA run (default 4; no default in the pass itself)")
    p.add_argument("--dga-every", type=int, default=100, metavar="T_r",
                   help="dga.every of the DGA run (default 100, the paper's)")
    p.add_argument("--proxy-seed", type=int, metavar="N",
                   help="run.seed of the DRO proxy stages only (their α_0 draw); default: "
                        "the base seed, like every other run")
    p.add_argument("--plan", action="store_true",
                   help="print the stages, their status, commands, tokens, model FLOPs and "
                        "estimated times; run nothing")
    p.add_argument("--plan-tokens-per-s", default="", metavar="PRESET=N,...",
                   help="--plan: tokens/s per process of a preset's training run (default: "
                        "the one-H200 figures of BENCHMARKS.md, "
                        + ", ".join(f"{k}={v:g}" for k, v in MEASURED_TOKENS_PER_S.items())
                        + "); a run of --nproc P is estimated at P × N")
    p.add_argument("--plan-startup-s", type=float, default=DEFAULT_STARTUP_S, metavar="S",
                   help=f"--plan: seconds of start-up per training stage (default "
                        f"{DEFAULT_STARTUP_S:g}, the CPU machine's)")
    slurm = p.add_argument_group("SLURM (--slurm: submit the stages as batch jobs)")
    slurm.add_argument("--slurm", action="store_true",
                       help="submit every unfinished stage with sbatch (afterok dependencies) "
                            "and return; with --plan print the sbatch commands only")
    slurm.add_argument("--sbatch-args", default="", metavar="'OPTIONS'",
                       help="extra sbatch options of every job, e.g. '--partition gpu "
                            "--account X --time 12:00:00' (last, so they win)")
    slurm.add_argument("--nodes", type=int, default=1,
                       help="nodes per training job (default 1); --nproc tasks on each")
    slurm.add_argument("--gpus-per-node", type=int, default=None, metavar="G",
                       help="GPUs per node of a training job (default: --nproc; 0: CPU "
                            "ranks on gloo)")
    slurm.add_argument("--stage", metavar="NAME", help=argparse.SUPPRESS)  # a tool job's body
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="dotted config overrides for every training run")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    args = build_parser().parse_intermixed_args(argv)  # key=value anywhere among the flags
    names = [b.strip() for b in args.baselines.split(",") if b.strip()]
    unknown = [b for b in names if b not in BASELINES]
    if unknown:
        raise PipelineError(f"--baselines: unknown {', '.join(unknown)} "
                            f"(choose from {', '.join(BASELINES)})")
    if "online_draw" in names and "natural" not in names:
        names.append("natural")  # online DRAW's reference is the natural run's model
    args.baseline_list = [b for b in BASELINES if b in names]
    sources = [e.strip() for e in args.evidence_from.split(",") if e.strip()]
    bad = [e for e in sources if e not in EVIDENCE_SOURCES]
    if bad or not sources or len(set(sources)) != len(sources):
        raise PipelineError(f"--evidence-from {args.evidence_from!r}: give dro, dga or dro,dga")
    if "dga" in sources and not args.dga_specific:
        raise PipelineError("--evidence-from dga needs a DGA run: give --dga-specific SPEC")
    args.evidence_sources = sources
    for item in args.overrides:
        key, eq, _ = item.partition("=")
        if not eq:
            raise PipelineError(f"override {item!r} is not key=value")
        if key in OWNED_KEYS:
            raise PipelineError(f"override {item!r}: the pipeline sets {key} per stage "
                                f"({OWNED_KEYS[key]})")
    if args.proxy_seed is not None and args.proxy_seed < 0:
        raise PipelineError("--proxy-seed must be >= 0")
    args.tokens_per_s = parse_rates(args.plan_tokens_per_s)
    if not args.dga_eta > 0:
        raise PipelineError("--dga-eta must be > 0")
    if args.gpus_per_node is None:
        args.gpus_per_node = args.nproc
    if args.gpus_per_node < 0:
        raise PipelineError("--gpus-per-node must be >= 0")
    try:
        args.sbatch_extra = shlex.split(args.sbatch_args)
    except ValueError as exc:
        raise PipelineError(f"--sbatch-args {args.sbatch_args!r}: {exc}") from None
    for flag in ("steps", "proxy_steps", "nproc", "redraw_every", "dga_every", "online_every",
                 "nodes"):
        if getattr(args, flag) < 1:
            raise PipelineError(f"--{flag.replace('_', '-')} must be >= 1")
    if not os.path.isfile(os.path.join(args.data, "manifest.json")):
        raise PipelineError(f"--data {args.data}: no manifest.json there (convert the data "
                            "first, e.g. `make demo_out/data/manifest.json`)")
    resolve_main(args)
    return args


def parse_rates(text: str) -> dict[str, float]:
    """--plan-tokens-per-s PRESET=N,... over the measured table."""
    rates = dict(MEASURED_TOKENS_PER_S)
    for item in (i.strip() for i in text.split(",") if i.strip()):
        preset, _, value = item.partition("=")
        try:
            rates[preset.strip()] = float(value)
        except ValueError:
            value = ""
        if not preset.strip() or not value or not rates[preset.strip()] > 0:
            raise PipelineError(f"--plan-tokens-per-s {item!r}: give PRESET=N with N > 0")
    return rates


def resolve_main(args: argparse.Namespace) -> None:
    """The main runs' resolved config (base config + overrides + --main): its width n2 is
    what the posterior scales to, and its mixture.evidence the default of --evidence."""
    from draw_megatron.config.base import ConfigError
    from draw_megatron.config.run import load_run_config

    config = args.config if os.path.isabs(args.config) else os.path.join(REPO, args.config)
    try:
        cfg = load_run_config(config, [*args.overrides, f"model.preset={args.main}",
                                       f"data.root={os.path.abspath(args.data)}",
                                       "run.dir=unused"])
    except (ConfigError, FileNotFoundError) as exc:
        raise PipelineError(f"the main runs' config: {exc}") from None
    args.main_width = cfg.model.d_model
    if args.evidence is None:
        args.evidence = cfg.mixture.evidence
    if not args.evidence > 0:
        raise PipelineError(f"--evidence {args.evidence:g}: the posterior needs s > 0")


# --------------------------------------------------------------------------- planning


def has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # noqa: BLE001 — no torch, no GPU
        return False


def launch_prefix(args: argparse.Namespace, cuda: bool | None = None
                  ) -> tuple[list[str], dict[str, str]]:
    """The launcher's command prefix and extra environment (``cuda`` None: detect)."""
    bindir = os.path.dirname(sys.executable)
    if args.launcher == "torchrun":
        return ([sys.executable, "-m", "torch.distributed.run", "--standalone",
                 f"--nproc_per_node={args.nproc}"], {})
    ds = os.path.join(bindir, "deepspeed")
    prefix = [ds] if os.path.exists(ds) else ["deepspeed"]
    cuda = has_cuda() if cuda is None else cuda
    env = {} if cuda else {"DS_ACCELERATOR": "cpu"}
    return prefix + ["--num_gpus", str(args.nproc)], env


def model_yaml(preset: str) -> str:
    return os.path.join(REPO, "configs", "models", f"{preset}.yaml")


def plan(args: argparse.Namespace, cuda: bool | None = None) -> list[Stage]:
    """Every stage with its command and outputs (nothing is run or checked here);
    ``cuda`` None detects a GPU (for DS_ACCELERATOR=cpu), tests pin it."""
    out = os.path.abspath(args.out)
    runs = os.path.join(out, "runs")
    mix = os.path.join(out, "mixtures")
    py = sys.executable
    prefix, env = launch_prefix(args, cuda)  # tests pin cuda
    config = args.config if os.path.isabs(args.config) else os.path.join(REPO, args.config)
    data = os.path.abspath(args.data)

    def train(name: str, script: str, preset: str, steps: int, extra: list[str],
              outputs: tuple[str, ...] = ("model.safetensors",)) -> Stage:
        run_dir = os.path.join(runs, name)
        cmd = [*prefix, os.path.join(REPO, "launch", script), "--config", config,
               *args.overrides, f"run.dir={run_dir}", f"model.preset={preset}",
               f"data.root={data}", f"train.steps={steps}", *extra]
        return Stage(name, cmd, "train", [os.path.join(run_dir, o) for o in outputs],
                     run_dir, steps, env=dict(env), preset=preset)

    ref = os.path.join(runs, "reference", "model.safetensors")
    alpha_star = os.path.join(runs, "proxy_dro", "alpha_star.json")
    doremi_star = os.path.join(runs, "doremi_proxy", "alpha_star.json")
    dga_star = os.path.join(runs, "dga", "dga_alpha_star.json")
    draw_json, static_json = os.path.join(mix, "draw.json"), os.path.join(mix, "static.json")
    redraw = f"mixture.redraw_every={args.redraw_every}"
    proxy_outputs = ("model.safetensors", "alpha_star.json", "dro_trajectory.json")
    proxy_seed = [] if args.proxy_seed is None else [f"run.seed={args.proxy_seed}"]
    stages = [
        train("reference", "train_reference.py", args.proxy, args.proxy_steps, []),
        train("proxy_dro", "proxy_dro.py", args.proxy, args.proxy_steps,
              [f"dro.reference={ref}", *proxy_seed], proxy_outputs),
    ]
    if "doremi" in args.baseline_list:
        stages.append(train("doremi_proxy", "proxy_dro.py", args.proxy, args.proxy_steps,
                            [f"dro.reference={ref}", "dro.init=uniform", *proxy_seed],
                            proxy_outputs))
    if args.dga_specific:
        stages.append(train("dga", "dga_align.py", args.main, args.steps,
                            [f"dga.specific={args.dga_specific}", f"dga.eta={args.dga_eta:g}",
                             f"dga.every={args.dga_every}"],
                            ("model.safetensors", "dga_alpha_star.json",
                             "dga_trajectory.json")))
    evidence = {"dro": (alpha_star, os.path.join(runs, "proxy_dro", "config.yaml")),
                "dga": (dga_star, os.path.join(runs, "dga", "config.yaml"))}
    main_names = []
    for i, source in enumerate(args.evidence_sources):
        suffix = "" if i == 0 else f"_{source}"
        star, proxy_config = evidence[source]
        out_json = os.path.join(mix, f"draw{suffix}.json")
        static_out = ["--static-out", static_json] if i == 0 else []
        stages.append(Stage(
            f"posterior{suffix}",
            [py, os.path.join(REPO, "tools", "draw_posterior.py"), "--alpha-star", star,
             "--proxy-config", proxy_config, "--main-config", model_yaml(args.main),
             "--main-width", str(args.main_width), "--evidence", f"{args.evidence:g}",
             "--data", data, "--out", out_json, *static_out],
            "tool", [out_json] + ([static_json] if i == 0 else []), inputs=[star],
            evidence=args.evidence))
        stages.append(train(f"draw{suffix}", "pretrain_main.py", args.main, args.steps,
                            ["mixture.kind=dirichlet", f"mixture.file={out_json}", redraw]))
        main_names.append(f"draw{suffix}")
    extra = {"natural": ["mixture.kind=natural"], "uniform": ["mixture.kind=uniform"],
             "random": ["mixture.kind=random", redraw],
             "doremi": ["mixture.kind=static", f"mixture.file={doremi_star}"],
             "static": ["mixture.kind=static", f"mixture.file={static_json}"],
             "odm": ["passes=[odm]", "mixture.kind=online"],
             "online_draw": ["passes=[dro_evidence]", "mixture.kind=online_draw",
                             f"mixture.file={draw_json}", redraw,
                             f"mixture.evidence={args.evidence:g}",
                             "dro_evidence.reference="
                             + os.path.join(runs, "natural", "model.safetensors"),
                             f"dro_evidence.every={args.online_every}"]}
    for name in args.baseline_list:
        stages.append(train(name, "pretrain_main.py", args.main, args.steps, extra[name]))
    main_names += args.baseline_list
    if args.dga_specific:
        main_names.append("dga")
    main_runs = [os.path.join(runs, n) for n in main_names]
    metrics = [os.path.join(r, "metrics.jsonl") for r in main_runs]
    stages.append(Stage("compare", [py, os.path.join(REPO, "tools", "compare_runs.py"),
                                    *main_runs, "--out", out], "tool",
                        [os.path.join(out, "comparison.md"), os.path.join(out, "comparison.csv")],
                        inputs=metrics))
    plots = os.path.join(out, "plots")
    plot = os.path.join(REPO, "tools", "plot_mixture.py")
    domains = [SIMPLEX_PLACEHOLDER]  # filled in when the stage runs (needs α*)
    cmds = [
        [py, plot, "alpha", "--metrics", os.path.join(runs, "proxy_dro", "metrics.jsonl"),
         "--kind", "dro", "--out", os.path.join(plots, "alpha_dro.png")],
        [py, plot, "simplex", "--mixture", draw_json, "--domains", *domains,
         "--out", os.path.join(plots, "simplex.png")],
        [py, plot, "losses", *main_runs, "--out", os.path.join(plots, "losses.png")],
    ]
    pngs = ["alpha_dro.png", "simplex.png", "losses.png"]
    if "doremi" in args.baseline_list:
        cmds.append([py, plot, "alpha", "--metrics",
                     os.path.join(runs, "doremi_proxy", "metrics.jsonl"), "--kind", "dro",
                     "--out", os.path.join(plots, "alpha_doremi.png")])
        pngs.append("alpha_doremi.png")
    if args.dga_specific:
        cmds.append([py, plot, "alpha", "--metrics", os.path.join(runs, "dga", "metrics.jsonl"),
                     "--kind", "dga", "--out", os.path.join(plots, "alpha_dga.png")])
        pngs.append("alpha_dga.png")
    stages.append(Stage("plots", [json.dumps(cmds)], "tool",
                        [os.path.join(plots, f) for f in pngs],
                        inputs=[*metrics, draw_json], inputs_alpha_star=alpha_star))
    return stages


def plot_commands(stage: Stage) -> list[list[str]]:
    return json.loads(stage.cmd[0])


def simplex_domains(alpha_star_path: str, k_max: int = 3) -> list[str]:
    """Three domains for the simplex plot: the two largest α* and the smallest (the
    domains where the proxy's preference shows most)."""
    with open(alpha_star_path, encoding="utf-8") as fh:
        spec = json.load(fh)
    names = list(spec["domains"])
    weights = spec.get("weights") or spec.get("alpha") or spec.get("concentration")
    order = sorted(range(len(names)), key=lambda i: -float(weights[i]))
    if len(order) <= k_max:
        return [names[i] for i in order]
    return [names[order[0]], names[order[1]], names[order[-1]]]


# --------------------------------------------------------------------------- status


def last_train_step(run_dir: str) -> int | None:
    """1 + the step of the last train record in metrics.jsonl (the steps done), or None."""
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.isfile(path):
        return None
    last = None
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a truncated last line
            if rec.get("kind") == "train":
                step = int(rec["step"]) + 1  # train records carry the 0-based step index
                last = step if last is None else max(last, step)
    return last


def _mtime(path: str) -> float:
    return os.path.getmtime(path) if os.path.exists(path) else float("inf")


def is_done(stage: Stage) -> bool:
    if not all(os.path.isfile(p) for p in stage.outputs):
        return False
    if stage.kind == "train":
        return last_train_step(stage.run_dir) == stage.steps
    if stage.evidence is not None:
        try:
            with open(stage.outputs[0], encoding="utf-8") as fh:
                prov = json.load(fh).get("provenance") or {}
        except (OSError, json.JSONDecodeError):
            return False
        if float(prov.get("evidence", -1)) != stage.evidence:
            return False
    newest_input = max((_mtime(p) for p in stage.inputs), default=0.0)
    return min(os.path.getmtime(p) for p in stage.outputs) >= newest_input


def plan_estimate(stage: Stage, args: argparse.Namespace) -> dict | None:
    """A training stage's tokens (steps × global batch × seq_len), model FLOPs
    (flops_per_token × tokens) and estimated seconds: start-up + tokens / (P × tokens/s of
    its preset), × DRO_STEP_RATIO for a DRO proxy, × (1 + (k+1)/T_r) for DGA (seconds None
    when no rate is known). Training steps only: evaluation and checkpoints are left out."""
    if stage.kind != "train":
        return None
    from draw_megatron.config.run import load_run_config
    from draw_megatron.data.manifest import Manifest
    from draw_megatron.model.stats import flops_per_token

    keys = [c for c in stage.cmd[stage.cmd.index("--config") + 2:] if "=" in c]
    cfg = load_run_config(stage.cmd[stage.cmd.index("--config") + 1], keys)
    tokens = stage.steps * cfg.train.global_batch * cfg.model.seq_len
    rate = args.tokens_per_s.get(stage.preset)
    factor = DRO_STEP_RATIO if stage.name in ("proxy_dro", "doremi_proxy") else 1.0
    if stage.name == "dga":
        factor = 1 + (Manifest.load(cfg.data.root).num_domains + 1) / args.dga_every
    seconds = (None if rate is None
               else args.plan_startup_s + factor * tokens / (rate * args.nproc))
    return {"tokens": tokens, "flops": flops_per_token(cfg.model) * tokens, "seconds": seconds,
            "rate": rate}


def print_plan(stages: list[Stage], args: argparse.Namespace) -> None:
    total, unknown = 0.0, []
    for s in stages:
        print(f"[{'done' if is_done(s) else 'todo'}] {s.name}\n    {describe(s)}")
        est = plan_estimate(s, args)
        if est is None:
            continue
        when = "unknown (no tokens/s for this preset)" if est["seconds"] is None else (
            f"{est['seconds']:.0f} s at {est['rate']:,.0f} tokens/s per process")
        print(f"    estimate: {s.preset}, {est['tokens']:,} tokens, "
              f"{est['flops']:.3e} model FLOPs, {when}")
        if est["seconds"] is None:
            unknown.append(s.name)
        else:
            total += est["seconds"]
    print(f"[plan] training stages: {total:.0f} s ({total / 60:.1f} min) estimated"
          + (f"; unknown for {', '.join(unknown)}" if unknown else ""))


def describe(stage: Stage) -> str:
    env = " ".join(f"{k}={v}" for k, v in stage.env.items())
    if stage.name == "plots":
        return "\n    ".join(shlex.join(c) for c in resolved_plot_commands(stage))
    return (env + " " if env else "") + shlex.join(stage.cmd)


# --------------------------------------------------------------------------- running


def resolved_plot_commands(stage: Stage) -> list[list[str]]:
    """The plot commands with the simplex's three domains filled in from α* (left as the
    placeholder while α* does not exist yet)."""
    alpha_star = stage.inputs_alpha_star
    doms = simplex_domains(alpha_star) if alpha_star and os.path.isfile(alpha_star) else None
    cmds = []
    for c in plot_commands(stage):
        i = c.index(SIMPLEX_PLACEHOLDER) if SIMPLEX_PLACEHOLDER in c else None
        cmds.append(c if i is None or doms is None else c[:i] + doms + c[i + 1:])
    return cmds


def run_stage(stage: Stage, log_path: str, out: str) -> None:
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    env = {**os.environ, **stage.env}
    env["PYTHONUNBUFFERED"] = "1"
    cmds = resolved_plot_commands(stage) if stage.name == "plots" else [with_free_port(stage.cmd)]
    with open(log_path, "a", encoding="utf-8") as log:
        for cmd in cmds:
            log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(cmd)}\n")
            log.flush()
            rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env)
            if rc != 0:
                raise PipelineError(f"stage {stage.name} failed (exit status {rc}); "
                                    f"see its log {log_path}")
    if stage.kind == "train" and not is_done(stage):
        raise PipelineError(f"stage {stage.name} ended without its outputs "
                            f"({', '.join(stage.outputs)}) at step {stage.steps}; "
                            f"see its log {log_path}")


def with_free_port(cmd: list[str]) -> list[str]:
    """The deepspeed launcher's rendezvous on a port free now (its default, 29500, collides
    with any other job on the machine); other commands unchanged."""
    if "--num_gpus" not in cmd or any(c.startswith("--master_port") for c in cmd):
        return cmd
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    i = cmd.index("--num_gpus")
    return [*cmd[:i], f"--master_port={port}", *cmd[i:]]


def load_timings(out: str) -> dict:
    try:
        with open(os.path.join(out, "timings.json"), encoding="utf-8") as fh:
            return {r["stage"]: r for r in json.load(fh)["stages"]}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def timing_table(rows: list[dict], total: float) -> list[str]:
    lines = ["| stage | status | wall time (s) | steps |", "|---|---|---:|---:|"]
    for r in rows:
        secs = "" if r["seconds"] is None else f"{r['seconds']:.1f}"
        lines.append(f"| {r['stage']} | {r['status']} | {secs} | {r.get('steps') or ''} |")
    known = [r["seconds"] for r in rows if r["seconds"] is not None]
    lines.append(f"| **sum of the stages** (skipped ones from their run) | | {sum(known):.1f} | |")
    lines.append(f"| **total (this invocation)** | | {total:.1f} | |")
    return lines


def write_timings(out: str, rows: list[dict], total: float, args: argparse.Namespace) -> None:
    payload = {"stages": rows, "total_seconds": total, "proxy": args.proxy, "main": args.main,
               "steps": args.steps, "proxy_steps": args.proxy_steps, "nproc": args.nproc,
               "launcher": args.launcher, "evidence": args.evidence,
               "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    with open(os.path.join(out, "timings.json"), "w", encoding="utf-8") as fh:
        json.dump(payload, fh, indent=2)
    header = (f"# Pipeline wall time, stage by stage\n\nproxy {args.proxy} ({args.proxy_steps} "
              f"steps), main {args.main} ({args.steps} steps), {args.nproc} processes "
              f"({args.launcher}). A skipped stage shows its time from the run that made it.\n\n")
    with open(os.path.join(out, "timings.md"), "w", encoding="utf-8") as fh:
        fh.write(header + "\n".join(timing_table(rows, total)) + "\n")


def execute(args: argparse.Namespace, stages: list[Stage]) -> int:
    out = os.path.abspath(args.out)
    os.makedirs(os.path.join(out, "logs"), exist_ok=True)
    os.makedirs(os.path.join(out, "mixtures"), exist_ok=True)
    previous = load_timings(out)
    rows: list[dict] = []
    start = time.perf_counter()
    error = None
    for stage in stages:
        log_path = os.path.join(out, "logs", f"{stage.name}.log")
        if is_done(stage):
            old = previous.get(stage.name, {})
            rows.append({"stage": stage.name, "status": "skipped (done)",
                         "seconds": old.get("seconds"), "steps": stage.steps})
            print(f"[pipeline] {stage.name}: done, skipped", flush=True)
            continue
        print(f"[pipeline] {stage.name}: running (log {log_path})", flush=True)
        t0 = time.perf_counter()
        try:
            run_stage(stage, log_path, out)
        except PipelineError as exc:
            rows.append({"stage": stage.name, "status": "FAILED",
                         "seconds": time.perf_counter() - t0, "steps": stage.steps})
            error = exc
            break
        secs = time.perf_counter() - t0
        rows.append({"stage": stage.name, "status": "ran", "seconds": secs,
                     "steps": stage.steps})
        print(f"[pipeline] {stage.name}: {secs:.1f} s", flush=True)
        # after every stage, so an interrupted pipeline keeps the times of its finished ones
        write_timings(out, rows + [previous[s.name] for s in stages[len(rows):]
                                   if s.name in previous],
                      time.perf_counter() - start, args)
    total = time.perf_counter() - start
    write_timings(out, rows, total, args)
    if not error:
        md = os.path.join(out, "comparison.md")
        if os.path.isfile(md):
            print("\n" + open(md, encoding="utf-8").read().rstrip())
    print("\n" + "\n".join(timing_table(rows, total)))
    print(f"\n[pipeline] wrote {os.path.join(out, 'timings.md')}")
    if error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


# --------------------------------------------------------------------------- SLURM

SBATCH_SCRIPT = os.path.join(REPO, "launch", "slurm", "pretrain.sbatch")
SLURM_JOBS = "slurm_jobs.json"
# squeue states of a job that has not ended (its outcome is still to come)
LIVE_STATES = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD",
               "REQUEUE_FED", "RESIZING", "SUSPENDED", "SIGNALING", "STAGE_OUT"}
# this tool's flags that only steer the submission: a tool job's command leaves them out
SUBMIT_FLAGS = {"--slurm": 0, "--plan": 0, "--stage": 1, "--sbatch-args": 1}


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def stage_dependencies(stages: list[Stage]) -> dict[str, list[str]]:
    """Stage → the earlier stages it reads from: one whose run folder (training) or output
    file (tools) is named in its command, the values of key=value included."""
    deps: dict[str, list[str]] = {}
    for i, stage in enumerate(stages):
        cmds = plot_commands(stage) if stage.name == "plots" else [stage.cmd]
        paths = [t.partition("=")[2] or t for c in cmds for t in c]
        paths += stage.inputs + [stage.inputs_alpha_star or ""]
        deps[stage.name] = [
            other.name for other in stages[:i]
            if any(_within(p, made) for p in paths
                   for made in ([other.run_dir] if other.run_dir else other.outputs))]
    return deps


def tool_job_argv(argv: list[str]) -> list[str]:
    """This invocation's arguments without the submission's own flags."""
    kept, skip = [], 0
    for token in argv:
        name = token.partition("=")[0]
        if skip:
            skip -= 1
        elif name in SUBMIT_FLAGS:
            skip = SUBMIT_FLAGS[name] if "=" not in token else 0
        else:
            kept.append(token)
    return kept


def sbatch_command(args: argparse.Namespace, stage: Stage, after: list[str],
                   argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """The environment additions and the sbatch command submitting ``stage`` after the
    jobs ``after`` (ids, or shell variables in --plan's script)."""
    logs = os.path.join(os.path.abspath(args.out), "logs")
    cmd = ["sbatch", "--parsable", f"--job-name=draw-{stage.name}",
           f"--output={os.path.join(logs, stage.name)}.slurm-%j.out",
           "--kill-on-invalid-dep=yes"]  # a failed stage cancels what waits for it
    if after:
        cmd.append("--dependency=afterok:" + ":".join(after))
    if stage.kind != "train":
        body = [sys.executable, os.path.abspath(__file__), *tool_job_argv(argv),
                "--stage", stage.name]
        return {}, [*cmd, "--nodes=1", "--ntasks=1", f"--chdir={os.getcwd()}",
                    *args.sbatch_extra, "--wrap", shlex.join(body)]
    i = stage.cmd.index("--config")  # [launcher prefix..., script, --config, CONFIG, k=v...]
    env = {"LAUNCHER": os.path.relpath(stage.cmd[i - 1], REPO), "PYTHON": sys.executable,
           "REPO_DIR": REPO, "GPUS_PER_NODE": str(args.gpus_per_node)}
    cmd += [f"--nodes={args.nodes}", f"--ntasks-per-node={args.nproc}",
            f"--gpus-per-node={args.gpus_per_node}"]
    if args.gpus_per_node == 0:
        cmd.append("--cpus-per-task=1")
    return env, [*cmd, f"--chdir={REPO}", *args.sbatch_extra, SBATCH_SCRIPT, *stage.cmd[i + 1:]]


def live_jobs(ids: list[str]) -> set[str]:
    """Those of ``ids`` that squeue still lists as pending, running or about to end."""
    if not ids:
        return set()
    res = subprocess.run(["squeue", "-h", "-o", "%i %T", "-j", ",".join(ids)],
                         capture_output=True, text=True)
    rows = (line.split() for line in res.stdout.splitlines())
    return {row[0] for row in rows if len(row) == 2 and row[1] in LIVE_STATES}


def sbatch(env: dict[str, str], cmd: list[str]) -> str:
    try:
        res = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True)
    except FileNotFoundError:
        raise PipelineError("sbatch not found: --slurm runs on a SLURM login node") from None
    if res.returncode != 0:
        raise PipelineError(f"sbatch failed ({res.stderr.strip() or res.returncode}): "
                            f"{shlex.join(cmd)}")
    return res.stdout.strip().split(";")[0]


def scancel(job: str) -> None:
    subprocess.run(["scancel", job], check=False)


def print_slurm_plan(args, stages, deps, done, argv) -> None:
    """--plan --slurm: the submission as a shell script (job ids in variables)."""
    var = {s.name: f"jid_{s.name}" for s in stages}
    print("#!/bin/bash\nset -euo pipefail")
    for stage in stages:
        if stage.name in done:
            print(f"# {stage.name}: done")
            continue
        after = [f"${var[d]}" for d in deps[stage.name] if d not in done]
        env, cmd = sbatch_command(args, stage, after, argv)
        words = [f"{k}={shlex.quote(v)}" for k, v in env.items()]
        # the dependency in double quotes: its $jid_… variables expand
        words += [f'"{w}"' if w.startswith("--dependency=") else shlex.quote(w) for w in cmd]
        print(f"{var[stage.name]}=$({' '.join(words)})")
    todo = [f"${var[s.name]}" for s in stages if s.name not in done]
    print('echo "squeue -j ' + ",".join(todo) + '"' if todo else "# nothing to submit")


def submit_slurm(args: argparse.Namespace, stages: list[Stage], argv: list[str]) -> int:
    out = os.path.abspath(args.out)
    deps = stage_dependencies(stages)
    done = {s.name for s in stages if is_done(s)}
    if args.plan:
        print_slurm_plan(args, stages, deps, done, argv)
        return 0
    from draw_megatron.utils.fs import atomic_write_json

    for sub in ("logs", "mixtures"):
        os.makedirs(os.path.join(out, sub), exist_ok=True)
    registry = os.path.join(out, SLURM_JOBS)
    try:
        with open(registry, encoding="utf-8") as fh:
            previous = {k: str(v) for k, v in json.load(fh).items()}
    except (OSError, ValueError, AttributeError):
        previous = {}
    live = live_jobs(sorted(set(previous.values())))
    jobs: dict[str, str] = {}
    kept: set[str] = set()
    for stage in stages:
        name, old = stage.name, previous.get(stage.name)
        if name in done:
            print(f"[slurm] {name}: done, skipped", flush=True)
            continue
        if old in live and all(d in done or d in kept for d in deps[name]):
            jobs[name] = old
            kept.add(name)
            print(f"[slurm] {name}: job {old}, still queued from the last submission")
            continue
        if old in live:  # it waits for a stage submitted anew: its inputs will change
            scancel(old)
        env, cmd = sbatch_command(args, stage, [jobs[d] for d in deps[name]
                                                if d not in done], argv)
        jobs[name] = sbatch(env, cmd)
        after = ", ".join(d for d in deps[name] if d not in done)
        print(f"[slurm] {name}: job {jobs[name]}" + (f" (after {after})" if after else ""),
              flush=True)
        atomic_write_json(registry, {**previous, **jobs})
    if not jobs:
        print("[slurm] every stage is done")
        return 0
    print(f"[slurm] logs: {os.path.join(out, 'logs')}/<stage>.slurm-<job>.out; status:\n"
          f"squeue -j {','.join(jobs.values())}")
    return 0


def run_one_stage(args: argparse.Namespace, stages: list[Stage], name: str) -> int:
    """A tool stage inside its batch job: the command and log of a local run."""
    tools = [s for s in stages if s.kind == "tool"]
    stage = next((s for s in tools if s.name == name), None)
    if stage is None:
        raise PipelineError(f"--stage {name}: not one of {', '.join(s.name for s in tools)}")
    out = os.path.abspath(args.out)
    os.makedirs(os.path.join(out, "mixtures"), exist_ok=True)
    log_path = os.path.join(out, "logs", f"{name}.log")
    print(f"[pipeline] {name}: running (log {log_path})", flush=True)
    run_stage(stage, log_path, out)
    print(f"[pipeline] {name}: done", flush=True)
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parse_args(argv)
        stages = plan(args)
        if args.stage:
            return run_one_stage(args, stages, args.stage)
        if args.slurm:
            return submit_slurm(args, stages, argv)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.plan:
        print_plan(stages, args)
        return 0
    return execute(args, stages)


if __name__ == "__main__":
    sys.exit(main())
