import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import zstandard

from draw_megatron.data import convert as convert_mod
from draw_megatron.data.convert import ConversionError, ConvertConfig, convert_corpus
from draw_megatron.data.domains import DomainData
from draw_megatron.data.manifest import Manifest
from draw_megatron.data.pile import BadInputLog, iter_documents
from draw_megatron.data.tokenizer import Tokenizer

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
SEQ_LEN = 32


def _pile_splits(corpus: str) -> dict[str, list[str]]:
    return {"train": [os.path.join(corpus, "train", "00.jsonl.zst")],
            "val": [os.path.join(corpus, "val.jsonl.zst")]}


@pytest.fixture(scope="module")
def converted(demo_corpus_dir, demo_tokenizer_path, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("conv") / "data")
    manifest = convert_corpus(_pile_splits(demo_corpus_dir), demo_tokenizer_path, out,
                              ConvertConfig(seq_len=SEQ_LEN, workers=1))
    return out, manifest


def _tree_digest(root: str) -> dict[str, str]:
    out = {}
    for base, _, files in os.walk(root):
        for f in files:
            path = os.path.join(base, f)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, root)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def _line(text, domain="A"):
    return json.dumps({"text": text, "meta": {"pile_set_name": domain}}).encode() + b"\n"


def test_round_trip_per_domain(converted, demo_corpus_dir):
    out, _ = converted
    manifest = Manifest.load(out)
    tok = Tokenizer(manifest.tokenizer_path)
    for split, paths in _pile_splits(demo_corpus_dir).items():
        source: dict[str, list[str]] = {}
        for domain, text in iter_documents(paths, BadInputLog()):
            source.setdefault(domain, []).append(text)
        assert sorted(source) == manifest.domain_names
        data = DomainData(manifest, split)
        try:
            for d, info in enumerate(manifest.domains):
                counts = info.splits[split]
                docs = source[info.name]
                assert counts["documents"] == len(docs)
                assert counts["tokens"] == sum(len(tok.encode(t)) + 1 for t in docs)
                n = counts["sequences"]
                if n == 0:
                    assert counts["dropped_tokens"] == counts["tokens"]
                    continue
                rows = data.read(data.offsets[d] + np.arange(n))
                assert rows.shape == (n, SEQ_LEN + 1)
                assert np.array_equal(rows[1:, 0], rows[:-1, -1])  # windows overlap by one
                stream = np.concatenate([rows[0], rows[1:, 1:].ravel()])
                assert counts["tokens"] == len(stream) + counts["dropped_tokens"]
                pieces = np.split(stream, np.flatnonzero(stream == manifest.eos_id) + 1)
                complete = [tok.decode(p[:-1].tolist()) for p in pieces[:-1]]
                assert complete == docs[: len(complete)]
                assert len(complete) >= 1
        finally:
            data.close()


def test_manifest_contents(converted, demo_tokenizer_path):
    out, manifest = converted
    tok = Tokenizer(demo_tokenizer_path)
    assert manifest["tokenizer"]["eos_id"] == tok.eos_id
    assert manifest["tokenizer"]["sha256"] == tok.sha256
    assert manifest["dtype"] == "uint16" and manifest["seq_len"] == SEQ_LEN
    assert manifest["splits"] == ["train", "val"]
    for split in manifest["splits"]:
        weights = [d["splits"][split]["natural_weight"] for d in manifest["domains"]]
        assert abs(sum(weights) - 1) < 1e-9
    assert os.path.isfile(os.path.join(out, "tokenizer.model"))
    assert not [p for p in os.listdir(os.path.dirname(out)) if ".tmp-" in p]


def test_output_is_identical_for_any_worker_count(demo_corpus_dir, demo_tokenizer_path, tmp_path,
                                                  converted):
    out2 = str(tmp_path / "w2")
    cfg = ConvertConfig(seq_len=SEQ_LEN, workers=2, chunk_bytes=1 << 14)
    convert_corpus(_pile_splits(demo_corpus_dir), demo_tokenizer_path, out2, cfg)
    assert _tree_digest(out2) == _tree_digest(converted[0])


