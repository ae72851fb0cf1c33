#!/usr/bin/env python3
"""Print a model preset's architecture, its true parameter count and DeepSpeed's estimate
of the memory its ZeRO stage needs for parameters, gradients and optimizer states.

The count is analytical (draw_megatron.config.model.count_parameters) and the memory comes
from DeepSpeed's own "cold" estimators, which take parameter counts: no model is built, so
an 8B model is fine on a laptop. Activations are not included.

With --plan it also chooses a layout: for every tensor-parallel size (dividing the heads,
within a node) and ZeRO stage 1-3 it adds up one GPU's memory — bf16 parameters and
gradients, fp32 master weights and Adam moments (sharded as the stage says), activations
(Korthikanti et al. 2022: s·b·h·34/t bytes per layer with sequence parallelism and an attention
kernel that keeps no [s, s] scores; 2·s·b·h per layer plus one layer's full set with
activation checkpointing) and the fp32 logits of the loss — and picks the smallest TP, then
the lowest stage, that fits in --headroom of the GPU. A formula, not a measurement: check it
with a short run (tools/gpu_check.sh) before a long one.

Examples:
  python tools/model_info.py --preset 70M
  python tools/model_info.py --preset 8B --zero-stage 3 --gpus 8
  python tools/model_info.py --preset 1B --zero-stage 2 --gpus 8 --nodes 4 mlp=swiglu
  python tools/model_info.py --preset 8B --plan --gpus 8 --gpu-mem-gb 80 --micro-batch 1
"""

from __future__ import annotations

import argparse
import os
import sys

from draw_megatron.config.base import ConfigError, apply_overrides
from draw_megatron.config.model import (
    PRESETS,
    ModelConfig,
    count_parameters,
    largest_module_parameters,
)

GIB = 2**30


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", required=True, choices=list(PRESETS), help="model preset")
    p.add_argument("--zero-stage", type=int, default=1, choices=[0, 1, 2, 3],
                   help="ZeRO stage for the memory estimate (default 1)")
    p.add_argument("--gpus", type=int, default=1, help="GPUs per node (default 1)")
    p.add_argument("--nodes", type=int, default=1, help="nodes (default 1)")
    p.add_argument("--plan", action="store_true",
                   help="choose TP and ZeRO stage for --gpus x --nodes GPUs of --gpu-mem-gb")
    p.add_argument("--gpu-mem-gb", type=float, default=80.0, help="GPU memory (default 80)")
    p.add_argument("--micro-batch", type=int, default=1, help="sequences per GPU per step")
    p.add_argument("--no-checkpointing", action="store_true",
                   help="plan without activation checkpointing")
    p.add_argument("--headroom", type=float, default=0.9,
                   help="share of the GPU memory a plan may use (default 0.9)")
    p.add_argument("fields", nargs="*", metavar="key=value",
                   help="model fields over the preset, e.g. vocab_size=50257 mlp=swiglu")
    return p


def model_from_args(preset: str, fields: list[str]) -> ModelConfig:
    raw = apply_overrides(ModelConfig, {"preset": preset}, fields)
    return ModelConfig.from_dict(raw, prefix="model")


def describe(cfg: ModelConfig) -> list[str]:
    counts = count_parameters(cfg)
    mlp_matrices = 2 if cfg.mlp == "gelu" else 3
    return [
        f"preset {cfg.preset}",
        f"  layers {cfg.n_layers}, heads {cfg.n_heads} x head_dim {cfg.head_dim}, "
        f"d_model {cfg.d_model}, ffn_hidden {cfg.ffn_hidden}",
        f"  vocab {cfg.vocab_size} (padded to {cfg.padded_vocab_size}), seq_len {cfg.seq_len}, "
        f"{cfg.norm}, {cfg.mlp} MLP ({mlp_matrices} matrices), "
        f"{'tied' if cfg.tie_embeddings else 'untied'} embeddings, no linear biases",
        "parameters (true count)",
        f"  embedding      {counts['embedding']:>15,}",
        f"  non-embedding  {counts['non_embedding']:>15,}",
        f"  total          {counts['total']:>15,}  ({counts['total'] / 1e6:,.1f}M)",
        f"  per layer      {counts['per_layer']:>15,}  (attention "
        f"{counts['attention_per_layer']:,}, MLP {counts['mlp_per_layer']:,}, "
        f"norms {counts['norms_per_layer']:,})",
    ]


