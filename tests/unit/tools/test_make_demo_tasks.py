"""tools/make_demo_tasks.py: held-out arithmetic as multiple choice and Python Docs pieces,
as lm-eval tasks that load offline."""

import json
import os

import pytest
import zstandard

from tests.unit.tools.conftest import load_tool


@pytest.fixture(scope="module")
def tool():
    return load_tool("make_demo_tasks")


def _write(path, docs):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    text = "".join(json.dumps({"text": t, "meta": {"pile_set_name": d}}) + "\n" for d, t in docs)
    with open(path, "wb") as fh:
        fh.write(zstandard.ZstdCompressor().compress(text.encode()))


def _arith(n, start=0):
    return "".join(f"Question: What is {i} plus {i}?\nAnswer: {2 * i}\n\n"
                   "Question: Sort 3, 1.\nAnswer: 1, 3\n\n" for i in range(start, start + n))


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "corpus"
    _write(str(root / "train" / "00.jsonl.zst"), [("Arithmetic", _arith(3))])
    _write(str(root / "val.jsonl.zst"), [("Arithmetic", _arith(30, 100))])
    docs = "\n".join(f"line {i} of the docs " + "x" * 40 for i in range(40))
    _write(str(root / "test.jsonl.zst"), [("Arithmetic", _arith(12, 7)), ("Python Docs", docs),
                                          ("Noise", "zzz")])
    return str(root)


def test_tasks_hold_the_held_out_questions_and_load_in_lm_eval(tool, corpus, tmp_path):
    out = tmp_path / "tasks"
    assert tool.main(["--corpus", corpus, "--out", str(out), "--questions", "10",
                      "--max-chars", "300", "--documents", "5"]) == 0
    items = [json.loads(line) for line in open(out / "arith_test.jsonl")]
    assert len(items) == 10  # integer answers only ("1, 3" is skipped), the first 10
    for i, item in enumerate(items):
        value = 2 * (7 + i)
        assert item["question"] == f"What is {7 + i} plus {7 + i}?"
        assert item["choices"][item["answer"]] == str(value)
        assert len(set(item["choices"])) == 4
    shots = [json.loads(line) for line in open(out / "arith_train.jsonl")]
    assert shots and all(s["question"].startswith("What is 1") for s in shots)  # from val
    pieces = [json.loads(line)["text"] for line in open(out / "python_docs_test.jsonl")]
    assert len(pieces) == 5 and all(len(p) <= 300 for p in pieces)
    assert pieces[0].startswith("line 0 of the docs") and pieces[1].startswith("line ")

    from draw_megatron.eval import lm_eval_tasks as lmt

    manager = lmt.task_manager([str(out)], include_defaults=False)
    loaded = lmt.load_tasks(manager, [lmt.TaskSpec("demo_arith_mc"),
                                      lmt.TaskSpec("demo_python_docs")])
    docs = {t.config.task: list(t.test_docs()) for t in loaded}
    assert len(docs["demo_arith_mc"]) == 10 and len(docs["demo_python_docs"]) == 5


def test_missing_domain_and_existing_out_are_errors(tool, corpus, tmp_path, capsys):
    empty = tmp_path / "empty"
    _write(str(empty / "train" / "00.jsonl.zst"), [("Noise", "a")])
    _write(str(empty / "val.jsonl.zst"), [("Noise", "a")])
    _write(str(empty / "test.jsonl.zst"), [("Noise", "a")])
    assert tool.main(["--corpus", str(empty), "--out", str(tmp_path / "t")]) == 2
    assert "no Arithmetic questions in the test split" in capsys.readouterr().err
    assert not (tmp_path / "t").exists() and not list(tmp_path.glob(".tasks_*"))
    (tmp_path / "t2").mkdir()
    assert tool.main(["--corpus", corpus, "--out", str(tmp_path / "t2")]) == 2
    assert "exists (use --overwrite)" in capsys.readouterr().err
