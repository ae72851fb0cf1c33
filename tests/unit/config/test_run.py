"""RunConfig: loading, override precedence, cross-field and layout checks, round trip."""

from __future__ import annotations

import json

import pytest
import yaml

from draw_megatron.config.base import ConfigError, load_yaml, save_config
from draw_megatron.config.run import RunConfig, load_run_config

BASE = {
    "run": {"dir": "runs/t"},
    "model": {"preset": "tiny-64"},
    "data": {"root": "data"},
    "train": {"steps": 10, "global_batch": 8, "micro_batch": 2},
}


def write(tmp_path, tree=None, **sections):
    data = {**BASE, **(tree or {}), **sections}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def load(tmp_path, overrides=(), **sections):
    return load_run_config(write(tmp_path, **sections), list(overrides))


def test_minimal_config_takes_defaults(tmp_path):
    cfg = load(tmp_path)
    assert cfg.run.resume == "auto" and cfg.mixture.kind == "natural"
    assert cfg.dga.every == 100 and cfg.dga.eta is None and cfg.dga.ema_weight == 0.1
    assert cfg.train.betas == [0.9, 0.99] and cfg.dro.smoothing == 1e-3
    assert cfg.eval_split == "val" and cfg.run_name == "t"


def test_documented_overrides(tmp_path):
    cfg = load(tmp_path, ["train.steps=100", "mixture.kind=dirichlet", "mixture.file=m.json",
                          "model.preset=70M", "dga.eta=1e-2", "train.betas=[0.9, 0.95]"])
    assert cfg.train.steps == 100 and cfg.mixture.kind == "dirichlet"
    assert cfg.model.d_model == 256 and cfg.dga.eta == 0.01 and cfg.train.betas == [0.9, 0.95]


def test_precedence_preset_yaml_override(tmp_path):
    model = {"preset": "tiny-64", "n_layers": 3, "ffn_hidden": 128}
    cfg = load(tmp_path, model=model)
    assert (cfg.model.n_layers, cfg.model.ffn_hidden, cfg.model.d_model) == (3, 128, 64)
    cfg = load(tmp_path, ["model.n_layers=5"], model=model)
    assert (cfg.model.n_layers, cfg.model.ffn_hidden) == (5, 128)
    # A preset given on the command line still loses to the YAML's explicit fields.
    cfg = load(tmp_path, ["model.preset=tiny-128"], model=model)
    assert (cfg.model.n_layers, cfg.model.ffn_hidden, cfg.model.d_model) == (3, 128, 128)


