"""tools/eval_lm.py end to end on the local tasks (tests/assets/lm_eval), its one-line errors,
and the suites' names against lm-eval's own task index."""

from __future__ import annotations

import json
import os

import datasets
import huggingface_hub
import pytest

from draw_megatron.eval.lm_eval_model import DrawMegatronLM
from draw_megatron.eval.lm_eval_tasks import SUITES, TaskError, load_tasks, task_manager
from draw_megatron.model import GPT, save_consolidated
from draw_megatron.parallel import ParallelTopology
from tests.unit.eval.tiny_lm import TASKS_DIR, requests, tiny_config
from tests.unit.model.tiny import one_thread  # noqa: F401  (fixture)
from tests.unit.tools.conftest import load_tool

LOCAL = ["--include-path", TASKS_DIR, "--only-include-path", "--bootstrap-iters", "10"]


@pytest.fixture(scope="module")
def tool():
    return load_tool("eval_lm")


def _read_jsonl(name: str) -> list[dict]:
    with open(os.path.join(TASKS_DIR, name), encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def _fails(tool, capsys, argv: list[str], out: str) -> str:
    assert tool.main([*argv, "--out", out]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert not os.path.exists(out), "nothing may be written on error"
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_local_tasks_end_to_end(tool, tiny_run, tmp_path, capsys):
    out = str(tmp_path / "eval")
    argv = [tiny_run, "--tasks", "draw_tiny_mc,draw_tiny_gen,draw_tiny_text", *LOCAL,
            "--batch-size", "4", "--out", out]
    assert tool.main(argv) == 0
    printed = capsys.readouterr().out
    assert "requests/s" in printed
    with open(os.path.join(out, "results.json"), encoding="utf-8") as fh:
        results = json.load(fh)
    scores = results["results"]
    assert scores["draw_tiny_gen"]["sample_len"] == 10
    assert "exact_match,none" in scores["draw_tiny_gen"]
    assert scores["draw_tiny_text"]["bits_per_byte,none"] > 0
    # 10 docs x 4 choices, 10 generations, 4 texts.
    assert results["draw_megatron"]["requests"] == 54
    # Accuracy is the share of questions whose answer has the highest loglikelihood, from
    # our model's own scores (lm-eval joins context and choice with a space).
    lm = DrawMegatronLM.from_pretrained(tiny_run)
    docs = _read_jsonl("mc_test.jsonl")
    correct = 0
    for doc in docs:
        context = f"Question: {doc['question']}\nAnswer:"
        scored = lm.loglikelihood(requests("loglikelihood",
                                           [(context, " " + c) for c in doc["choices"]]))
        best = max(range(len(scored)), key=lambda i: scored[i][0])
        correct += best == doc["answer"]
    assert scores["draw_tiny_mc"]["acc,none"] == pytest.approx(correct / len(docs))
    with open(os.path.join(out, "results.md"), encoding="utf-8") as fh:
        table = fh.read()
    assert table.startswith("| task | metric | value | stderr |")
    assert f"| draw_tiny_mc | acc | {correct / len(docs):.4f} |" in table
    assert sorted(os.listdir(out)) == ["results.json", "results.md"]


def test_few_shot_and_limit(tool, tiny_run, tmp_path):
    out = str(tmp_path / "eval")
    assert tool.main([tiny_run, "--tasks", "draw_tiny_mc", "--num-fewshot", "2", "--limit", "3",
                      *LOCAL, "--out", out]) == 0
    with open(os.path.join(out, "results.json"), encoding="utf-8") as fh:
        results = json.load(fh)
    assert results["n-shot"]["draw_tiny_mc"] == 2
    assert results["n-samples"]["draw_tiny_mc"]["effective"] == 3
    assert results["draw_megatron"]["requests"] == 3 * 4


def test_unknown_task_names_close_matches(tool, tiny_run, tmp_path, capsys):
    line = _fails(tool, capsys, [tiny_run, "--tasks", "draw_tiny_mcq", *LOCAL], str(tmp_path / "o"))
    assert "does not know the task 'draw_tiny_mcq' (close: draw_tiny_mc" in line


def test_missing_dataset_names_task_and_dataset(tool, tiny_run, tmp_path, capsys):
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "offline.yaml").write_text(
        "task: draw_offline_task\ndataset_path: draw-megatron-tests/absent\n"
        "dataset_name: subset\noutput_type: multiple_choice\ntest_split: test\n"
        "doc_to_text: '{{q}}'\ndoc_to_choice: '{{c}}'\ndoc_to_target: 0\n")
    line = _fails(tool, capsys, [tiny_run, "--tasks", "draw_tiny_mc,draw_offline_task",
                                 "--include-path", TASKS_DIR, "--include-path", str(tasks),
                                 "--only-include-path"], str(tmp_path / "o"))
    assert ("task 'draw_offline_task': its dataset 'draw-megatron-tests/absent' (subset) "
            "cannot be loaded") in line
    assert "Hugging Face datasets cache" in line


def test_run_without_consolidated_model(tool, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    line = _fails(tool, capsys, [str(run), "--tasks", "draw_tiny_mc", *LOCAL], str(tmp_path / "o"))
    assert f"run directory {run} has no consolidated model.safetensors" in line


def test_vocabulary_smaller_than_tokenizer(tool, demo_tokenizer_path, tmp_path, capsys):
    cfg, single = tiny_config(vocab_size=400), ParallelTopology.single()
    model = save_consolidated(str(tmp_path), GPT(cfg, single), single, cfg)
    line = _fails(tool, capsys, [model, "--tokenizer", demo_tokenizer_path, "--tasks",
                                 "draw_tiny_mc", *LOCAL], str(tmp_path / "o"))
    assert "vocabulary (400 ids) is smaller than the tokenizer's (1000" in line


def test_no_task_and_existing_out(tool, tiny_run, tmp_path, capsys):
    assert "no task" in _fails(tool, capsys, [tiny_run, *LOCAL], str(tmp_path / "o"))
    (tmp_path / "taken").mkdir()
    assert tool.main([tiny_run, "--tasks", "draw_tiny_mc", *LOCAL,
                      "--out", str(tmp_path / "taken")]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err


def test_suites_use_lm_evals_task_names_and_name_missing_datasets(monkeypatch, tmp_path):
    """lm-eval's own index (tens of seconds to build): every suite name is a task or group
    there, and offline, with empty caches, the DGA suite stops at MMLU's first dataset."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    manager = task_manager()
    known = set(manager.all_tasks)
    assert {spec.name for suite in SUITES.values() for spec in suite} <= known
    with pytest.raises(TaskError, match=r"task 'mmlu_\w+' \(part of 'mmlu'\): its dataset "
                                        r"'cais/mmlu' \(\w+\) cannot be loaded"):
        load_tasks(manager, SUITES["dga"])
