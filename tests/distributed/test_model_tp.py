"""The GPT at TP = 2 (gloo) against the TP = 1 model built from the same seed (causal and
document masks), and the consolidated file across TP layouts.

One spawn runs every check. Per variant both ranks build the TP = 1 reference (identical
weights by construction, verified by gathering), then compare gathered logits, per-token
losses and every parameter's gradient (gathered to full), norm-relative error ≤ 1e-5.
"""

from __future__ import annotations

import os

import torch

from draw_megatron.model import GPT, load_consolidated, load_consolidated_into, save_consolidated
from draw_megatron.parallel import (ParallelTopology, gather_full, gather_full_param,
                                    is_tensor_parallel)
from tests.distributed.harness import run_distributed
from tests.unit.model.tiny import EOS, batch, document_batch, tiny_config

TOL = 1e-5
SINGLE = ParallelTopology.single()
VARIANTS = [  # (config fields, sequence_parallel)
    (dict(), False),
    (dict(), True),
    (dict(mlp="swiglu", tie_embeddings=False, norm="rmsnorm"), False),
    (dict(mlp="swiglu", tie_embeddings=False, norm="rmsnorm", activation_checkpointing=True), True),
    # Document masks (the batch then has EOS tokens): the mask depends on the tokens only,
    # so each rank's heads see the same one, also on the all-gathered sequence under SP.
    (dict(attention_mask="document", eos_id=EOS), True),
    (dict(attention_mask="document", eos_id=EOS, position_reset=True, mlp="swiglu"), False),
]


def _check(name: str, got: torch.Tensor, want: torch.Tensor) -> None:
    assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    err = ((got - want).norm() / want.norm().clamp_min(1e-30)).item()
    assert err <= TOL, f"{name}: norm-relative error {err:.2e} > {TOL}"


def _full_grad(param: torch.Tensor, group) -> torch.Tensor:
    assert param.grad is not None
    if not is_tensor_parallel(param):
        return param.grad
    return gather_full(param.grad, param.partition_dim, group, param.partition_stride)


def _parity(topo: ParallelTopology, fields: dict, sequence_parallel: bool) -> None:
    tag = f"{fields or 'default'} sp={sequence_parallel}"
    group = topo.tp_group
    cfg = tiny_config(**fields)
    tokens, labels = document_batch(seed=3) if cfg.attention_mask == "document" else batch(seed=3)
    weights = torch.rand(tokens.shape, generator=torch.Generator().manual_seed(4))
    ref = GPT(cfg, SINGLE, seed=7)
    tp = GPT(cfg, topo, sequence_parallel=sequence_parallel, seed=7)
    ref_params = dict(ref.named_parameters())
    assert ref_params.keys() == dict(tp.named_parameters()).keys()
    for name, param in tp.named_parameters():
        assert torch.equal(gather_full_param(param, group), ref_params[name]), f"{tag} {name}"

    with torch.no_grad():
        logits = tp(tokens)
        assert logits.shape == (*tokens.shape, cfg.padded_vocab_size // topo.tp_size)
        _check(f"{tag} logits", gather_full(logits, -1, group), ref(tokens))
    ref_loss, loss = ref(tokens, labels), tp(tokens, labels)
    _check(f"{tag} loss", loss, ref_loss)
    (ref_loss * weights).sum().backward()
    (loss * weights).sum().backward()
    for name, param in tp.named_parameters():
        _check(f"{tag} grad {name}", _full_grad(param, group), ref_params[name].grad)


def _export_across_layouts(topo: ParallelTopology, folder: str) -> None:
    cfg = tiny_config(mlp="swiglu", tie_embeddings=False)
    tokens, labels = batch(seed=5)
    # TP = 2 → file → TP = 1.
    tp2 = GPT(cfg, topo, seed=1)
    path = save_consolidated(os.path.join(folder, "from_tp2"), tp2, topo, cfg)
    state, file_cfg = load_consolidated(path)
    assert file_cfg == cfg and state["embedding.weight"].shape == (384, 64)
    tp1 = GPT(cfg, SINGLE, seed=2)
    load_consolidated_into(path, tp1, SINGLE)
    with torch.no_grad():
        _check("tp2 → tp1 loss", tp1(tokens, labels), tp2(tokens, labels))
    # TP = 1 (data-parallel over both ranks) → file → TP = 2.
    dp_topo = ParallelTopology.from_dist(tp=1)
    tp1 = GPT(cfg, dp_topo, seed=3)
    path = save_consolidated(os.path.join(folder, "from_tp1"), tp1, dp_topo, cfg)
    tp2 = GPT(cfg, topo, seed=4)
    load_consolidated_into(path, tp2, topo)
    with torch.no_grad():
        _check("tp1 → tp2 loss", tp2(tokens, labels), tp1(tokens, labels))


def _rank_checks(rank: int, world_size: int, folder: str) -> str:
    torch.set_num_threads(1)
    topo = ParallelTopology.from_dist(tp=world_size)
    for fields, sequence_parallel in VARIANTS:
        _parity(topo, fields, sequence_parallel)
    _export_across_layouts(topo, folder)
    return "ok"


def test_tp2_model_matches_tp1_and_exports_across_layouts(tmp_path):
    assert run_distributed(_rank_checks, 2, str(tmp_path)) == ["ok", "ok"]
