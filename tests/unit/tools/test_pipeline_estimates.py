"""tools/run_pipeline.py --plan's estimates (tokens, model FLOPs, time) and --proxy-seed."""

import pytest

from draw_megatron.config.run import load_run_config
from draw_megatron.model.stats import flops_per_token
from tests.unit.tools.conftest import REPO, load_tool, write_manifest


@pytest.fixture(scope="module")
def tool():
    return load_tool("run_pipeline")


@pytest.fixture
def data(tmp_path):
    return write_manifest(str(tmp_path / "data"), ["A", "B", "C"])


def _argv(data, out, *extra):
    return ["--data", data, "--proxy", "tiny-64", "--main", "tiny-128", "--out", str(out),
            "--steps", "12", "--proxy-steps", "6", *extra]


def _stage(stages, name):
    return next(s for s in stages if s.name == name)


def test_estimates_tokens_flops_and_time(tool, data, tmp_path):
    args = tool.parse_args(_argv(data, tmp_path / "p", "--plan-tokens-per-s", "tiny-64=1000",
                                 "--plan-startup-s", "10", "--dga-specific", "test:A",
                                 "--dga-every", "4", "train.global_batch=32"))
    stages = tool.plan(args, cuda=False)
    cfg = load_run_config(f"{REPO}/configs/experiments/pipeline_cpu.yaml",
                          ["model.preset=tiny-64", f"data.root={data}", "run.dir=x"])
    ref = tool.plan_estimate(_stage(stages, "reference"), args)
    tokens = 6 * 32 * 256  # steps × the overridden global batch × seq_len
    assert ref["tokens"] == tokens
    assert ref["flops"] == flops_per_token(cfg.model) * tokens
    assert ref["seconds"] == pytest.approx(10 + tokens / (1000 * 2))  # 2 processes
    dro = tool.plan_estimate(_stage(stages, "proxy_dro"), args)
    assert dro["seconds"] == pytest.approx(10 + tool.DRO_STEP_RATIO * tokens / 2000)
    # no tokens/s known for tiny-128: no time, but tokens and FLOPs
    draw = tool.plan_estimate(_stage(stages, "draw"), args)
    assert draw["seconds"] is None and draw["tokens"] == 12 * 32 * 256
    args.tokens_per_s["tiny-128"] = 500.0
    dga = tool.plan_estimate(_stage(stages, "dga"), args)
    assert dga["seconds"] == pytest.approx(10 + (1 + 4 / 4) * 12 * 32 * 256 / 1000)  # k=3
    assert tool.plan_estimate(_stage(stages, "posterior"), args) is None


def test_measured_table_is_the_default(tool, data, tmp_path):
    args = tool.parse_args(_argv(data, tmp_path / "p"))
    assert args.tokens_per_s == {"150M": 546_211.0, "1B": 59_879.0}
    args = tool.parse_args(_argv(data, tmp_path / "p", "--plan-tokens-per-s", "1B=70000"))
    assert args.tokens_per_s["1B"] == 70_000.0


def test_plan_prints_estimates(tool, data, tmp_path, capsys):
    assert tool.main(_argv(data, tmp_path / "p", "--plan", "--baselines", "natural",
                           "--plan-tokens-per-s", "tiny-64=1000,tiny-128=2000")) == 0
    out = capsys.readouterr().out
    assert "estimate: tiny-64, 24,576 tokens" in out
    assert "[plan] training stages:" in out and "unknown" not in out
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize("bad", ["tiny-64", "tiny-64=x", "tiny-64=0", "=5"])
def test_bad_rates_are_errors(tool, data, tmp_path, bad, capsys):
    assert tool.main(_argv(data, tmp_path / "p", "--plan", "--plan-tokens-per-s", bad)) == 2
    assert "--plan-tokens-per-s" in capsys.readouterr().err


def test_proxy_seed_reaches_the_proxy_stages_only(tool, data, tmp_path):
    args = tool.parse_args(_argv(data, tmp_path / "p", "--proxy-seed", "7", "run.seed=3"))
    stages = tool.plan(args, cuda=False)
    for s in stages:
        if s.kind != "train":
            continue
        seeds = [c for c in s.cmd if c.startswith("run.seed=")]
        # the stage's own key comes last, so it wins over the override of every run
        assert seeds == (["run.seed=3", "run.seed=7"] if s.name in ("proxy_dro", "doremi_proxy")
                         else ["run.seed=3"]), s.name
    assert tool.main(_argv(data, tmp_path / "p", "--plan", "--proxy-seed", "-1")) == 2


def test_one_gpu_pile_config_plans_about_eight_minutes(tool, tmp_path):
    """The one-GPU config's pipeline at the measured 150M rate (70M assumed no slower)."""
    names = [ln.strip() for ln in open(f"{REPO}/configs/data/pile17.txt")
             if ln.strip() and not ln.startswith("#")]
    data = write_manifest(str(tmp_path / "pile17"), names)
    args = tool.parse_args(["--config", "configs/experiments/draw_pile_70m_150m_1gpu.yaml",
                            "--data", data, "--proxy", "70M", "--main", "150M", "--steps", "200",
                            "--proxy-steps", "200", "--launcher", "torchrun", "--nproc", "1",
                            "--out", str(tmp_path / "p"), "--plan-tokens-per-s", "70M=546211"])
    stages = [s for s in tool.plan(args, cuda=True) if s.kind == "train"]
    assert len(stages) == 11  # reference, two proxies, draw and the seven baselines
    seconds = sum(tool.plan_estimate(s, args)["seconds"] for s in stages)
    assert 7 * 60 <= seconds <= 8 * 60
