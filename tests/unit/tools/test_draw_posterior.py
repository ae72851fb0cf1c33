"""tools/draw_posterior.py end to end: files written, errors and warnings it must give."""

import json
import os

import numpy as np
import pytest

from draw_megatron.mixture.files import load_mixture
from tests.unit.tools.conftest import REPO, write_manifest

DOMAINS = ["A", "B", "C", "D"]
ALPHA_STAR = [0.4, 0.3, 0.2, 0.1]


def _model_yaml(path, d_model: int | None, heads: int = 4) -> str:
    lines = ["n_layers: 2", f"n_heads: {heads}", "head_dim: 64", "ffn_hidden: 1024"]
    if d_model is not None:
        lines.append(f"d_model: {d_model}")
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture
def files(tmp_path):
    alpha = tmp_path / "alpha_star.json"
    alpha.write_text(json.dumps({"format": "draw-mixture/v1", "domains": DOMAINS,
                                 "kind": "static", "weights": ALPHA_STAR,
                                 "provenance": {"run": "runs/proxy"}}))
    return {"alpha": str(alpha), "n256": _model_yaml(tmp_path / "n256.yaml", 256, 4),
            "n1024": _model_yaml(tmp_path / "n1024.yaml", 1024, 16), "tmp": tmp_path}


def _args(files, proxy="n256", main="n1024", *extra):
    return ["--alpha-star", files["alpha"], "--proxy-config", files[proxy],
            "--main-config", files[main], "--out", str(files["tmp"] / "draw.json"), *extra]


def test_worked_example_end_to_end(draw_posterior_tool, files, capsys):
    static = str(files["tmp"] / "static.json")
    assert draw_posterior_tool.main(_args(files, "n256", "n1024", "--static-out", static)) == 0
    out = capsys.readouterr().out
    spec = load_mixture(str(files["tmp"] / "draw.json"), DOMAINS)
    assert spec.kind == "dirichlet"
    np.testing.assert_allclose(spec.values, [8.8, 8.6, 8.4, 8.2], rtol=1e-12)
    np.testing.assert_allclose(spec.stats["mean"], np.array([8.8, 8.6, 8.4, 8.2]) / 34)
    assert spec.stats["var"][0] == pytest.approx(221.76 / 40460, rel=1e-12)
    prov = spec.provenance
    assert (prov["n1"], prov["n2"], prov["k"], prov["evidence"]) == (256, 1024, 4, 1.0)
    assert prov["prior"] == [4.0] * 4 and prov["alpha_star"] == ALPHA_STAR
    assert prov["source_run"] == {"run": "runs/proxy"}
    assert prov["alpha_star_file"] == os.path.abspath(files["alpha"])
    baseline = load_mixture(static, DOMAINS)
    assert baseline.kind == "static"
    np.testing.assert_allclose(baseline.values, np.array([8.8, 8.6, 8.4, 8.2]) / 34)
    assert "0.2588" in out and "note (docs/algorithms.md §1.7)" in out
    assert "[0.2353, 0.2941]" in out  # (16/4)/17 and (16/4 + 1)/17


def test_evidence_other_than_one_has_no_note(draw_posterior_tool, files, capsys):
    assert draw_posterior_tool.main(_args(files) + ["--evidence", "16"]) == 0
    out = capsys.readouterr().out
    assert "note" not in out
    spec = load_mixture(str(files["tmp"] / "draw.json"))
    np.testing.assert_allclose(spec.values, 2 * (4 + 16 * np.array(ALPHA_STAR)), rtol=1e-12)


def test_shipped_presets_and_a_run_config(draw_posterior_tool, files, capsys):
    run_cfg = files["tmp"] / "config.yaml"
    run_cfg.write_text("run:\n  dir: runs/x\ndata:\n  root: data\nmodel:\n  preset: tiny-128\n")
    proxy = os.path.join(REPO, "configs", "models", "tiny-64.yaml")
    argv = ["--alpha-star", files["alpha"], "--proxy-config", proxy, "--main-config",
            str(run_cfg), "--out", str(files["tmp"] / "draw.json")]
    assert draw_posterior_tool.main(argv) == 0
    prov = load_mixture(str(files["tmp"] / "draw.json")).provenance
    assert (prov["n1"], prov["n2"]) == (64, 128)


def test_manifest_order_and_domain_mismatch(draw_posterior_tool, files, capsys):
    root = write_manifest(str(files["tmp"] / "data"), ["D", "C", "B", "A"])
    assert draw_posterior_tool.main(_args(files) + ["--data", root]) == 0
    spec = load_mixture(str(files["tmp"] / "draw.json"))
    assert spec.domains == ["D", "C", "B", "A"]
    np.testing.assert_allclose(spec.values, [8.2, 8.4, 8.6, 8.8], rtol=1e-12)
    capsys.readouterr()
    other = write_manifest(str(files["tmp"] / "other"), ["A", "B", "C", "Wikipedia (en)"])
    assert draw_posterior_tool.main(_args(files) + ["--data", other]) == 1
    err = capsys.readouterr().err
    assert "missing domain(s) ['Wikipedia (en)']" in err and "unknown domain(s) ['D']" in err


