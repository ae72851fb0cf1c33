#!/usr/bin/env python3
"""DRO proxy step time against a plain training step of the same proxy, in one run.

One trainer with the DRO pass (SPEC.md §2); rounds alternate between the full DRO step
(reference forward, per-token excess, α-weighted loss, α update) and the plain step of the
same engine and loader (the pass detached: token-mean loss, no reference). Batches stay
stratified in both, so only the pass's work differs. Median of paired round ratios.
Target (issue 4): ratio ≤ 1.4 (the reference forward adds about a third of a step).

    deepspeed --num_gpus 2 tools/bench_dro_step.py --config configs/experiments/proxy_dro_cpu.yaml \\
        dro.reference=demo_out/pipeline/runs/reference/model.safetensors
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/experiments/proxy_dro_cpu.yaml")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--steps-per-round", type=int, default=8)
    p.add_argument("--local_rank", "--local-rank", type=int, help=argparse.SUPPRESS)
    p.add_argument("overrides", nargs="*", metavar="key=value")
    args = p.parse_args(argv)

    from draw_megatron.config.run import load_run_config
    from draw_megatron.engine.deepspeed_engine import init_distributed
    from draw_megatron.parallel import ParallelTopology
    from draw_megatron.passes.dro import DROPass
    from draw_megatron.train.metrics import MetricsLog
    from draw_megatron.train.trainer import Trainer

    run_dir = tempfile.mkdtemp(prefix="bench_dro_")
    total = (2 * args.rounds + 1) * args.steps_per_round
    cfg = load_run_config(args.config, [*args.overrides, f"run.dir={run_dir}",
                                        f"train.steps={total}", "log.tensorboard=false",
                                        "mixture.kind=online"])
    env = init_distributed()
    cfg.validate_layout(env.world_size)
    cfg.validate_dro_pass()
    dro = DROPass(cfg.dro)
    trainer = Trainer(cfg, env, ParallelTopology.from_dist(cfg.parallel.tp), passes=[dro])
    trainer.metrics = MetricsLog(run_dir, env.rank == 0)

    def round_time(with_dro: bool) -> float:
        trainer.passes, trainer._loss_owner = ((dro,), dro) if with_dro else ((), None)
        times = []
        for _ in range(args.steps_per_round):
            t0 = time.perf_counter()
            trainer.train_step()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    round_time(True)  # warm-up
    plain, full = [], []
    for _ in range(args.rounds):
        plain.append(round_time(False))
        full.append(round_time(True))
    trainer.close()
    if env.rank == 0:
        ratio = statistics.median(b / a for a, b in zip(plain, full))
        print(f"proxy {cfg.model.preset or 'custom'} d_model {cfg.model.d_model}, global batch "
              f"{cfg.train.global_batch} x {cfg.model.seq_len}, {env.world_size} rank(s), "
              f"{'GPU' if env.on_gpu else 'CPU'}; {args.rounds} rounds x "
              f"{args.steps_per_round} steps, interleaved")
        print(f"plain step : {statistics.median(plain) * 1e3:8.2f} ms (median of round medians)")
        print(f"DRO step   : {statistics.median(full) * 1e3:8.2f} ms")
        print(f"ratio DRO/plain: {ratio:.4f}  (median of paired rounds; target <= 1.4)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
