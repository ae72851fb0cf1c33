"""tools/run_throughput.py: medians over a run's train records, warm-up skipped."""

import json
import os

import pytest

from tests.unit.tools.conftest import load_tool


def _write(run_dir, records):
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "metrics.jsonl"), "w") as fh:
        for r in records:
            fh.write(json.dumps(r) + "\n")


def _train(step, tok_s, mfu):
    return {"kind": "train", "step": step, "loss": 10.0 - step, "tokens_per_s": tok_s,
            "mfu": mfu}


def test_medians_skip_warm_up(tmp_path, capsys):
    tool = load_tool("run_throughput")
    run = str(tmp_path / "run")
    # Two slow warm-up steps, then 100, 300, 200 (median 200); an eval record in between.
    _write(run, [_train(0, 1.0, 0.01), _train(1, 2.0, 0.02), _train(2, 100.0, 0.1),
                 {"kind": "eval", "step": 3, "avg": 1.0}, _train(3, 300.0, 0.3),
                 _train(4, 200.0, 0.2)])
    s = tool.summarize(run, skip=2)
    assert s["steps"] == 3 and s["tokens_per_s"] == 200.0
    assert s["mfu"] == pytest.approx(0.2)
    assert s["mfu_vs_measured"] == pytest.approx(0.2 * 989 / 790)
    assert tool.main([run, "--skip", "2"]) == 0
    assert "200 tokens/s, MFU 0.200" in capsys.readouterr().out


def test_cpu_run_has_no_mfu_and_errors_name_the_problem(tmp_path, capsys):
    tool = load_tool("run_throughput")
    run = str(tmp_path / "run")
    _write(run, [_train(s, 10.0, None) for s in range(3)])
    assert tool.summarize(run, skip=1)["mfu"] is None
    assert tool.main([run, "--skip", "1"]) == 0
    assert "MFU" not in capsys.readouterr().out
    with pytest.raises(SystemExit, match="3 train record"):
        tool.summarize(run, skip=3)
    with pytest.raises(SystemExit, match="has no metrics.jsonl"):
        tool.summarize(str(tmp_path / "missing"), skip=0)
