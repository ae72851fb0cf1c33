"""Our GPT as a stock ``transformers`` causal LM: which class, its config, renamed tensors.

Each (norm, MLP) family maps to the stock class whose block is ours exactly (checked by the
logits tests in fp32): pre-norm, sequential residual (attention, then MLP), rotary on the
whole head in the rotate-half layout with the same θ, no bias in any linear layer, and the
same norm and activation.

======================  =====================  ============================================
our model               transformers class     why this one
======================  =====================  ============================================
RMSNorm + SwiGLU        LlamaForCausalLM       attention_bias = mlp_bias = False
LayerNorm + GELU        Starcoder2ForCausalLM  nn.LayerNorm (weight, bias), plain c_fc/c_proj
                                               MLP, use_bias = False, hidden_act "gelu"
                                               (exact erf GELU, as F.gelu's default)
LayerNorm + SwiGLU      StableLmForCausalLM    gated SiLU MLP, partial_rotary_factor 1,
                                               use_parallel_residual = qk_layernorm = False
RMSNorm + GELU          ArceeForCausalLM       Llama with an ungated up/down MLP
======================  =====================  ============================================

Our rotary already pairs dimension i with i + D/2 (``model/rotary.py``), which is what
``rotate_half`` does, so the q and k rows are copied as they are; the fused QKV is [Q; K; V]
and SwiGLU's fused weight is [gate; up] (full tensors, whatever the TP size of training).

The vocabulary matrices are cut to the tokenizer's ``vocab_size`` rows: the padding rows
(``padded_vocab_size``) are ids that never occur, and a stock model whose vocabulary equals
the tokenizer's never predicts them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from draw_megatron.config.model import ModelConfig


@dataclass(frozen=True)
class HFFamily:
    """One stock ``transformers`` architecture and how our tensors map onto it."""

    model_type: str
    """``config.json``'s model_type."""
    architecture: str
    """The ``*ForCausalLM`` class name."""
    fields: Callable[[ModelConfig], dict]
    """Family-specific config fields (norm eps, activation, biases, rotary)."""
    mlp_names: dict[str, str]
    """Our MLP matrix names (``up``, ``gate``, ``down``) → the class's module names."""


def _rope(cfg: ModelConfig, **extra: float) -> dict:
    return {"rope_parameters": {"rope_type": "default", "rope_theta": cfg.rotary_base, **extra}}


FAMILIES: dict[tuple[str, str], HFFamily] = {
    ("rmsnorm", "swiglu"): HFFamily(
        "llama", "LlamaForCausalLM",
        lambda cfg: dict(rms_norm_eps=cfg.norm_eps, hidden_act="silu", attention_bias=False,
                         mlp_bias=False, head_dim=cfg.head_dim, **_rope(cfg)),
        {"gate": "gate_proj", "up": "up_proj", "down": "down_proj"}),
    ("layernorm", "gelu"): HFFamily(
        "starcoder2", "Starcoder2ForCausalLM",
        lambda cfg: dict(norm_epsilon=cfg.norm_eps, hidden_act="gelu", use_bias=False,
                         sliding_window=None, residual_dropout=0.0, embedding_dropout=0.0,
                         head_dim=cfg.head_dim, **_rope(cfg)),
        {"up": "c_fc", "down": "c_proj"}),
    ("layernorm", "swiglu"): HFFamily(
        "stablelm", "StableLmForCausalLM",
        lambda cfg: dict(layer_norm_eps=cfg.norm_eps, hidden_act="silu", use_qkv_bias=False,
                         qk_layernorm=False, use_parallel_residual=False, hidden_dropout=0.0,
                         **_rope(cfg, partial_rotary_factor=1.0)),
        {"gate": "gate_proj", "up": "up_proj", "down": "down_proj"}),
    ("rmsnorm", "gelu"): HFFamily(
        "arcee", "ArceeForCausalLM",
        lambda cfg: dict(rms_norm_eps=cfg.norm_eps, hidden_act="gelu", attention_bias=False,
                         mlp_bias=False, head_dim=cfg.head_dim, **_rope(cfg)),
        {"up": "up_proj", "down": "down_proj"}),
}


