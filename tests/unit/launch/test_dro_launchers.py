"""launch/train_reference.py and launch/proxy_dro.py: their defaults (pass list, mixture kind),
DRO checks before any process group, each error naming its key."""

import importlib.util
import os

import pytest

from tests.unit.data.synthetic import make_synthetic_root

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
EXPERIMENTS = os.path.join(REPO, "configs", "experiments")


def _launcher(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "launch", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_synthetic_root(str(tmp_path_factory.mktemp("dro_launch")), [5] * 5, seq_len=256,
                               vocab_size=8000, splits=("train", "val"))


@pytest.fixture
def reference(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"")  # existence is all the pre-flight check reads
    return str(path)


def _run(name, config, args, monkeypatch, world=1):
    monkeypatch.setenv("WORLD_SIZE", str(world))
    return _launcher(name).main(["--config", os.path.join(EXPERIMENTS, config), *args])


def test_reference_dry_run_defaults_to_natural(root, monkeypatch, capsys):
    assert _run("train_reference", "reference_cpu.yaml", ["--dry-run", f"data.root={root}"],
                monkeypatch, world=2) == 0
    out = capsys.readouterr().out
    assert "kind: natural" in out and "layout: world 2 = tp 1 x dp 2" in out
    assert "passes none" in out


def test_reference_defaults_yield_to_the_command_line(root, monkeypatch, capsys):
    assert _run("train_reference", "reference_cpu.yaml",
                ["--dry-run", f"data.root={root}", "mixture.kind=uniform"], monkeypatch) == 0
    assert "mixture uniform" in capsys.readouterr().out


def test_proxy_dry_run(root, reference, monkeypatch, capsys):
    assert _run("proxy_dro", "proxy_dro_cpu.yaml",
                ["--dry-run", f"data.root={root}", f"dro.reference={reference}"],
                monkeypatch) == 0
    out = capsys.readouterr().out
    assert "kind: online" in out and f"reference: {reference}" in out
    assert "passes ['dro']" in out


@pytest.mark.parametrize("overrides, message", [
    (["dro.reference=null"], "dro.reference is not set"),
    (["dro.reference=/nonexistent/ref"], "dro.reference='/nonexistent/ref': no such file"),
    (["train.global_batch=4", "train.micro_batch=2", "REF"],
     "train.global_batch=4 is smaller than the 5 domains"),
    (["mixture.file=m.json", "REF"], "mixture.file='m.json'"),
    (["mixture.kind=natural", "REF"],
     "the 'dro' pass sets the mixture, but mixture.kind=natural cannot take its weights"),
    (["mixture.kind=online_draw", "REF"], "it needs mixture.kind=online"),
    (["passes=[dro,odm]", "REF"], "only one step pass may own the mixture: dro and odm both do"),
    (["passes=[dro,dpo]", "REF"], "passes[1]='dpo' is not a step pass (did you mean 'dro'?)"),
])
def test_proxy_errors_name_the_key(root, reference, monkeypatch, capsys, overrides, message):
    overrides = [f"dro.reference={reference}" if o == "REF" else o for o in overrides]
    assert _run("proxy_dro", "proxy_dro_cpu.yaml", [f"data.root={root}", *overrides],
                monkeypatch) == 2
    err = capsys.readouterr().err
    assert err.startswith("config error:") and message in err, err
