"""launch/pretrain_main.py: bad configs fail before any process group exists, naming the key."""

import importlib.util
import os

import pytest

from tests.unit.data.synthetic import make_synthetic_root

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
SMOKE = os.path.join(REPO, "configs", "experiments", "smoke_cpu.yaml")


def _launcher():
    spec = importlib.util.spec_from_file_location(
        "pretrain_main", os.path.join(REPO, "launch", "pretrain_main.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_synthetic_root(str(tmp_path_factory.mktemp("launch")), [5, 5], seq_len=256,
                               vocab_size=8000, splits=("train", "val"))


@pytest.mark.parametrize("world, overrides, message", [
    (4, ["parallel.tp=3"], "parallel.tp=3"),
    (2, ["train.global_batch=6", "train.micro_batch=4"], "train.global_batch"),
    (1, ["train.stepz=3"], "train.stepz"),
    (1, ["data.root=/nonexistent/data"], "data.root"),
    (1, ["train.steps=many"], "train.steps"),
    (1, ["mixture.kind=dirichlet"], "mixture.file"),
    (1, ["model.vocab_size=100"], "model.vocab_size=100 is smaller than the data's tokenizer"),
    (1, ["model.seq_len=128"], "model.seq_len=128"),
    (1, ["data.split=holdout"], "data.split='holdout'"),
])
def test_bad_configs_name_the_key(root, monkeypatch, capsys, world, overrides, message):
    monkeypatch.setenv("WORLD_SIZE", str(world))
    rc = _launcher().main(["--config", SMOKE, f"data.root={root}", *overrides])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("config error:") and message in err, err


def test_dry_run_prints_the_layout(root, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert _launcher().main(["--config", SMOKE, "--dry-run", f"data.root={root}"]) == 0
    out = capsys.readouterr().out
    assert "layout: world 2 = tp 1 x dp 2; gradient accumulation 2" in out
    assert "preset: tiny-64" in out
