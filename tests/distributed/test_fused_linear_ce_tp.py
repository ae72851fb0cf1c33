"""The fused output layer + cross-entropy over a vocabulary-parallel head at TP = 2 (gloo,
Triton under the CPU interpreter) against TP = 1 and float64: per-token losses, the summed
input gradient and the gathered weight gradient, with padding (also a shard holding padding
only); and the GPT with ``loss_kernel=fused`` at TP = 2 (with and without sequence
parallelism) against the TP = 1 GPT's torch loss path."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from draw_megatron.model import GPT
from draw_megatron.parallel import ParallelTopology, gather_full, is_tensor_parallel, shard_of
from tests.distributed.harness import run_distributed
from tests.unit.kernels.reference import assert_close, assert_losses_close, reference_losses
from tests.unit.model.tiny import batch, tiny_config

N, D, V = 29, 24, 96  # 48 ids per rank
SINGLE = ParallelTopology.single()  # built at import, before the process group exists


def _kernel_parity(group, valid: int, backward: str) -> None:
    from draw_megatron.kernels.fused_linear_ce import fused_linear_cross_entropy

    tag = f"valid_vocab={valid} backward={backward}"
    g = torch.Generator().manual_seed(valid)  # the same inputs on both ranks
    hidden = torch.randn(N, D, generator=g)
    weight = torch.randn(V, D, generator=g) * 0.3
    labels = torch.randint(0, valid, (N,), generator=g)
    labels[0], labels[1] = 0, valid - 1  # ids on both ends of the valid vocabulary
    upstream = torch.rand(N, generator=g) * 2.0 - 0.5
    want_loss, want_h, want_w = reference_losses(hidden, weight, labels, upstream, valid)

    def run(w_full: torch.Tensor, tp_group):
        h = hidden.clone().requires_grad_()
        w = (shard_of(w_full, 0, tp_group) if tp_group else w_full).clone().requires_grad_()
        loss = fused_linear_cross_entropy(h, w, labels, tp_group, valid, backend="triton",
                                          backward=backward)
        (loss * upstream).sum().backward()
        return loss.detach(), h.grad, w.grad

    tp1 = run(weight, None)
    loss, grad_h, grad_w = run(weight, group)
    dist.all_reduce(grad_h, group=group)  # the parts of each shard: copy_to_tp_region's sum
    grad_w = gather_full(grad_w, 0, group)
    for name, got, tp1_value, want in [("loss", loss, tp1[0], want_loss),
                                       ("grad hidden", grad_h, tp1[1], want_h),
                                       ("grad weight", grad_w, tp1[2], want_w)]:
        check = assert_losses_close if name == "loss" else assert_close
        check(f"{tag} {name} vs float64", got, want)
        check(f"{tag} {name} vs TP = 1", got, tp1_value.double())
    assert torch.all(grad_w[valid:] == 0), f"{tag}: padding rows got a gradient"


def _full_grad(param: torch.Tensor, group) -> torch.Tensor:
    if not is_tensor_parallel(param):
        return param.grad
    return gather_full(param.grad, param.partition_dim, group, param.partition_stride)


def _model_parity(topo: ParallelTopology, fields: dict, sequence_parallel: bool) -> None:
    tag = f"{fields or 'default'} sp={sequence_parallel}"
    tokens, labels = batch(seed=3)
    weights = torch.rand(tokens.shape, generator=torch.Generator().manual_seed(4))
    ref = GPT(tiny_config(**fields), SINGLE, seed=7)
    fused = GPT(tiny_config(loss_kernel="fused", **fields), topo,
                sequence_parallel=sequence_parallel, seed=7)
    ref_loss, loss = ref(tokens, labels), fused(tokens, labels)
    assert_losses_close(f"{tag} loss", loss.detach(), ref_loss.detach().double())
    (ref_loss * weights).sum().backward()
    (loss * weights).sum().backward()
    ref_params = dict(ref.named_parameters())
    for name, param in fused.named_parameters():
        assert_close(f"{tag} grad {name}", _full_grad(param, topo.tp_group),
                     ref_params[name].grad.double())


def _rank_checks(rank: int, world_size: int) -> str:
    torch.set_num_threads(1)
    # CPU tensors on gloo, so the kernels run in the interpreter, also where there is a GPU:
    # set in this spawned rank only, before its first import of the kernels.
    os.environ["TRITON_INTERPRET"] = "1"
    from draw_megatron.kernels.fused_linear_ce import triton_interpreted
    assert triton_interpreted()
    topo = ParallelTopology.from_dist(tp=world_size)
    # No padding; padding in rank 1's shard; rank 1 holding padding only.
    for valid, backward in [(V, "chunked"), (70, "chunked"), (70, "atomic"), (40, "chunked")]:
        _kernel_parity(topo.tp_group, valid, backward)
    _model_parity(topo, dict(), False)
    _model_parity(topo, dict(tie_embeddings=False, mlp="swiglu"), True)
    return "ok"


def test_fused_cross_entropy_tp2_matches_tp1_and_float64():
    assert run_distributed(_rank_checks, 2) == ["ok", "ok"]
