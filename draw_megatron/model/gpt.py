"""The GPT decoder: architecture only (initialisation: ``init.py``; files: ``checkpoint_io.py``).

    tokens [B, T] → vocab-parallel embedding → dropout
                  → L × block:  x + drop(attention(norm(x)))  then  x + drop(mlp(norm(x)))
                  → final norm → vocab-parallel logits [B, T, V/n]
                  → (labels given) vocab-parallel cross-entropy → per-token loss [B, T], fp32
                    (``loss_kernel="fused"``: head and cross-entropy in one, from the final
                    norm's output, the logits never stored whole)

Attention is causal over the sequence, or (``attention_mask="document"``) within the
documents that ``eos_id`` tokens end; the mask and the rotary tables (per-token positions
with ``position_reset``) are built once per batch from the tokens and shared by the layers.

Pre-norm blocks, rotary positions (no position table), no biases in linear layers,
LayerNorm (weight, bias) or RMSNorm (weight), GELU MLP (up, down) or SwiGLU (fused
gate|up, down), output head tied to the embedding (default) or its own column-parallel
matrix. The parameter layout is exactly the one ``config.model.count_parameters`` counts.

Tensor parallelism over n ranks (``topology.tp_group``): the embedding and the logits are
split along the (padded) vocabulary, attention along the heads, the MLP along its hidden
width; every other tensor is replicated. Padded vocabulary ids never occur in the data and
are masked in the loss (``valid_vocab = cfg.vocab_size``).

Sequence parallelism (``sequence_parallel=True``, T divisible by n): between the parallel
regions the residual stream is [B, T/n, d], each TP rank holding a slice of the sequence
(the embedding and the row-parallel layers reduce-scatter, the column-parallel layers
all-gather). Norm weights then see only their rank's tokens, so their gradients are summed
over the TP group inside the autograd graph (``allreduce_sequence_parallel_grad``), where
ZeRO's gradient hooks will find them complete.

Dropout draws from torch's default generator: TP ranks must share its state (seed it
identically within a TP group) so the masks of replicated activations agree.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributed import ProcessGroup
from torch.utils.checkpoint import checkpoint

from draw_megatron.config.model import ModelConfig
from draw_megatron.model.attention import AttentionMask, ParallelSelfAttention
from draw_megatron.model.init import init_parameters_, materialize_
from draw_megatron.model.rotary import RotaryEmbedding
from draw_megatron.parallel import (ColumnParallelLinear, ParallelTopology, RowParallelLinear,
                                    VocabParallelEmbedding, allreduce_sequence_parallel_grad,
                                    copy_to_tp_region, gather_from_sequence_region,
                                    mark_sequence_parallel, vocab_parallel_cross_entropy)


class LayerNorm(nn.Module):
    """LayerNorm with weight and bias; ``sp_group`` set: their gradients summed over it."""

    def __init__(self, dim: int, eps: float, sp_group: ProcessGroup | None, device=None) -> None:
        super().__init__()
        self.dim, self.eps, self.sp_group = dim, eps, sp_group
        self.weight = nn.Parameter(torch.empty(dim, device=device))
        self.bias = nn.Parameter(torch.empty(dim, device=device))
        if sp_group is not None:
            mark_sequence_parallel(self.weight)
            mark_sequence_parallel(self.bias)

    def forward(self, x: Tensor) -> Tensor:
        weight = allreduce_sequence_parallel_grad(self.weight, self.sp_group)
        bias = allreduce_sequence_parallel_grad(self.bias, self.sp_group)
        return F.layer_norm(x, (self.dim,), weight, bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}, sequence_parallel={self.sp_group is not None}"


class RMSNorm(nn.Module):
    """x / rms(x) · weight, normalised in fp32; ``sp_group`` as for :class:`LayerNorm`."""

    def __init__(self, dim: int, eps: float, sp_group: ProcessGroup | None, device=None) -> None:
        super().__init__()
        self.dim, self.eps, self.sp_group = dim, eps, sp_group
        self.weight = nn.Parameter(torch.empty(dim, device=device))
        if sp_group is not None:
            mark_sequence_parallel(self.weight)

    def forward(self, x: Tensor) -> Tensor:
        weight = allreduce_sequence_parallel_grad(self.weight, self.sp_group)
        normed = F.rms_norm(x.float(), (self.dim,), eps=self.eps).to(x.dtype)
        return normed * weight

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}, sequence_parallel={self.sp_group is not None}"


def make_norm(cfg: ModelConfig, sp_group: ProcessGroup | None, device=None) -> nn.Module:
    norm_cls = LayerNorm if cfg.norm == "layernorm" else RMSNorm
    return norm_cls(cfg.d_model, cfg.norm_eps, sp_group, device=device)


class ParallelMLP(nn.Module):
    """GELU: down(gelu(up x)). SwiGLU: down(silu(gate x) ⊙ up x), gate|up fused (stride 2).

    The hidden width is split over TP ranks: up/gate column-parallel, down row-parallel.
    """

    def __init__(self, cfg: ModelConfig, tp_group: ProcessGroup | None, *,
                 sequence_parallel: bool, device=None) -> None:
        super().__init__()
        self.kind = cfg.mlp
        d, ffn = cfg.d_model, cfg.ffn_hidden
        column = dict(bias=False, sequence_parallel=sequence_parallel, device=device)
        if self.kind == "swiglu":
            self.gate_up = ColumnParallelLinear(d, 2 * ffn, tp_group, stride=2, **column)
        else:
            self.up = ColumnParallelLinear(d, ffn, tp_group, **column)
        self.down = RowParallelLinear(ffn, d, tp_group, bias=False, input_is_parallel=True,
                                      sequence_parallel=sequence_parallel, device=device)

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "swiglu":
            gate, up = self.gate_up(x).chunk(2, dim=-1)  # this rank's [gate_r | up_r]
            return self.down(F.silu(gate) * up)
        return self.down(F.gelu(self.up(x)))


class TransformerBlock(nn.Module):
    """Pre-norm residual block: attention, then MLP."""

    def __init__(self, cfg: ModelConfig, tp_group: ProcessGroup | None, *,
                 sequence_parallel: bool, device=None) -> None:
        super().__init__()
        sp_group = tp_group if sequence_parallel else None
        self.dropout = cfg.dropout
        self.attn_norm = make_norm(cfg, sp_group, device)
        self.attention = ParallelSelfAttention(
            cfg.d_model, cfg.n_heads, cfg.head_dim, tp_group, backend=cfg.attention,
            dropout=cfg.dropout, sequence_parallel=sequence_parallel, device=device)
        self.mlp_norm = make_norm(cfg, sp_group, device)
        self.mlp = ParallelMLP(cfg, tp_group, sequence_parallel=sequence_parallel, device=device)

    def forward(self, x_BTD: Tensor, cos: Tensor, sin: Tensor,
                mask: AttentionMask | None = None) -> Tensor:
        attn = self.attention(self.attn_norm(x_BTD), cos, sin, mask)
        x_BTD = x_BTD + F.dropout(attn, self.dropout, self.training)
        return x_BTD + F.dropout(self.mlp(self.mlp_norm(x_BTD)), self.dropout, self.training)


class GPT(nn.Module):
    """GPT decoder over tensor (and optionally sequence) parallelism; see the module docstring.

    Built with its weights initialised from ``seed`` (``init.py``: the same weights at every
    TP size). ``device="meta"`` builds shapes only, uninitialised.
    """

    def __init__(self, cfg: ModelConfig, topology: ParallelTopology, *,
                 sequence_parallel: bool = False, seed: int = 0,
                 device: torch.device | str | None = None) -> None:
        super().__init__()
        check_parallel_layout(cfg, topology.tp_size)
        check_attention_mask(cfg)
        self.cfg = cfg
        self.tp_group = topology.tp_group
        self.tp_size = topology.tp_size
        self.sequence_parallel = sequence_parallel
        sp = dict(sequence_parallel=sequence_parallel, device="meta")  # materialised below
        self.embedding = VocabParallelEmbedding(cfg.padded_vocab_size, cfg.d_model,
                                                self.tp_group, **sp)
        self.rotary = RotaryEmbedding(cfg.head_dim, cfg.rotary_base)
        self.blocks = nn.ModuleList(TransformerBlock(cfg, self.tp_group, **sp)
                                    for _ in range(cfg.n_layers))
        self.final_norm = make_norm(cfg, self.tp_group if sequence_parallel else None, "meta")
        self.head = None if cfg.tie_embeddings else ColumnParallelLinear(
            cfg.d_model, cfg.padded_vocab_size, self.tp_group, bias=False, **sp)
        if torch.device(device or "cpu").type != "meta":
            materialize_(self, device or "cpu")
            init_parameters_(self, seed)

    def forward(self, tokens_BT: Tensor, labels_BT: Tensor | None = None) -> Tensor:
        """Per-token loss [B, T] (fp32, identical on every TP rank) if ``labels_BT`` is given,
        else this rank's logits shard [B, T, padded_vocab / tp] (ids beyond ``vocab_size``
        are padding: ignore those columns)."""
        self._check_batch(tokens_BT, labels_BT)
        x_BTD = F.dropout(self.embedding(tokens_BT), self.cfg.dropout, self.training)
        mask, cos, sin = self._positions(tokens_BT)
        recompute = self.cfg.activation_checkpointing and torch.is_grad_enabled()
        for block in self.blocks:
            if recompute:  # non-reentrant: torch.autograd.grad works through it (DGA)
                x_BTD = checkpoint(block, x_BTD, cos, sin, mask, use_reentrant=False)
            else:
                x_BTD = block(x_BTD, cos, sin, mask)
        x_BTD = self.final_norm(x_BTD)
        if labels_BT is not None and self.cfg.loss_kernel == "fused":
            return self._fused_loss(x_BTD, labels_BT.long())
        logits_BTV = self._logits(x_BTD)
        if labels_BT is None:
            return logits_BTV
        return vocab_parallel_cross_entropy(logits_BTV, labels_BT.long(), self.tp_group,
                                            valid_vocab=self.cfg.vocab_size)

    def _positions(self, tokens_BT: Tensor) -> tuple[AttentionMask, Tensor, Tensor]:
        """This batch's attention mask (shared by all layers) and rotary tables: [T, D], or
        [B, T, D] when positions restart at each document. Tokens are full-length on every
        TP rank, also under sequence parallelism, so every rank builds the same mask."""
        seq = tokens_BT.shape[1]
        if self.cfg.attention_mask == "causal":
            mask = AttentionMask.causal(seq)
        else:
            mask = AttentionMask.documents(tokens_BT, self.cfg.eos_id)
        if self.cfg.position_reset:
            return (mask, *self.rotary.at(mask.positions()))
        return (mask, *self.rotary(seq, tokens_BT.device))

    def external_parameters(self) -> list[tuple[nn.Module, nn.Parameter]]:
        """(module, parameter) pairs where ``module``'s forward uses a parameter it does not own.

        The tied head reads the embedding's weight in this module's forward. DeepSpeed's
        ZeRO-3 documents that such parameters be registered
        (``deepspeed.zero.register_external_parameter``, before ``deepspeed.initialize``);
        0.19.8 on CPU trained a tied model identically without it, but that is not promised.
        The fused loss reads the untied head's weight here too, outside the head's forward.
        """
        if self.head is None:
            return [(self, self.embedding.weight)]
        return [(self, self.head.weight)] if self.cfg.loss_kernel == "fused" else []

    def _logits(self, x_BTD: Tensor) -> Tensor:
        if self.head is not None:
            return self.head(x_BTD)
        # Tied: the head is the embedding's vocabulary shard, fed the full sequence.
        return F.linear(self._head_input(x_BTD), self.embedding.weight)

    def _head_input(self, x_BTD: Tensor) -> Tensor:
        """The full sequence on every TP rank, as a column-parallel layer takes its input; the
        backward sums the ranks' parts of its gradient."""
        if self.sequence_parallel:
            return gather_from_sequence_region(x_BTD, self.tp_group)
        return copy_to_tp_region(x_BTD, self.tp_group)

    def _fused_loss(self, x_BTD: Tensor, labels_BT: Tensor) -> Tensor:
        """Per-token loss of the head and the cross-entropy fused (``model.loss_kernel=fused``)."""
        # Imported here: Triton decides between GPU and CPU-interpreter kernels at import.
        from draw_megatron.kernels.fused_linear_ce import fused_linear_cross_entropy
        weight = self.embedding.weight if self.head is None else self.head.weight
        return fused_linear_cross_entropy(self._head_input(x_BTD), weight, labels_BT,
                                          self.tp_group, valid_vocab=self.cfg.vocab_size)

    def _check_batch(self, tokens_BT: Tensor, labels_BT: Tensor | None) -> None:
        if tokens_BT.dim() != 2 or tokens_BT.dtype.is_floating_point:
            raise ValueError(f"tokens must be integer ids [batch, seq], got {tokens_BT.dtype} "
                             f"{tuple(tokens_BT.shape)}")
        if labels_BT is not None and labels_BT.shape != tokens_BT.shape:
            raise ValueError(f"labels {tuple(labels_BT.shape)} must have the tokens' shape "
                             f"{tuple(tokens_BT.shape)}")
        if self.sequence_parallel and tokens_BT.shape[1] % self.tp_size:
            raise ValueError(f"sequence parallelism needs the sequence length "
                             f"({tokens_BT.shape[1]}) divisible by the TP size {self.tp_size}")

    def extra_repr(self) -> str:
        return f"tp_size={self.tp_size}, sequence_parallel={self.sequence_parallel}"


def check_attention_mask(cfg: ModelConfig) -> None:
    """Raise ValueError if the document mask has no EOS id to split documents at."""
    if cfg.attention_mask == "document" and cfg.eos_id is None:
        raise ValueError("model.attention_mask=document needs model.eos_id, the data "
                         "tokenizer's EOS id (the trainer sets it from manifest.json)")


def check_parallel_layout(cfg: ModelConfig, tp_size: int) -> None:
    """Raise ValueError unless every split dimension of ``cfg`` divides by ``tp_size``."""
    for name, value in [("n_heads", cfg.n_heads), ("ffn_hidden", cfg.ffn_hidden),
                        ("padded_vocab_size", cfg.padded_vocab_size)]:
        if value % tp_size:
            hint = " (raise model.vocab_multiple)" if name == "padded_vocab_size" else ""
            raise ValueError(f"model.{name}={value} must be divisible by the tensor-parallel "
                             f"size {tp_size}{hint}")
