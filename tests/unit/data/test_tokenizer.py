import hashlib
import importlib.util
import json
import os
import pickle

import numpy as np
import pytest
import sentencepiece as spm

from draw_megatron.data.pile import BadInputLog, iter_documents
from draw_megatron.data.tokenizer import (META_SYMBOL, Tokenizer, TokenizerTrainConfig,
                                          _water_fill, chunk_document, sample_training_text,
                                          train_tokenizer)
from tests.conftest import DEMO_VOCAB_SIZE

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
SPLIT_FILES = ("train/00.jsonl.zst", "val.jsonl.zst", "test.jsonl.zst")

HAND_WRITTEN = (
    "def f(x):\n\tif x:\t# tab inside\n\t\treturn  x   \n\n\n    \n"  # tabs, trailing, blank
    "  leading spaces, trailing spaces   \r\nCRLF and a form feed \x0c and NUL \x00\n"
    "café é Ünïcödé 日本 日本語のテキスト 😀🙃👩‍💻 \u200b zero-width \u00a0 nbsp \u3000 ideographic\n"
    "\u2581 alone, a\u2581b, \u2581\u2581 twice, \u2581 \u2581, ends with \u2581"
)


def _load_tool(name: str):
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_jsonl(path, docs: list[tuple[str, str]]) -> str:
    with open(path, "w", encoding="utf-8") as fh:
        for domain, text in docs:
            fh.write(json.dumps({"text": text, "meta": {"pile_set_name": domain}}) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def tok(demo_tokenizer_path) -> Tokenizer:
    return Tokenizer(demo_tokenizer_path)


def test_every_corpus_document_round_trips(tok, demo_corpus_dir):
    log = BadInputLog()
    texts = [t for _, t in iter_documents(
        [os.path.join(demo_corpus_dir, f) for f in SPLIT_FILES], log)]
    assert log.total == 0 and len(texts) > 100
    assert any(META_SYMBOL in t for t in texts)  # the Noise domain carries U+2581
    batch = tok.encode_batch(texts)
    for text, ids in zip(texts, batch):
        assert ids == tok.encode(text)
        assert tok.decode(ids) == text


def test_hand_written_text_round_trips(tok):
    ids = tok.encode(HAND_WRITTEN)
    assert tok.decode(ids) == HAND_WRITTEN
    assert all(0 <= i < tok.vocab_size for i in ids)
    for piece in HAND_WRITTEN.split("\n") + ["", " ", "\n", "\t", META_SYMBOL, META_SYMBOL * 3]:
        assert tok.decode(tok.encode(piece)) == piece
    assert tok.encode("") == []


def test_every_code_point_round_trips(tok):
    text = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF)
    assert tok.decode(tok.encode(text)) == text


def test_sentencepiece_alone_turns_u2581_into_a_space(demo_tokenizer_path):
    # Why Tokenizer wraps SentencePiece: "▁" is its whitespace symbol, decoded as " ".
    sp = spm.SentencePieceProcessor(model_file=demo_tokenizer_path)
    assert sp.decode(sp.encode("a\u2581b")) == "a b"


def test_attributes_and_side_files(tok, demo_tokenizer_path):
    with open(demo_tokenizer_path, "rb") as fh:
        assert tok.sha256 == hashlib.sha256(fh.read()).hexdigest()
    assert tok.vocab_size == DEMO_VOCAB_SIZE and tok.eos_id == 2 and tok.path == demo_tokenizer_path
    prefix = demo_tokenizer_path[: -len(".model")]
    with open(prefix + ".json", encoding="utf-8") as fh:
        info = json.load(fh)
    assert info["sha256"] == tok.sha256 and info["vocab_size"] == DEMO_VOCAB_SIZE
    assert len(info["sample"]["domains"]) >= 8 and info["seed"] == 0
    assert info["trainer_options"]["normalization_rule_name"] == "identity"
    with open(prefix + ".vocab", encoding="utf-8") as fh:
        assert len(fh.read().splitlines()) == DEMO_VOCAB_SIZE
    assert not [n for n in os.listdir(os.path.dirname(prefix)) if n.startswith(".tokenizer-tmp")]


