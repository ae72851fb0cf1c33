#!/usr/bin/env python3
"""Pretrain a GPT on a data mixture: DRAW's Dirichlet main run and its baselines.

    deepspeed --num_gpus 2 launch/pretrain_main.py --config configs/experiments/smoke_cpu.yaml \\
        [mixture.kind=dirichlet mixture.file=posterior.json ...]

Runs unchanged under `deepspeed`, `torchrun` and `srun` (and as one plain process).
mixture.kind: natural | uniform | static (file) | dirichlet (file with concentrations) |
random (Dir((sqrt(d_model)/k) * 1) redrawn every mixture.redraw_every steps).
Restarting the same command resumes from the latest complete checkpoint (run.resume=auto).
--dry-run checks the config and the parallel layout, then exits without training.
--export PATH writes the consolidated model of the checkpoint that run.resume selects (the
latest complete one by default) to PATH as safetensors, without training; run it with the
layout the checkpoint was saved with (the file loads into any layout).
"""

from __future__ import annotations

import argparse
import sys


def parse_args(argv=None, description: str | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description or __doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="experiment YAML (configs/experiments/)")
    p.add_argument("--dry-run", action="store_true",
                   help="validate the config and layout for this world size, then exit")
    p.add_argument("--export", metavar="PATH",
                   help="export the resumed checkpoint's model to PATH and exit")
    p.add_argument("--local_rank", "--local-rank", type=int, default=None,
                   help=argparse.SUPPRESS)  # passed by the deepspeed launcher
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides")
    return p.parse_args(argv)


def main(argv=None) -> int:
    return run(parse_args(argv))


def run(args: argparse.Namespace, *, forced: dict[str, str] | None = None,
        check=None, make_passes=None, script: str = "pretrain_main.py") -> int:
    """Parse the config, check it before any process group, then train (or export).

    Shared by the other launchers: ``forced`` overrides win over the YAML (an explicit
    command-line override that contradicts one is an error); ``check(cfg)`` adds
    checks that raise ConfigError; ``make_passes(cfg)`` gives the trainer's step passes.
    """
    from draw_megatron.config.base import ConfigError, dump_yaml
    from draw_megatron.config.run import load_run_config

    from draw_megatron.engine.launch_env import world_size_from_env

    world_size = world_size_from_env()
    from draw_megatron.data.manifest import ManifestError
    from draw_megatron.train.trainer import check_config_against_data

    forced = forced or {}
    try:
        _check_not_contradicted(args.overrides, forced, script)
        overrides = [*args.overrides, *(f"{k}={v}" for k, v in forced.items())]
        cfg = load_run_config(args.config, overrides)
        cfg.validate_layout(world_size)  # before any process group exists
        check_config_against_data(cfg)
        if check is not None:
            check(cfg)
    except (ConfigError, ManifestError, FileNotFoundError) as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        tp = cfg.parallel.tp
        print(dump_yaml(cfg))
        print(f"layout: world {world_size} = tp {tp} x dp {world_size // tp}; "
              f"gradient accumulation {cfg.gradient_accumulation_steps(world_size)}")
        return 0

    from draw_megatron.engine.deepspeed_engine import init_distributed
    from draw_megatron.parallel import ParallelTopology
    from draw_megatron.train.trainer import Trainer

    env = init_distributed()
    passes = make_passes(cfg) if make_passes is not None else ()
    trainer = Trainer(cfg, env, ParallelTopology.from_dist(cfg.parallel.tp), passes)
    try:
        if args.export:
            trainer.resume()
            if trainer.state.step == 0:
                print(f"error: no checkpoint to export under {cfg.run.dir}", file=sys.stderr)
                return 1
            trainer.export(args.export)
        else:
            trainer.fit()
    finally:
        trainer.close()
    return 0


def _check_not_contradicted(overrides: list[str], forced: dict[str, str], script: str) -> None:
    from draw_megatron.config.base import ConfigError

    for item in overrides:
        key, _, value = item.partition("=")
        if key in forced and value.strip() != forced[key]:
            raise ConfigError(f"{script} sets {key}={forced[key]}; drop the override {item!r}")


if __name__ == "__main__":
    sys.exit(main())
