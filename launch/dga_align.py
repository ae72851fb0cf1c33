#!/usr/bin/env python3
"""Train with Dynamic Gradient Alignment toward a specific set (SPEC.md §3; DGA paper).

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
mixture.kind=online is forced. ZeRO stages 0-2. Arguments, --dry-run, --export and resume
as in pretrain_main.py.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pretrain_main  # noqa: E402  (the sibling launcher, on any working directory)

FORCED = {"mixture.kind": "online"}


def check(cfg) -> None:
    """The DGA checks that need no process group: eta, specific set, basis, ZeRO stage."""
    from draw_megatron.config.base import ConfigError
    from draw_megatron.data.manifest import Manifest
    from draw_megatron.data.specific import parse_specific
    from draw_megatron.mixture.files import MixtureFileError

    cfg.validate_dga_pass()
    if cfg.mixture.file is not None:
        raise ConfigError(f"mixture.file={cfg.mixture.file!r}: the DGA pass starts from the "
                          "natural weights and reads no mixture file; drop mixture.file")
    manifest = Manifest.from_config(cfg.data)
    parse_specific(cfg.dga.specific, manifest, train_split=cfg.data.split,
                   eval_split=cfg.eval_split)
    if cfg.dga.basis is not None:
        from draw_megatron.mixture.basis import load_basis

        from draw_megatron.passes.dga import check_basis_support

        try:
            basis = load_basis(cfg.dga.basis, manifest.domain_names)
            check_basis_support(basis, manifest.num_sequences(cfg.data.split), cfg.data.split)
        except (MixtureFileError, ValueError, OSError) as exc:
            raise ConfigError(f"dga.basis={cfg.dga.basis!r}: {exc}") from None


def make_passes(cfg):
    from draw_megatron.passes.dga import DGAPass

    return (DGAPass(cfg.dga),)


def main(argv=None) -> int:
    args = pretrain_main.parse_args(argv, description=__doc__)
    return pretrain_main.run(args, forced=FORCED, check=check, make_passes=make_passes,
                             script="dga_align.py")


if __name__ == "__main__":
    sys.exit(main())
