"""num_parameters on built models (meta: free for every preset) and the MFU FLOPs formula."""

from __future__ import annotations

import pytest

from draw_megatron.config.model import PRESETS, ModelConfig, count_parameters
from draw_megatron.model import GPT, flops_per_token, num_parameters
from draw_megatron.parallel import ParallelTopology


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_builds_with_the_counted_parameters(name):
    cfg = ModelConfig.from_preset(name, mlp="swiglu", tie_embeddings=False)
    model = GPT(cfg, ParallelTopology.single(), device="meta")
    counts = count_parameters(cfg)
    assert num_parameters(model) == counts["total"]
    assert num_parameters(model, non_embedding=True) == counts["non_embedding"]


def test_flops_per_token():
    cfg = ModelConfig.from_preset("70M", seq_len=1024)
    n = count_parameters(cfg)["non_embedding"]
    # 3 layers × (4·256² attention + 2·256·1024 MLP + 4·256 norms) + 2·256 final norm
    assert n == 3 * (4 * 256 * 256 + 2 * 256 * 1024 + 4 * 256) + 2 * 256
    assert flops_per_token(cfg) == 6 * n + 12 * 3 * 256 * 1024
    assert flops_per_token(cfg, seq_len=2048) == 6 * n + 12 * 3 * 256 * 2048
