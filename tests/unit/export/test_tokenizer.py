"""The exported tokenizer gives our SentencePiece ids on every document, and decodes back."""

from __future__ import annotations

import json
import os

import pytest
from transformers import AutoTokenizer

from draw_megatron.data.pile import BadInputLog, iter_documents
from draw_megatron.data.tokenizer import META_SYMBOL, Tokenizer
from draw_megatron.export.tokenizer import build_hf_tokenizer
from draw_megatron.export.verify import tokenizer_mismatches
from tests.unit.data.test_tokenizer import HAND_WRITTEN, SPLIT_FILES

EDGE_CASES = ["", " ", "  ", "\n", "\t\t", META_SYMBOL, META_SYMBOL * 3, f" {META_SYMBOL} ",
              "<s>", "</s>", "<unk>", "<0x41>", "a</s>b", "    return x\n" * 3, "1234567890"]


@pytest.fixture(scope="module")
def exported(demo_tokenizer_path, tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("hf_tokenizer"))
    build_hf_tokenizer(demo_tokenizer_path, model_max_length=256).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def corpus(demo_corpus_dir) -> list[str]:
    log = BadInputLog()
    texts = [t for _, t in iter_documents(
        [os.path.join(demo_corpus_dir, f) for f in SPLIT_FILES], log)]
    assert log.total == 0
    return texts


def test_every_corpus_document_gives_our_ids(exported, demo_tokenizer_path, corpus):
    # The corpus holds indented source code, C headers, runs of spaces, and U+2581 (Noise).
    assert len(corpus) > 100 and any(META_SYMBOL in t for t in corpus)
    assert any("\n        " in t for t in corpus)
    texts = corpus + [HAND_WRITTEN] + EDGE_CASES
    assert tokenizer_mismatches(exported, demo_tokenizer_path, texts) == []
    hf = AutoTokenizer.from_pretrained(exported)
    for text in texts:
        assert hf.decode(hf(text)["input_ids"]) == text


def test_special_tokens_and_settings(exported, demo_tokenizer_path):
    ours = Tokenizer(demo_tokenizer_path)
    hf = AutoTokenizer.from_pretrained(exported)
    assert (hf.eos_token_id, hf.bos_token_id, hf.unk_token_id) == (ours.eos_id, ours.bos_id,
                                                                    ours.unk_id)
    assert hf.pad_token_id is None  # our model has no pad id
    assert len(hf) == ours.vocab_size and hf.model_max_length == 256
    # Nothing added around a document, and a special token's spelling is plain text.
    assert hf("a</s>b")["input_ids"] == ours.encode("a</s>b") != [ours.eos_id]
    assert ours.eos_id not in hf("x </s>")["input_ids"]
    with open(os.path.join(exported, "tokenizer_config.json"), encoding="utf-8") as fh:
        config = json.load(fh)
    assert "auto_map" not in config  # stock code only


def test_a_mismatch_is_reported(exported, demo_tokenizer_path, tmp_path):
    # A tokenizer that differs (the same pieces with the spaces left as "▁") is caught.
    with open(os.path.join(exported, "tokenizer.json"), encoding="utf-8") as fh:
        data = json.load(fh)
    data["model"]["vocab"] = {k.replace(" ", META_SYMBOL): v for k, v in data["model"]["vocab"].items()}
    data["model"]["merges"] = [[a.replace(" ", META_SYMBOL), b.replace(" ", META_SYMBOL)]
                               for a, b in data["model"]["merges"]]
    for name in ("tokenizer_config.json",):
        with open(os.path.join(exported, name), encoding="utf-8") as src, \
                open(tmp_path / name, "w", encoding="utf-8") as dst:
            dst.write(src.read())
    with open(tmp_path / "tokenizer.json", "w", encoding="utf-8") as fh:
        json.dump(data, fh)
    assert tokenizer_mismatches(str(tmp_path), demo_tokenizer_path, ["x y", "xy"]) == [0]
