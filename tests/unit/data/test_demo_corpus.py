import importlib.util
import json
import os
import re
from collections import defaultdict

import pytest

from draw_megatron.data.demo_corpus import (DOMAINS, MIN_EVAL_DOCS, SPLIT_FILES, SPLITS,
                                            SUMMARY_FILE, DemoCorpusConfig, Doc, assign_splits,
                                            build_demo_corpus, split_text)
from draw_megatron.data.pile import BadInputLog, iter_documents
from tests.conftest import DEMO_MAX_MB_PER_DOMAIN

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
TINY_MB = 0.02


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _read_split(corpus: str, split: str) -> tuple[dict[str, list[str]], BadInputLog]:
    log = BadInputLog()
    docs: dict[str, list[str]] = defaultdict(list)
    for domain, text in iter_documents([os.path.join(corpus, SPLIT_FILES[split])], log):
        docs[domain].append(text)
    return docs, log


def _file_bytes(corpus: str) -> dict[str, bytes]:
    out = {}
    for rel in list(SPLIT_FILES.values()) + [SUMMARY_FILE]:
        with open(os.path.join(corpus, rel), "rb") as fh:
            out[rel] = fh.read()
    return out


def test_pile_layout_with_every_domain_in_every_split(demo_corpus_dir):
    found = sorted(os.path.relpath(os.path.join(b, f), demo_corpus_dir)
                   for b, _, files in os.walk(demo_corpus_dir) for f in files)
    assert found == sorted([SUMMARY_FILE, "test.jsonl.zst", "train/00.jsonl.zst", "val.jsonl.zst"])
    leftovers = [n for n in os.listdir(os.path.dirname(demo_corpus_dir)) if ".tmp-" in n]
    assert leftovers == []
    names = {src.name for src in DOMAINS}
    assert len(names) >= 8
    for split in SPLITS:
        docs, log = _read_split(demo_corpus_dir, split)
        assert log.total == 0, log.describe()
        assert set(docs) == names, split
        for domain, texts in docs.items():
            assert all(isinstance(t, str) and t.strip() for t in texts)
            if split != "train":
                assert len(texts) >= MIN_EVAL_DOCS, (split, domain)


def test_summary_matches_the_files(demo_corpus_dir):
    with open(os.path.join(demo_corpus_dir, SUMMARY_FILE), encoding="utf-8") as fh:
        summary = json.load(fh)
    assert summary["max_mb_per_domain"] == DEMO_MAX_MB_PER_DOMAIN
    for split in SPLITS:
        docs, _ = _read_split(demo_corpus_dir, split)
        for entry in summary["domains"]:
            texts = docs[entry["name"]]
            assert entry["splits"][split] == {
                "documents": len(texts), "bytes": sum(len(t.encode("utf-8")) for t in texts)}
    for entry in summary["domains"]:
        total = sum(entry["splits"][s]["bytes"] for s in SPLITS)
        share = 0.5 if entry["name"] == "Noise" else 1.0
        assert total <= DEMO_MAX_MB_PER_DOMAIN * 1e6 * share


def test_same_seed_same_bytes_other_seed_other_bytes(demo_corpus_dir, tmp_path):
    again = str(tmp_path / "again")
    build_demo_corpus(again, DemoCorpusConfig(seed=0, max_mb_per_domain=DEMO_MAX_MB_PER_DOMAIN))
    assert _file_bytes(again) == _file_bytes(demo_corpus_dir)
    other = str(tmp_path / "other")
    build_demo_corpus(other, DemoCorpusConfig(seed=1, max_mb_per_domain=DEMO_MAX_MB_PER_DOMAIN))
    assert _file_bytes(other)["train/00.jsonl.zst"] != _file_bytes(demo_corpus_dir)["train/00.jsonl.zst"]


def test_generated_arithmetic_answers_are_right(demo_corpus_dir):
    docs, _ = _read_split(demo_corpus_dir, "train")
    checks = {
        r"What is (-?\d+) \+ (-?\d+)\?": lambda a, b: a + b,
        r"Calculate (-?\d+) - (-?\d+)\.": lambda a, b: a - b,
        r"Multiply (-?\d+) and (-?\d+)\.": lambda a, b: a * b,
        r"Divide (-?\d+) by (-?\d+)\.": lambda a, b: a // b,
        r"Solve (-?\d+)\*x \+ (-?\d+) = (-?\d+) for x\.": lambda k, c, r: (r - c) // k,
    }
    num_checked = 0
    for text in docs["Arithmetic"]:
        for question, answer in re.findall(r"Question: (.*)\nAnswer: (.*)\n", text):
            for pattern, solve in checks.items():
                if m := re.fullmatch(pattern, question):
                    assert int(answer) == solve(*map(int, m.groups())), question
                    num_checked += 1
    assert num_checked > 50


def test_existing_output_is_refused_unless_overwrite(tmp_path):
    out = tmp_path / "corpus"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    cfg = DemoCorpusConfig(max_mb_per_domain=TINY_MB)
    with pytest.raises(FileExistsError, match="overwrite"):
        build_demo_corpus(str(out), cfg)
    assert (out / "keep.txt").exists()
    build_demo_corpus(str(out), cfg, overwrite=True)
    assert not (out / "keep.txt").exists()
    assert (out / SUMMARY_FILE).exists()
    assert sorted(os.listdir(tmp_path)) == ["corpus"]  # no temporary folder left behind


def test_split_text_is_lossless_and_bounded():
    text = "para one\nline two\n\n" + "x" * 500 + "\n\n" + "日本語 " * 300 + "\ntail"
    for max_bytes in (10, 64, 700, 10_000):
        pieces = split_text(text, max_bytes)
        assert "".join(pieces) == text
        assert all(0 < len(p.encode("utf-8")) <= max_bytes for p in pieces)


def test_every_split_gets_its_minimum():
    docs = [Doc(f"d{i}", "text") for i in range(6)]
    splits = assign_splits("X", docs)
    assert [len(splits[s]) >= n for s, n in (("train", 1), ("val", 2), ("test", 2))] == [True] * 3
    assert sorted(d.id for s in SPLITS for d in splits[s]) == sorted(d.id for d in docs)
    with pytest.raises(ValueError, match="max_mb_per_domain"):
        assign_splits("X", docs[:5])


def test_config_is_validated():
    with pytest.raises(ValueError, match="max_mb_per_domain"):
        DemoCorpusConfig(max_mb_per_domain=0)
    with pytest.raises(ValueError, match="seed"):
        DemoCorpusConfig(seed=-1)


def test_cli(tmp_path, capsys):
    tool = _tool("make_demo_corpus")
    with pytest.raises(SystemExit) as exc:
        tool.main(["--help"])
    assert exc.value.code == 0 and "--max-mb-per-domain" in capsys.readouterr().out
    out = str(tmp_path / "c")
    assert tool.main(["--out", out, "--max-mb-per-domain", str(TINY_MB), "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    assert "Arithmetic" in printed and "total" in printed
    assert tool.main(["--out", out]) == 2
    assert "exists" in capsys.readouterr().err
