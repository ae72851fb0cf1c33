"""Parameter and FLOP counts of a built model or a config, for logging and MFU.

MFU's model FLOPs (after Kaplan et al. / PaLM's appendix B) per trained
token: 6·N for the forward and backward matrix products of the N non-embedding parameters,
plus 12·L·d·seq for attention's score and value products (q·kᵀ and p·v, forward and
backward, without a causal discount). The vocabulary matrices are not in N.
"""

from __future__ import annotations

from torch import nn

from draw_megatron.config.model import ModelConfig, count_parameters
from draw_megatron.parallel import is_tensor_parallel

EMBEDDING_PARAMETERS = ("embedding.weight", "head.weight")
"""The vocabulary matrices of draw_megatron.model.GPT (not counted in N)."""


def num_parameters(model: nn.Module, *, non_embedding: bool = False) -> int:
    """The full model's parameter count from one rank's shards, without communication.

    A tensor-parallel parameter counts ``tp_size`` times (its shards are equal), replicated
    ones once; ZeRO-3's partitioned parameters count their full size (``ds_numel``).
    ``model`` is a GPT (its ``tp_size`` is read), not a DeepSpeed engine.
    """
    tp_size = getattr(model, "tp_size", 1)
    total = 0
    for name, param in model.named_parameters():
        if non_embedding and name in EMBEDDING_PARAMETERS:
            continue
        numel = getattr(param, "ds_numel", param.numel())
        total += numel * (tp_size if is_tensor_parallel(param) else 1)
    return total


def flops_per_token(cfg: ModelConfig, seq_len: int | None = None) -> int:
    """Model FLOPs per trained token: 6·N_non-embedding + 12·L·d·seq (seq: ``cfg.seq_len``)."""
    seq = cfg.seq_len if seq_len is None else seq_len
    return 6 * count_parameters(cfg)["non_embedding"] + 12 * cfg.n_layers * cfg.d_model * seq
