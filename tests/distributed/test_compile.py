"""train.compile=true (torch.compile per block, inductor on CPU): 20 steps give the eager
losses to 1e-4, and the checkpoint and exported model keep their parameter names."""

from __future__ import annotations

import os

import pytest

from tests.distributed.harness import run_distributed
from tests.distributed.test_trainer import _cfg
from tests.unit.data.synthetic import make_synthetic_root

STEPS = 20


def _run(rank, world, root, out):
    from draw_megatron.engine.deepspeed_engine import init_distributed
    from draw_megatron.model import load_consolidated
    from draw_megatron.parallel import ParallelTopology
    from draw_megatron.train.metrics import read_metrics
    from draw_megatron.train.trainer import Trainer
    from tests.distributed.harness import fit_until_killed

    res = {}
    for name, compiled in (("eager", False), ("compiled", True)):
        cfg = _cfg(root, f"{out}/{name}", steps=STEPS)
        cfg.train.compile = compiled
        trainer = Trainer(cfg, init_distributed(), ParallelTopology.from_dist(1))
        fit_until_killed(trainer)
        res[name] = [r["loss"] for r in read_metrics(os.path.join(cfg.run.dir, "metrics.jsonl"),
                                                      "train")]
        state, _ = load_consolidated(os.path.join(cfg.run.dir, "model.safetensors"))
        res[f"{name}_keys"] = sorted(state)
    return res


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    root = make_synthetic_root(str(tmp_path_factory.mktemp("compile_data")), [40, 40, 40],
                               seq_len=16, vocab_size=384, splits=("train", "val"))
    return run_distributed(_run, 1, root, str(tmp_path_factory.mktemp("compile")),
                           timeout=900)[0]


def test_compiled_losses_equal_eager(single):
    assert len(single["compiled"]) == STEPS
    for a, b in zip(single["compiled"], single["eager"]):
        assert a == pytest.approx(b, abs=1e-4)
    assert single["compiled_keys"] == single["eager_keys"]