def hf_family(cfg: ModelConfig) -> HFFamily:
    """The stock class for ``cfg``; ValueError naming the fields if none represents it."""
    family = FAMILIES.get((cfg.norm, cfg.mlp))
    if family is None:
        known = ", ".join(f"{n}+{m}" for n, m in FAMILIES)
        raise ValueError(f"no stock transformers class represents model.norm={cfg.norm!r} with "
                         f"model.mlp={cfg.mlp!r} (exportable: {known})")
    return family


def hf_config_dict(cfg: ModelConfig, vocab_size: int, *, bos_id: int | None,
                   eos_id: int | None) -> dict:
    """``config.json``'s content (without the transformers version) for ``cfg``."""
    family = hf_family(cfg)
    return {
        "architectures": [family.architecture], "model_type": family.model_type,
        "vocab_size": vocab_size, "hidden_size": cfg.d_model,
        "intermediate_size": cfg.ffn_hidden, "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads, "num_key_value_heads": cfg.n_heads,
        "max_position_embeddings": cfg.seq_len, "tie_word_embeddings": cfg.tie_embeddings,
        "attention_dropout": 0.0, "initializer_range": cfg.init_std, "dtype": "float32",
        "bos_token_id": bos_id, "eos_token_id": eos_id, "pad_token_id": None,
        **family.fields(cfg),
    }


def hf_state_dict(state: dict[str, Tensor], cfg: ModelConfig, vocab_size: int) -> dict[str, Tensor]:
    """Our full tensors (``checkpoint_io.load_consolidated``) renamed and split for the stock
    class, vocabulary matrices cut to ``vocab_size`` rows. A tied head is not written (the
    class ties ``lm_head`` to the embedding from ``tie_word_embeddings``)."""
    if not cfg.vocab_size <= vocab_size <= cfg.padded_vocab_size:
        raise ValueError(f"vocab_size {vocab_size} must lie between model.vocab_size="
                         f"{cfg.vocab_size} and padded_vocab_size={cfg.padded_vocab_size}")
    names = hf_family(cfg).mlp_names
    out = {"model.embed_tokens.weight": state["embedding.weight"][:vocab_size]}
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = state["head.weight"][:vocab_size]
    for i in range(cfg.n_layers):
        ours, theirs = f"blocks.{i}", f"model.layers.{i}"
        out.update(_norm(state, f"{ours}.attn_norm", f"{theirs}.input_layernorm"))
        out.update(_norm(state, f"{ours}.mlp_norm", f"{theirs}.post_attention_layernorm"))
        q, k, v = state[f"{ours}.attention.qkv.weight"].chunk(3, dim=0)
        out.update({f"{theirs}.self_attn.q_proj.weight": q, f"{theirs}.self_attn.k_proj.weight": k,
                    f"{theirs}.self_attn.v_proj.weight": v,
                    f"{theirs}.self_attn.o_proj.weight": state[f"{ours}.attention.proj.weight"]})
        mlp = {"down": state[f"{ours}.mlp.down.weight"]}
        if cfg.mlp == "swiglu":
            mlp["gate"], mlp["up"] = state[f"{ours}.mlp.gate_up.weight"].chunk(2, dim=0)
        else:
            mlp["up"] = state[f"{ours}.mlp.up.weight"]
        out.update({f"{theirs}.mlp.{names[key]}.weight": w for key, w in mlp.items()})
    out.update(_norm(state, "final_norm", "model.norm"))
    # q, k, v (and gate, up) are views of one fused tensor; safetensors wants each to own
    # its memory.
    return {name: t.contiguous().clone() for name, t in out.items()}


def _norm(state: dict[str, Tensor], ours: str, theirs: str) -> dict[str, Tensor]:
    return {f"{theirs}.{p}": state[f"{ours}.{p}"] for p in ("weight", "bias")
            if f"{ours}.{p}" in state}
