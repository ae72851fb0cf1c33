"""tools/plot_mixture.py writes non-empty PNGs from mixture files and metrics.jsonl."""

import json
import os

import numpy as np
import pytest

from draw_megatron.mixture.draw import draw_posterior
from draw_megatron.mixture.files import MixtureSpec
from draw_megatron.mixture.hierarchical import groups_from_mapping, hierarchical_posterior
from tests.unit.tools.conftest import write_manifest

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DOMAINS = ["Pile-CC", "Github", "ArXiv", "Wikipedia (en)"]


def _is_png(path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(8) == PNG_MAGIC and os.path.getsize(path) > 1000


def _run_dir(tmp_path, name: str, records: list[dict], data_root: str | None = None) -> str:
    run = tmp_path / name
    run.mkdir()
    with open(run / "metrics.jsonl", "w") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in records)
    if data_root is not None:
        (run / "config.yaml").write_text(f"data:\n  root: {data_root}\n")
    return str(run)


@pytest.fixture
def mixture_file(tmp_path):
    post = draw_posterior([0.4, 0.3, 0.2, 0.1], 256, 2048)
    path = str(tmp_path / "draw.json")
    MixtureSpec("dirichlet", DOMAINS, post.main, {}, {"n1": 256, "n2": 2048}).save(path)
    return path


def test_simplex(plot_tool, mixture_file, tmp_path):
    out = str(tmp_path / "plots" / "simplex.png")
    argv = ["simplex", "--mixture", mixture_file, "--domains", "Pile-CC", "Github", "ArXiv",
            "--samples", "300", "--out", out]
    assert plot_tool.main(argv) == 0 and _is_png(out)
    assert [p for p in os.listdir(tmp_path / "plots") if p != "simplex.png"] == []  # no temp


def test_simplex_errors(plot_tool, mixture_file, tmp_path, capsys):
    out = str(tmp_path / "s.png")
    argv = ["simplex", "--mixture", mixture_file, "--domains", "Pile-CC", "Github", "Books3",
            "--out", out]
    assert plot_tool.main(argv) == 1
    assert "no domain(s) ['Books3']" in capsys.readouterr().err and not os.path.exists(out)
    bare = str(tmp_path / "bare.json")
    MixtureSpec("dirichlet", DOMAINS, np.ones(4)).save(bare)
    argv = ["simplex", "--mixture", bare, "--domains", *DOMAINS[:3], "--out", out]
    assert plot_tool.main(argv) == 1 and "pass --width" in capsys.readouterr().err
    assert plot_tool.main(argv + ["--width", "512"]) == 0 and _is_png(out)


def test_projection_renormalises_onto_three_domains(plot_tool):
    samples = np.array([[0.1, 0.2, 0.3, 0.4], [0.5, 0.0, 0.0, 0.5]])
    np.testing.assert_allclose(plot_tool.project(samples, [3, 0, 1]),
                               [[4 / 7, 1 / 7, 2 / 7], [0.5, 0.5, 0.0]])
    x, y = plot_tool.ternary_xy(np.eye(3))
    np.testing.assert_allclose(x, [0, 1, 0.5])
    np.testing.assert_allclose(y, [0, 0, np.sqrt(3) / 2])


@pytest.mark.parametrize("kind", ["dro", "mixture", "dga"])
def test_alpha(plot_tool, tmp_path, kind, capsys):
    rng = np.random.default_rng(0)
    records = [{"kind": kind, "step": s, "alpha": rng.dirichlet(np.ones(4)).tolist(),
                "alpha_ema": [0.25] * 4} for s in range(0, 50, 5)]
    records.append({"kind": "train", "step": 3, "loss": 1.0})
    root = write_manifest(str(tmp_path / "data"), DOMAINS)
    run = _run_dir(tmp_path, "run", records, data_root=root)
    out = str(tmp_path / f"{kind}.png")
    assert plot_tool.main(["alpha", "--metrics", os.path.join(run, "metrics.jsonl"),
                           "--kind", kind, "--out", out]) == 0
    assert _is_png(out) and "note" not in capsys.readouterr().err  # names came from the manifest


def test_alpha_without_names_or_records(plot_tool, tmp_path, capsys):
    run = _run_dir(tmp_path, "run", [{"kind": "dro", "step": 1, "alpha": [0.5, 0.5]}])
    metrics, out = os.path.join(run, "metrics.jsonl"), str(tmp_path / "a.png")
    assert plot_tool.main(["alpha", "--metrics", metrics, "--kind", "dro", "--out", out]) == 0
    assert _is_png(out) and "no domain names" in capsys.readouterr().err
    assert plot_tool.main(["alpha", "--metrics", metrics, "--kind", "dga", "--out", out]) == 1
    assert "no 'dga' records" in capsys.readouterr().err


def _evals(offset: float) -> list[dict]:
    out = []
    for step in (100, 200, 300):
        losses = [offset + 4.0 - step / 200 + 0.1 * d for d in range(len(DOMAINS))]
        out.append({"kind": "eval", "split": "val", "step": step, "domain_loss": losses,
                    "avg": float(np.mean(losses)), "worst": max(losses),
                    "worst_domain": DOMAINS[-1]})
    return out


def test_losses(plot_tool, tmp_path):
    root = write_manifest(str(tmp_path / "data"), DOMAINS)
    runs = [_run_dir(tmp_path, "draw", _evals(0.0), root),
            _run_dir(tmp_path, "natural", _evals(0.2), root)]
    out = str(tmp_path / "losses.png")
    assert plot_tool.main(["losses", *runs, "--out", out]) == 0 and _is_png(out)


def test_losses_refuses_runs_on_other_domains(plot_tool, tmp_path, capsys):
    runs = [_run_dir(tmp_path, "a", _evals(0.0), write_manifest(str(tmp_path / "d1"), DOMAINS)),
            _run_dir(tmp_path, "b", _evals(0.0),
                     write_manifest(str(tmp_path / "d2"), DOMAINS[::-1]))]
    assert plot_tool.main(["losses", *runs, "--out", str(tmp_path / "x.png")]) == 1
    assert "other domains" in capsys.readouterr().err


def test_hierarchy(plot_tool, tmp_path, capsys):
    groups = groups_from_mapping({"web": ["Pile-CC", "Wikipedia (en)"],
                                  "code": ["Github"], "academic": ["ArXiv"]}, DOMAINS, "test")
    path = str(tmp_path / "hier.json")
    hierarchical_posterior([0.4, 0.3, 0.2, 0.1], groups, 256, 2048).main.save(path)
    out = str(tmp_path / "plots" / "hier.png")
    assert plot_tool.main(["hierarchy", path, "--out", out]) == 0 and _is_png(out)
    assert os.listdir(tmp_path / "plots") == ["hier.png"]


def test_hierarchy_refuses_a_flat_file(plot_tool, mixture_file, tmp_path, capsys):
    out = str(tmp_path / "h.png")
    assert plot_tool.main(["hierarchy", mixture_file, "--out", out]) == 1
    assert "not kind 'dirichlet'" in capsys.readouterr().err and not os.path.exists(out)
