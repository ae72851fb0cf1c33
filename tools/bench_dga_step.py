#!/usr/bin/env python3
"""DGA's wall-time (and, on GPU, memory) overhead over plain training, in one run.

One trainer with the DGA pass; rounds of T_r steps (T_r = dga.every = --steps-per-round)
alternate between plain training (the pass detached) and DGA (attached: exactly one
alignment update per round, its k + 1 probe gradients included). The round's total time is
compared, since the update is one step of T_r. The paper's cost model says a DGA round costs
1 + (k+1)/T_r plain rounds when a probe costs one training step's gradient, so the run sets
train.global_batch = micro_batch × DP (no accumulation: a probe micro-batch is a step's
batch). Target: (DGA / plain) / (1 + (k+1)/T_r) ≤ 1.10.
Memory (CUDA only): peak allocated during a DGA round minus during a plain round, against
one fp32 copy of the gradient (the aligner's ḡ_y). On CPU it prints the bytes ḡ_y holds.
--breakdown adds the time of each phase of an update against a training step.

    deepspeed --num_gpus 2 tools/bench_dga_step.py --config configs/experiments/dga_smoke_cpu.yaml
"""

from __future__ import annotations

import os
import statistics
import sys
import time


def main(argv=None) -> int:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_step import bench_args, bench_trainer, paired_ratio

    argv = list(sys.argv[1:] if argv is None else argv)
    want_breakdown = "--breakdown" in argv
    argv = [a for a in argv if a != "--breakdown"]
    args = bench_args(__doc__, "configs/experiments/dga_smoke_cpu.yaml", 20, argv)
    args.breakdown = want_breakdown

    import torch

    from draw_megatron.config.run import load_run_config

    world = int(os.environ.get("WORLD_SIZE", "1"))
    probe = load_run_config(args.config, args.overrides)
    dp = probe.data_parallel_size(world)
    no_accumulation = [f"train.global_batch={probe.train.micro_batch * dp}",
                       f"dga.every={args.steps_per_round}"]

    trainer = bench_trainer(args, ["passes=[dga]", "mixture.kind=online", *no_accumulation])
    cfg, env = trainer.cfg, trainer.env
    (dga,) = trainer.passes
    cuda = env.on_gpu

    def round_time(with_dga: bool) -> tuple[float, int]:
        """Total seconds of one round of T_r steps, and its peak allocated bytes (CUDA)."""
        trainer.set_passes([dga] if with_dga else [])
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        for _ in range(args.steps_per_round):
            trainer.train_step()
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t0, (torch.cuda.max_memory_allocated() if cuda else 0)

    round_time(True)  # warm-up (starts at step 0: one update)
    plain, full, mem_plain, mem_full = [], [], [], []
    for _ in range(args.rounds):
        t, m = round_time(False)
        plain.append(t)
        mem_plain.append(m)
        t, m = round_time(True)
        full.append(t)
        mem_full.append(m)
    updates = dga.state.num_updates
    phases = breakdown(trainer, dga, cuda) if args.breakdown else None
    trainer.close()
    if env.rank == 0:
        k = len(dga.units)
        model = 1 + (k + 1) / args.steps_per_round
        ratio = paired_ratio(plain, full)
        grad_bytes = dga.align.aligner.numel * 4
        print(f"model {cfg.model.preset or 'custom'} d_model {cfg.model.d_model}, {k} "
              f"{'bases' if dga.basis is not None else 'domains'}, T_r {args.steps_per_round}, "
              f"global batch {cfg.train.global_batch} x {cfg.model.seq_len} (no accumulation), "
              f"probe {dga.align.num} sequences over all ranks, {env.world_size} rank(s), "
              f"{'GPU' if cuda else 'CPU'}; {args.rounds} rounds each, interleaved, "
              f"{updates} updates in all")
        print(f"plain round: {statistics.median(plain):8.3f} s (median of {args.rounds})")
        print(f"DGA round  : {statistics.median(full):8.3f} s")
        print(f"ratio DGA/plain: {ratio:.4f}; cost model 1 + (k+1)/T_r = {model:.4f}; "
              f"ratio / model = {ratio / model:.4f}  (target <= 1.10)")
        if cuda:
            extra = statistics.median(mem_full) - statistics.median(mem_plain)
            print(f"peak memory: plain {statistics.median(mem_plain) / 2**20:.1f} MiB, DGA "
                  f"{statistics.median(mem_full) / 2**20:.1f} MiB, extra {extra / 2**20:.1f} MiB "
                  f"= {extra / grad_bytes:.3f} fp32 gradient copies ({grad_bytes / 2**20:.1f} MiB)")
        else:
            print(f"memory: not measured on CPU; the aligner holds one fp32 gradient copy "
                  f"(ḡ_y, {grad_bytes / 2**20:.2f} MiB) during an update")
        if phases:
            print("one update, by phase (median of 3, ms): " + ", ".join(
                f"{name} {statistics.median(ts) * 1e3:.2f}" for name, ts in phases.items()))
    return 0


def breakdown(trainer, dga, cuda: bool) -> dict[str, list[float]]:
    """Seconds of each phase of an update (probe read, forward, autograd.grad, products,
    the whole alignment_scores) and of a plain training step, 3 times each."""
    import torch

    def timed(fn):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        if cuda:
            torch.cuda.synchronize()
        return out, time.perf_counter() - t0

    align = dga.align
    module, aligner = trainer.engine.module, align.aligner
    phases: dict[str, list[float]] = {k: [] for k in (
        "read", "forward", "grad", "dot", "target", "update", "train step")}
    for _ in range(3):
        _, t = timed(lambda: aligner.set_target(align.probe_loss(module, align.specific_batch())))
        phases["target"].append(t)
        batch, t = timed(lambda: align.probe_batch(0))
        phases["read"].append(t)
        loss, t = timed(lambda: align.probe_loss(module, batch))
        phases["forward"].append(t)
        grads, t = timed(lambda: aligner.gradients(loss))
        phases["grad"].append(t)
        _, t = timed(lambda: aligner.partial_products(grads, aligner.target))
        phases["dot"].append(t)
        del grads, loss
        aligner.release()
        _, t = timed(lambda: align.scores(len(dga.units)))  # (scores, specific loss)
        phases["update"].append(t)
        _, t = timed(trainer.train_step)
        phases["train step"].append(t)
    return phases


if __name__ == "__main__":
    sys.exit(main())
