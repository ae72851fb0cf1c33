#!/usr/bin/env python3
"""Our lm-eval model against lm-eval's own `hf` model on the Hugging Face export of the same
weights: the same tasks, the same machine, alternating rounds; requests per second of each
and their ratio (target: ours / hf ≥ 0.9), and whether the scores agree.

    python tools/bench_lm_eval.py RUN_DIR [--tasks draw_tiny_mc,draw_tiny_text] \\
        [--include-path tests/assets/lm_eval] [--rounds 3] [--batch-size 8] [--device cuda]

RUN_DIR holds model.safetensors and config.yaml (a finished run). The export goes to a
temporary folder. fp32 on CPU; on a GPU both run in fp32 too, so that scores compare.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir")
    p.add_argument("--tasks", default="draw_tiny_mc,draw_tiny_text")
    p.add_argument("--include-path", default=os.path.join(REPO, "tests", "assets", "lm_eval"))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

    import torch

    from draw_megatron.eval.compare_hf import evaluate, hf_model, scores
    from draw_megatron.eval.lm_eval_model import DrawMegatronLM
    from draw_megatron.export.hf import export_hf

    tasks = [t for t in args.tasks.split(",") if t]
    ours = DrawMegatronLM.from_pretrained(args.run_dir, batch_size=args.batch_size,
                                          device=torch.device(args.device), dtype=torch.float32)
    with tempfile.TemporaryDirectory() as tmp:
        hf = hf_model(export_hf(args.run_dir, os.path.join(tmp, "hf")), args.batch_size,
                      ours.max_length, ours.eot_token_id, device=args.device)
        rates: dict[str, list[float]] = {"ours": [], "hf": []}
        results = {}
        for _ in range(args.rounds):
            for name, lm in (("ours", ours), ("hf", hf)):
                results[name], rate = evaluate(lm, tasks, args.include_path)
                rates[name].append(rate)
    a, b = scores(results["ours"]), scores(results["hf"])
    worst = max(abs(a[k] - b[k]) / max(abs(b[k]), 1e-12) for k in a)
    ratio = statistics.median(o / h for o, h in zip(rates["ours"], rates["hf"]))
    print(f"tasks {', '.join(tasks)}; {args.rounds} rounds, alternating; device {args.device}")
    print(f"ours (draw_megatron): {statistics.median(rates['ours']):.1f} requests/s")
    print(f"lm-eval hf on export: {statistics.median(rates['hf']):.1f} requests/s")
    print(f"ratio ours/hf: {ratio:.3f} (median of paired rounds; target >= 0.9)")
    print(f"scores: {len(a)} metrics, largest relative difference {worst:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
