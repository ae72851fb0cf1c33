"""tools/export_hf.py: a run folder in, a folder the Auto classes load out; one-line errors."""

from __future__ import annotations

import os

import pytest
import sentencepiece as spm
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from draw_megatron.data.tokenizer import Tokenizer
from draw_megatron.export.hf import export_hf
from draw_megatron.export.verify import logits_max_abs_diff, random_tokens
from draw_megatron.model import load_consolidated, save_consolidated
from tests.unit.export.helpers import SINGLE, make_run, tiny_model
from tests.unit.model.tiny import one_thread  # noqa: F401
from tests.unit.tools.conftest import load_tool

export_tool = load_tool("export_hf")


def _error_line(capsys, argv: list[str]) -> str:
    capsys.readouterr()  # drop what earlier calls logged
    assert export_tool.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("export_hf: error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_run_folder_exports_with_its_tokenizer_and_checks(tmp_path, demo_tokenizer_path,
                                                          demo_corpus_dir, capsys):
    run = str(tmp_path / "run")
    model, cfg = make_run(run, demo_tokenizer_path, norm="rmsnorm", mlp="swiglu",
                          tie_embeddings=False)
    out = os.path.join(run, "hf")
    corpus = os.path.join(demo_corpus_dir, "test.jsonl.zst")
    assert export_tool.main([run, "--out", out, "--check", "--check-corpus", corpus]) == 0
    printed = capsys.readouterr().out
    print(printed)
    assert "logits: max |Δ|" in printed and "tokenizer: " in printed
    assert sorted(os.listdir(out)) == ["config.json", "draw_export.json",
                                       "generation_config.json", "model.safetensors",
                                       "tokenizer.json", "tokenizer_config.json"]
    assert [n for n in os.listdir(run) if n.startswith(".")] == []  # no temporary left
    # What a user does: the Auto classes, no trust_remote_code, generate from a prompt.
    hf_model = AutoModelForCausalLM.from_pretrained(out)
    hf_tok = AutoTokenizer.from_pretrained(out)
    prompt = "def f(x):\n    return"
    ids = hf_tok(prompt, return_tensors="pt")["input_ids"]
    assert ids[0].tolist() == Tokenizer(demo_tokenizer_path).encode(prompt)
    generated = hf_model.generate(ids, max_new_tokens=5, do_sample=False)
    with torch.no_grad():  # greedy: each new token is our model's argmax
        ours = model(generated)[..., :cfg.vocab_size].argmax(-1)
    assert generated[0, ids.shape[1]:].tolist() == ours[0, ids.shape[1] - 1:-1].tolist()


def test_out_must_be_empty_or_overwritten(tmp_path, demo_tokenizer_path, capsys):
    run = str(tmp_path / "run")
    make_run(run, demo_tokenizer_path)
    out = tmp_path / "hf"
    out.mkdir()  # an empty folder is fine
    assert export_tool.main([run, "--out", str(out)]) == 0
    err = _error_line(capsys, [run, "--out", str(out)])
    assert "is not empty; pass --overwrite" in err
    (out / "stale.txt").write_text("old")
    assert export_tool.main([run, "--out", str(out), "--overwrite"]) == 0
    assert not (out / "stale.txt").exists() and (out / "model.safetensors").exists()


def test_a_model_file_needs_a_tokenizer(tmp_path, demo_tokenizer_path, capsys):
    model, cfg = tiny_model()
    path = save_consolidated(str(tmp_path / "m.safetensors"), model, SINGLE, cfg)
    err = _error_line(capsys, [path, "--out", str(tmp_path / "hf")])
    assert "no config.yaml beside" in err and "--tokenizer" in err
    err = _error_line(capsys, [path, "--out", str(tmp_path / "hf"),
                               "--tokenizer", str(tmp_path / "missing.model")])
    assert "tokenizer model" in err and "missing.model" in err and "not found" in err
    assert export_tool.main([path, "--out", str(tmp_path / "hf"),
                             "--tokenizer", demo_tokenizer_path]) == 0


def test_one_line_errors(tmp_path, demo_tokenizer_path, capsys):
    empty_run = tmp_path / "empty_run"
    empty_run.mkdir()
    err = _error_line(capsys, [str(empty_run), "--out", str(tmp_path / "hf")])
    assert "holds no model.safetensors" in err
    # A run whose data root's tokenizer went missing.
    run = str(tmp_path / "run")
    make_run(run, demo_tokenizer_path)
    os.remove(os.path.join(run, "data", "tokenizer.model"))
    err = _error_line(capsys, [run, "--out", str(tmp_path / "hf")])
    assert "tokenizer model" in err and "not found" in err
    # A model whose vocabulary is smaller than the tokenizer's.
    small = str(tmp_path / "small")
    make_run(small, demo_tokenizer_path, vocab_size=500)
    err = _error_line(capsys, [small, "--out", str(tmp_path / "hf")])
    pieces = spm.SentencePieceProcessor(model_file=demo_tokenizer_path).get_piece_size()
    assert f"model.vocab_size=500) is smaller than the tokenizer's {pieces} pieces" in err
    assert not (tmp_path / "hf").exists()


def test_a_larger_model_vocabulary_is_kept(tmp_path, demo_tokenizer_path):
    # Ids the tokenizer never makes still get rows: the model keeps its own vocabulary.
    run = str(tmp_path / "run")
    _, cfg = make_run(run, demo_tokenizer_path, vocab_size=1100)
    out = export_hf(run, str(tmp_path / "hf"))
    state, _ = load_consolidated(run)
    tokens = random_tokens(cfg.vocab_size, num_sequences=2, seq_len=16)
    assert AutoModelForCausalLM.from_pretrained(out).config.vocab_size == 1100
    assert logits_max_abs_diff(out, state, cfg, tokens) <= 1e-4
