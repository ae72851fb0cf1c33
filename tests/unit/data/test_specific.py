import dataclasses
import json
import os

import numpy as np
import pytest
import torch
import torch.distributed as dist
import zstandard

from draw_megatron.config.base import ConfigError
from draw_megatron.config.run import RunConfig
from draw_megatron.data import specific as specific_mod
from draw_megatron.data.manifest import Manifest
from draw_megatron.data.specific import (CACHE_DIR, SpecificSet, open_specific,
                                         parse_specific)
from draw_megatron.data.tokenizer import Tokenizer
from tests.unit.data.synthetic import decode_items, make_synthetic_root

SIZES = [5, 0, 12, 30]
NAMES = ["Wikipedia (en)", "Enron Emails", "Github", "Pile-CC"]
SEQ_LEN = 8
SPLITS = ("train", "val", "test")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_synthetic_root(str(tmp_path_factory.mktemp("synth")), SIZES, seq_len=SEQ_LEN,
                               names=NAMES, splits=SPLITS)


@pytest.fixture(scope="module")
def manifest(root):
    return Manifest.load(root)


@pytest.fixture
def tok_manifest(manifest, demo_tokenizer_path):
    """The synthetic root's manifest, with a real tokenizer (the converted case needs one)."""
    tok = Tokenizer(demo_tokenizer_path)
    return dataclasses.replace(manifest, tokenizer={
        "path": demo_tokenizer_path, "sha256": tok.sha256, "vocab_size": tok.vocab_size,
        "eos_id": tok.eos_id})


def _parse(spec, manifest, train="train", val="val"):
    return parse_specific(spec, manifest, train_split=train, eval_split=val)


def _cfg(root, run_dir, **data):
    return RunConfig.from_dict({"run": {"dir": str(run_dir)}, "model": {"preset": "tiny-64"},
                                "data": {"root": root, **data}})


def _open(spec, cfg, manifest):
    return open_specific(spec, manifest, train_split=cfg.data.split, eval_split=cfg.eval_split,
                         run_dir=cfg.run.dir)


# ---------------------------------------------------------------------------------------
# Parsing


def test_parse_split_and_domain_by_name_or_slug(manifest):
    assert _parse("test", manifest) == ("split", "test", None, ())
    assert _parse(" test ", manifest).kind == "split"
    assert _parse("test:Github", manifest) == ("domain", "test", 2, ())
    assert _parse("test:d00003", manifest).domain == 3  # the slug works too
    assert _parse("train", manifest, train="val", val="test").split == "train"


@pytest.mark.parametrize("spec", [None, "", "   "])
def test_empty_is_an_error(manifest, spec):
    with pytest.raises(ConfigError, match=r"dga.specific is empty"):
        _parse(spec, manifest)


def test_training_or_evaluation_split_is_leakage(manifest):
    with pytest.raises(ConfigError, match=r"'train'.*training \(data.split='train'\).*leak.*"
                                          r"use a held-out split \(test\)"):
        _parse("train", manifest)
    with pytest.raises(ConfigError, match=r"'val'.*evaluation \(eval split 'val'\)"):
        _parse("val:Github", manifest)
    with pytest.raises(ConfigError, match=r"training .* and evaluation"):
        _parse("test", manifest, train="test", val="test")


def test_unknown_split_lists_the_splits_and_close_matches(manifest, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"dga.specific='tset'.*it has train, val, test; "
                                          r"did you mean 'test'\?.*no file or folder"):
        _parse("tset", manifest)
    with pytest.raises(ConfigError, match=r"'holdout' is not a split"):
        _parse("holdout:Github", manifest)


def test_unknown_domain_suggests_close_names(manifest):
    with pytest.raises(ConfigError, match=r"no domain 'wikipedia' .*did you mean "
                                          r"'Wikipedia \(en\)'\?"):
        _parse("test:wikipedia", manifest)
    with pytest.raises(ConfigError, match=r"no domain 'hub' .*did you mean 'Github'\?"):
        _parse("test:hub", manifest)
    with pytest.raises(ConfigError, match=r"no domain 'xyzzy/q'.*its 4 domains: "
                                          r"'Wikipedia \(en\)', 'Enron Emails'"):
        _parse("test:xyzzy/q", manifest)  # a '/' after a split's name is still a domain
    with pytest.raises(ConfigError, match=r"no domain name after ':'"):
        _parse("test:", manifest)


def test_domain_without_sequences_is_an_error(manifest):
    with pytest.raises(ConfigError, match=r"'Enron Emails' has no sequence in split 'test'"):
        _parse("test:Enron Emails", manifest)


