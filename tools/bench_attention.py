#!/usr/bin/env python3
"""Time the attention kernels against each other, in one run: ratios to SDPA (causal).

Rows: SDPA in torch's own kernel order and in the explicit order the model uses, FlexAttention
(causal, and the document mask), per-document SDPA, and flash-attn (causal, varlen documents)
when importable. Each iteration draws a new batch of document boundaries (EOS with
probability 1/--doc-len per token) and builds its mask, as training does per batch; the
mask's build time is its own column. Inputs are q, k, v [B, T, H, D] in the model's layout.

On CUDA each row is forward + backward (torch.compile warms up within --warmup). On CPU
torch has no FlexAttention backward, so every row times forward passes only.

    PYTHONPATH=. python3 tools/bench_attention.py --smoke                  # CPU, seconds
    PYTHONPATH=. python3 tools/bench_attention.py --shape 1B               # GPU, bf16
    PYTHONPATH=. python3 tools/bench_attention.py --batch 16 --seq-len 2048 --heads 16
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

SHAPES = {  # name: (batch, seq_len, heads, head_dim); 1B: the model preset's attention
    "1B": (8, 1024, 32, 64),
    "smoke": (2, 128, 4, 16),
}
EOS = 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true",
                   help="the smoke shape, few iterations (on CPU: fp32, forward only)")
    p.add_argument("--shape", choices=sorted(SHAPES), default="1B",
                   help="batch, seq_len, heads, head_dim preset (explicit flags win)")
    p.add_argument("--batch", type=int)
    p.add_argument("--seq-len", type=int)
    p.add_argument("--heads", type=int)
    p.add_argument("--head-dim", type=int)
    p.add_argument("--doc-len", type=float,
                   help="mean document length in tokens (EOS drawn with probability 1/this; "
                        "default 256, 32 with --smoke)")
    p.add_argument("--dtype", choices=["bf16", "fp16", "fp32"],
                   help="default: bf16 on CUDA, fp32 on CPU")
    p.add_argument("--iters", type=int, default=20, help="timed iterations per row")
    p.add_argument("--warmup", type=int, default=3, help="untimed iterations per row first")
    args = p.parse_args(argv)
    if args.smoke:
        args.shape, args.iters, args.warmup = "smoke", min(args.iters, 5), 1
    if args.doc_len is None:
        args.doc_len = 32.0 if args.smoke else 256.0
    defaults = dict(zip(("batch", "seq_len", "heads", "head_dim"), SHAPES[args.shape]))
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
        if getattr(args, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be > 0")
    if args.doc_len < 1:
        p.error("--doc-len must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    import torch
    import torch.nn.functional as F

    from draw_megatron.model import attention as attn
    from draw_megatron.model.attention import AttentionMask

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[
        args.dtype or ("bf16" if cuda else "fp32")]
    backward = cuda  # FlexAttention has no CPU backward
    gen = torch.Generator(device="cpu").manual_seed(0)
    shape = (args.batch, args.seq_len, args.heads, args.head_dim)
    q, k, v = (torch.randn(shape, generator=gen).to(device, dtype).requires_grad_(backward)
               for _ in range(3))
    grad_out = torch.randn(shape, generator=gen).to(device, dtype)

    def new_documents() -> AttentionMask:
        eos = torch.rand(args.batch, args.seq_len, generator=gen) < 1.0 / args.doc_len
        tokens = torch.where(eos, EOS, 1).to(device)
        return AttentionMask.documents(tokens, EOS)

    def torch_order_sdpa(mask: AttentionMask) -> torch.Tensor:
        out = F.scaled_dot_product_attention(*(t.transpose(1, 2) for t in (q, k, v)),
                                             is_causal=True)
        return out.transpose(1, 2)

    def library(backend: str) -> Callable[[AttentionMask], torch.Tensor]:
        return lambda mask: attn.attention(q, k, v, backend=backend, dropout_p=0.0, mask=mask)

    causal = lambda: AttentionMask.causal(args.seq_len)  # noqa: E731
    # (kernel, mask, mask maker, attention, the mask form the kernel builds on first use)
    rows = [("sdpa, torch's order", "causal", causal, torch_order_sdpa, None),
            ("sdpa", "causal", causal, library("sdpa"), None),
            ("flex", "causal", causal, library("flex"), "block"),
            ("flex", "document", new_documents, library("flex"), "block"),
            ("sdpa per document", "document", new_documents, library("sdpa"), "varlen")]
    if cuda and attn.flash_attn_module() is not None and dtype != torch.float32:
        rows += [("flash", "causal", causal, library("flash"), None),
                 ("flash varlen", "document", new_documents, library("flash"), "varlen")]

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def run_once(make_mask, fn, form: str | None) -> tuple[float, float]:
        """(mask build, attention) seconds; the mask's kernel form is built in the first."""
        sync()
        t0 = time.perf_counter()
        mask = make_mask()
        if form == "block":
            mask.block_mask(device)
        elif form == "varlen":
            mask.cu_seqlens()
        sync()
        t1 = time.perf_counter()
        out = fn(mask)
        if backward:
            out.backward(grad_out)
            for t in (q, k, v):
                t.grad = None
        sync()
        return t1 - t0, time.perf_counter() - t1

    results = []
    for name, kind, make_mask, fn, form in rows:
        with torch.enable_grad() if backward else torch.no_grad():
            for _ in range(args.warmup):
                run_once(make_mask, fn, form)
            times = [run_once(make_mask, fn, form) for _ in range(args.iters)]
        results.append((name, kind, statistics.median(t[0] for t in times),
                        statistics.median(t[1] for t in times)))

    where = torch.cuda.get_device_name() if cuda else "CPU"
    print(f"{where}, torch {torch.__version__}, q/k/v [B={args.batch}, T={args.seq_len}, "
          f"H={args.heads}, D={args.head_dim}] {str(dtype).removeprefix('torch.')}, "
          f"{'forward + backward' if backward else 'forward only'}, mean document "
          f"{args.doc_len:g} tokens, median of {args.iters} after {args.warmup} warm-up")
    base = results[1][3]
    print(f"{'kernel':<22}{'mask':<10}{'attention ms':>14}{'x sdpa causal':>15}"
          f"{'mask build ms':>15}")
    for name, kind, mask_s, attn_s in results:
        print(f"{name:<22}{kind:<10}{attn_s * 1e3:>14.3f}{attn_s / base:>15.2f}"
              f"{mask_s * 1e3:>15.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