def test_proxy_wider_than_main_warns_and_succeeds(draw_posterior_tool, files, capsys):
    assert draw_posterior_tool.main(_args(files, "n1024", "n256")) == 0
    err = capsys.readouterr().err
    assert "warning: the proxy (d_model n1=1024" in err and "wider than the main" in err
    np.testing.assert_allclose(load_mixture(str(files["tmp"] / "draw.json")).values,
                               0.5 * (8 + np.array(ALPHA_STAR)), rtol=1e-12)


def test_config_without_d_model_is_an_error(draw_posterior_tool, files, capsys):
    files["bad"] = _model_yaml(files["tmp"] / "bad.yaml", None)
    assert draw_posterior_tool.main(_args(files, "bad", "n1024")) == 1
    err = capsys.readouterr().err
    assert "bad.yaml: no model width: set model.d_model" in err
    assert not os.path.exists(files["tmp"] / "draw.json")


def test_alpha_star_must_be_static(draw_posterior_tool, files, capsys):
    with open(files["alpha"], "w") as fh:
        json.dump({"format": "draw-mixture/v1", "domains": DOMAINS, "kind": "dirichlet",
                   "concentration": [1, 1, 1, 1]}, fh)
    assert draw_posterior_tool.main(_args(files)) == 1
    assert "must be a static mixture file" in capsys.readouterr().err


def test_help(draw_posterior_tool, capsys):
    with pytest.raises(SystemExit) as exc:
        draw_posterior_tool.main(["--help"])
    assert exc.value.code == 0 and "--static-out" in capsys.readouterr().out


# --------------------------------------------------------------------------- --groups

GROUPS = {"format": "draw-groups/v1", "groups": {"xy": ["A", "C"], "zw": ["B", "D"]}}


def _groups_file(files, obj=GROUPS) -> str:
    path = files["tmp"] / "groups.json"
    path.write_text(json.dumps(obj))
    return str(path)


def test_groups_write_the_hierarchical_posterior(draw_posterior_tool, files, capsys):
    root = write_manifest(str(files["tmp"] / "data"), DOMAINS)
    static = str(files["tmp"] / "static.json")
    argv = _args(files) + ["--data", root, "--groups", _groups_file(files),
                           "--static-out", static, "--mc-draws", "4000", "--mc-seed", "7"]
    assert draw_posterior_tool.main(argv) == 0
    out = capsys.readouterr().out
    spec = load_mixture(str(files["tmp"] / "draw.json"), DOMAINS)
    assert spec.kind == "hierarchical_dirichlet" and spec.groups.names == ("xy", "zw")
    # γ2 = 2·(16/2 + (A_xy, A_zw)) = 2·(8.6, 8.4); β2 = 2·(16/2 + α*_i/A_g(i))
    np.testing.assert_allclose(spec.group_concentration, [17.2, 16.8], rtol=1e-12)
    np.testing.assert_allclose(spec.concentration, 2 * (8 + np.array([0.4 / 0.6, 0.3 / 0.4,
                                                                      0.2 / 0.6, 0.1 / 0.4])))
    np.testing.assert_allclose(spec.stats["mean"], spec.mean(), rtol=1e-15)
    np.testing.assert_allclose(spec.stats["var"], spec.var(), rtol=1e-15)
    prov = spec.provenance
    assert prov["prior"] == {"group_concentration": [8.0, 8.0], "concentration": [8.0] * 4}
    np.testing.assert_allclose(prov["group_mass"], [0.6, 0.4])
    assert prov["groups_file"] == os.path.abspath(files["tmp"] / "groups.json")
    assert prov["source_run"] == {"run": "runs/proxy"} and prov["num_groups"] == 2
    baseline = load_mixture(static, DOMAINS)
    assert baseline.kind == "static"
    np.testing.assert_allclose(baseline.values, spec.mean(), rtol=1e-12)
    assert "group level (E[w], sd exact)" in out and "17.2000" in out
    assert "5% and 95%: Monte Carlo (4000 draws, seed 7)" in out
    assert f"{spec.mean()[0]:.4f}" in out and "note" not in out


def test_one_group_gives_the_flat_concentration(draw_posterior_tool, files, capsys):
    flat_out = str(files["tmp"] / "flat.json")
    assert draw_posterior_tool.main(_args(files)[:-1] + [flat_out]) == 0
    one = _groups_file(files, {"format": "draw-groups/v1", "groups": {"all": DOMAINS}})
    assert draw_posterior_tool.main(_args(files) + ["--groups", one]) == 0
    hier = load_mixture(str(files["tmp"] / "draw.json"))
    np.testing.assert_allclose(hier.concentration, load_mixture(flat_out).values, rtol=1e-15)


def test_bad_groups_file_is_one_line(draw_posterior_tool, files, capsys):
    bad = _groups_file(files, {"format": "draw-groups/v1",
                               "groups": {"xy": ["A", "C"], "zw": ["B", "Dd"]}})
    assert draw_posterior_tool.main(_args(files) + ["--groups", bad]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown domain 'Dd' (did you mean 'D'?)" in err
    assert not os.path.exists(files["tmp"] / "draw.json")
    assert draw_posterior_tool.main(_args(files) + ["--groups", _groups_file(files),
                                                    "--mc-draws", "0"]) == 1
    assert "--mc-draws 0 must be >= 1" in capsys.readouterr().err
