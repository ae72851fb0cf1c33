#!/usr/bin/env python3
"""Train the proxy with the DRO pass and write its domain weights α* (docs/algorithms.md §2).

    deepspeed --num_gpus 2 launch/proxy_dro.py --config configs/experiments/proxy_dro_cpu.yaml \\
        dro.reference=runs/reference_cpu/model.safetensors [dro.eta=1 dro.smoothing=1e-3 ...]

Stratified batches (every domain ⌊G/k⌋ or one more sequences), the loss weighted by the DRO
weights α, α_0 drawn from the DRAW prior Dir((√n1/k)·1), α updated from the per-token
excess loss over the frozen reference (launch/train_reference.py; the same model config).
Writes `dro` records to metrics.jsonl, and at the end <run.dir>/alpha_star.json (a static
mixture file: the mean of α_1 … α_T, with provenance) and <run.dir>/dro_trajectory.json.
Its keys (over the YAML's; the command line may change them): passes=[dro],
mixture.kind=online (α is the pass's; the mixture only reports it). Arguments, --dry-run, --export and resume
as in pretrain_main.py.
"""

from __future__ import annotations

import sys

from draw_megatron.train.launcher import parse_args, run

KEYS = {"passes": "[dro]", "mixture.kind": "online"}


def main(argv=None) -> int:
    return run(parse_args(argv, description=__doc__), launcher_keys=KEYS)


if __name__ == "__main__":
    sys.exit(main())