def test_unknown_key_in_yaml(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'train.stpes' \(did you mean 'steps'\?\)"):
        load(tmp_path, train={"stpes": 3})
    with pytest.raises(ConfigError, match=r"unknown key 'mixtures' \(did you mean 'mixture'\?\)"):
        load(tmp_path, mixtures={"kind": "uniform"})


def test_unknown_key_in_override(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'dga.ema' \(did you mean 'ema_weight'\?\)"):
        load(tmp_path, ["dga.ema=0.2"])
    with pytest.raises(ConfigError, match=r"override 'model.n_layer=3': unknown key "
                                          r"'model.n_layer' \(did you mean 'n_layers'\?\)"):
        load(tmp_path, ["model.n_layer=3"])


def test_wrong_type(tmp_path):
    with pytest.raises(ConfigError, match=r"train.steps: expected int, got str 'many'"):
        load(tmp_path, ["train.steps=many"])
    with pytest.raises(ConfigError, match=r"train.micro_batch: expected int, got float 2.5"):
        load(tmp_path, train={**BASE["train"], "micro_batch": 2.5})
    with pytest.raises(ConfigError, match=r"log.tensorboard: expected bool, got str 'maybe'"):
        load(tmp_path, ["log.tensorboard=maybe"])
    with pytest.raises(ConfigError, match=r"mixture.kind='dirichlt' is not a mixture kind "
                                          r"\(did you mean 'dirichlet'\?\)"):
        load(tmp_path, ["mixture.kind=dirichlt"])


def test_missing_required_keys(tmp_path):
    path = tmp_path / "no_data.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in BASE.items() if k != "data"}))
    with pytest.raises(ConfigError, match=r"missing required key\(s\): data"):
        load_run_config(str(path))
    with pytest.raises(ConfigError, match=r"missing required key\(s\): run.dir"):
        load(tmp_path, run={"seed": 1})


def test_tp_must_divide_heads(tmp_path):
    with pytest.raises(ConfigError, match=r"parallel.tp=3 does not divide model.n_heads=4"):
        load(tmp_path, ["parallel.tp=3"], model={"preset": "tiny-128"})


def test_tp_must_divide_padded_vocab(tmp_path):
    model = {"preset": "tiny-128", "vocab_size": 1001, "vocab_multiple": 1}
    with pytest.raises(ConfigError, match=r"parallel.tp=2 does not divide the padded vocabulary "
                                          r"1001 \(model.vocab_size=1001"):
        load(tmp_path, ["parallel.tp=2"], model=model)


def test_tp_must_divide_world(tmp_path):
    cfg = load(tmp_path, ["parallel.tp=2"])
    with pytest.raises(ConfigError, match=r"parallel.tp=2 does not divide the world size 3"):
        cfg.validate_layout(3, check_data_root=False)


def test_global_batch_divisibility(tmp_path):
    cfg = load(tmp_path, ["train.global_batch=12", "train.micro_batch=2", "parallel.tp=2"])
    cfg.validate_layout(4, check_data_root=False)  # DP 2: 12 = 2 × 2 × 3
    assert cfg.data_parallel_size(4) == 2 and cfg.gradient_accumulation_steps(4) == 3
    with pytest.raises(ConfigError, match=r"train.global_batch=12 is not divisible by "
                                          r"train.micro_batch=2 × DP=4 = 8"):
        cfg.validate_layout(8, check_data_root=False)


def test_data_root_checks(tmp_path):
    cfg = load(tmp_path, [f"data.root={tmp_path / 'missing'}"])
    with pytest.raises(ConfigError, match=r"data.root='.*missing' does not exist"):
        cfg.validate_layout(1)
    root = tmp_path / "data"
    root.mkdir()
    cfg = load(tmp_path, [f"data.root={root}"])
    with pytest.raises(ConfigError, match=r"data.root='.*data' holds no manifest.json"):
        cfg.validate_layout(1)
    (root / "manifest.json").write_text(json.dumps({}))
    cfg.validate_layout(1)


@pytest.mark.parametrize("overrides, message", [
    (["mixture.kind=static"], r"mixture.kind=static needs mixture.file"),
    (["mixture.kind=dirichlet"], r"mixture.kind=dirichlet needs mixture.file"),
    (["mixture.file=m.json"], r"mixture.file='m.json' is ignored by mixture.kind=natural"),
    (["mixture.redraw_every=0"], r"mixture.redraw_every=0 must be > 0"),
    (["zero.stage=4"], r"zero.stage=4 must be 0, 1, 2 or 3"),
    (["zero.stage=0", "zero.offload=true"], r"zero.offload=true needs zero.stage >= 1"),
    (["train.micro_batch=16"], r"train.micro_batch=16 exceeds train.global_batch=8"),
    (["train.min_lr=1e-2"], r"train.min_lr=0.01 must be in \(0, train.lr=0.001\]"),
    (["train.min_lr=0"], r"train.min_lr=0.0 must be in \(0, train.lr=0.001\]"),
    (["train.betas=[0.9]"], r"train.betas=\[0.9\] must be two values"),
    (["train.precision=fp16"], r"train.precision='fp16' is not one of"),
    (["dga.eta=-1"], r"dga.eta=-1.0 must be finite and > 0"),
    (["dga.alignment=cos"], r"dga.alignment='cos' is not one of .*'cosine'"),
    (["dro.smoothing=1"], r"dro.smoothing=1.0 must be in \[0, 1\)"),
    (["run.resume="], r"run.resume: expected str, got NoneType None"),
    (["run.resume=''"], r"run.resume must be 'auto', 'never' or a checkpoint path"),
])
def test_section_validation(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        load(tmp_path, overrides)


def test_mixture_file_by_kind(tmp_path):
    assert load(tmp_path, ["mixture.kind=online_draw",
                           "mixture.file=a.json"]).mixture.file == "a.json"
    assert load(tmp_path, ["mixture.kind=online_draw"]).mixture.file is None
    with pytest.raises(ConfigError, match=r"mixture.file='a.json' is ignored by "
                                          r"mixture.kind=online"):
        load(tmp_path, ["mixture.kind=online", "mixture.file=a.json"])
    with pytest.raises(ConfigError, match=r"mixture.kind='doremi' is not a mixture kind"):
        load(tmp_path, ["mixture.kind=doremi"])
    with pytest.raises(ConfigError, match=r"mixture.forget=0.0 must be in \(0, 1\]"):
        load(tmp_path, ["mixture.forget=0"])


def test_pass_sections_are_part_of_every_config(tmp_path):
    """Each registered pass's section exists, takes overrides, dumps and validates, whether
    or not the pass is on."""
    cfg = load(tmp_path, ["dga.eta=0.5", "odm.smoothing=0.5", "dro_evidence.every=7"])
    assert cfg.dga.eta == 0.5 and cfg.section("odm").smoothing == 0.5
    assert cfg.dro_evidence.every == 7 and cfg.passes == []
    tree = cfg.to_dict()
    assert {"dro", "dga", "odm", "dro_evidence", "alignment_monitor"} <= set(tree)
    with pytest.raises(ConfigError, match=r"unknown key 'dga.etta' \(did you mean 'eta'\?\)"):
        load(tmp_path, ["dga.etta=1"])
    with pytest.raises(ConfigError, match=r"odm.smoothing=1.5 must be in \[0, 1\)"):
        load(tmp_path, ["odm.smoothing=1.5"])
    with pytest.raises(ConfigError, match=r"passes\[0\]='dgaa' is not a step pass"):
        load(tmp_path, ["passes=[dgaa]"])


def test_resolved_yaml_round_trips(tmp_path):
    cfg = load(tmp_path, ["model.preset=70M", "model.n_layers=4", "train.lr=3e-4",
                          "run.name=2024-01-01", "dga.eta=1e-8"])
    out = tmp_path / "run" / "config.yaml"
    save_config(cfg, str(out))
    again = load_run_config(str(out), [])
    assert again == cfg and again.to_dict() == cfg.to_dict() == load_yaml(str(out))
    assert again.run.name == "2024-01-01" and again.model.n_layers == 4


def test_from_dict_equals_loader(tmp_path):
    cfg = load(tmp_path)
    assert RunConfig.from_dict(cfg.to_dict(), prefix="") == cfg
