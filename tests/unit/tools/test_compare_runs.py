"""tools/compare_runs.py: the loss table, and lm-eval results files beside it."""

import csv
import json
import os

import pytest

from tests.unit.tools.conftest import load_tool, write_manifest

DOMAINS = ["A", "B"]


@pytest.fixture(scope="module")
def tool():
    return load_tool("compare_runs")


def _run(root, name, losses):
    run = root / name
    os.makedirs(run)
    (run / "config.yaml").write_text(f"data:\n  root: {root / 'data'}\n")
    with open(run / "metrics.jsonl", "w") as fh:
        fh.write(json.dumps({"kind": "eval", "step": 10, "domain_loss": losses,
                             "avg": sum(losses) / 2, "worst": max(losses)}) + "\n")
    return str(run)


def _results(path, results, **extra):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        json.dump({"results": results, **extra}, fh)
    return str(path)


@pytest.fixture
def runs(tmp_path):
    write_manifest(str(tmp_path / "data"), DOMAINS)
    return [_run(tmp_path, "draw", [3.0, 4.0]), _run(tmp_path, "natural", [3.5, 3.25])]


# lm-eval 0.4's layout: metric keys "name,filter", stderr beside each, a group's own figure
# and its subtasks, n-shot per task
MMLU = {"mmlu": {"alias": "mmlu", "acc,none": 0.25, "acc_stderr,none": 0.01},
        "mmlu_stem": {"alias": " - stem", "acc,none": 0.2, "acc_stderr,none": 0.02},
        "mmlu_algebra": {"alias": "  - algebra", "acc,none": 0.3, "acc_stderr,none": 0.05},
        "arc_challenge": {"alias": "arc_challenge", "acc,none": 0.21, "acc_norm,none": 0.24,
                          "acc_stderr,none": 0.01}}
GROUPS = {"mmlu": ["mmlu_stem"], "mmlu_stem": ["mmlu_algebra"], "arc_challenge": []}


def test_loss_table_unchanged_and_downstream_beside_it(tool, runs, tmp_path):
    plain, withlm = tmp_path / "plain", tmp_path / "lm"
    assert tool.main([*runs, "--out", str(plain)]) == 0
    inside = _results(os.path.join(runs[0], "lm_eval", "model", "results_2026.json"), MMLU,
                      group_subtasks=GROUPS, **{"n-shot": {"mmlu": 5, "arc_challenge": 25}})
    elsewhere = _results(tmp_path / "gsm.json",
                         {"gsm8k": {"exact_match,strict-match": 0.02,
                                    "exact_match_stderr,strict-match": 0.004}},
                         **{"n-shot": {"gsm8k": 10}})
    assert tool.main([*runs, "--out", str(withlm), "--lm-eval", inside,
                      f"natural={elsewhere}"]) == 0
    assert (plain / "comparison.csv").read_text() == (withlm / "comparison.csv").read_text()
    with open(withlm / "downstream.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["run", "average loss", "worst-case loss", "mmlu 5-shot acc",
                       "arc_challenge 25-shot acc", "arc_challenge 25-shot acc_norm",
                       "gsm8k 10-shot exact_match (strict-match)"]
    assert rows[1] == ["draw", "3.5000", "4.0000", "0.2500", "0.2100", "0.2400", "-"]
    assert rows[2] == ["natural", "3.3750", "3.5000", "-", "-", "-", "0.0200"]
    md = (withlm / "comparison.md").read_text()
    assert md.startswith((plain / "comparison.md").read_text()) and "## Downstream" in md


def test_run_named_by_its_directory_or_column(tool, runs, tmp_path):
    path = _results(tmp_path / "x.json", {"boolq": {"acc,none": 0.6}})
    for key in (runs[1], "natural"):
        assert tool.match_lm_eval([f"{key}={path}"], runs) == {runs[0]: [], runs[1]: [path]}


def test_group_without_its_own_figure_shows_its_subtasks(tool, tmp_path):
    path = _results(tmp_path / "r.json", {"suite": {"alias": "suite"},
                                          "boolq": {"acc,none": 0.6},
                                          "drop": {"f1,none": 0.1, "em,none": 0.05}},
                    group_subtasks={"suite": ["boolq", "drop"]})
    assert tool.lm_eval_columns(path) == {"boolq acc": 0.6, "drop f1": 0.1, "drop em": 0.05}


def test_bad_lm_eval_inputs_are_clear_errors(tool, runs, tmp_path):
    stray = _results(tmp_path / "stray.json", {"boolq": {"acc,none": 0.6}})
    with pytest.raises(SystemExit, match="not under any run's lm_eval/"):
        tool.main([*runs, "--lm-eval", stray])
    with pytest.raises(SystemExit, match="'other' is not one of the runs"):
        tool.main([*runs, "--lm-eval", f"other={stray}"])
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SystemExit, match="cannot read it as JSON"):
        tool.main([*runs, "--lm-eval", f"draw={bad}"])
    bad.write_text(json.dumps({"config": {}}))
    with pytest.raises(SystemExit, match="no 'results' dict"):
        tool.main([*runs, "--lm-eval", f"draw={bad}"])
    with pytest.raises(SystemExit, match="in two files"):
        tool.main([*runs, "--lm-eval", f"draw={stray}", f"draw={stray}"])