def print_memory(cfg: ModelConfig, stage: int, gpus: int, nodes: int) -> None:
    """DeepSpeed's estimator for the stage (it prints its own table)."""
    os.environ.setdefault("DS_ACCELERATOR", "cpu")  # importing deepspeed probes for a GPU
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs_all_cold
    from deepspeed.runtime.zero.stage_1_and_2 import (
        estimate_zero2_model_states_mem_needs_all_cold,
    )

    total = count_parameters(cfg)["total"]
    print(f"DeepSpeed's estimate for ZeRO stage {stage} (model states only, no activations):")
    if stage == 3:
        estimate_zero3_model_states_mem_needs_all_cold(
            total_params=total, largest_layer_params=largest_module_parameters(cfg),
            num_gpus_per_node=gpus, num_nodes=nodes)
        return
    if stage == 0:
        print("  (DeepSpeed has no stage-0 estimator; nothing is sharded, so each GPU holds what "
              "the ZeRO-2 estimator gives for a single GPU)")
        gpus, nodes = 1, 1
    estimate_zero2_model_states_mem_needs_all_cold(
        total_params=total, num_gpus_per_node=gpus, num_nodes=nodes)
    if stage == 1 and gpus * nodes > 1:
        # Our arithmetic, not DeepSpeed's: ZeRO-1 keeps full 16-bit gradients on each GPU.
        extra = 2 * total * (1 - 1 / (gpus * nodes))
        print(f"  (DeepSpeed's estimator covers ZeRO-2; ZeRO-1 does not shard gradients: "
              f"add about {extra / GIB:.2f}GB per GPU without offload)")


def layout_memory(cfg: ModelConfig, tp: int, dp: int, stage: int, micro_batch: int,
                  checkpointing: bool) -> dict[str, float]:
    """Bytes one GPU holds at TP ``tp``, DP ``dp``, ZeRO ``stage`` (see the module docstring)."""
    n = count_parameters(cfg)["total"]
    shard = n / tp  # TP splits (almost) every matrix; norms are small enough to ignore
    s, b, h = cfg.seq_len, micro_batch, cfg.d_model
    per_layer = s * b * h * 34 / tp
    acts = (2 * s * b * h * cfg.n_layers + per_layer) if checkpointing \
        else per_layer * cfg.n_layers
    return {
        "parameters": 2 * shard / (dp if stage == 3 else 1),
        "gradients": 2 * shard / (dp if stage >= 2 else 1),
        "optimizer": 12 * shard / (dp if stage >= 1 else 1),
        "activations": acts,
        "logits": 4 * s * b * cfg.padded_vocab_size / tp,
    }


def plan(cfg: ModelConfig, gpus: int, nodes: int, gpu_mem_gb: float, micro_batch: int,
         checkpointing: bool, headroom: float) -> tuple[list[str], tuple[int, int] | None]:
    """(table lines, the chosen (tp, stage) or None)."""
    world = gpus * nodes
    budget = gpu_mem_gb * GIB * headroom
    lines = [f"layout plan: {nodes} node(s) x {gpus} GPU(s) of {gpu_mem_gb:g} GB, micro batch "
             f"{micro_batch} x seq {cfg.seq_len}, activation checkpointing "
             f"{'on' if checkpointing else 'off'}, budget {headroom:.0%} of each GPU",
             f"{'tp':>3} {'dp':>4} {'zero':>4} {'params':>8} {'grads':>8} {'optim':>8} "
             f"{'acts':>8} {'logits':>8} {'total GB':>9}  fits"]
    chosen = None
    for tp in [t for t in range(1, gpus + 1) if gpus % t == 0 and cfg.n_heads % t == 0]:
        for stage in (1, 2, 3):
            mem = layout_memory(cfg, tp, world // tp, stage, micro_batch, checkpointing)
            total = sum(mem.values())
            fits = total <= budget
            if fits and chosen is None:
                chosen = (tp, stage)
            lines.append(f"{tp:>3} {world // tp:>4} {stage:>4} " + " ".join(
                f"{mem[k] / GIB:>8.1f}" for k in ("parameters", "gradients", "optimizer",
                                                   "activations", "logits"))
                + f" {total / GIB:>9.1f}  {'yes' if fits else 'no'}")
    if chosen is None:
        lines.append("no layout fits: add GPUs, lower the micro batch, or turn checkpointing on")
    else:
        lines.append(f"chosen: parallel.tp={chosen[0]} zero.stage={chosen[1]} (smallest TP, "
                     f"then lowest ZeRO stage, that fits)")
    return lines, chosen


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.gpus < 1 or args.nodes < 1:
        parser.error("--gpus and --nodes must be >= 1")
    try:
        cfg = model_from_args(args.preset, args.fields)
    except ConfigError as exc:
        parser.error(str(exc))
    print("\n".join(describe(cfg)))
    print()
    sys.stdout.flush()
    if args.plan:
        lines, _ = plan(cfg, args.gpus, args.nodes, args.gpu_mem_gb, args.micro_batch,
                        not args.no_checkpointing, args.headroom)
        print("\n".join(lines))
        return 0
    print_memory(cfg, args.zero_stage, args.gpus, args.nodes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