def test_decode_takes_arrays_and_tokenizer_pickles(tok):
    ids = tok.encode(HAND_WRITTEN)
    assert tok.decode(np.array(ids, dtype=np.uint16)) == HAND_WRITTEN
    clone = pickle.loads(pickle.dumps(tok))
    assert clone.sha256 == tok.sha256 and clone.encode(HAND_WRITTEN) == ids


def test_training_is_deterministic(demo_corpus_dir, demo_tokenizer_path, tmp_path):
    again = train_tokenizer([os.path.join(demo_corpus_dir, "train")], DEMO_VOCAB_SIZE,
                            str(tmp_path / "again"), seed=0)
    assert Tokenizer(again).sha256 == Tokenizer(demo_tokenizer_path).sha256


def test_sample_is_seeded_and_domain_balanced(demo_corpus_dir):
    files = [os.path.join(demo_corpus_dir, "train", "00.jsonl.zst")]

    def sample(seed: int):
        cfg = TokenizerTrainConfig(vocab_size=DEMO_VOCAB_SIZE, seed=seed, sample_mb=0.08)
        return sample_training_text(files, cfg, BadInputLog())

    chunks0, stats0 = sample(0)
    assert sample(0)[0] == chunks0 and sample(1)[0] != chunks0
    budget = 0.08e6 / len(stats0)
    assert len(stats0) >= 8
    for s in stats0.values():
        # a domain gives an equal share (up to one chunk), or all it has when that is less
        assert s["chars"] <= budget + 2000 and (s["chars"] >= budget - 2000 or s["chars"] == s["chars_seen"])


def test_water_fill_and_chunks():
    assert _water_fill({"a": 10, "b": 100, "c": 100}, 150) == {"a": 10, "b": 70, "c": 70}
    text = "short\n" + "y" * 25 + "\n\nend"
    chunks = chunk_document(text, 10)
    assert "".join(chunks) == text and all(len(c) <= 10 for c in chunks)
    assert chunks[0] == "short\n"


def test_vocab_size_errors_say_what_to_do(tmp_path, demo_corpus_dir):
    tiny = _write_jsonl(tmp_path / "tiny.jsonl", [("A", "hello world, a small text"), ("B", "x = 1\n")])
    with pytest.raises(ValueError, match=r"too large.*--vocab-size \d+ or less"):
        train_tokenizer([tiny], 5000, str(tmp_path / "big"))
    with pytest.raises(ValueError, match=r"too small.*--vocab-size \d+ or more"):
        train_tokenizer([os.path.join(demo_corpus_dir, "train")], 300, str(tmp_path / "small"))
    with pytest.raises(ValueError, match="vocab_size must be"):
        train_tokenizer([tiny], 100, str(tmp_path / "tiny"))
    assert not list(tmp_path.glob("big*")) + list(tmp_path.glob("small*"))


def test_input_errors(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('not json\n{"text": "", "meta": {"pile_set_name": "A"}}\n')
    with pytest.raises(ValueError, match="no documents"):
        train_tokenizer([str(empty), str(bad)], 500, str(tmp_path / "x"))
    with pytest.raises(FileNotFoundError, match="nothing"):
        train_tokenizer([str(tmp_path / "nothing*.jsonl")], 500, str(tmp_path / "x"))


def test_model_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found.*train_tokenizer"):
        Tokenizer(str(tmp_path / "missing.model"))
    junk = tmp_path / "junk.model"
    junk.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a SentencePiece model"):
        Tokenizer(str(junk))


def test_cli(demo_corpus_dir, tmp_path, capsys):
    tool = _load_tool("train_tokenizer")
    with pytest.raises(SystemExit) as exc:
        tool.main(["--help"])
    assert exc.value.code == 0 and "--vocab-size" in capsys.readouterr().out
    prefix = str(tmp_path / "tok" / "sp")
    pattern = os.path.join(demo_corpus_dir, "train", "*.jsonl.zst")
    assert tool.main(["--input", pattern, "--vocab-size", "600", "--out", prefix]) == 0
    assert "Arithmetic" in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path / "tok")) == ["sp.json", "sp.model", "sp.vocab"]
    assert tool.main(["--input", pattern, "--vocab-size", "100000", "--out", prefix + "2"]) == 2
    assert "too large" in capsys.readouterr().err
