#!/usr/bin/env python3
"""Train the proxy with the DRO pass and write its domain weights α* (SPEC.md §2).

    deepspeed --num_gpus 2 launch/proxy_dro.py --config configs/experiments/proxy_dro_cpu.yaml \\
        dro.reference=runs/reference_cpu/model.safetensors [dro.eta=1 dro.smoothing=1e-3 ...]

Stratified batches (every domain ⌊G/k⌋ or one more sequences), the loss weighted by the DRO
weights α, α_0 drawn from the DRAW prior Dir((√n1/k)·1), α updated from the per-token
excess loss over the frozen reference (launch/train_reference.py; the same model config).
Writes `dro` records to metrics.jsonl, and at the end <run.dir>/alpha_star.json (a static
mixture file: the mean of α_1 … α_T, with provenance) and <run.dir>/dro_trajectory.json.
mixture.kind=online is forced (α is the pass's; the mixture only reports it). Arguments,
--dry-run, --export and resume as in pretrain_main.py.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pretrain_main  # noqa: E402  (the sibling launcher, on any working directory)

FORCED = {"mixture.kind": "online"}


def check(cfg) -> None:
    """The DRO checks that need no process group: dro.reference, a stratifiable batch."""
    from draw_megatron.config.base import ConfigError
    from draw_megatron.data.manifest import Manifest

    cfg.validate_dro_pass()
    if cfg.mixture.file is not None:
        raise ConfigError(f"mixture.file={cfg.mixture.file!r}: the DRO pass draws α_0 from the "
                          "DRAW prior and reads no mixture file; drop mixture.file")
    k = Manifest.from_config(cfg.data).num_domains
    if cfg.train.global_batch < k:
        raise ConfigError(f"train.global_batch={cfg.train.global_batch} is smaller than the {k} "
                          "domains: a stratified DRO batch holds every domain")


def make_passes(cfg):
    from draw_megatron.passes.dro import DROPass

    return (DROPass(cfg.dro),)


def main(argv=None) -> int:
    args = pretrain_main.parse_args(argv, description=__doc__)
    return pretrain_main.run(args, forced=FORCED, check=check, make_passes=make_passes,
                             script="proxy_dro.py")


if __name__ == "__main__":
    sys.exit(main())
