"""Every YAML under configs/ loads and validates; model files match their presets."""

from __future__ import annotations

import glob
import os
import re
import subprocess
import sys

import pytest

from draw_megatron.config.model import ARCH_FIELDS, PRESETS, count_parameters, load_model_config
from draw_megatron.config.run import load_run_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
CONFIGS = os.path.join(REPO, "configs")
ALL_YAML = sorted(glob.glob(os.path.join(CONFIGS, "**", "*.yaml"), recursive=True))


def _folder(path: str) -> str:
    return os.path.relpath(path, CONFIGS).split(os.sep)[0]


def test_configs_are_found():
    assert {"models", "experiments"} <= {_folder(p) for p in ALL_YAML}


@pytest.mark.parametrize("path", ALL_YAML, ids=lambda p: os.path.relpath(p, CONFIGS))
def test_config_loads_and_validates(path):
    folder = _folder(path)
    if folder == "models":
        load_model_config(path)
    elif folder == "experiments":
        cfg = load_run_config(path, [])
        # The smallest layout (DP = 1); the data root is not shipped, so only its check is off.
        cfg.validate_layout(cfg.parallel.tp, check_data_root=False)
    else:
        pytest.fail(f"no loader for configs/{folder}/: register one in this test")


def test_one_model_file_per_preset():
    names = {os.path.splitext(os.path.basename(p))[0]
             for p in glob.glob(os.path.join(CONFIGS, "models", "*.yaml"))}
    assert names == set(PRESETS)


@pytest.mark.parametrize("name", list(PRESETS))
def test_model_file_matches_preset_and_comment(name):
    path = os.path.join(CONFIGS, "models", f"{name}.yaml")
    cfg = load_model_config(path)
    assert cfg.preset == name
    assert tuple(getattr(cfg, f) for f in ARCH_FIELDS) == PRESETS[name]
    stated = re.search(r"total ([\d,]+)", open(path, encoding="utf-8").read())
    assert stated and int(stated.group(1).replace(",", "")) == count_parameters(cfg)["total"]


def test_model_info_tool_runs():
    env = {k: v for k, v in os.environ.items() if k != "DS_ACCELERATOR"}
    out = subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", "model_info.py"), "--preset", "tiny-64",
         "--zero-stage", "3", "--gpus", "2"],
        capture_output=True, text=True, env=env, timeout=300, check=True).stdout
    assert "2,146,944" in out
    assert "Estimated memory needed for params, optim states and gradients" in out


def test_paper_protocol_configs():
    """DRAW's 70M → 1B protocol (docs/algorithms.md §4) and its one-GPU 70M → 150M scale."""
    paper = load_run_config(os.path.join(CONFIGS, "experiments", "draw_pile_70m_1b.yaml"), [])
    assert (paper.train.global_batch, paper.model.seq_len, paper.train.steps,
            paper.train.precision, paper.zero.stage, paper.eval.every, paper.model.preset,
            paper.mixture.redraw_every) == (256, 1024, 50_000, "bf16", 1, 200, "1B", 10)
    small = load_run_config(os.path.join(CONFIGS, "experiments", "draw_pile_70m_150m_1gpu.yaml"),
                            ["data.root=/elsewhere"])  # the placeholder is overridable
    assert small.data.root == "/elsewhere" and small.model.preset == "150M"
    assert small.train.global_batch >= 17  # stratified DRO batches over The Pile's 17 domains
