#!/usr/bin/env python3
"""Print a model preset's architecture, its true parameter count and DeepSpeed's estimate
of the memory its ZeRO stage needs for parameters, gradients and optimizer states.

The count is analytical (draw_megatron.config.model.count_parameters) and the memory comes
from DeepSpeed's own "cold" estimators, which take parameter counts: no model is built, so
an 8B model is fine on a laptop. Activations are not included.

Examples:
  python tools/model_info.py --preset 70M
  python tools/model_info.py --preset 8B --zero-stage 3 --gpus 8
  python tools/model_info.py --preset 1B --zero-stage 2 --gpus 8 --nodes 4 mlp=swiglu
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
    print_memory(cfg, args.zero_stage, args.gpus, args.nodes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
