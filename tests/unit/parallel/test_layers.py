"""TP layers and helpers at tp = 1 (group None): plain torch semantics, attributes, init."""

import torch
import torch.nn.functional as F

from draw_megatron.parallel import (ColumnParallelLinear, RowParallelLinear, VocabParallelEmbedding,
                                    copy_to_tp_region, gather_full_param, load_full_,
                                    pad_vocab_size, reduce_scatter_to_sequence_region, shard_of)


def test_tp1_layers_are_plain_torch():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 8)
    col = ColumnParallelLinear(8, 12, None, gather_output=True, sequence_parallel=True)
    row = RowParallelLinear(12, 8, None, sequence_parallel=True)
    emb = VocabParallelEmbedding(16, 8, None)
    torch.nn.init.normal_(row.bias)
    torch.testing.assert_close(col(x), F.linear(x, col.weight, col.bias), rtol=0, atol=0)
    h = torch.randn(2, 5, 12)
    torch.testing.assert_close(row(h), F.linear(h, row.weight, row.bias), rtol=0, atol=0)
    ids = torch.randint(0, 16, (2, 5))
    torch.testing.assert_close(emb(ids), emb.weight[ids], rtol=0, atol=0)
    # No autograd node, no communication, at tp = 1.
    assert copy_to_tp_region(x, None) is x and reduce_scatter_to_sequence_region(x, None) is x


def test_attributes_deepspeed_and_megatron_read():
    col = ColumnParallelLinear(8, 12, None, stride=3)
    row = RowParallelLinear(12, 8, None, sequence_parallel=True)
    emb = VocabParallelEmbedding(16, 8, None)
    for param, dim, stride in [(col.weight, 0, 3), (col.bias, 0, 3), (row.weight, 1, 1),
                               (emb.weight, 0, 1)]:
        assert param.tensor_model_parallel and param.model_parallel
        assert (param.partition_dim, param.partition_stride) == (dim, stride)
    assert not hasattr(row.bias, "tensor_model_parallel")  # replicated, added after the reduction
    assert row.bias.sequence_parallel


def test_init_comes_from_the_full_weight_and_seed():
    def build():
        return ColumnParallelLinear(8, 12, None, generator=torch.Generator().manual_seed(7))
    a, b = build(), build()
    torch.testing.assert_close(a.weight, b.weight, rtol=0, atol=0)
    assert a.weight.std().item() > 0.01 and torch.all(a.bias == 0)
    full = torch.randn(12, 8)
    load_full_(a.weight, full, None)
    torch.testing.assert_close(gather_full_param(a.weight, None), full, rtol=0, atol=0)
    meta = ColumnParallelLinear(8, 12, None, device="meta")
    assert meta.weight.is_meta


def test_shard_of_single_rank_and_vocab_padding():
    full = torch.arange(12.0).reshape(6, 2)
    torch.testing.assert_close(shard_of(full, 0, None, stride=3), full)
    assert pad_vocab_size(32000, 1) == 32000
    assert pad_vocab_size(32001, 2) == 32256
    assert pad_vocab_size(50257, 4, multiple=128) == 50688
