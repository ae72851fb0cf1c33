"""launch/dga_align.py: its defaults (passes=[dga], online mixture), the DGA checks before any process group, each
error naming its key."""

import json
import os

import pytest

from tests.unit.data.synthetic import make_synthetic_root
from tests.unit.launch.test_dro_launchers import EXPERIMENTS, _launcher

SIZES = [5, 5, 5, 0]  # domain 3 has no sequence (in every split)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_synthetic_root(str(tmp_path_factory.mktemp("dga_launch")), SIZES, seq_len=256,
                               vocab_size=8000, splits=("train", "val", "test"))


def _run(args, monkeypatch, world=1):
    monkeypatch.setenv("WORLD_SIZE", str(world))
    return _launcher("dga_align").main(
        ["--config", os.path.join(EXPERIMENTS, "dga_smoke_cpu.yaml"), *args])


def _basis(tmp_path, names, rows):
    path = tmp_path / "basis.json"
    path.write_text(json.dumps({"format": "draw-basis/v1", "domains": names,
                                "bases": [{"name": f"b{i}", "weights": w}
                                          for i, w in enumerate(rows)]}))
    return str(path)


def test_dry_run_defaults_to_the_dga_pass_and_an_online_mixture(root, monkeypatch, capsys):
    assert _run(["--dry-run", f"data.root={root}", "dga.specific=test:Domain 1"],
                monkeypatch, world=2) == 0
    out = capsys.readouterr().out
    assert "kind: online" in out and "specific: test:Domain 1" in out
    assert "layout: world 2 = tp 1 x dp 2" in out and "passes ['dga']" in out


def test_online_draw_takes_the_alignment_as_evidence(root, monkeypatch, capsys):
    assert _run(["--dry-run", f"data.root={root}", "dga.specific=test:Domain 1",
                 "mixture.kind=online_draw"], monkeypatch) == 0
    assert "mixture online_draw" in capsys.readouterr().out


@pytest.mark.parametrize("overrides, message", [
    (["dga.eta=null"], "dga.eta is not set: the DGA pass has no default step size"),
    (["dga.every=0"], "dga.every=0 must be"),
    (["dga.every=-5"], "dga.every=-5 must be"),
    (["dga.specific=null"], "dga.specific is not set"),
    (["dga.specific=test:Domain 3"], "Domain 3"),          # no sequence in that split
    (["dga.specific=val"], "dga.specific"),                  # the evaluation split: leakage
    (["dga.specific=test:Domian 1"], "Domain 1"),            # unknown name, close match named
    (["zero.stage=3"], "zero.stage=3: the dga pass supports ZeRO stages 0-2"),
    (["mixture.file=m.json"], "mixture.file='m.json'"),
    (["mixture.kind=natural"],
     "the 'dga' pass sets the mixture, but mixture.kind=natural cannot take its weights"),
    (["dga.probe_batch=0"], "dga.probe_batch=0 must be > 0"),
    (["passes=[dga,odm]"], "only one step pass may own the mixture: dga and odm both do"),
])
def test_errors_name_the_key(root, monkeypatch, capsys, overrides, message):
    args = [f"data.root={root}", "dga.specific=test:Domain 1", *overrides]
    assert _run(args, monkeypatch, world=2) == 2
    err = capsys.readouterr().err
    assert err.startswith("config error:") and message in err, err


def test_basis_file_is_checked_against_the_data(root, tmp_path, monkeypatch, capsys):
    names = [f"Domain {d}" for d in range(len(SIZES))]
    good = _basis(tmp_path, names, [[0.5, 0.5, 0, 0], [0, 0, 1.0, 0]])
    assert _run(["--dry-run", f"data.root={root}", "dga.specific=test:Domain 1",
                 f"dga.basis={good}"], monkeypatch) == 0
    capsys.readouterr()
    empty = _basis(tmp_path, names, [[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]])
    assert _run([f"data.root={root}", "dga.specific=test:Domain 1", f"dga.basis={empty}"],
                monkeypatch) == 2
    assert "basis 'b1' puts weight on domain 'Domain 3', which has no 'train' sequence" in \
        capsys.readouterr().err
    bad = _basis(tmp_path, names[:3], [[0.5, 0.5, 0]])  # k = 3 against 4 domains
    assert _run([f"data.root={root}", "dga.specific=test:Domain 1", f"dga.basis={bad}"],
                monkeypatch) == 2
    err = capsys.readouterr().err
    assert err.startswith("config error: dga.basis=") and "3" in err and "4" in err, err
