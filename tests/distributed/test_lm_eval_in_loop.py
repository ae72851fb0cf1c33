"""In-loop lm-eval (eval.lm_tasks, eval.lm_every): `lm_eval` records at the right steps,
the results files, and training losses bitwise those of a run without it (2 gloo ranks,
the demo corpus converted with the session tokenizer, the local test tasks)."""

from __future__ import annotations

import glob
import os

import pytest

from draw_megatron.config.run import RunConfig
from tests.distributed.harness import fit_until_killed, run_distributed
from tests.unit.eval.tiny_lm import TASKS_DIR

STEPS = 6
EVERY = 4


def _cfg(root: str, run_dir: str, **eval_keys) -> RunConfig:
    return RunConfig.from_dict({
        "run": {"dir": run_dir, "seed": 9},
        "model": {"n_layers": 1, "n_heads": 2, "head_dim": 16, "d_model": 32, "ffn_hidden": 64,
                  "vocab_size": 1000, "seq_len": 64},
        "data": {"root": root},
        "train": {"steps": STEPS, "global_batch": 4, "micro_batch": 2, "lr": 3e-3,
                  "min_lr": 3e-4, "precision": "fp32"},
        "eval": {"every": 0, "sequences_per_domain": 2, **eval_keys},
        "checkpoint": {"every": 0},
        "log": {"every": 1, "tensorboard": False},
        "lm_eval": {"include_path": [TASKS_DIR], "only_include_path": True, "limit": 4,
                    "bootstrap_iters": 0, "batch_size": 4},
    })


def _runs(rank: int, world: int, root: str, out: str) -> dict:
    from draw_megatron.data.manifest import Manifest
    from draw_megatron.engine.deepspeed_engine import init_distributed
    from draw_megatron.parallel import ParallelTopology
    from draw_megatron.passes.registry import check_passes
    from draw_megatron.train.metrics import read_metrics
    from draw_megatron.train.trainer import Trainer

    res = {"out": out}
    for name, keys in (("plain", {}),
                       ("lm", {"lm_tasks": ["draw_tiny_mc", "draw_tiny_gen"],
                               "lm_every": EVERY})):
        cfg = _cfg(root, f"{out}/{name}", **keys)
        check_passes(cfg, Manifest.load(root))
        trainer = Trainer(cfg, init_distributed(), ParallelTopology.from_dist(1))
        res[f"{name}_passes"] = [p.name for p in trainer.passes]
        fit_until_killed(trainer)
        path = os.path.join(cfg.run.dir, "metrics.jsonl")
        res[name] = {"loss": [r["loss"] for r in read_metrics(path, "train")],
                     "lm_eval": read_metrics(path, "lm_eval")}
    return res


@pytest.fixture(scope="module")
def ranks(demo_corpus_dir, demo_tokenizer_path, tmp_path_factory):
    from draw_megatron.data.convert import ConvertConfig, convert_corpus

    root = str(tmp_path_factory.mktemp("in_loop") / "data")
    splits = {"train": sorted(glob.glob(os.path.join(demo_corpus_dir, "train", "*.jsonl.zst"))),
              "val": [os.path.join(demo_corpus_dir, "val.jsonl.zst")]}
    convert_corpus(splits, demo_tokenizer_path, root, ConvertConfig(seq_len=64, workers=1))
    os.environ.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    return run_distributed(_runs, 2, root, str(tmp_path_factory.mktemp("in_loop_runs")),
                           timeout=600)


def test_records_at_the_right_steps(ranks):
    res = ranks[0]
    assert res["plain_passes"] == [] and res["lm_passes"] == ["lm_eval"]
    records = res["lm"]["lm_eval"]
    assert sorted({r["step"] for r in records}) == [EVERY, STEPS]  # every 4 and the last
    tasks = {(r["task"], r["metric"]) for r in records}
    assert ("draw_tiny_mc", "acc") in tasks and any(t == "draw_tiny_gen" for t, _ in tasks)
    assert all(set(r) == {"kind", "step", "task", "metric", "value", "stderr"} for r in records)


def test_training_is_untouched(ranks):
    assert ranks[0]["lm"]["loss"] == ranks[0]["plain"]["loss"]  # bitwise


def test_results_files(ranks):
    out = glob.glob(os.path.join(ranks[0]["out"], "lm", "lm_eval", "step_*.json"))
    assert sorted(os.path.basename(p) for p in out) == [f"step_{EVERY:08d}.json",
                                                       f"step_{STEPS:08d}.json"]
