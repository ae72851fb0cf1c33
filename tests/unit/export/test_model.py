"""The exported model's logits equal ours in fp32, for every (norm, MLP) family and head."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors import safe_open

from draw_megatron.export.hf import export_hf
from draw_megatron.export.model import FAMILIES, hf_family
from draw_megatron.export.verify import logits_max_abs_diff, random_tokens
from draw_megatron.model import load_consolidated, save_consolidated
from tests.unit.export.helpers import SINGLE, make_run, tiny_model
from tests.unit.model.tiny import one_thread  # noqa: F401

TOLERANCE = 1e-4

CASES = [  # (norm, mlp, tied, the stock class)
    ("layernorm", "gelu", True, "Starcoder2ForCausalLM"),
    ("layernorm", "gelu", False, "Starcoder2ForCausalLM"),
    ("rmsnorm", "swiglu", True, "LlamaForCausalLM"),
    ("rmsnorm", "swiglu", False, "LlamaForCausalLM"),
    ("layernorm", "swiglu", False, "StableLmForCausalLM"),
    ("rmsnorm", "gelu", True, "ArceeForCausalLM"),
]


@pytest.mark.parametrize("norm,mlp,tied,architecture", CASES)
def test_logits_match_in_fp32(tmp_path, demo_tokenizer_path, norm, mlp, tied, architecture):
    run = str(tmp_path / "run")
    _, cfg = make_run(run, demo_tokenizer_path, norm=norm, mlp=mlp, tie_embeddings=tied)
    out = export_hf(run, str(tmp_path / "hf"))
    with open(os.path.join(out, "config.json"), encoding="utf-8") as fh:
        config = json.load(fh)
    assert config["architectures"] == [architecture] and "auto_map" not in config  # stock code
    assert config["vocab_size"] == cfg.vocab_size < cfg.padded_vocab_size  # padding cut
    state, _ = load_consolidated(run)
    tokens = random_tokens(cfg.vocab_size, num_sequences=4, seq_len=cfg.seq_len, seed=1)
    delta = logits_max_abs_diff(out, state, cfg, tokens)
    print(f"\n{norm}+{mlp} {'tied' if tied else 'untied'} → {architecture}: "
          f"logits max |Δ| = {delta:.3g} over {tuple(tokens.shape)} tokens")
    assert delta <= TOLERANCE


def test_check_is_sensitive_to_a_wrong_block(tmp_path, demo_tokenizer_path):
    # The tanh GELU in place of the exact one is the subtlest wrong choice the mapping could
    # make; the comparison must see it, or passing it would mean nothing.
    run = str(tmp_path / "run")
    _, cfg = make_run(run, demo_tokenizer_path, norm="layernorm", mlp="gelu")
    out = export_hf(run, str(tmp_path / "hf"))
    path = os.path.join(out, "config.json")
    with open(path, encoding="utf-8") as fh:
        config = json.load(fh)
    with open(path, "w", encoding="utf-8") as fh:
        json.dump({**config, "hidden_act": "gelu_pytorch_tanh"}, fh)
    state, _ = load_consolidated(run)
    tokens = random_tokens(cfg.vocab_size, num_sequences=4, seq_len=cfg.seq_len, seed=1)
    delta = logits_max_abs_diff(out, state, cfg, tokens)
    print(f"\ntanh GELU in place of the exact one: logits max |Δ| = {delta:.3g}")
    assert delta > 3 * TOLERANCE


def test_bf16_weights_stay_bf16(tmp_path, demo_tokenizer_path):
    model, cfg = tiny_model(norm="rmsnorm", mlp="swiglu")
    save_consolidated(str(tmp_path / "run"), model.to(torch.bfloat16), SINGLE, cfg)
    out = export_hf(str(tmp_path / "run"), str(tmp_path / "hf"), tokenizer=demo_tokenizer_path)
    with safe_open(os.path.join(out, "model.safetensors"), framework="pt") as fh:
        assert fh.get_tensor("model.embed_tokens.weight").dtype == torch.bfloat16
    state, _ = load_consolidated(str(tmp_path / "run"))
    tokens = random_tokens(cfg.vocab_size, num_sequences=2, seq_len=16)
    assert logits_max_abs_diff(out, state, cfg, tokens) <= TOLERANCE  # same weights, fp32 maths


def test_every_norm_and_mlp_has_a_family():
    _, cfg = tiny_model()
    assert {(n, m) for n in ("layernorm", "rmsnorm") for m in ("gelu", "swiglu")} == set(FAMILIES)
    object.__setattr__(cfg, "norm", "scalenorm")  # a kind a future config might add
    with pytest.raises(ValueError, match=r"no stock transformers class represents "
                                         r"model.norm='scalenorm' with model.mlp='gelu'"):
        hf_family(cfg)
