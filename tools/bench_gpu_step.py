#!/usr/bin/env python3
"""Tokens/s and MFU of one model training step on one device, plain PyTorch (no DeepSpeed).

For the lent GPU, whose image lacks DeepSpeed and the MDS library: the model, its TP layers
(TP = 1), the vocab-parallel loss and a fused AdamW step, on random tokens, in bf16
autocast with fp32 master weights. MFU = model FLOPs/s ÷ 989 TFLOP/s (H100 SXM dense bf16
datasheet), model FLOPs = 6·N·tokens + 12·L·d·seq·tokens (N non-embedding parameters);
the ratio to the 790 TFLOP/s this workplace measured on an 8192³ bf16 matmul is printed too.

    PYTHONPATH=. python3 tools/bench_gpu_step.py --preset 150M --micro-batch 16 --attention sdpa
    PYTHONPATH=. python3 tools/bench_gpu_step.py --preset tiny-64 --steps 3   # CPU smoke
"""

from __future__ import annotations

import argparse
import sys
import time

PEAK_DATASHEET = 989e12
PEAK_MEASURED = 790e12


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="150M")
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--micro-batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=20, help="timed steps (after 3 warm-up)")
    p.add_argument("--attention", default="auto", choices=["auto", "flash", "sdpa"])
    p.add_argument("--checkpointing", action="store_true", help="activation checkpointing")
    p.add_argument("--vocab-size", type=int, default=32000)
    args = p.parse_args(argv)

    import torch

    from draw_megatron.config.model import ModelConfig
    from draw_megatron.model import GPT, flops_per_token
    from draw_megatron.parallel import ParallelTopology

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    cfg = ModelConfig.from_preset(args.preset, seq_len=args.seq_len, vocab_size=args.vocab_size,
                                  attention=args.attention,
                                  activation_checkpointing=args.checkpointing)
    model = GPT(cfg, ParallelTopology.single(), seed=0, device=device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.99), fused=cuda)
    tokens = torch.randint(0, cfg.vocab_size, (args.micro_batch, args.seq_len + 1),
                           device=device)
    x, y = tokens[:, :-1], tokens[:, 1:]
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda)

    def step() -> float:
        with autocast:
            loss = model(x, y).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    for _ in range(3):
        step()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    if cuda:
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - t0) / args.steps
    tok_s = args.micro_batch * args.seq_len / seconds
    flops = flops_per_token(cfg) * tok_s
    name = torch.cuda.get_device_name() if cuda else "CPU"
    print(f"{name}, torch {torch.__version__}, preset {args.preset}, seq {args.seq_len}, "
          f"micro-batch {args.micro_batch}, attention {args.attention}, "
          f"{'bf16 autocast' if cuda else 'fp32'}, checkpointing {args.checkpointing}")
    print(f"step {seconds * 1e3:.1f} ms, {tok_s:,.0f} tokens/s, model {flops / 1e12:.1f} TFLOP/s, "
          f"MFU {flops / PEAK_DATASHEET:.3f} (vs 989), {flops / PEAK_MEASURED:.3f} (vs 790 measured)"
          f", loss {float(loss):.3f}"
          + (f", peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if cuda else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
