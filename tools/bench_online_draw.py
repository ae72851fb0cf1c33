#!/usr/bin/env python3
"""Online DRAW's step time against plain DRAW's, in one run (docs/algorithms.md §7.1).

One trainer with mixture.kind=online_draw and the DRO-evidence pass; rounds of M steps
(M = dro_evidence.every = --steps-per-round, so each online round holds exactly one
evidence update) alternate between the pass attached (online DRAW) and detached (the same
Dirichlet schedule with no evidence: plain DRAW). The evidence pass's own cost (2k forward
passes of the probe size, no backward) is timed separately, in plain steps. Target:
online/plain ≤ 1 + (evidence cost)/M + 1 %.

Without dro_evidence.reference=FILE the tool first writes the freshly initialised main
model as the reference (for timing, any model of the right architecture will do).

    deepspeed --num_gpus 2 tools/bench_online_draw.py --config configs/experiments/pipeline_cpu.yaml
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time


def main(argv=None) -> int:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_step import bench_args, bench_trainer, paired_ratio

    args = bench_args(__doc__, "configs/experiments/pipeline_cpu.yaml", 20, argv)
    overrides = ["mixture.kind=online_draw", "passes=[dro_evidence]",
                 f"dro_evidence.every={args.steps_per_round}"]
    if not any(o.startswith("dro_evidence.reference=") for o in args.overrides):
        overrides.append(f"dro_evidence.reference={fresh_reference(args, bench_trainer)}")
    trainer = bench_trainer(args, overrides)
    cfg, env = trainer.cfg, trainer.env
    (evidence,) = trainer.passes

    in_round: list[float] = []  # the evidence pass's own time inside each online round
    real_after_step = evidence.after_step

    def timed_after_step(info):
        t0 = time.perf_counter()
        out = real_after_step(info)
        if evidence.acts_at(info.step):
            in_round.append(time.perf_counter() - t0)
        return out

    evidence.after_step = timed_after_step

    def round_time(online: bool) -> float:
        trainer.set_passes([evidence] if online else [])
        t0 = time.perf_counter()
        for _ in range(args.steps_per_round):
            trainer.train_step()
        return time.perf_counter() - t0

    round_time(True)  # warm-up
    in_round.clear()
    plain, online = [], []
    for _ in range(args.rounds):
        plain.append(round_time(False))
        online.append(round_time(True))
    cost = []
    for _ in range(3):
        t0 = time.perf_counter()
        evidence.domain_excess()
        cost.append(time.perf_counter() - t0)
    trainer.close()
    if env.rank == 0:
        m = args.steps_per_round
        step = statistics.median(plain) / m
        cost_steps = statistics.median(cost) / step
        ratio = paired_ratio(plain, online)
        print(f"main {cfg.model.preset or 'custom'} d_model {cfg.model.d_model}, k "
              f"{trainer.manifest.num_domains}, global batch {cfg.train.global_batch} x "
              f"{cfg.model.seq_len}, probe {evidence.num} sequences per domain, "
              f"{env.world_size} rank(s), {'GPU' if env.on_gpu else 'CPU'}; {args.rounds} "
              f"rounds of M = {m} steps each, interleaved")
        print(f"plain DRAW round : {statistics.median(plain):8.3f} s ({step * 1e3:.1f} ms/step)")
        print(f"online DRAW round: {statistics.median(online):8.3f} s")
        in_steps = statistics.median(in_round) / step
        print(f"evidence pass alone, back to back: {statistics.median(cost) * 1e3:.1f} ms = "
              f"{cost_steps:.3f} plain steps (median of 3)")
        print(f"evidence pass inside the online rounds: {statistics.median(in_round) * 1e3:.1f}"
              f" ms = {in_steps:.3f} plain steps (median of {len(in_round)})")
        rest = [o - e for o, e in zip(online, in_round)]
        print(f"online round without its evidence pass / plain round: "
              f"{paired_ratio(plain, rest):.4f} (the training steps' own slow-down)")
        print(f"ratio online/plain: {ratio:.4f}; target 1 + cost/M + 0.01 = "
              f"{1 + cost_steps / m + 0.01:.4f} (back-to-back cost), "
              f"{1 + in_steps / m + 0.01:.4f} (cost inside the rounds)")
    return 0


def fresh_reference(args, bench_trainer) -> str:
    """The main model at its seeded initialisation, written as a consolidated file."""
    import torch.distributed as dist

    trainer = bench_trainer(args, ["mixture.kind=random", "passes=[]"])
    path = os.path.join(tempfile.gettempdir(), f"bench_online_draw_ref_{os.getppid()}.safetensors")
    trainer.export(path)
    trainer.close()
    if dist.is_initialized():
        dist.barrier()
    return path


if __name__ == "__main__":
    sys.exit(main())
