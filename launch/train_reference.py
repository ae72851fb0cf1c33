#!/usr/bin/env python3
"""Train the DRO reference model: the trainer on the natural weights (docs/algorithms.md §2).

    deepspeed --num_gpus 2 launch/train_reference.py \\
        --config configs/experiments/reference_cpu.yaml [key=value ...]

The same launcher as pretrain_main.py (arguments, --dry-run, --export, resume) with
the keys passes=[] and mixture.kind=natural (over the YAML's; the command line may
change them). The run ends with <run.dir>/model.safetensors, which
launch/proxy_dro.py reads as dro.reference (give the proxy the same model config).
"""

from __future__ import annotations

import sys

from draw_megatron.train.launcher import parse_args, run

KEYS = {"passes": "[]", "mixture.kind": "natural"}


def main(argv=None) -> int:
    return run(parse_args(argv, description=__doc__), launcher_keys=KEYS)


if __name__ == "__main__":
    sys.exit(main())
