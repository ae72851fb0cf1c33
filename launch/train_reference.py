#!/usr/bin/env python3
"""Train the DRO reference model: the trainer on the natural weights (SPEC.md §2).

    deepspeed --num_gpus 2 launch/train_reference.py \\
        --config configs/experiments/reference_cpu.yaml [key=value ...]

The same launcher as pretrain_main.py (arguments, --dry-run, --export, resume) with
mixture.kind=natural forced. The run ends with <run.dir>/model.safetensors, which
launch/proxy_dro.py reads as dro.reference (give the proxy the same model config).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pretrain_main  # noqa: E402  (the sibling launcher, on any working directory)

FORCED = {"mixture.kind": "natural"}


def main(argv=None) -> int:
    args = pretrain_main.parse_args(argv, description=__doc__)
    return pretrain_main.run(args, forced=FORCED, script="train_reference.py")


if __name__ == "__main__":
    sys.exit(main())
