"""Hand-edited data and mixture files are refused by name before any process group — by
--dry-run as by a real launch (a mixture naming an unknown domain used to pass --dry-run and
fail only inside the ranks)."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from tests.unit.data.synthetic import make_synthetic_root
from tests.unit.launch.test_dro_launchers import EXPERIMENTS, _launcher


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_synthetic_root(str(tmp_path_factory.mktemp("bad_files")), [6, 6, 6], seq_len=256,
                               vocab_size=8000, splits=("train", "val"))


def _dry_run(monkeypatch, *args) -> int:
    monkeypatch.setenv("WORLD_SIZE", "1")
    return _launcher("pretrain_main").main(
        ["--config", os.path.join(EXPERIMENTS, "smoke_cpu.yaml"), "--dry-run", *args])


def _edited_root(root, tmp_path, edit) -> str:
    copy = str(tmp_path / "data")
    shutil.copytree(root, copy)
    path = os.path.join(copy, "manifest.json")
    with open(path) as fh:
        manifest = json.load(fh)
    edit(manifest)
    with open(path, "w") as fh:
        json.dump(manifest, fh)
    return copy


def _mixture(tmp_path, names, kind="static", values=None):
    path = tmp_path / "mix.json"
    key = "weights" if kind == "static" else "concentration"
    path.write_text(json.dumps({"format": "draw-mixture/v1", "domains": names, "kind": kind,
                                key: values or [1 / len(names)] * len(names)}))
    return str(path)


@pytest.mark.parametrize("edit, message", [
    (lambda m: m["domains"][1].update(slug="../../etc"), "has slug '../../etc': a slug must be"),
    (lambda m: m["domains"][0].update(slug="/abs"), "has slug '/abs'"),
    (lambda m: m["domains"][2].update(epochs=-1), "has epochs -1"),
    (lambda m: m["domains"][2]["splits"]["train"].update(natural_weight=-0.5),
     "natural_weight -0.5 must be"),
    (lambda m: m["domains"][0].pop("slug"), "domains[0] lacks ['slug']"),
    (lambda m: m["domains"][1].update(slug=m["domains"][0]["slug"]), "duplicate domain slugs"),
])
def test_edited_manifest_is_refused(root, tmp_path, monkeypatch, capsys, edit, message):
    data = _edited_root(root, tmp_path, edit)
    assert _dry_run(monkeypatch, f"data.root={data}") == 2
    err = capsys.readouterr().err
    assert err.startswith("config error:") and message in err, err


@pytest.mark.parametrize("names, values, message", [
    (["Domain 0", "Domain 1", "Domian 2"], None, "unknown domain(s) ['Domian 2']"),
    (["Domain 0", "Domain 1"], None, "missing domain(s) ['Domain 2']"),
    (["Domain 0", "Domain 1", "Domain 2"], [1.5, -0.5, 0.0], "weight of 'Domain 1' is -0.5"),
])
def test_edited_mixture_file_is_refused_by_the_dry_run(root, tmp_path, monkeypatch, capsys,
                                                       names, values, message):
    mix = _mixture(tmp_path, names, values=values)
    assert _dry_run(monkeypatch, f"data.root={root}", "mixture.kind=static",
                    f"mixture.file={mix}") == 2
    err = capsys.readouterr().err
    assert err.startswith("config error:") and message in err, err
