"""ModelConfig: presets, precedence, validation, and the analytical parameter count."""

from __future__ import annotations

import pytest

from draw_megatron.config.base import ConfigError
from draw_megatron.config.model import (
    PRESETS,
    ModelConfig,
    count_parameters,
    largest_module_parameters,
)

TABLE_4 = {  # docs/algorithms.md §4: layers, heads, head dim, d_model, FFN
    "70M": (3, 4, 64, 256, 1024), "150M": (6, 8, 64, 512, 2048),
    "280M": (12, 12, 64, 768, 3072), "510M": (12, 16, 64, 1024, 8192),
    "760M": (12, 20, 64, 1280, 8192), "1B": (16, 32, 64, 2048, 8192),
    "8B": (32, 32, 128, 4096, 24576), "dga-125M": (12, 12, 64, 768, 3072),
    "dga-350M": (24, 16, 64, 1024, 4096), "dga-750M": (36, 20, 64, 1280, 5120),
}


@pytest.mark.parametrize("name", list(TABLE_4))
def test_presets_follow_table_4(name):
    cfg = ModelConfig.from_preset(name)
    shape = (cfg.n_layers, cfg.n_heads, cfg.head_dim, cfg.d_model, cfg.ffn_hidden)
    assert shape == TABLE_4[name]


def test_tiny_presets_exist():
    assert PRESETS["tiny-64"] == (2, 2, 32, 64, 256)
    assert PRESETS["tiny-128"] == (2, 4, 32, 128, 512)


def test_explicit_fields_win_over_preset():
    cfg = ModelConfig.from_dict({"preset": "70M", "n_layers": 6}, prefix="model")
    assert (cfg.n_layers, cfg.d_model) == (6, 256)


def test_no_preset_needs_every_architecture_field():
    with pytest.raises(ConfigError, match=r"set model.preset .* missing: model.ffn_hidden"):
        ModelConfig.from_dict({"n_layers": 2, "n_heads": 2, "head_dim": 32, "d_model": 64})
    cfg = ModelConfig.from_dict({"n_layers": 2, "n_heads": 2, "head_dim": 32, "d_model": 64,
                                 "ffn_hidden": 100})
    assert cfg.preset is None and cfg.ffn_hidden == 100


def test_unknown_preset_suggests():
    with pytest.raises(ConfigError, match=r"model.preset='7OM' is not a known preset.*'70M'"):
        ModelConfig.from_preset("7OM")


@pytest.mark.parametrize("fields, message", [
    ({"d_model": 300}, r"model.n_heads=4 × model.head_dim=64 = 256 must equal model.d_model=300"),
    ({"n_layers": 0}, r"model.n_layers=0 must be > 0"),
    ({"vocab_size": -1}, r"model.vocab_size=-1 must be > 0"),
    ({"norm": "rmsnrm"}, r"model.norm='rmsnrm' is not one of .*did you mean 'rmsnorm'"),
    ({"attention": "xformers"}, r"model.attention='xformers' is not one of"),
    ({"dropout": 1.0}, r"model.dropout=1.0 must be in \[0, 1\)"),
    ({"init_std": 0}, r"model.init_std=0.0 must be finite and > 0"),
])
def test_validation_names_the_key(fields, message):
    with pytest.raises(ConfigError, match=message):
        ModelConfig.from_preset("70M", **fields)


def test_8b_heads_times_head_dim():
    cfg = ModelConfig.from_preset("8B")
    assert cfg.n_heads * cfg.head_dim == cfg.d_model == 4096


def test_padded_vocab_is_independent_of_tp():
    assert ModelConfig.from_preset("70M").padded_vocab_size == 32000
    assert ModelConfig.from_preset("70M", vocab_size=50257).padded_vocab_size == 50304
    assert ModelConfig.from_preset("70M", vocab_size=8000).padded_vocab_size == 8064
    assert ModelConfig.from_preset("70M", vocab_size=7, vocab_multiple=1).padded_vocab_size == 7


def test_count_tiny_64_by_hand():
    # tiny-64: d=64, 2 layers, 2 heads × 32, FFN 256, vocab 32000 (already a multiple of 128),
    # LayerNorm (weight + bias), GELU, tied embeddings, no biases in linears.
    embedding = 32000 * 64                    # 2,048,000
    attention = 64 * (3 * 64) + 64 * 64       # fused QKV + output projection = 16,384
    mlp = 64 * 256 + 256 * 64                 # up + down = 32,768
    norms = 2 * (64 + 64)                     # two LayerNorms per block = 256
    final_norm = 64 + 64
    non_embedding = 2 * (attention + mlp + norms) + final_norm
    counts = count_parameters(ModelConfig.from_preset("tiny-64"))
    assert counts["embedding"] == embedding == 2_048_000
    assert counts["non_embedding"] == non_embedding == 98_944
    assert counts["total"] == 2_146_944
    assert counts["per_layer"] == attention + mlp + norms


def test_count_variants():
    base = count_parameters(ModelConfig.from_preset("tiny-64"))
    untied = count_parameters(ModelConfig.from_preset("tiny-64", tie_embeddings=False))
    assert untied["embedding"] == 2 * base["embedding"] and untied["output_head"] == 32000 * 64
    swiglu = count_parameters(ModelConfig.from_preset("tiny-64", mlp="swiglu"))
    assert swiglu["mlp_per_layer"] == 3 * 64 * 256
    rms = count_parameters(ModelConfig.from_preset("tiny-64", norm="rmsnorm"))
    assert base["non_embedding"] - rms["non_embedding"] == (2 * 2 + 1) * 64


@pytest.mark.parametrize("name", list(TABLE_4))
def test_counts_are_plausible(name):
    cfg = ModelConfig.from_preset(name)
    counts = count_parameters(cfg)
    d, L, f = cfg.d_model, cfg.n_layers, cfg.ffn_hidden
    # Dominant terms: 4·d² attention + 2·d·f MLP per layer; norms are < 0.2 %.
    assert counts["non_embedding"] == pytest.approx(L * (4 * d * d + 2 * d * f), rel=2e-3)
    assert counts["embedding"] == 32000 * d
    assert counts["total"] == counts["embedding"] + counts["non_embedding"]


def test_known_true_sizes():
    # The names are the papers', not the sizes (docs/algorithms.md §4): 70M is ~10.6M, 8B is ~8.7B.
    assert count_parameters(ModelConfig.from_preset("70M"))["total"] == 10_554_880
    assert count_parameters(ModelConfig.from_preset("8B"))["total"] == 8_721_539_072


def test_largest_module():
    assert largest_module_parameters(ModelConfig.from_preset("8B")) == 32000 * 4096
    small_vocab = ModelConfig.from_preset("510M", vocab_size=1000)
    assert largest_module_parameters(small_vocab) == 1024 * 8192  # the MLP's up projection
    swiglu = ModelConfig.from_preset("510M", vocab_size=1000, mlp="swiglu")
    assert largest_module_parameters(swiglu) == 2 * 1024 * 8192  # gate and up, fused
