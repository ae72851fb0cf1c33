"""Resuming on another layout (run.resume_layout): a checkpoint of 2 gloo ranks at
tp 1 x dp 2 continues at tp 2 x dp 1 (2 ranks) and at tp 1 x dp 1 (one process), through
DeepSpeed's universal checkpoint; the continued losses follow the uninterrupted dp 2 run.

Tolerance: the layouts differ in the order of fp32 sums (TP all-reduces, the gradient
accumulation of 4 micro-batches on one rank instead of 2 on each of two), so losses are not
bitwise equal; tests/distributed/test_trainer.py bounds the TP 2 vs TP 1 difference by a
relative 1e-4 over 20 steps, and the same bound holds here. A continuation whose Adam moments
are restarted (what a resume that lost the optimizer state would do) lands far outside it.
"""

from __future__ import annotations

import os

import pytest

from draw_megatron.config.run import RunConfig
from tests.distributed.harness import run_distributed
from tests.unit.data.synthetic import make_synthetic_root

STEPS, CKPT = 10, 5
RTOL = 1e-4


def _cfg(root: str, run_dir: str, tp: int = 1, stage: int = 1, **run) -> RunConfig:
    return RunConfig.from_dict({
        "run": {"dir": run_dir, "seed": 11, **run},
        "model": {"n_layers": 1, "n_heads": 2, "head_dim": 16, "d_model": 32, "ffn_hidden": 64,
                  "mlp": "swiglu", "vocab_size": 384, "seq_len": 16},
        "parallel": {"tp": tp},
        "zero": {"stage": stage},
        "data": {"root": root},
        "mixture": {"kind": "natural"},
        "train": {"steps": STEPS, "global_batch": 8, "micro_batch": 2, "lr": 3e-3,
                  "min_lr": 3e-4, "precision": "fp32", "grad_clip": 1.0},
        "eval": {"every": 0, "sequences_per_domain": 2},
        "checkpoint": {"every": CKPT, "keep": 0},
        "log": {"every": 1, "tensorboard": False},
    })


def _fit(cfg: RunConfig, restart_optimizer: bool = False) -> list[float] | str:
    """Train; the losses of the steps this run made, or the error that stopped it."""
    from draw_megatron.engine.deepspeed_engine import init_distributed
    from draw_megatron.parallel import ParallelTopology
    from draw_megatron.train.checkpoint import LayoutMismatch
    from draw_megatron.train.metrics import read_metrics
    from draw_megatron.train.trainer import Trainer

    trainer = Trainer(cfg, init_distributed(), ParallelTopology.from_dist(cfg.parallel.tp))
    if restart_optimizer:  # the model is carried, Adam's moments and step start afresh
        resume = trainer.resume

        def resume_without_optimizer():
            resume()
            trainer.engine.optimizer.optimizer.state.clear()

        trainer.resume = resume_without_optimizer
    try:
        trainer.fit()
    except LayoutMismatch as exc:
        return str(exc)
    finally:
        trainer.close()
    return [r["loss"] for r in read_metrics(os.path.join(cfg.run.dir, "metrics.jsonl"), "train")]


def _source(out: str, stage: int) -> str:
    return os.path.join(out, f"dp2_zero{stage}", "checkpoints", f"step_{CKPT:08d}")


def _two_ranks(rank: int, world: int, root: str, out: str) -> dict:
    res = {}
    for stage in (0, 1, 2, 3):
        res[f"dp2_zero{stage}"] = _fit(_cfg(root, f"{out}/dp2_zero{stage}", stage=stage))
    res["strict"] = _fit(_cfg(root, f"{out}/strict", tp=2, resume=_source(out, 1)))
    for stage in (1, 2):
        res[f"tp2_zero{stage}"] = _fit(_cfg(root, f"{out}/tp2_zero{stage}", tp=2, stage=stage,
                                            resume=_source(out, stage), resume_layout="reshape"))
    res["tp2_fresh_adam"] = _fit(_cfg(root, f"{out}/tp2_fresh", tp=2, resume=_source(out, 1),
                                      resume_layout="reshape"), restart_optimizer=True)
    res["tp2_zero3"] = _fit(_cfg(root, f"{out}/tp2_zero3", tp=2, stage=3,
                                 resume=_source(out, 3), resume_layout="reshape"))
    return res


def _one_rank(rank: int, world: int, root: str, out: str) -> dict:
    return {f"dp1_zero{stage}": _fit(_cfg(root, f"{out}/dp1_zero{stage}", stage=stage,
                                          resume=_source(out, stage), resume_layout="reshape"))
            for stage in (0, 1, 3)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    root = make_synthetic_root(str(tmp_path_factory.mktemp("layout_data")), [40, 24], seq_len=16,
                               vocab_size=384, splits=("train", "val"))
    out = str(tmp_path_factory.mktemp("layout"))
    res = run_distributed(_two_ranks, 2, root, out, timeout=600)[0]
    res.update(run_distributed(_one_rank, 1, root, out, timeout=300)[0])
    return res


def _rel(a: list[float], b: list[float]) -> float:
    assert len(a) == len(b)
    return max(abs(x - y) / abs(y) for x, y in zip(a, b))


def test_strict_names_both_layouts(runs):
    assert runs["strict"] == (f"the checkpoint step_{CKPT:08d} was saved at tp 1 x dp 2 "
                              "(ZeRO 1); this run is tp 2 x dp 1 (ZeRO 1): set "
                              "run.resume_layout=reshape")


@pytest.mark.parametrize("name,stage", [("tp2_zero1", 1), ("tp2_zero2", 2), ("dp1_zero1", 1),
                                        ("dp1_zero0", 0)])
def test_reshaped_run_continues_the_uninterrupted_one(runs, name, stage):
    reference = runs[f"dp2_zero{stage}"]
    assert len(reference) == STEPS
    assert _rel(runs[name], reference[CKPT:]) < RTOL, (runs[name], reference[CKPT:])


def test_the_optimizer_state_is_carried(runs):
    reference = runs["dp2_zero1"][CKPT:]
    carried, fresh = _rel(runs["tp2_zero1"], reference), _rel(runs["tp2_fresh_adam"], reference)
    print(f"relative loss gap after the reshape: Adam state carried {carried:.2e}, "
          f"restarted {fresh:.2e}")
    assert fresh > 100 * max(carried, 1e-7)


def test_zero3_is_a_clear_error(runs):
    for name, now in (("tp2_zero3", "tp 2 x dp 1"), ("dp1_zero3", "tp 1 x dp 1")):
        assert runs[name] == (f"cannot reshape a checkpoint saved at tp 1 x dp 2 (ZeRO 3) to "
                              f"{now} (ZeRO 3): ZeRO 3 checkpoints resume only at their own "
                              "layout")
