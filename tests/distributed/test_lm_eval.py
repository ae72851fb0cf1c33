"""lm-eval over 2 gloo ranks: TP = 2, DP = 2 and a live sequence-parallel TP = 2 module give
the single process's loglikelihoods, greedy flags and generations, and tools/eval_lm.py the
same scores."""

from __future__ import annotations

import json
import os

import pytest
import torch

from draw_megatron.data.tokenizer import Tokenizer
from draw_megatron.eval.lm_eval_model import DrawMegatronLM
from draw_megatron.model import GPT, load_consolidated_into
from draw_megatron.parallel import ParallelTopology
from tests.distributed.harness import run_distributed
from tests.unit.eval.tiny_lm import (TASKS_DIR, generation_requests, loglikelihood_requests,
                                     rolling_requests, tiny_config, write_run)
from tests.unit.tools.conftest import load_tool

TOL = 1e-5
TASKS = ["--tasks", "draw_tiny_mc,draw_tiny_gen,draw_tiny_text", "--include-path", TASKS_DIR,
         "--only-include-path", "--bootstrap-iters", "10", "--batch-size", "3"]


def _scores(lm: DrawMegatronLM) -> dict:
    return {"loglikelihood": lm.loglikelihood(loglikelihood_requests()),
            "rolling": lm.loglikelihood_rolling(rolling_requests()),
            "generate": lm.generate_until(generation_requests(until=["\n"], max_gen_toks=5))}


def _rank(rank: int, world_size: int, run: str, tokenizer: str, outs: dict) -> dict:
    torch.set_num_threads(1)
    scores = {f"tp{tp}": _scores(DrawMegatronLM.from_pretrained(run, tp=tp, batch_size=2))
              for tp in (2, 1)}
    topology = ParallelTopology.from_dist(tp=2)
    live = GPT(tiny_config(), topology, sequence_parallel=True)
    load_consolidated_into(os.path.join(run, "model.safetensors"), live, topology)
    scores["tp2_sequence_parallel"] = _scores(
        DrawMegatronLM(live, topology, Tokenizer(tokenizer), batch_size=3))
    tool = load_tool("eval_lm")
    for tp, out in outs.items():
        assert tool.main([run, *TASKS, "--tp", str(tp), "--out", out]) == 0
    return scores


def _same(got: dict, want: dict, tag: str) -> None:
    for (lp, greedy), (lp_want, greedy_want) in zip(got["loglikelihood"], want["loglikelihood"]):
        assert abs(lp - lp_want) <= TOL and greedy == greedy_want, tag
    for lp, lp_want in zip(got["rolling"], want["rolling"], strict=True):
        assert abs(lp - lp_want) <= TOL * 4, tag
    assert got["generate"] == want["generate"], tag


def _metrics(out: str) -> dict:
    with open(os.path.join(out, "results.json"), encoding="utf-8") as fh:
        results = json.load(fh)["results"]
    return {task: {k: v for k, v in m.items() if "," in k} for task, m in results.items()}


def test_tp2_dp2_and_sequence_parallel_match_one_process(demo_tokenizer_path, tmp_path,
                                                         monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the spawned ranks inherit it
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    run = write_run(str(tmp_path / "run"), demo_tokenizer_path)
    single = _scores(DrawMegatronLM.from_pretrained(run, batch_size=3))
    assert load_tool("eval_lm").main([run, *TASKS, "--out", str(tmp_path / "single")]) == 0
    outs = {2: str(tmp_path / "tp2"), 1: str(tmp_path / "dp2")}
    per_rank = run_distributed(_rank, 2, run, demo_tokenizer_path, outs, timeout=300)
    for rank, scores in enumerate(per_rank):
        for layout, got in scores.items():
            _same(got, single, f"rank {rank} {layout}")
    want = _metrics(str(tmp_path / "single"))
    for out in outs.values():
        got = _metrics(out)
        assert got.keys() == want.keys()
        for task, metrics in want.items():
            for key, value in metrics.items():
                if isinstance(value, float):
                    assert got[task][key] == pytest.approx(value, rel=1e-6, abs=1e-9), (out, key)
                else:
                    assert got[task][key] == value, (out, key)
