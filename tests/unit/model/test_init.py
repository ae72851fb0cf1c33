"""Initialisation: seeded per (seed, name), GPT-2 scales, no side effect on torch's RNG."""

from __future__ import annotations

import math

import pytest
import torch

from draw_megatron.model import GPT
from draw_megatron.model.init import init_kind, parameter_seed
from draw_megatron.parallel import ParallelTopology
from tests.unit.model.tiny import VOCAB, one_thread, tiny_config  # noqa: F401

SINGLE = ParallelTopology.single()


def _params(model: GPT) -> dict[str, torch.Tensor]:
    return {n: p.detach() for n, p in model.named_parameters()}


def test_same_seed_same_weights_other_seed_other_weights():
    cfg = tiny_config(tie_embeddings=False)
    a, b, c = _params(GPT(cfg, SINGLE, seed=3)), _params(GPT(cfg, SINGLE, seed=3)), \
        _params(GPT(cfg, SINGLE, seed=4))
    for name in a:
        assert torch.equal(a[name], b[name]), name
        if init_kind(name) not in ("ones", "zeros"):
            assert not torch.equal(a[name], c[name]), name


def test_building_does_not_touch_the_global_rng():
    state = torch.get_rng_state()
    GPT(tiny_config(), SINGLE, seed=0)
    assert torch.equal(torch.get_rng_state(), state)


def test_draws_depend_on_the_name_not_on_the_architecture_around_it():
    two, three = _params(GPT(tiny_config(), SINGLE)), _params(GPT(tiny_config(n_layers=3), SINGLE))
    assert torch.equal(two["blocks.1.attention.qkv.weight"], three["blocks.1.attention.qkv.weight"])


def test_scales_norms_and_padding():
    cfg = tiny_config(n_layers=8, d_model=256, n_heads=4, head_dim=64, ffn_hidden=512,
                      init_std=0.05)
    p = _params(GPT(cfg, SINGLE))
    assert p["blocks.0.attention.qkv.weight"].std().item() == pytest.approx(0.05, rel=0.02)
    assert p["blocks.0.mlp.up.weight"].std().item() == pytest.approx(0.05, rel=0.02)
    residual = 0.05 / math.sqrt(2 * 8)
    assert p["blocks.3.attention.proj.weight"].std().item() == pytest.approx(residual, rel=0.02)
    assert p["blocks.3.mlp.down.weight"].std().item() == pytest.approx(residual, rel=0.02)
    assert torch.all(p["blocks.0.attn_norm.weight"] == 1) and torch.all(p["final_norm.bias"] == 0)
    emb = p["embedding.weight"]
    assert torch.all(emb[VOCAB:] == 0) and emb[:VOCAB].std().item() == pytest.approx(0.05, rel=0.02)


def test_rules_cover_names_and_reject_unknown():
    assert init_kind("blocks.11.mlp.gate_up.weight") == "normal"
    assert init_kind("head.weight") == "vocab"
    with pytest.raises(ValueError, match="no initialisation rule for parameter 'blocks.0.x.w'"):
        init_kind("blocks.0.x.w")
    assert parameter_seed(0, "a") == parameter_seed(0, "a") != parameter_seed(1, "a")
    assert 0 <= parameter_seed(123, "embedding.weight") < 2**63


def test_meta_build_has_shapes_only():
    model = GPT(tiny_config(), SINGLE, device="meta")
    assert all(p.is_meta for p in model.parameters())
    assert model.embedding.weight.tensor_model_parallel
