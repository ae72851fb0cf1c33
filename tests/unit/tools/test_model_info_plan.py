"""tools/model_info.py --plan: the memory arithmetic of a layout, and the choice of the
smallest TP, then the lowest ZeRO stage, that fits."""

import pytest

from draw_megatron.config.model import count_parameters
from tests.unit.tools.conftest import load_tool

GIB = 2**30


@pytest.fixture(scope="module")
def tool():
    return load_tool("model_info")


def test_layout_memory_by_hand(tool):
    cfg = tool.model_from_args("1B", [])
    n = count_parameters(cfg)["total"]
    mem = tool.layout_memory(cfg, tp=2, dp=4, stage=2, micro_batch=4, checkpointing=False)
    assert mem["parameters"] == pytest.approx(2 * n / 2)
    assert mem["gradients"] == pytest.approx(2 * n / 2 / 4)
    assert mem["optimizer"] == pytest.approx(12 * n / 2 / 4)
    s, b, h = cfg.seq_len, 4, cfg.d_model
    assert mem["activations"] == pytest.approx(s * b * h * 34 / 2 * cfg.n_layers)
    assert mem["logits"] == pytest.approx(4 * s * b * cfg.padded_vocab_size / 2)
    stage3 = tool.layout_memory(cfg, 2, 4, 3, 4, True)
    assert stage3["parameters"] == pytest.approx(2 * n / 8)
    assert stage3["activations"] == pytest.approx(2 * s * b * h * cfg.n_layers + s * b * h * 17)


def test_the_8b_plan_on_8_gpus(tool, capsys):
    cfg = tool.model_from_args("8B", [])
    _, chosen = tool.plan(cfg, 8, 1, 80.0, 1, True, 0.9)
    assert chosen == (1, 1)
    _, chosen = tool.plan(cfg, 8, 1, 24.0, 1, True, 0.9)  # smaller GPUs: shard more
    assert chosen is not None and chosen != (1, 1)
    lines, chosen = tool.plan(cfg, 1, 1, 16.0, 1, True, 0.9)
    assert chosen is None and "no layout fits" in lines[-1]
    assert tool.main(["--preset", "8B", "--plan", "--gpus", "8"]) == 0
    assert "chosen: parallel.tp=1 zero.stage=1" in capsys.readouterr().out
