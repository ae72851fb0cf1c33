#!/usr/bin/env python3
"""Pretrain a GPT on a data mixture: DRAW's Dirichlet main run, its baselines, and any
composition of step passes.

    deepspeed --num_gpus 2 launch/pretrain_main.py --config configs/experiments/smoke_cpu.yaml \\
        [mixture.kind=dirichlet mixture.file=posterior.json ...] [passes=[dga] dga.eta=...]

Runs unchanged under `deepspeed`, `torchrun` and `srun` (and as one plain process).
mixture.kind: natural | uniform | static (file) | dirichlet (file with concentrations) |
random (Dir((sqrt(d_model)/k) * 1) redrawn every mixture.redraw_every steps) |
hierarchical_dirichlet (file) | online / online_draw (set by a pass).
passes: the step passes by name (dro, dga, odm, dro_evidence, alignment_monitor), each
configured by the section of its name; launch/proxy_dro.py, launch/dga_align.py and
launch/train_reference.py are this script with a pass list and defaults of their own.
Restarting the same command resumes from the latest complete checkpoint (run.resume=auto).
--dry-run checks the config and the parallel layout, then exits without training.
--export PATH writes the consolidated model of the checkpoint that run.resume selects (the
latest complete one by default) to PATH as safetensors, without training; run it with the
layout the checkpoint was saved with (the file loads into any layout).
"""

from __future__ import annotations

import sys

from draw_megatron.train.launcher import parse_args, run


def main(argv=None) -> int:
    return run(parse_args(argv, description=__doc__))


if __name__ == "__main__":
    sys.exit(main())
