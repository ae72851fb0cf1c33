"""The launch scripts' shared entry: parse arguments, build the config, check everything
that needs no process group (layout, data, step passes, mixture file), then train or
export. ``launch/*.py`` are this function with their own keys (a pass list and a mixture
kind); they hold no logic of their own.
"""

from __future__ import annotations

import argparse
import sys


def parse_args(argv=None, description: str | None = None) -> argparse.Namespace:
    """The launchers' command line: --config, --dry-run, --export, key=value overrides."""
    p = argparse.ArgumentParser(description=description,
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


def run(args: argparse.Namespace, *, launcher_keys: dict[str, str] | None = None) -> int:
    """Parse the config, check it (passes included) before any process group, then train
    (or export). ``launcher_keys``: what the launch script is for (its pass list and mixture
    kind); they win over the YAML, and command-line overrides win over them."""
    from draw_megatron.train.early_signals import catch_early

    catch_early()  # before the heavy imports: a SLURM signal must not kill a starting rank
    from draw_megatron.config.base import ConfigError, dump_yaml
    from draw_megatron.config.run import load_run_config
    from draw_megatron.data.manifest import Manifest, ManifestError
    from draw_megatron.engine.launch_env import world_size_from_env
    from draw_megatron.passes.registry import check_passes
    from draw_megatron.train.trainer import check_config_against_data, make_schedule

    world_size = world_size_from_env()
    try:
        cfg = load_run_config(args.config, args.overrides,
                              [f"{k}={v}" for k, v in (launcher_keys or {}).items()])
        cfg.validate_layout(world_size)  # before any process group exists
        manifest = Manifest.from_config(cfg.data)
        check_config_against_data(cfg, manifest)
        check_passes(cfg, manifest)
        make_schedule(cfg, manifest)  # mixture files read and checked here, not in the ranks
    except (ConfigError, ManifestError, FileNotFoundError, ValueError) as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        tp = cfg.parallel.tp
        print(dump_yaml(cfg))
        print(f"layout: world {world_size} = tp {tp} x dp {world_size // tp}; "
              f"gradient accumulation {cfg.gradient_accumulation_steps(world_size)}; "
              f"passes {cfg.passes or 'none'}; mixture {cfg.mixture.kind}")
        return 0

    from draw_megatron.engine.deepspeed_engine import init_distributed
    from draw_megatron.parallel import ParallelTopology
    from draw_megatron.train.stopping import (EXIT_NONFINITE, EXIT_PREEMPTED, NonFiniteLoss,
                                              Preempted)
    from draw_megatron.train.trainer import Trainer

    env = init_distributed()
    trainer = Trainer(cfg, env, ParallelTopology.from_dist(cfg.parallel.tp))
    try:
        if args.export:
            trainer.resume()
            if trainer.state.step == 0:
                print(f"error: no checkpoint to export under {cfg.run.dir}", file=sys.stderr)
                return 1
            trainer.export(args.export)
        else:
            trainer.fit()
    except Preempted as exc:
        if env.rank == 0:
            print(f"preempted: {exc}", file=sys.stderr)
        return EXIT_PREEMPTED
    except NonFiniteLoss as exc:
        if env.rank == 0:
            print(f"error: {exc}", file=sys.stderr)
        return EXIT_NONFINITE
    except ManifestError as exc:
        # A damaged shard, met by whichever rank reads it first: one line, and a failed
        # process that makes the launcher stop the other ranks.
        print(f"data error (rank {env.rank}): {exc}", file=sys.stderr)
        return 1
    finally:
        trainer.close()
    return 0


