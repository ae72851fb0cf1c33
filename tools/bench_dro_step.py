#!/usr/bin/env python3
"""DRO proxy step time against a plain training step of the same proxy, in one run.

One trainer with the DRO pass (docs/algorithms.md §2); rounds alternate between the full DRO step
(reference forward, per-token excess, α-weighted loss, α update) and the plain step of the
same engine and loader (the pass detached: token-mean loss, no reference). Batches stay
stratified in both, so only the pass's work differs. Median of paired round ratios.
Target: ratio ≤ 1.4 (the reference forward adds about a third of a step).

    deepspeed --num_gpus 2 tools/bench_dro_step.py --config configs/experiments/proxy_dro_cpu.yaml \\
        dro.reference=demo_out/pipeline/runs/reference/model.safetensors
"""

from __future__ import annotations

import os
import statistics
import sys


def main(argv=None) -> int:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_step import bench_args, bench_trainer, paired_ratio, round_median

    args = bench_args(__doc__, "configs/experiments/proxy_dro_cpu.yaml", 8, argv)

    trainer = bench_trainer(args, ["passes=[dro]", "mixture.kind=online"])
    cfg, env = trainer.cfg, trainer.env
    (dro,) = trainer.passes

    def round_time(with_dro: bool) -> float:
        trainer.set_passes([dro] if with_dro else [])
        return round_median(trainer, args.steps_per_round)

    round_time(True)  # warm-up
    plain, full = [], []
    for _ in range(args.rounds):
        plain.append(round_time(False))
        full.append(round_time(True))
    trainer.close()
    if env.rank == 0:
        ratio = paired_ratio(plain, full)
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
