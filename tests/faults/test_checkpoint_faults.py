"""Broken checkpoints on 2 gloo ranks: a save that dies between the ranks' writes, and a file
truncated after its checkpoint was marked complete. The next resume loads the previous
whole checkpoint, nothing else, and the finished run's losses equal an uninterrupted run's
bitwise. Both faults are deterministic (fixed steps, fixed files), so they reproduce."""

from __future__ import annotations

import os
import time

import pytest

from draw_megatron.config.run import RunConfig
from tests.distributed.harness import Killed, fit_until_killed, run_distributed
from tests.unit.data.synthetic import make_synthetic_root

STEPS, EVERY = 6, 2
RANK1_OPTIM = "zero_pp_rank_1_mp_rank_00_optim_states.pt"


def _cfg(root: str, run_dir: str) -> RunConfig:
    return RunConfig.from_dict({
        "run": {"dir": run_dir, "seed": 3},
        "model": {"n_layers": 1, "n_heads": 2, "head_dim": 16, "d_model": 32, "ffn_hidden": 64,
                  "vocab_size": 384, "seq_len": 16},
        "data": {"root": root},
        "mixture": {"kind": "natural"},
        "train": {"steps": STEPS, "global_batch": 8, "micro_batch": 2, "lr": 3e-3,
                  "min_lr": 3e-4, "precision": "fp32"},
        "eval": {"every": 0, "sequences_per_domain": 2},
        "checkpoint": {"every": EVERY, "keep": 0},
        "log": {"every": 1, "tensorboard": False},
    })


def _trainer(cfg: RunConfig):
    from draw_megatron.engine.deepspeed_engine import init_distributed
    from draw_megatron.parallel import ParallelTopology
    from draw_megatron.train.trainer import Trainer

    return Trainer(cfg, init_distributed(), ParallelTopology.from_dist(cfg.parallel.tp))


def _truncate(path: str) -> None:
    with open(path, "r+b") as fh:
        fh.truncate(os.path.getsize(path) // 2)


def _dying_save(trainer, step: int) -> None:
    """At checkpoint ``step`` both ranks write, rank 1's optimizer file is cut in half (it
    died mid-write) and both die before the marker."""
    import torch.distributed as dist

    real = trainer.engine.save_checkpoint

    def save_checkpoint(root, tag, **kw):
        out = real(root, tag=tag, **kw)
        if tag == f"step_{step:08d}":
            if dist.get_rank() == 1:
                _truncate(os.path.join(root, tag, RANK1_OPTIM))
            raise Killed
        return out

    trainer.engine.save_checkpoint = save_checkpoint


def _losses(cfg: RunConfig) -> list[float]:
    from draw_megatron.train.metrics import read_metrics

    return [r["loss"] for r in read_metrics(os.path.join(cfg.run.dir, "metrics.jsonl"), "train")]


def _resume_and_finish(cfg: RunConfig) -> tuple[int, list[float]]:
    """The step a resume of ``cfg`` starts from (checked as fit() resumes), and the losses of
    the run then finished."""
    import torch.distributed as dist

    trainer = _trainer(cfg)
    trainer.resume()
    step = trainer.state.step
    trainer.close()
    dist.barrier()
    fit_until_killed(_trainer(cfg))
    return step, _losses(cfg)


def _runs(rank: int, world: int, root: str, out: str) -> dict:
    import torch.distributed as dist

    from draw_megatron.train.checkpoint import CheckpointManager, checkpoint_files

    res = {}
    clean = _cfg(root, f"{out}/clean")
    fit_until_killed(_trainer(clean))
    res["clean"] = _losses(clean)
    ckpt = os.path.join(clean.run.dir, "checkpoints", f"step_{STEPS:08d}")
    start = time.perf_counter()
    files = checkpoint_files(ckpt)
    res["hash_seconds"], res["hash_bytes"] = (time.perf_counter() - start,
                                              sum(size for size, _ in files.values()))

    # A save that dies between the ranks' writes.
    crash = _cfg(root, f"{out}/crash")
    trainer = _trainer(crash)
    _dying_save(trainer, 4)
    fit_until_killed(trainer)
    res["crash_markers"] = CheckpointManager(os.path.join(crash.run.dir, "checkpoints"), 0,
                                             False).complete_steps()
    res["crash_resumed_from"], res["crash"] = _resume_and_finish(crash)

    # A file of a complete checkpoint truncated afterwards.
    cut = _cfg(root, f"{out}/cut")
    fit_until_killed(_trainer(cut), kill_at=5)  # checkpoints 2 and 4 are complete
    broken = os.path.join(cut.run.dir, "checkpoints", f"step_{4:08d}", RANK1_OPTIM)
    if rank == 0:
        _truncate(broken)
    dist.barrier()
    mgr = CheckpointManager(os.path.join(cut.run.dir, "checkpoints"), 0, rank == 0)
    res["cut_problem"] = mgr.verify(4)
    res["cut_latest"] = mgr.latest()
    res["cut_resumed_from"], res["cut"] = _resume_and_finish(cut)
    res["broken_file"] = broken
    return res


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    root = make_synthetic_root(str(tmp_path_factory.mktemp("ckpt_faults_data")), [24, 24],
                               seq_len=16, vocab_size=384, splits=("train", "val"))
    return run_distributed(_runs, 2, root, str(tmp_path_factory.mktemp("ckpt_faults")),
                           timeout=600)[0]


def test_a_save_that_died_between_ranks_is_never_loaded(runs):
    assert runs["crash_markers"] == [2]  # step 4's folder has no marker
    assert runs["crash_resumed_from"] == 2
    assert len(runs["clean"]) == STEPS and runs["crash"] == runs["clean"]


def test_a_file_truncated_after_the_marker_falls_back_to_the_previous_checkpoint(runs):
    assert runs["cut_latest"] == 4  # the marker alone would pick the broken one
    assert runs["cut_problem"].startswith(f"{runs['broken_file']} has ")
    assert "when it was saved" in runs["cut_problem"]
    assert runs["cut_resumed_from"] == 2
    assert runs["cut"] == runs["clean"]


def test_what_the_check_costs(runs):
    print(f"hashing the tiny model's checkpoint ({runs['hash_bytes']} bytes): "
          f"{runs['hash_seconds'] * 1e3:.1f} ms")
    assert runs["hash_bytes"] > 0
