"""TP layers and mappings at TP=2 (gloo) against the single-process full computation.

One spawn runs every check: each builds the full tensors from the same seed on both ranks,
feeds each rank its shard, and compares outputs and every gradient (input, and each
parameter's, gathered) with a plain-torch reference, norm-relative error ≤ 1e-5.
"""

import torch
import torch.nn.functional as F

from draw_megatron.parallel import (ColumnParallelLinear, ParallelTopology, RowParallelLinear,
                                    VocabParallelEmbedding, allreduce_sequence_parallel_grad,
                                    gather_from_sequence_region, gather_full, gather_full_param,
                                    is_tensor_parallel, load_full_, scatter_to_sequence_region,
                                    shard_of)
from tests.distributed.harness import run_distributed

TOL = 1e-5
B, T, H, FF, V = 2, 6, 8, 16, 20
SEQ = 1  # activations are [B, T, H]


def _check(name: str, got: torch.Tensor, want: torch.Tensor) -> None:
    assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    err = ((got - want).norm() / want.norm().clamp_min(1e-30)).item()
    assert err <= TOL, f"{name}: norm-relative error {err:.2e} > {TOL}"


def _leaf(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone().requires_grad_()


def _load(layers: dict, full: dict, group) -> None:
    """Fill ``layers[name].param`` from ``full["name.param"]``."""
    for key, value in full.items():
        layer, param = key.split(".")
        load_full_(getattr(layers[layer], param), value, group)


def _check_grads(tag: str, layers: dict, full: dict, group) -> None:
    for key, ref in full.items():
        layer, param = key.split(".")
        p = getattr(layers[layer], param)
        grad = (gather_full(p.grad, p.partition_dim, group, p.partition_stride)
                if is_tensor_parallel(p) else p.grad)
        _check(f"{tag} d{key}", grad, ref.grad)


def _column(group, gather_output: bool) -> None:
    tag = f"column(gather_output={gather_output})"
    full = {"col.weight": _leaf(torch.randn(FF, H)), "col.bias": _leaf(torch.randn(FF))}
    x, w = torch.randn(B, T, H), torch.randn(B, T, FF)
    ref = F.linear(x_ref := _leaf(x), full["col.weight"], full["col.bias"])
    (ref * w).sum().backward()

    layers = {"col": ColumnParallelLinear(H, FF, group, gather_output=gather_output)}
    _load(layers, full, group)
    y = layers["col"](x_tp := _leaf(x))
    # A replicated output is one loss counted once; a split one is a partial loss per rank.
    w_out = w if gather_output else shard_of(w, -1, group)
    (y * w_out).sum().backward()
    _check(f"{tag} y", y, ref if gather_output else shard_of(ref, -1, group))
    _check(f"{tag} dx", x_tp.grad, x_ref.grad)
    _check_grads(tag, layers, full, group)


def _row(group, input_is_parallel: bool) -> None:
    tag = f"row(input_is_parallel={input_is_parallel})"
    full = {"row.weight": _leaf(torch.randn(H, FF)), "row.bias": _leaf(torch.randn(H))}
    x, w = torch.randn(B, T, FF), torch.randn(B, T, H)
    ref = F.linear(x_ref := _leaf(x), full["row.weight"], full["row.bias"])
    (ref * w).sum().backward()

    layers = {"row": RowParallelLinear(FF, H, group, input_is_parallel=input_is_parallel)}
    _load(layers, full, group)
    x_tp = _leaf(shard_of(x, -1, group) if input_is_parallel else x)
    y = layers["row"](x_tp)
    (y * w).sum().backward()
    _check(f"{tag} y", y, ref)
    _check(f"{tag} dx", x_tp.grad,
           shard_of(x_ref.grad, -1, group) if input_is_parallel else x_ref.grad)
    _check_grads(tag, layers, full, group)


def _embedding(group, sequence_parallel: bool) -> None:
    tag = f"embedding(sequence_parallel={sequence_parallel})"
    full = {"emb.weight": _leaf(torch.randn(V, H))}
    ids, w = torch.randint(0, V, (B, T)), torch.randn(B, T, H)
    ref = F.embedding(ids, full["emb.weight"])
    (ref * w).sum().backward()

    layers = {"emb": VocabParallelEmbedding(V, H, group, sequence_parallel=sequence_parallel)}
    _load(layers, full, group)
    y = layers["emb"](ids)
    if sequence_parallel:
        ref, w = shard_of(ref, SEQ, group), shard_of(w, SEQ, group)
    (y * w).sum().backward()
    _check(f"{tag} y", y, ref)
    _check_grads(tag, layers, full, group)


def _sequence_parallel_block(group) -> None:
    """norm-like scale → column(SP) → GELU → row(SP), the sequence split on every rank."""
    tag = "sp-block"
    full = {"norm.weight": _leaf(torch.randn(H)),
            "col.weight": _leaf(torch.randn(FF, H)), "col.bias": _leaf(torch.randn(FF)),
            "row.weight": _leaf(torch.randn(H, FF)), "row.bias": _leaf(torch.randn(H))}
    x, w = torch.randn(B, T, H), torch.randn(B, T, H)
    h = F.gelu(F.linear((x_ref := _leaf(x)) * full["norm.weight"], full["col.weight"],
                        full["col.bias"]))
    ref = F.linear(h, full["row.weight"], full["row.bias"])
    (ref * w).sum().backward()

    norm = torch.nn.Module()
    norm.weight = torch.nn.Parameter(torch.empty(H))
    layers = {"norm": norm,
              "col": ColumnParallelLinear(H, FF, group, sequence_parallel=True),
              "row": RowParallelLinear(FF, H, group, sequence_parallel=True)}
    _load(layers, full, group)
    x_tp = _leaf(shard_of(x, SEQ, group))
    scaled = x_tp * allreduce_sequence_parallel_grad(norm.weight, group)
    y = layers["row"](F.gelu(layers["col"](scaled)))
    (y * shard_of(w, SEQ, group)).sum().backward()
    _check(f"{tag} y", y, shard_of(ref, SEQ, group))
    _check(f"{tag} dx", x_tp.grad, shard_of(x_ref.grad, SEQ, group))
    _check_grads(tag, layers, full, group)


def _sequence_mappings(group) -> None:
    x, w = torch.randn(B, T, H), torch.randn(B, T, H)
    # scatter → gather(plain backward) is the identity, forward and backward.
    x_tp = _leaf(x)
    z = gather_from_sequence_region(scatter_to_sequence_region(x_tp, group), group,
                                    reduce_grad=False)
    (z * w).sum().backward()
    _check("scatter/gather y", z, x)
    _check("scatter/gather dx", x_tp.grad, w)
    # gather (reduce-scatter backward) under a per-rank partial loss: dx_r = [Σ_r w_r]_r.
    rank = torch.distributed.get_rank(group)
    w_r = w * (rank + 1)
    x_tp = _leaf(shard_of(x, SEQ, group))
    (gather_from_sequence_region(x_tp, group) * w_r).sum().backward()
    _check("gather(reduce-scatter) dx", x_tp.grad, shard_of(w * 3, SEQ, group))


# Exact checks use torch.equal: torch.testing.assert_close's first call imports for ~1.5 s.
def _init_is_tp_independent(group) -> None:
    def gen():
        return torch.Generator().manual_seed(11)
    for make in [lambda g: ColumnParallelLinear(H, 3 * FF, g, stride=3, generator=gen()),
                 lambda g: RowParallelLinear(FF, H, g, generator=gen()),
                 lambda g: VocabParallelEmbedding(V, H, g, generator=gen())]:
        tp2, tp1 = make(group), make(None)
        assert torch.equal(gather_full_param(tp2.weight, group), tp1.weight)


def _stride_shards(group) -> None:
    full = torch.arange(24.0).reshape(12, 2)  # [Q; K; V], 4 rows each
    shard = shard_of(full, 0, group, stride=3)
    rank = torch.distributed.get_rank(group)
    rows = [r for block in range(3) for r in range(4 * block + 2 * rank, 4 * block + 2 * rank + 2)]
    assert torch.equal(shard, full[rows])
    assert torch.equal(gather_full(shard, 0, group, stride=3), full)


def _rank_checks(rank: int, world_size: int) -> str:
    torch.manual_seed(0)  # same full tensors on every rank
    torch.use_deterministic_algorithms(True)
    group = ParallelTopology.from_dist(tp=world_size).tp_group
    for flag in (False, True):
        _column(group, gather_output=flag)
        _row(group, input_is_parallel=flag)
        _embedding(group, sequence_parallel=flag)
    _sequence_parallel_block(group)
    _sequence_mappings(group)
    _init_is_tp_independent(group)
    _stride_shards(group)
    return "ok"


def test_tp2_layers_match_single_process():
    assert run_distributed(_rank_checks, 2) == ["ok", "ok"]
