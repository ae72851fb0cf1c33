#!/usr/bin/env python3
"""Time the output layer + per-token cross-entropy paths against each other, in one run.

Rows (each: forward and backward of Σ w · loss with a non-uniform per-token weight w, as the
DRO pass and DGA weight the losses):

- torch: logits = F.linear(h, W), then the vocabulary-parallel cross-entropy (the model's
  default ``loss_kernel=torch``; full logits and an fp32 softmax kept for the backward);
- fused, Triton: ``draw_megatron.kernels.fused_linear_ce`` (``loss_kernel=fused``), its
  chunked backward (the default) and its atomic one;
- fused, PyTorch reference: the same maths in vocabulary chunks of logits;
- liger: Liger-Kernel's LigerFusedLinearCrossEntropyLoss(reduction="none"), if importable;
- cut-cross-entropy: its ``linear_cross_entropy(reduction="none")``, on CUDA if importable.

Columns: median milliseconds, ratio to the torch row, peak memory above the inputs (CUDA
only), and the largest per-token loss difference from the torch row. One process, TP = 1:
the vocabulary-parallel collectives are not timed here.

On CPU the Triton rows run in Triton's interpreter (``TRITON_INTERPRET=1``, set here before
the kernels are imported): their times say nothing about the kernels, only that they run.

    PYTHONPATH=. python3 tools/bench_loss_kernels.py --smoke     # CPU, tiny shapes, seconds
    PYTHONPATH=. python3 tools/bench_loss_kernels.py             # GPU: bf16, 8×1024 tokens,
                                                                  # d 2048, vocabulary 32000
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable

SHAPES = {"gpu": (8 * 1024, 2048, 32000), "smoke": (32, 32, 128)}  # tokens, d_model, vocab


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true",
                   help="tiny shapes, few iterations (the CPU check that every row runs)")
    p.add_argument("--tokens", type=int, help="tokens N (default 8192; smoke 32)")
    p.add_argument("--d-model", type=int, help="hidden width d (default 2048; smoke 32)")
    p.add_argument("--vocab", type=int, help="vocabulary V (default 32000; smoke 128)")
    p.add_argument("--dtype", choices=["bf16", "fp16", "fp32"],
                   help="default: bf16 on CUDA, fp32 on CPU")
    p.add_argument("--iters", type=int, default=10, help="timed iterations per row")
    p.add_argument("--warmup", type=int, default=2, help="untimed iterations per row first")
    args = p.parse_args(argv)
    if args.smoke:  # the interpreter compiles nothing: no warm-up needed
        args.iters, args.warmup = min(args.iters, 2), 0
    defaults = dict(zip(("tokens", "d_model", "vocab"), SHAPES["smoke" if args.smoke else "gpu"]))
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
        if getattr(args, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be > 0")
    if args.iters <= 0 or args.warmup < 0:
        p.error("--iters must be > 0 and --warmup >= 0")
    return args


def library_rows(cuda: bool, bfloat16: bool) -> dict[str, Callable]:
    """name: fn(h, W, labels) → per-token loss, for the libraries that import and run here."""
    rows: dict[str, Callable] = {}
    if not cuda and bfloat16:  # the interpreter's bfloat16 tl.dot is wrong (triton#11584)
        return rows
    try:
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss
    except ImportError:
        pass
    else:
        liger = LigerFusedLinearCrossEntropyLoss(reduction="none")
        rows["liger"] = lambda h, w, y: liger(w, h, y)
    if cuda:  # its Triton kernel fails in the CPU interpreter
        try:
            from cut_cross_entropy import linear_cross_entropy
        except ImportError:
            pass
        else:
            rows["cut-cross-entropy"] = lambda h, w, y: linear_cross_entropy(
                h, w, y, reduction="none")
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    import torch

    cuda = torch.cuda.is_available()
    if not cuda:  # before any Triton kernel (ours, Liger's) is decorated
        os.environ.setdefault("TRITON_INTERPRET", "1")

    import torch.nn.functional as F

    from draw_megatron.kernels.fused_linear_ce import fused_linear_cross_entropy, triton_runs
    from draw_megatron.parallel import vocab_parallel_cross_entropy

    device = torch.device("cuda" if cuda else "cpu")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[
        args.dtype or ("bf16" if cuda else "fp32")]
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(args.tokens, args.d_model, generator=gen).to(device, dtype)
    weight = (torch.randn(args.vocab, args.d_model, generator=gen) * 0.02).to(device, dtype)
    labels = torch.randint(0, args.vocab, (args.tokens,), generator=gen).to(device)
    upstream = torch.rand(args.tokens, generator=gen).to(device)
    hidden.requires_grad_()
    weight.requires_grad_()

    rows: dict[str, Callable] = {
        "torch": lambda h, w, y: vocab_parallel_cross_entropy(F.linear(h, w), y, None),
    }
    if triton_runs(device, dtype):
        rows["fused, Triton"] = lambda h, w, y: fused_linear_cross_entropy(
            h, w, y, backend="triton")
        rows["fused, Triton atomic bwd"] = lambda h, w, y: fused_linear_cross_entropy(
            h, w, y, backend="triton", backward="atomic")
    rows["fused, PyTorch reference"] = lambda h, w, y: fused_linear_cross_entropy(
        h, w, y, backend="torch")
    rows.update(library_rows(cuda, dtype == torch.bfloat16))

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def run_once(fn: Callable) -> tuple[float, torch.Tensor]:
        sync()
        start = time.perf_counter()
        loss = fn(hidden, weight, labels)
        (loss.float() * upstream).sum().backward()
        sync()
        hidden.grad = weight.grad = None
        return time.perf_counter() - start, loss.detach().float()

    results = []
    for name, fn in rows.items():
        for _ in range(args.warmup):
            run_once(fn)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
            base_mem = torch.cuda.memory_allocated()
        times, loss = zip(*(run_once(fn) for _ in range(args.iters)))
        peak = (torch.cuda.max_memory_allocated() - base_mem) / 2**20 if cuda else None
        results.append((name, statistics.median(times), peak, loss[-1]))
    report(args, results, torch.cuda.get_device_name() if cuda else "CPU", dtype, cuda)
    return 0


def report(args: argparse.Namespace, results: list, where: str, dtype, cuda: bool) -> None:
    import torch

    print(f"{where}, torch {torch.__version__}, h [N={args.tokens}, d={args.d_model}], "
          f"W [V={args.vocab}, d], {str(dtype).removeprefix('torch.')}, forward + backward, "
          f"median of {args.iters} after {args.warmup} warm-up")
    if not cuda:
        print("CPU: the Triton rows (ours, liger) run in Triton's interpreter; their times "
              "mean nothing, only that they run. Peak memory is measured on CUDA only.")
    base_time, base_loss = results[0][1], results[0][3]
    print(f"{'path':<26}{'ms':>12}{'x torch':>10}{'peak MiB':>11}{'max |Δloss|':>13}")
    for name, seconds, peak, loss in results:
        mem = f"{peak:.1f}" if peak is not None else "n/a"
        diff = (loss - base_loss).abs().max().item()
        print(f"{name:<26}{seconds * 1e3:>12.3f}{seconds / base_time:>10.2f}{mem:>11}"
              f"{diff:>13.2e}")


if __name__ == "__main__":
    sys.exit(main())
