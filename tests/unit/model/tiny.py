"""Small configs shared by the model tests (fp32, CPU)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from draw_megatron.config.model import ModelConfig

VOCAB = 300  # padded to 384 by vocab_multiple 128


def tiny_config(**fields: Any) -> ModelConfig:
    """d_model 64, 2 layers, 4 heads of 16, FFN 128, vocabulary 300 (padded 384)."""
    base = dict(n_layers=2, n_heads=4, head_dim=16, d_model=64, ffn_hidden=128,
                vocab_size=VOCAB, seq_len=16)
    return ModelConfig.from_dict({**base, **fields}, prefix="model")


def batch(batch_size: int = 2, seq_len: int = 16,
          seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens, labels) [B, T] int64, ids below VOCAB, from a seeded generator."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (batch_size, seq_len + 1), generator=g)
    return ids[:, :-1].contiguous(), ids[:, 1:].contiguous()


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, and far slower on a busy 2-core machine with two
    (a few ms against 0.1–0.3 s a step). Import into a test module to apply; restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


EOS = VOCAB - 1
# Where document_batch puts EOS tokens: inside, at both ends, and two in a row (an
# EOS-only document).
EOS_POSITIONS = ([3, 9], [0, 6, 7, 15])


def document_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens, labels) [2, 16] like :func:`batch`, with EOS (id EOS) at EOS_POSITIONS only."""
    ids = torch.randint(0, EOS, (2, 17), generator=torch.Generator().manual_seed(seed))
    for row, positions in enumerate(EOS_POSITIONS):
        ids[row, positions] = EOS
    return ids[:, :-1].contiguous(), ids[:, 1:].contiguous()
