#!/usr/bin/env python3
"""Training-step time with a Dirichlet mixture redrawn every step against a static one.

One trainer, one engine, one loader: rounds alternate the loader's schedule between the
static natural mixture and Dir(β) redrawn at every step (the worst case of DRAW's
schedule: a draw, a broadcast from rank 0 and a fresh categorical per step), and the
median step times are compared. Target: ratio ≤ 1.01.

    python tools/bench_step.py --config configs/experiments/smoke_cpu.yaml
    deepspeed --num_gpus 2 tools/bench_step.py --config configs/experiments/smoke_cpu.yaml
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time


def bench_args(description: str, default_config: str, steps_per_round: int, argv=None):
    """The arguments every interleaved step benchmark takes."""
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=default_config)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--steps-per-round", type=int, default=steps_per_round)
    p.add_argument("--local_rank", "--local-rank", type=int, help=argparse.SUPPRESS)
    p.add_argument("overrides", nargs="*", metavar="key=value")
    return p.parse_args(argv)


def bench_trainer(args, overrides=()):
    """A trainer in a scratch run dir with room for the warm-up and 2 × rounds rounds; its
    step passes are the config's ``passes`` (checked as the launchers check them)."""
    from draw_megatron.config.run import load_run_config
    from draw_megatron.data.manifest import Manifest
    from draw_megatron.passes.registry import check_passes
    from draw_megatron.engine.deepspeed_engine import init_distributed
    from draw_megatron.parallel import ParallelTopology
    from draw_megatron.train.metrics import MetricsLog
    from draw_megatron.train.trainer import Trainer

    run_dir = tempfile.mkdtemp(prefix="bench_")
    total = (2 * args.rounds + 1) * args.steps_per_round
    cfg = load_run_config(args.config, [*args.overrides, *overrides, f"run.dir={run_dir}",
                                        f"train.steps={total}", "log.tensorboard=false"])
    env = init_distributed()
    cfg.validate_layout(env.world_size)
    check_passes(cfg, Manifest.from_config(cfg.data))
    trainer = Trainer(cfg, env, ParallelTopology.from_dist(cfg.parallel.tp))
    trainer.metrics = MetricsLog(run_dir, env.rank == 0)
    return trainer


def round_median(trainer, steps: int) -> float:
    """Step time of a round of ``steps`` training steps: on CPU the median step; on a GPU
    the round's mean, timed between two device synchronisations (the step itself does not
    wait for the device between log steps, so a single step's wall time is not its cost)."""
    import torch

    if trainer.env.on_gpu:
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(steps):
            trainer.train_step()
        torch.cuda.synchronize()
        return (time.perf_counter() - t0) / steps
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        trainer.train_step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def paired_ratio(base: list[float], other: list[float]) -> float:
    """Median over rounds of other/base, each round against the base round just before it."""
    return statistics.median(b / a for a, b in zip(base, other))


def main(argv=None) -> int:
    args = bench_args(__doc__, "configs/experiments/smoke_cpu.yaml", 10, argv)

    import numpy as np

    from draw_megatron.mixture.kinds import schedule_for as build_schedule
    from draw_megatron.mixture.schedule import StaticSchedule

    trainer = bench_trainer(args)
    cfg, env = trainer.cfg, trainer.env
    k = trainer.manifest.num_domains
    static = StaticSchedule(trainer.manifest.natural_weights(cfg.data.split))
    dirichlet = build_schedule("random", trainer.manifest, width=cfg.model.d_model,
                               redraw_every=1, seed=cfg.run.seed)

    def round_time(schedule) -> float:
        trainer.loader.schedule = schedule
        return round_median(trainer, args.steps_per_round)

    round_time(static)  # warm-up
    results: dict[str, list[float]] = {"static": [], "dirichlet": []}
    for _ in range(args.rounds):
        results["static"].append(round_time(static))
        results["dirichlet"].append(round_time(dirichlet))
    trainer.close()
    if env.rank == 0:
        s, d = (statistics.median(results[n]) for n in ("static", "dirichlet"))
        ratio = paired_ratio(results["static"], results["dirichlet"])
        print(f"model {cfg.model.preset or 'custom'} d_model {cfg.model.d_model}, {k} domains, "
              f"global batch {cfg.train.global_batch} x {cfg.model.seq_len} tokens, "
              f"{env.world_size} rank(s), {'GPU' if env.on_gpu else 'CPU'}; "
              f"{args.rounds} rounds x {args.steps_per_round} steps each, interleaved")
        print(f"static mixture            : {s * 1e3:8.2f} ms/step (median of round medians)")
        print(f"Dirichlet redrawn per step: {d * 1e3:8.2f} ms/step")
        print(f"ratio dirichlet/static    : {ratio:8.4f}  (median of paired rounds; "
              "target <= 1.01)")
        print(f"round medians static   : {np.round(np.array(results['static']) * 1e3, 2).tolist()}")
        print(f"round medians dirichlet: {np.round(np.array(results['dirichlet']) * 1e3, 2).tolist()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
