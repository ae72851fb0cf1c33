"""The GPT model's config, its presets (docs/algorithms.md §4) and its true parameter count.

A preset fills the architecture fields (n_layers, n_heads, head_dim, d_model, ffn_hidden);
a field given explicitly in YAML or on the command line wins over the preset. The paper's
names do not match true parameter counts: :func:`count_parameters` gives the real one.

Parameter layout that :func:`count_parameters` assumes, and the model must match
(a model test should compare it with ``sum(p.numel() for p in model.parameters())``):

- token embedding ``[padded_vocab, d_model]``; no position embedding (rotary);
- per layer: a norm before attention and one before the MLP; fused QKV
  ``[d_model, 3 · n_heads · head_dim]`` and output ``[n_heads · head_dim, d_model]``;
  MLP with 2 matrices (GELU: up, down) or 3 (SwiGLU: gate, up, down);
- a final norm; an output head ``[padded_vocab, d_model]`` only when embeddings are untied;
- linear layers have NO biases; LayerNorm has a weight and a bias, RMSNorm a weight only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from draw_megatron.config.base import Config, ConfigError, coerce, join_key, load_yaml, suggest

ARCH_FIELDS = ("n_layers", "n_heads", "head_dim", "d_model", "ffn_hidden")

# name: (n_layers, n_heads, head_dim, d_model, ffn_hidden) — DRAW Table 4 and DGA Table 4,
# plus tiny presets for CPU work.
PRESETS: dict[str, tuple[int, int, int, int, int]] = {
    "70M": (3, 4, 64, 256, 1024),
    "150M": (6, 8, 64, 512, 2048),
    "280M": (12, 12, 64, 768, 3072),
    "510M": (12, 16, 64, 1024, 8192),
    "760M": (12, 20, 64, 1280, 8192),
    "1B": (16, 32, 64, 2048, 8192),
    "8B": (32, 32, 128, 4096, 24576),
    "dga-125M": (12, 12, 64, 768, 3072),
    "dga-350M": (24, 16, 64, 1024, 4096),
    "dga-750M": (36, 20, 64, 1280, 5120),
    "tiny-64": (2, 2, 32, 64, 256),
    "tiny-128": (2, 4, 32, 128, 512),
}


def preset_fields(name: str, key: str = "model.preset") -> dict[str, int]:
    """The architecture fields of preset ``name`` (ConfigError naming ``key`` if unknown)."""
    if name not in PRESETS:
        raise ConfigError(f"{key}={name!r} is not a known preset{suggest(name, PRESETS)}; "
                          f"known: {', '.join(PRESETS)}")
    return dict(zip(ARCH_FIELDS, PRESETS[name]))


@dataclass(kw_only=True)
class ModelConfig(Config):
    """A GPT decoder: pre-norm blocks of attention and MLP, rotary positions."""

    SECTION: ClassVar[str] = "model"

    preset: str | None = None
    """Name in PRESETS that fills the architecture fields; explicit fields win. null: none."""

    n_layers: int
    """Number of transformer blocks."""

    n_heads: int
    """Attention heads; parallel.tp must divide it."""

    head_dim: int
    """Width of one attention head; n_heads · head_dim must equal d_model."""

    d_model: int
    """Residual stream width (n in the DRAW scaling law)."""

    ffn_hidden: int
    """MLP hidden width (for SwiGLU: the width of the gate and of the up projection)."""

    vocab_size: int = 32000
    """Tokenizer vocabulary; the data's tokenizer (manifest.json) may override it."""

    vocab_multiple: int = 128
    """The embedding is padded to a multiple of this, independent of TP (same shapes at any TP)."""

    seq_len: int = 1024
    """Tokens per training sequence; must match the data's seq_len."""

    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    """Normalisation: LayerNorm (weight and bias) or RMSNorm (weight)."""

    norm_eps: float = 1e-5
    """Epsilon of the norms."""

    mlp: Literal["gelu", "swiglu"] = "gelu"
    """MLP kind: GELU (2 matrices, the papers' "GPT" with 4x FFN) or SwiGLU (3 matrices)."""

    tie_embeddings: bool = True
    """Share the token embedding with the output head."""

    dropout: float = 0.0
    """Dropout on attention probabilities and residual branches."""

    rotary_base: float = 10000.0
    """Base (theta) of the rotary position embedding."""

    attention: Literal["auto", "sdpa", "flex", "flash"] = "auto"
    """Attention backend: torch SDPA (kernels tried cuDNN, flash, memory-efficient, math),
    FlexAttention, flash-attn, or auto (CPU: sdpa; CUDA: sdpa, or flex for the document
    mask). See ``draw_megatron/model/attention.py``."""

    attention_mask: Literal["causal", "document"] = "causal"
    """causal: each token sees every earlier token of its sequence. document: only the earlier
    tokens of its own document; a document ends with (and includes) an ``eos_id`` token."""

    position_reset: bool = False
    """With the document mask: restart the rotary positions at 0 at each document start.
    Rotary scores depend on offsets only, so this changes results by rounding only: a packed
    document then computes exactly as it would alone."""

    eos_id: int | None = None
    """The EOS token id that ends documents (the document mask needs it); the trainer sets it
    from the data's tokenizer (manifest.json). null: not set."""

    activation_checkpointing: bool = False
    """Recompute each block in backward (non-reentrant, as the DGA pass needs)."""

    init_std: float = 0.02
    """Standard deviation of the normal initialisation of weights."""

    loss_kernel: Literal["torch", "fused"] = "torch"
    """How the loss is computed from the final hidden states. torch: this rank's logits shard,
    then the vocabulary-parallel cross-entropy. fused: the head and the cross-entropy in one
    (``kernels/fused_linear_ce.py``): logits in tiles or vocabulary chunks, never stored
    whole; Triton on CUDA, a chunked PyTorch reference elsewhere. The same per-token losses and gradients
    up to rounding."""

    @classmethod
    def prepare(cls, data: dict[str, Any], prefix: str) -> dict[str, Any]:
        """Expand ``preset`` under the explicit fields (preset < YAML < override)."""
        name = coerce(data.get("preset"), str | None, join_key(prefix, "preset"))
        if name is None:
            missing = [f for f in ARCH_FIELDS if f not in data]
            if missing:
                raise ConfigError(f"{prefix}: set {join_key(prefix, 'preset')} (one of "
                                  f"{', '.join(PRESETS)}) or every architecture field; "
                                  f"missing: {', '.join(join_key(prefix, f) for f in missing)}")
            return data
        return {**preset_fields(name, join_key(prefix, 'preset')), **data}

    @classmethod
    def from_preset(cls, name: str, **fields: Any) -> ModelConfig:
        """A validated config for preset ``name``; keyword fields win over the preset."""
        return cls.from_dict({"preset": name, **fields})

    @property
    def padded_vocab_size(self) -> int:
        """``vocab_size`` rounded up to a multiple of ``vocab_multiple``."""
        return math.ceil(self.vocab_size / self.vocab_multiple) * self.vocab_multiple

    def validate(self, prefix: str | None = None) -> None:
        prefix = self.SECTION if prefix is None else prefix
        super().validate(prefix)
        if self.preset is not None:
            preset_fields(self.preset, join_key(prefix, "preset"))
        for name in (*ARCH_FIELDS, "vocab_size", "vocab_multiple", "seq_len"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{join_key(prefix, name)}={getattr(self, name)} must be > 0")
        if self.n_heads * self.head_dim != self.d_model:
            raise ConfigError(
                f"{join_key(prefix, 'n_heads')}={self.n_heads} × {join_key(prefix, 'head_dim')}="
                f"{self.head_dim} = {self.n_heads * self.head_dim} must equal "
                f"{join_key(prefix, 'd_model')}={self.d_model}")
        self._validate_floats(prefix)
        self._validate_mask(prefix)

    def _validate_mask(self, prefix: str) -> None:
        if self.position_reset and self.attention_mask != "document":
            raise ConfigError(f"{join_key(prefix, 'position_reset')}=true needs "
                              f"{join_key(prefix, 'attention_mask')}=document")
        if self.eos_id is not None and not 0 <= self.eos_id < self.vocab_size:
            raise ConfigError(f"{join_key(prefix, 'eos_id')}={self.eos_id} must be in "
                              f"[0, {join_key(prefix, 'vocab_size')}={self.vocab_size})")

    def _validate_floats(self, prefix: str) -> None:
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"{join_key(prefix, 'dropout')}={self.dropout} must be in [0, 1)")
        for name in ("norm_eps", "rotary_base", "init_std"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{join_key(prefix, name)}={value} must be finite and > 0")


def load_model_config(path: str) -> ModelConfig:
    """A model YAML (``configs/models/<name>.yaml``: model fields at the top level)."""
    return ModelConfig.from_dict(load_yaml(path), prefix="model")


# --------------------------------------------------------------------------- counting


def _norm_params(cfg: ModelConfig) -> int:
    return 2 * cfg.d_model if cfg.norm == "layernorm" else cfg.d_model


def _layer_counts(cfg: ModelConfig) -> dict[str, int]:
    inner = cfg.n_heads * cfg.head_dim
    matrices = 2 if cfg.mlp == "gelu" else 3
    return {
        "attention": cfg.d_model * 3 * inner + inner * cfg.d_model,
        "mlp": matrices * cfg.d_model * cfg.ffn_hidden,
        "norms": 2 * _norm_params(cfg),
    }


def count_parameters(cfg: ModelConfig) -> dict[str, int]:
    """The model's true parameter count, computed from the config (no model built).

    Keys: ``embedding`` (token embedding with the padded vocabulary, plus the output head
    when untied), ``non_embedding`` (blocks and final norm), ``total``, and the parts
    ``input_embedding``, ``output_head``, ``attention_per_layer``, ``mlp_per_layer``,
    ``norms_per_layer``, ``per_layer``, ``final_norm``. See the module docstring for the
    layout (no biases in linears).
    """
    vocab_matrix = cfg.padded_vocab_size * cfg.d_model
    layer = _layer_counts(cfg)
    per_layer = sum(layer.values())
    output_head = 0 if cfg.tie_embeddings else vocab_matrix
    final_norm = _norm_params(cfg)
    embedding = vocab_matrix + output_head
    non_embedding = cfg.n_layers * per_layer + final_norm
    return {
        "embedding": embedding,
        "non_embedding": non_embedding,
        "total": embedding + non_embedding,
        "input_embedding": vocab_matrix,
        "output_head": output_head,
        "attention_per_layer": layer["attention"],
        "mlp_per_layer": layer["mlp"],
        "norms_per_layer": layer["norms"],
        "per_layer": per_layer,
        "final_norm": final_norm,
    }


def largest_module_parameters(cfg: ModelConfig) -> int:
    """Parameters of the largest single module (what ZeRO-3 gathers at once).

    Assumes the embedding, the fused QKV, the attention output and the MLP projections are
    separate modules; SwiGLU's gate and up are counted as one fused module (an upper bound).
    """
    inner = cfg.n_heads * cfg.head_dim
    up = (2 if cfg.mlp == "swiglu" else 1) * cfg.d_model * cfg.ffn_hidden
    return max(cfg.padded_vocab_size * cfg.d_model, 3 * cfg.d_model * inner, up)
