"""Full state dicts and the consolidated safetensors file at tp = 1 (TP layouts: distributed)."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from draw_megatron.model import (GPT, full_state_dict, load_consolidated, load_consolidated_into,
                                 load_full_state_dict, save_consolidated)
from draw_megatron.parallel import ParallelTopology
from tests.unit.model.tiny import batch, one_thread, tiny_config  # noqa: F401

SINGLE = ParallelTopology.single()


def test_consolidated_round_trip(tmp_path):
    cfg = tiny_config(mlp="swiglu", tie_embeddings=False, norm="rmsnorm")
    source = GPT(cfg, SINGLE, seed=1)
    out = save_consolidated(str(tmp_path), source, SINGLE, cfg)
    assert out == os.path.join(str(tmp_path), "model.safetensors")
    assert os.listdir(tmp_path) == ["model.safetensors"]  # no temporary file left behind
    with safe_open(out, framework="pt") as fh:
        assert json.loads(fh.metadata()["model_config"])["vocab_size"] == 300
        assert fh.get_tensor("embedding.weight").shape == (384, 64)  # padding rows kept
    state, file_cfg = load_consolidated(out)
    assert file_cfg == cfg
    target = GPT(cfg, SINGLE, seed=2)
    assert load_consolidated_into(str(tmp_path), target, SINGLE) == cfg
    tokens, labels = batch()
    torch.testing.assert_close(target(tokens, labels), source(tokens, labels), rtol=0, atol=0)
    assert state.keys() == full_state_dict(target, SINGLE).keys()


def test_other_architecture_is_named(tmp_path):
    cfg = tiny_config()
    path = save_consolidated(str(tmp_path / "m.safetensors"), GPT(cfg, SINGLE), SINGLE, cfg)
    deeper = GPT(tiny_config(n_layers=3, mlp="swiglu"), SINGLE)
    with pytest.raises(ValueError, match=r"holds a different architecture: model.n_layers: "
                                         r"file has 2, model has 3; model.mlp: file has 'gelu'"):
        load_consolidated_into(path, deeper, SINGLE)
    # Fields that do not change the weights may differ.
    load_consolidated_into(path, GPT(tiny_config(seq_len=64, dropout=0.1), SINGLE), SINGLE)


def test_state_dict_errors_name_the_parameter():
    model = GPT(tiny_config(), SINGLE)
    state = full_state_dict(model, SINGLE)
    bad = dict(state, **{"final_norm.bias": torch.zeros(65)})
    with pytest.raises(ValueError, match=r"'final_norm.bias': the state holds shape \(65,\), "
                                         r"the model needs \(64,\)"):
        load_full_state_dict(model, bad, SINGLE)
    missing = {k: v for k, v in state.items() if k != "final_norm.bias"}
    with pytest.raises(ValueError, match=r"missing \['final_norm.bias'\], unexpected none"):
        load_full_state_dict(model, missing, SINGLE)


def test_foreign_or_inconsistent_files_are_refused(tmp_path):
    foreign = str(tmp_path / "foreign.safetensors")
    save_file({"w": torch.zeros(2)}, foreign)
    with pytest.raises(ValueError, match="is not a draw_megatron consolidated model"):
        load_consolidated(foreign)
    cfg = tiny_config()
    model = GPT(cfg, SINGLE)
    with pytest.raises(ValueError, match=r"blocks.2.attn_norm.weight: missing"):
        save_consolidated(str(tmp_path), model, SINGLE, tiny_config(n_layers=3))
    assert not os.path.exists(tmp_path / "model.safetensors")
