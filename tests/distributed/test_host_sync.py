"""The training step reads nothing from the device between log steps, and the records it
writes later are those of a run that read every step.

The probe: every device→host read of a tensor (``item``, ``tolist``, ``cpu``, ``numpy``,
``float``/``int``/``bool``) made from the project's code is counted per training step. On a
GPU each such read waits for the device queue to drain; on CPU the same calls are made, so
counting them shows the step's behaviour without a GPU. Reads inside DeepSpeed and torch are
not counted (not ours to change).
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter

from draw_megatron.config.run import RunConfig
from tests.distributed.harness import run_distributed
from tests.unit.data.synthetic import make_synthetic_root

STEPS = 12
PROJECT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OURS = os.path.join(PROJECT, "draw_megatron") + os.sep
READS = ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__")


def _cfg(root: str, run_dir: str, log_every: int, mix: str) -> RunConfig:
    return RunConfig.from_dict({
        "run": {"dir": run_dir, "seed": 3},
        "model": {"n_layers": 1, "n_heads": 2, "head_dim": 16, "d_model": 32, "ffn_hidden": 64,
                  "vocab_size": 384, "seq_len": 16},
        "zero": {"stage": 1},
        "data": {"root": root},
        "mixture": {"kind": "dirichlet", "redraw_every": 3, "file": mix},
        "train": {"steps": STEPS, "global_batch": 8, "micro_batch": 2, "lr": 3e-3,
                  "min_lr": 3e-4, "precision": "fp32", "grad_clip": 1.0},
        "eval": {"every": 0, "sequences_per_domain": 2},
        "checkpoint": {"every": 0, "keep": 0},
        "log": {"every": log_every, "tensorboard": False},
    })


def _probed_run(cfg: RunConfig) -> tuple[dict, list]:
    """Fit; return {step: reads from our code during that step's train_step} and the
    train records."""
    import torch

    from draw_megatron.engine.deepspeed_engine import init_distributed
    from draw_megatron.parallel import ParallelTopology
    from draw_megatron.train.metrics import read_metrics
    from draw_megatron.train.trainer import Trainer

    trainer = Trainer(cfg, init_distributed(), ParallelTopology.from_dist(cfg.parallel.tp))
    reads: Counter = Counter()
    current = {"step": None}
    originals = {name: getattr(torch.Tensor, name) for name in READS}

    def probe(name):
        real = originals[name]

        def counted(self, *args, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            if current["step"] is not None and caller.startswith(OURS):
                reads[current["step"]] += 1
            return real(self, *args, **kwargs)
        return counted

    step_fn = trainer.train_step

    def watched_step():
        current["step"] = trainer.state.step
        try:
            return step_fn()
        finally:
            current["step"] = None

    trainer.train_step = watched_step
    for name in READS:
        setattr(torch.Tensor, name, probe(name))
    try:
        trainer.fit()
    finally:
        for name, real in originals.items():
            setattr(torch.Tensor, name, real)
        trainer.close()
    records = read_metrics(os.path.join(cfg.run.dir, "metrics.jsonl"), "train")
    return dict(reads), records


def _runs(rank, world, root, out, mix):
    """The same run with log.every 4 and 1."""
    quiet = _probed_run(_cfg(root, os.path.join(out, "every4"), 4, mix=mix))
    loud = _probed_run(_cfg(root, os.path.join(out, "every1"), 1, mix=mix))
    return quiet, loud


def test_no_host_read_between_log_steps_and_records_stay_exact(tmp_path):
    root = make_synthetic_root(str(tmp_path / "data"), [12, 12, 12], seq_len=16, vocab_size=384,
                               splits=("train", "val"))
    mix = tmp_path / "mix.json"
    mix.write_text(json.dumps({"format": "draw-mixture/v1", "kind": "dirichlet",
                               "domains": ["Domain 0", "Domain 1", "Domain 2"],
                               "concentration": [2.0, 3.0, 4.0]}))
    (quiet, loud), _ = run_distributed(_runs, 2, root, str(tmp_path), str(mix), timeout=240)
    (reads4, train4), (reads1, train1) = quiet, loud
    due = {3, 7, 11}  # steps after which log.every=4 (and the last step) writes records
    assert {s for s, n in reads4.items() if n} == due, reads4
    assert all(reads1.get(s, 0) > 0 for s in range(STEPS)), reads1  # the probe sees reads
    # Records between log steps are still each step's own, bitwise.
    assert [r["step"] for r in train4] == list(range(STEPS))
    for a, b in zip(train4, train1):
        for key in ("loss", "domain_loss", "domain_tokens", "alpha", "lr", "grad_norm"):
            assert a[key] == b[key], (a["step"], key)
    # One window shares one throughput figure.
    assert len({r["tokens_per_s"] for r in train4[:4]}) == 1