def test_split_names_win_over_paths_and_paths_are_recognised(manifest, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "a.jsonl").write_text("{}\n")
    assert _parse("test", manifest).kind == "split"
    # "./test" is the folder; the synthetic root has no tokenizer file to convert it with.
    with pytest.raises(ConfigError, match=r"tokenize with the data root's tokenizer.*"
                                          r"does not exist"):
        _parse("./test", manifest)


def test_bad_paths_are_errors(tok_manifest, tmp_path):
    with pytest.raises(ConfigError, match=r"dga.specific='.*/nope': no such file or folder"):
        _parse(str(tmp_path / "nope"), tok_manifest)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    (tmp_path / "empty" / "sub").mkdir()
    (tmp_path / "empty" / "sub" / "a.jsonl").write_text("{}\n")
    with pytest.raises(ConfigError, match=r"holds no \*.jsonl or \*.jsonl.zst file"):
        _parse(str(tmp_path / "empty"), tok_manifest)
    with pytest.raises(ConfigError, match=r"matches no file"):
        _parse(str(tmp_path / "*.jsonl.zst"), tok_manifest)
    with pytest.raises(ConfigError, match=r"readme.txt' is not a .jsonl or .jsonl.zst file"):
        _parse(str(tmp_path / "empty" / "*"), tok_manifest)


