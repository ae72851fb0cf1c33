#!/usr/bin/env python3
"""Downstream scores of a trained model through the lm-eval harness.

    python tools/eval_lm.py RUN_DIR --suite draw --out RUN_DIR/lm_eval/final
    python tools/eval_lm.py model.safetensors --tokenizer sp.model --tasks arc_challenge,boolq \\
        --num-fewshot 5 --limit 100 --out eval_out
    torchrun --nproc_per_node 4 tools/eval_lm.py RUN_DIR --tp 2 --suite dga --out DIR  # TP2 x DP2

RUN_DIR is a run directory holding the consolidated ``model.safetensors`` (its tokenizer is
found through config.yaml's data root), MODEL a consolidated file (with ``--tokenizer``
unless a config.yaml sits beside it). ``--suite draw`` = MMLU, MMLU-Pro, NQ-open and
ARC-Challenge 5-shot, GSM8K 10-shot, BoolQ, DROP 0-shot; ``--suite dga`` = MMLU.
``--include-path DIR`` adds local YAML tasks (``--only-include-path``: without lm-eval's
own index, which takes tens of seconds to build).

Every task and dataset is loaded before the model runs: an unknown task, a dataset that
cannot be loaded (offline and not cached), a run without a consolidated model or a model
whose vocabulary is smaller than the tokenizer's stops the tool with one line and a
non-zero status. ``--out`` gets ``results.json`` (lm-eval's results plus the throughput)
and ``results.md`` (task, metric, value, stderr), written to a temporary folder and moved
into place when complete. Offline machines: set HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="run directory or consolidated model.safetensors")
    p.add_argument("--tasks", default="", help="comma-separated lm-eval task/group names")
    p.add_argument("--suite", choices=["draw", "dga"], help="a preset list of tasks")
    p.add_argument("--num-fewshot", type=int,
                   help="few-shot examples for every task (default: the suite's, else the task's)")
    p.add_argument("--limit", type=float,
                   help="documents per task (a fraction of them if below 1; for quick checks)")
    p.add_argument("--include-path", action="append", default=[], metavar="DIR",
                   help="folder of extra lm-eval task YAML files (repeatable)")
    p.add_argument("--only-include-path", action="store_true",
                   help="index only the --include-path tasks, not lm-eval's own")
    p.add_argument("--batch-size", type=int, default=8, help="sequences per forward per DP rank")
    p.add_argument("--tokenizer", help="SentencePiece .model (default: the run's)")
    p.add_argument("--tp", type=int, default=1, help="tensor-parallel size (DP = world / tp)")
    p.add_argument("--max-length", type=int, help="context length (default: the model's seq_len)")
    p.add_argument("--bootstrap-iters", type=int, default=100_000,
                   help="lm-eval's bootstrap iterations for stderrs of non-mean metrics")
    p.add_argument("--device", help="default: this rank's GPU if any, else the CPU")
    p.add_argument("--dtype", choices=["bfloat16", "float32"],
                   help="default: bfloat16 on GPU, float32 on CPU")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--local_rank", "--local-rank", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.limit is not None and args.limit >= 1:
        args.limit = int(args.limit)
    return args


def task_specs(args: argparse.Namespace) -> list:
    from draw_megatron.eval.lm_eval_tasks import SUITES, TaskError, TaskSpec

    specs = list(SUITES[args.suite]) if args.suite else []
    specs += [TaskSpec(name.strip()) for name in args.tasks.split(",") if name.strip()]
    if not specs:
        raise TaskError("no task: pass --tasks T1,T2 or --suite draw|dga")
    return specs


def start_distributed() -> bool:
    """Initialise torch.distributed under a launcher; whether this call did it."""
    import torch.distributed as dist

    from draw_megatron.engine.launch_env import world_size_from_env

    if dist.is_initialized() or world_size_from_env() == 1:
        return False
    from draw_megatron.engine.deepspeed_engine import init_distributed

    init_distributed()
    return True


def evaluate(args: argparse.Namespace) -> dict | None:
    """Load tasks, then the model; run; the results (with throughput) on local rank 0."""
    from draw_megatron.data.tokenizer import Tokenizer
    from draw_megatron.eval import lm_eval_model as lem
    from draw_megatron.eval import lm_eval_tasks as tasks

    specs = task_specs(args)
    # Cheap checks first: the model's files and vocabulary, then tasks and datasets.
    file = lem.model_file(args.model)
    lem.check_vocabulary(lem.read_model_config(file),
                         Tokenizer(lem.tokenizer_path(args.model, args.tokenizer)))
    manager = tasks.task_manager(args.include_path, include_defaults=not args.only_include_path)
    loaded = tasks.load_tasks(manager, specs, args.num_fewshot)
    lm = lem.DrawMegatronLM.from_pretrained(
        args.model, tokenizer=args.tokenizer, tp=args.tp, batch_size=args.batch_size,
        max_length=args.max_length, device=args.device, dtype=args.dtype)
    results = tasks.run_tasks(lm, loaded, manager, limit=args.limit,
                              bootstrap_iters=args.bootstrap_iters)
    if _global_rank() == 0:
        print(f"throughput: {lm.num_requests} requests in {lm.seconds:.2f} s = "
              f"{lm.requests_per_second:.1f} requests/s (TP {lm.topology.tp_size} x "
              f"DP {lm.topology.dp_size}, batch {lm.batch_size})", flush=True)
    if results is not None:
        results["draw_megatron"] = {"requests": lm.num_requests, "seconds": lm.seconds,
                                    "requests_per_second": lm.requests_per_second,
                                    "tasks": [vars(s) for s in specs]}
    return results


def write_outputs(out: str, results: dict, overwrite: bool) -> str:
    """results.json and results.md under ``out``, atomically; returns the table."""
    from lm_eval.utils import handle_non_serializable

    from draw_megatron.eval.lm_eval_tasks import markdown_table, metric_rows
    from draw_megatron.utils.fs import atomic_output_dir

    table = markdown_table(metric_rows(results))
    results = {k: v for k, v in results.items() if k != "samples"}
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        with open(os.path.join(tmp, "results.json"), "w", encoding="utf-8") as fh:
            json.dump(results, fh, indent=2, default=handle_non_serializable)
            fh.write("\n")
        with open(os.path.join(tmp, "results.md"), "w", encoding="utf-8") as fh:
            fh.write(table)
    return table


def main(argv=None) -> int:
    args = parse_args(argv)
    if os.path.exists(args.out) and not args.overwrite:
        print(f"error: {args.out} exists; pass --overwrite to replace it", file=sys.stderr)
        return 2
    from draw_megatron.config.base import ConfigError
    from draw_megatron.eval.lm_eval_model import EvalModelError
    from draw_megatron.eval.lm_eval_tasks import TaskError

    started = start_distributed()
    try:
        results = evaluate(args)
        if results is not None and _global_rank() == 0:
            print(write_outputs(args.out, results, args.overwrite), end="")
            print(f"wrote {os.path.join(args.out, 'results.json')} and results.md")
    except (EvalModelError, TaskError, ConfigError, FileNotFoundError) as exc:
        if _global_rank() == 0:
            print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if started:
            import torch.distributed as dist

            dist.destroy_process_group()
    return 0


def _global_rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_initialized() else 0


if __name__ == "__main__":
    sys.exit(main())