def test_bad_input_is_counted_and_never_costs_a_good_document(demo_tokenizer_path, tmp_path):
    good = [f"good document number {i}" for i in range(6)]
    body = (_line(good[0]) + b'{"text": "cut\n' + _line(good[1]) + b"[1]\n" + _line(good[2])
            + json.dumps({"meta": {"pile_set_name": "A"}}).encode() + b"\n" + _line(good[3])
            + _line("") + json.dumps({"text": "x", "meta": {}}).encode() + b"\n"
            + b'{"text": "\xff", "meta": {"pile_set_name": "A"}}\n' + _line(good[4]))
    plain = tmp_path / "a.jsonl"
    plain.write_bytes(body)
    data = b"".join(_line(f"zst doc {i}", "B") for i in range(20000))
    comp = zstandard.ZstdCompressor().compress(data)
    cut = tmp_path / "b.jsonl.zst"
    cut.write_bytes(comp[: len(comp) // 2])
    out = str(tmp_path / "out")
    manifest = convert_corpus({"train": [str(plain), str(cut)]}, demo_tokenizer_path, out,
                              ConvertConfig(seq_len=4))
    bad = manifest["bad_input"]["train"]
    assert {k: v["count"] for k, v in bad.items()} == {
        "invalid_utf8": 1, "invalid_json": 1, "not_an_object": 1, "missing_text": 1,
        "empty_text": 1, "missing_pile_set_name": 1, "truncated_zst": 1}
    assert bad["invalid_json"]["first"] == [f"{plain}:2"]
    by_name = {d["name"]: d for d in manifest["domains"]}
    assert by_name["A"]["splits"]["train"]["documents"] == 5
    assert 0 < by_name["B"]["splits"]["train"]["documents"] < 20000


def test_no_usable_document_is_an_error_and_writes_nothing(demo_tokenizer_path, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"not json\n" + _line(""))
    out = tmp_path / "out"
    with pytest.raises(ConversionError, match=r"yields no usable document.*1 invalid_json.*"
                                              r"1 empty_text"):
        convert_corpus({"train": [str(bad)]}, demo_tokenizer_path, str(out), ConvertConfig(seq_len=4))
    assert not out.exists() and os.listdir(tmp_path) == ["bad.jsonl"]


def test_a_crash_leaves_the_previous_output_intact(demo_tokenizer_path, tmp_path, monkeypatch):
    src = tmp_path / "a.jsonl"
    src.write_bytes(b"".join(_line(f"doc {i}") for i in range(50)))
    out = str(tmp_path / "out")
    convert_corpus({"train": [str(src)]}, demo_tokenizer_path, out, ConvertConfig(seq_len=4))
    before = _tree_digest(out)

    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(convert_mod._DomainPacker, "close", interrupted)
    with pytest.raises(KeyboardInterrupt):
        convert_corpus({"train": [str(src)]}, demo_tokenizer_path, out, ConvertConfig(seq_len=8),
                       overwrite=True)
    assert _tree_digest(out) == before
    assert sorted(os.listdir(tmp_path)) == ["a.jsonl", "out"]
    with pytest.raises(FileExistsError, match="--overwrite"):
        convert_corpus({"train": [str(src)]}, demo_tokenizer_path, out, ConvertConfig(seq_len=4))


def test_domain_allow_list_epochs_and_slugs(demo_tokenizer_path, tmp_path):
    src = tmp_path / "a.jsonl"
    src.write_bytes(b"".join(_line(f"doc {i} " * 5, d) for i in range(20)
                             for d in ("Wikipedia (en)", "DM Mathematics", "Other")))
    cfg = ConvertConfig(seq_len=8, domains=["Wikipedia (en)", "DM Mathematics"],
                        epochs={"DM Mathematics": 4.0})
    manifest = convert_corpus({"train": [str(src)]}, demo_tokenizer_path, str(tmp_path / "o"), cfg)
    doms = {d["name"]: d for d in manifest["domains"]}
    assert sorted(doms) == ["DM Mathematics", "Wikipedia (en)"]
    assert doms["Wikipedia (en)"]["slug"] == "wikipedia_en" and doms["Wikipedia (en)"]["epochs"] == 3.0
    assert doms["DM Mathematics"]["epochs"] == 4.0
    seqs = {n: d["splits"]["train"]["sequences"] for n, d in doms.items()}
    w = doms["DM Mathematics"]["splits"]["train"]["natural_weight"]
    assert w == pytest.approx(4 * seqs["DM Mathematics"] / (4 * seqs["DM Mathematics"]
                                                            + 3 * seqs["Wikipedia (en)"]))
    assert manifest["filtered"] == {"train": {"Other": 20}}
    with pytest.raises(ConversionError, match=r"--domains names \['Wikipedia'\]"):
        convert_corpus({"train": [str(src)]}, demo_tokenizer_path, str(tmp_path / "p"),
                       ConvertConfig(seq_len=8, domains=["Wikipedia"]))


def test_single_domain_merges_every_document_in_input_order(demo_tokenizer_path, tmp_path):
    src = tmp_path / "a.jsonl"
    texts = [f"doc {i} " * 5 for i in range(6)]
    src.write_bytes(_line(texts[0], "Wikipedia (en)") + _line(texts[1], "Github")
                    + b"".join(json.dumps({"text": t}).encode() + b"\n" for t in texts[2:])
                    + b'{"meta": {}}\n')  # still bad: no text
    out = str(tmp_path / "o")
    for workers in (1, 2):
        cfg = ConvertConfig(seq_len=8, workers=workers, single_domain="target")
        manifest = convert_corpus({"s": [str(src)]}, demo_tokenizer_path, out, cfg,
                                  overwrite=True)
        assert [d["name"] for d in manifest["domains"]] == ["target"]
        assert manifest["domains"][0]["splits"]["s"]["documents"] == len(texts)
        assert manifest["bad_input"]["s"]["missing_text"]["count"] == 1
    tok = Tokenizer(demo_tokenizer_path)
    stream = np.concatenate([tok.encode(t) + [tok.eos_id] for t in texts])
    data = DomainData(Manifest.load(out), "s")
    try:
        assert np.array_equal(data.read(np.array([0]))[0], stream[:9])
    finally:
        data.close()
    with pytest.raises(ValueError, match="single_domain"):
        ConvertConfig(single_domain="target", domains=["Github"])


def test_cli_on_the_pile_layout(demo_corpus_dir, demo_tokenizer_path, tmp_path):
    out = tmp_path / "cli"
    cmd = [sys.executable, os.path.join(REPO, "tools", "convert_pile.py"), demo_corpus_dir,
           "--tokenizer", demo_tokenizer_path, "--seq-len", "64", "--out", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "wrote" in res.stdout and "bad input: none" in res.stdout
    assert Manifest.load(str(out)).splits == ("train", "val", "test")
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 1 and "--overwrite" in res.stderr
    res = subprocess.run(cmd[:2] + ["--split", "train=nothing/*.jsonl", "--tokenizer",
                                    demo_tokenizer_path, "--seq-len", "8", "--out", str(out) + "x"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 1 and "no input file matches 'nothing/*.jsonl'" in res.stderr
