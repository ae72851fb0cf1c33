import math

import pytest
import torch

from draw_megatron.config.run import RunConfig
from draw_megatron.engine.deepspeed_engine import deepspeed_config, param_groups, precision
from draw_megatron.engine.lr_schedule import lr_at, warmup_steps
from draw_megatron.losses import DomainLoss, domain_means


def _cfg(**train):
    return RunConfig.from_dict({"run": {"dir": "r"}, "model": {"preset": "tiny-64"},
                                "data": {"root": "d"}, "train": {"steps": 100, **train}})


def test_lr_warms_up_linearly_then_decays_exponentially_to_min_lr():
    kw = dict(lr=1e-3, min_lr=1e-4, total_steps=100, warmup_steps=2)
    assert lr_at(0, **kw) == pytest.approx(5e-4)
    assert lr_at(1, **kw) == pytest.approx(1e-3)
    assert lr_at(2, **kw) == pytest.approx(1e-3)
    assert lr_at(99, **kw) == pytest.approx(1e-4)
    half_way = dict(kw, total_steps=103)  # 100 decay intervals after 2 warm-up steps
    assert lr_at(52, **half_way) == pytest.approx(math.sqrt(1e-3 * 1e-4))
    ratios = [lr_at(s + 1, **kw) / lr_at(s, **kw) for s in range(2, 98)]
    assert max(ratios) - min(ratios) < 1e-9  # a constant factor per step: exponential
    assert warmup_steps(50000, 0.02) == 1000


def test_deepspeed_config_from_ours():
    cfg = _cfg(global_batch=16, micro_batch=2, grad_clip=0.5)
    ds = deepspeed_config(cfg, dp_size=2, on_gpu=False)
    assert ds["train_batch_size"] == 16 and ds["gradient_accumulation_steps"] == 4
    assert ds["gradient_clipping"] == 0.5 and ds["bf16"] == {"enabled": False}
    assert deepspeed_config(cfg, 2, on_gpu=True)["bf16"] == {"enabled": True}
    assert precision(_cfg(precision="fp32"), on_gpu=True) == "fp32"


def test_no_weight_decay_on_vectors():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    decay, no_decay = param_groups(model, 0.1)
    assert [p.shape for p in decay["params"]] == [torch.Size([4, 3])]
    assert len(no_decay["params"]) == 3 and no_decay["weight_decay"] == 0.0


def test_domain_loss_reduction():
    acc = DomainLoss(3)
    acc.add(torch.tensor([[1.0, 3.0], [2.0, 2.0], [5.0, 5.0]]), torch.tensor([0, 0, 2]))
    sums, counts = acc.all_reduce()
    assert sums.tolist() == [8.0, 0.0, 10.0] and counts.tolist() == [4.0, 0.0, 2.0]
    assert domain_means(sums, counts) == [2.0, None, 5.0]