def test_files_are_listed_sorted_and_absolute(tok_manifest, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.makedirs("spec")
    for name in ("b.jsonl.zst", "a.jsonl", "notes.md"):
        (tmp_path / "spec" / name).write_bytes(b"")
    src = _parse("spec", tok_manifest)
    assert src.kind == "files"
    assert src.files == (str(tmp_path / "spec" / "a.jsonl"), str(tmp_path / "spec" / "b.jsonl.zst"))
    assert _parse("spec/a.jsonl", tok_manifest).files == src.files[:1]


# ---------------------------------------------------------------------------------------
# A split or one domain of the data root


def test_whole_split_mixes_domains_by_sequence_count(root, manifest, tmp_path):
    with _open("test", _cfg(root, tmp_path), manifest) as spec:
        assert spec.domain is None and spec.shares_domains
        assert spec.data.split == "test" and spec.num_sequences == sum(SIZES)
        assert "split 'test'" in spec.description and "3 domains" in spec.description
        sampler = spec.sampler(seed=3)
        items = [it for _ in range(40) for it in decode_items(spec.batch(sampler, 4))]
        batch = spec.batch(sampler, 4)
        assert batch.tokens.shape == (4, SEQ_LEN) and batch.labels.shape == (4, SEQ_LEN)
        assert batch.domain_ids.tolist() == batch.tokens[:, 0].tolist()
        counts = np.bincount([d for d, _ in items], minlength=len(SIZES))
        assert counts[1] == 0 and counts[3] > counts[2] > counts[0] > 0
        assert all(j < SIZES[d] for d, j in items)


def test_one_domain_and_independence_of_dp_size(root, manifest, tmp_path):
    cfg = _cfg(root, tmp_path)
    with _open("test:Github", cfg, manifest) as spec:
        assert spec.domain == 2 and spec.num_sequences == SIZES[2]
        one = spec.sampler(seed=1)
        halves = [spec.sampler(seed=1, dp_rank=r, dp_size=2) for r in range(2)]
        for _ in range(5):
            full = decode_items(spec.batch(one, 4))
            parts = [decode_items(spec.batch(s, 4)) for s in halves]
            assert full == parts[0] + parts[1]
            assert {d for d, _ in full} == {2}
        with pytest.raises(ValueError, match=r"SpecificSet.sampler"):
            spec.batch(_foreign_sampler(spec), 2)


def _foreign_sampler(spec: SpecificSet):
    sampler = spec.sampler(seed=0)
    sampler.data = object()
    return sampler


# ---------------------------------------------------------------------------------------
# Files converted on the fly


DOCS_A = ["The quick brown fox jumps over the lazy dog, again and again.",
          "import os\nprint(os.getcwd())\n"]
DOCS_B = ["A third document about the river and the town beside it."]


def _write_inputs(folder, docs_a=DOCS_A, docs_b=DOCS_B):
    os.makedirs(folder, exist_ok=True)
    lines = [json.dumps({"text": docs_a[0], "meta": {"pile_set_name": "Pile-CC"}})]
    lines += [json.dumps({"text": t}) for t in docs_a[1:]]  # no pile_set_name: accepted
    with open(os.path.join(folder, "a.jsonl"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    blob = "".join(json.dumps({"text": t, "meta": {"pile_set_name": "Github"}}) + "\n"
                   for t in docs_b)
    with open(os.path.join(folder, "b.jsonl.zst"), "wb") as fh:
        fh.write(zstandard.ZstdCompressor().compress(blob.encode()))


def _windows(tok, docs):
    stream = np.concatenate([np.array(tok.encode(d) + [tok.eos_id]) for d in docs])
    num = (len(stream) - 1) // SEQ_LEN
    return {tuple(stream[i * SEQ_LEN:i * SEQ_LEN + SEQ_LEN + 1]) for i in range(num)}


def test_files_are_converted_cached_and_reconverted_when_changed(root, tok_manifest, tmp_path,
                                                                 demo_tokenizer_path):
    inputs, run_dir = str(tmp_path / "target"), tmp_path / "run"
    _write_inputs(inputs)
    cfg = _cfg(root, run_dir)
    with _open(inputs, cfg, tok_manifest) as spec:
        assert spec.domain is None and not spec.shares_domains
        assert spec.data.manifest.domain_names == ["specific"]
        first_root = spec.data.manifest.root
        assert first_root.startswith(str(run_dir / CACHE_DIR))
        sampler = spec.sampler(seed=0)
        batch = spec.batch(sampler, 3)
        assert batch.tokens.shape == (3, SEQ_LEN) and batch.domain_ids.tolist() == [-1] * 3
        assert batch.alpha.tolist() == [1.0]
        rows = torch.cat([batch.tokens, batch.labels[:, -1:]], dim=1).tolist()
        windows = _windows(Tokenizer(demo_tokenizer_path), DOCS_A + DOCS_B)  # file order
        assert all(tuple(r) in windows for r in rows)
        num_first = spec.num_sequences
    source = json.load(open(os.path.join(os.path.dirname(first_root), "source.json")))
    assert source["spec"] == inputs and len(source["files"]) == 2
    stamp = os.stat(os.path.join(first_root, "manifest.json")).st_mtime_ns

    with _open(inputs, cfg, tok_manifest) as again:  # a restart: no reconversion
        assert again.data.manifest.root == first_root
    assert os.stat(os.path.join(first_root, "manifest.json")).st_mtime_ns == stamp

    _write_inputs(inputs, docs_b=DOCS_B * 3)  # an input changed: converted again
    with _open(inputs, cfg, tok_manifest) as changed:
        assert changed.data.manifest.root != first_root
        assert changed.num_sequences > num_first
    assert len(os.listdir(run_dir / CACHE_DIR)) == 2


def test_too_little_text_is_a_clear_error_and_leaves_no_cache(root, tok_manifest, tmp_path):
    inputs = tmp_path / "short"
    inputs.mkdir()
    (inputs / "a.jsonl").write_text(json.dumps({"text": "hi"}) + "\n")
    with pytest.raises(ConfigError, match=r"dga.specific=.*1 document\(s\) hold \d+ tokens .*"
                                          r"fewer than one sequence of seq_len \+ 1 = 9"):
        _open(str(inputs), _cfg(root, tmp_path / "run"), tok_manifest)
    assert os.listdir(tmp_path / "run" / CACHE_DIR) == []


def test_no_usable_document_and_a_replaced_tokenizer_are_errors(root, tok_manifest, tmp_path):
    inputs = tmp_path / "bad"
    inputs.mkdir()
    (inputs / "a.jsonl").write_text("not json\n")
    cfg = _cfg(root, tmp_path / "run")
    with pytest.raises(ConfigError, match=r"dga.specific=.*no usable document.*invalid_json"):
        _open(str(inputs), cfg, tok_manifest)
    _write_inputs(str(inputs))
    stale = dataclasses.replace(tok_manifest, tokenizer={**tok_manifest.tokenizer,
                                                         "sha256": "0" * 64})
    with pytest.raises(ConfigError, match=r"sha256 .* records 000000000000.*replaced"):
        _open(str(inputs), cfg, stale)


def test_conversion_under_a_process_group(root, tok_manifest, tmp_path):
    """One-process gloo group: rank 0 converts, the outcome goes through the broadcast."""
    inputs = str(tmp_path / "target")
    _write_inputs(inputs)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0,
                            world_size=1)
    try:
        with _open(inputs, _cfg(root, tmp_path / "run"), tok_manifest) as spec:
            assert spec.num_sequences > 0
        with pytest.raises(KeyError, match="boom"):
            specific_mod._on_rank0(lambda: {}["boom"])
    finally:
        dist.destroy_process_group()
