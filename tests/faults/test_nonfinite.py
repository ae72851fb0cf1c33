"""A non-finite loss (train.nonfinite) on 2 gloo ranks: the step's update is withheld;
``stop`` checkpoints the last good state and names the step and domain, and a run resumed
from that checkpoint continues exactly as an unbroken run; ``skip`` logs the step, goes on,
and stops after train.max_skipped in a row. The fault: one micro-batch's per-token losses
turned into NaN at a chosen step on rank 0 (a seeded, reproducible stand-in for an overflow)."""

from __future__ import annotations

import os

import pytest

from draw_megatron.config.run import RunConfig
from tests.distributed.harness import run_distributed
from tests.unit.data.synthetic import make_synthetic_root

STEPS = 8
BAD_STEP = 3


def _cfg(root: str, run_dir: str, **train) -> RunConfig:
    return RunConfig.from_dict({
        "run": {"dir": run_dir, "seed": 5},
        "model": {"n_layers": 1, "n_heads": 2, "head_dim": 16, "d_model": 32, "ffn_hidden": 64,
                  "vocab_size": 384, "seq_len": 16},
        "zero": {"stage": 1},
        "data": {"root": root},
        "mixture": {"kind": "natural"},
        "train": {"steps": STEPS, "global_batch": 8, "micro_batch": 2, "lr": 3e-3,
                  "min_lr": 3e-4, "precision": "fp32", "grad_clip": 1.0, **train},
        "eval": {"every": 0, "sequences_per_domain": 2},
        "checkpoint": {"every": 2, "keep": 0},
        "log": {"every": 1, "tensorboard": False},
    })


def _trainer(cfg: RunConfig, bad_steps=()):
    """A trainer whose rank-0 engine returns NaN losses for the first micro-batch of each
    step in ``bad_steps``."""
    import torch.distributed as dist

    from draw_megatron.engine.deepspeed_engine import init_distributed
    from draw_megatron.parallel import ParallelTopology
    from draw_megatron.train.trainer import Trainer

    trainer = Trainer(cfg, init_distributed(), ParallelTopology.from_dist(cfg.parallel.tp))
    module = trainer.engine.module
    real_forward, seen = module.forward, set()

    def forward(tokens, labels=None):
        loss = real_forward(tokens, labels)
        step = trainer.state.step
        if dist.get_rank() == 0 and step in bad_steps and step not in seen:
            seen.add(step)
            return loss * float("nan")
        return loss

    module.forward = forward
    return trainer


def _run(trainer) -> str | None:
    from draw_megatron.train.stopping import NonFiniteLoss

    try:
        trainer.fit()
        return None
    except NonFiniteLoss as exc:
        return str(exc)
    finally:
        trainer.close()


def _records(cfg: RunConfig) -> dict:
    from draw_megatron.train.metrics import read_metrics

    path = os.path.join(cfg.run.dir, "metrics.jsonl")
    return {kind: read_metrics(path, kind) for kind in ("train", "skipped", "nonfinite")}


def _runs(rank: int, world: int, root: str, out: str) -> dict:
    import torch.distributed as dist

    res = {}
    clean = _cfg(root, f"{out}/clean")
    res["clean_error"] = _run(_trainer(clean))
    res["clean"] = _records(clean)
    stop = _cfg(root, f"{out}/stop")
    res["stop_error"] = _run(_trainer(stop, bad_steps=(BAD_STEP,)))
    res["stop_checkpoints"] = sorted(os.listdir(os.path.join(stop.run.dir, "checkpoints")))
    dist.barrier()
    res["resume_error"] = _run(_trainer(stop))  # the same command, the fault gone
    res["stop"] = _records(stop)
    skip = _cfg(root, f"{out}/skip", nonfinite="skip", max_skipped=2)
    trainer = _trainer(skip, bad_steps=(BAD_STEP,))
    res["skip_error"] = _run(trainer)
    res["skip_engine_skipped"] = trainer.engine.skipped_steps
    res["skip"] = _records(skip)
    many = _cfg(root, f"{out}/many", nonfinite="skip", max_skipped=2)
    res["many_error"] = _run(_trainer(many, bad_steps=(2, 3, 4)))
    res["many"] = _records(many)
    return res


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    root = make_synthetic_root(str(tmp_path_factory.mktemp("nonfinite_data")), [24, 24],
                               seq_len=16, vocab_size=384, splits=("train", "val"))
    return run_distributed(_runs, 2, root, str(tmp_path_factory.mktemp("nonfinite")),
                           timeout=600)


def _losses(records: dict) -> list:
    return [r["loss"] for r in records["train"]]


def test_stop_names_the_step_and_domain_and_keeps_the_last_good_state(ranks):
    res = ranks[0]
    assert res["clean_error"] is None
    error = res["stop_error"]
    assert error.startswith(f"step {BAD_STEP}: the loss of domain(s) ['Domain ")
    assert f"the last good state is checkpoint step {BAD_STEP}" in error
    assert f"step_{BAD_STEP:08d}" in res["stop_checkpoints"]
    assert res["stop"]["nonfinite"][0]["step"] == BAD_STEP
    # Resumed from that checkpoint, the run is the unbroken run, bitwise: the bad step's
    # update was withheld and the loader restarts at that step's batch.
    assert res["resume_error"] is None
    assert _losses(res["stop"]) == _losses(res["clean"])
    assert ranks[1]["stop_error"] == error


def test_skip_logs_the_step_and_goes_on(ranks):
    res = ranks[0]
    assert res["skip_error"] is None and res["skip_engine_skipped"] == 1
    assert [r["step"] for r in res["skip"]["skipped"]] == [BAD_STEP]
    train = res["skip"]["train"]
    assert [r["step"] for r in train] == list(range(STEPS))
    assert train[BAD_STEP]["loss"] is None and train[BAD_STEP]["skipped"]
    assert all(r["loss"] is not None and r["loss"] > 0 for r in train if r["step"] != BAD_STEP)
    # No update at the bad step: the steps before it are the clean run's.
    assert _losses(res["skip"])[:BAD_STEP] == _losses(res["clean"])[:BAD_STEP]


def test_skip_stops_after_max_skipped_in_a_row(ranks):
    res = ranks[0]
    assert res["many_error"].startswith("step 4: the loss of domain(s)")
    assert "2 skipped steps in a row before it" in res["many_error"]
    assert [r["step"] for r in res["many"]["skipped"]] == [2, 3]
