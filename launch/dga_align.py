#!/usr/bin/env python3
"""Train with Dynamic Gradient Alignment toward a specific set (docs/algorithms.md §3).

    deepspeed --num_gpus 2 launch/dga_align.py --config configs/experiments/dga_smoke_cpu.yaml \\
        [dga.specific=test:Domain dga.eta=... dga.every=100 dga.ema_weight=0.1 ...]

Every dga.every steps (T_r) the pass aligns the gradient of one probe micro-batch per
domain (or, with dga.basis=FILE, per basis distribution: distribution reweighting) with the
gradient of one micro-batch of the specific set, updates α by mirror descent (dga.eta, no
default) and its EMA (dga.ema_weight), and the loader draws the following steps from α_EMA.
dga.specific: a split of data.root that training and evaluation do not read (e.g. `test`),
one domain of it (`test:Domain Name`), or a folder of Pile-format jsonl(.zst) documents
(converted once with the run's tokenizer, cached under run.dir). Writes `dga` records to
metrics.jsonl, and at the end <run.dir>/dga_alpha_star.json (the mean sampling weights: a
static mixture file, usable as α* by tools/draw_posterior.py) and dga_trajectory.json.
Its keys (over the YAML's; the command line may change them): passes=[dga],
mixture.kind=online (mixture.kind=online_draw on the command line makes the alignment
weights evidence for an online DRAW Dirichlet instead). ZeRO stages 0-2. Arguments,
--dry-run, --export and resume as in pretrain_main.py.
"""

from __future__ import annotations

import sys

from draw_megatron.train.launcher import parse_args, run

KEYS = {"passes": "[dga]", "mixture.kind": "online"}


def main(argv=None) -> int:
    return run(parse_args(argv, description=__doc__), launcher_keys=KEYS)


if __name__ == "__main__":
    sys.exit(main())
