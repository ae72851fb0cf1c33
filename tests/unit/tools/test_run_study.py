"""tools/run_study.py: seeds × evidence values of the pipeline, shared runs, the summary.

No training: the pipeline subprocess is replaced by a fake that writes every stage's outputs
(finished run folders with metrics.jsonl train and eval records), as run_pipeline's own tests
fake runs."""

import csv
import json
import os
import zlib

import numpy as np
import pytest

from tests.unit.tools.conftest import load_tool, write_manifest

DOMAINS = ["A", "B", "C"]


@pytest.fixture(scope="module")
def tool():
    return load_tool("run_study")


@pytest.fixture
def data(tmp_path):
    return write_manifest(str(tmp_path / "data"), DOMAINS)


def _losses(run_dir: str) -> list[float]:
    """Per-domain losses of a fake run, fixed by its folder (its seed, evidence and stage)."""
    rng = np.random.default_rng(zlib.crc32(run_dir.encode()))
    return [float(v) for v in 3.0 + rng.random(len(DOMAINS))]


class FakePipeline:
    """Stands in for the run_pipeline subprocess: writes each stage's outputs, skipping a
    training run already there (a finished or shared one), like run_pipeline itself."""

    def __init__(self, tool):
        self.tool, self.calls = tool, []

    def __call__(self, argv):
        self.calls.append(argv)
        rp = self.tool.rp
        args = rp.parse_args(argv)
        for stage in rp.plan(args):
            if stage.kind == "train":
                if not os.path.lexists(stage.run_dir):
                    self._run(stage)
                continue
            for path in stage.outputs:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "w") as fh:
                    json.dump({"provenance": {"evidence": stage.evidence}}, fh)
        return 0

    @staticmethod
    def _run(stage):
        os.makedirs(stage.run_dir)
        for path in stage.outputs:
            with open(path, "w") as fh:
                fh.write("{}")
        losses = _losses(stage.run_dir)
        with open(os.path.join(stage.run_dir, "metrics.jsonl"), "w") as fh:
            for step in range(stage.steps):
                fh.write(json.dumps({"kind": "train", "step": step, "loss": 4.0}) + "\n")
            fh.write(json.dumps({"kind": "eval", "step": stage.steps, "domain_loss": [9.0] * 3,
                                 "avg": 9.0, "worst": 9.0}) + "\n")  # an earlier eval
            fh.write(json.dumps({"kind": "eval", "step": stage.steps, "domain_loss": losses,
                                 "avg": sum(losses) / len(losses), "worst": max(losses)}) + "\n")


@pytest.fixture
def fake(tool, monkeypatch):
    fake = FakePipeline(tool)
    monkeypatch.setattr(tool, "run_pipeline_process", fake)
    return fake


def _argv(data, out, *extra):
    return ["--data", data, "--proxy", "tiny-64", "--main", "tiny-128", "--out", str(out),
            "--seeds", "1,2", "--steps", "4", "--proxy-steps", "2",
            "--baselines", "natural,uniform", *extra]


def _last_eval(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as fh:
        return [json.loads(ln) for ln in fh if '"eval"' in ln][-1]


def _csv(out):
    with open(out / "study.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_table_is_mean_and_sd_of_the_runs_last_evals(tool, fake, data, tmp_path):
    out = tmp_path / "study"
    assert tool.main(_argv(data, out, "train.lr=0.002")) == 0
    assert len(fake.calls) == 2
    assert "run.seed=1" in fake.calls[0] and "run.seed=2" in fake.calls[1]
    assert "train.lr=0.002" in fake.calls[0]
    rows = _csv(out)
    for method in ("draw", "natural", "uniform"):
        evals = [_last_eval(out / f"seed_{s}" / "runs" / method) for s in (1, 2)]
        for i, domain in enumerate(DOMAINS):
            x = [e["domain_loss"][i] for e in evals]
            row = next(r for r in rows if r["kind"] == "loss" and r["method"] == method
                       and r["row"] == domain)
            assert float(row["mean"]) == pytest.approx(sum(x) / 2, abs=1e-6)
            assert float(row["sd"]) == pytest.approx(abs(x[0] - x[1]) / 2 ** 0.5, abs=1e-6)
        worst = [e["worst"] for e in evals]
        row = next(r for r in rows if r["method"] == method and r["row"] == "worst-case")
        assert float(row["mean"]) == pytest.approx(sum(worst) / 2, abs=1e-6)
    md = (out / "study.md").read_text()
    x = [_last_eval(out / f"seed_{s}" / "runs" / "draw")["avg"] for s in (1, 2)]
    assert f"{np.mean(x):.4f} ± {np.std(x, ddof=1):.4f}" in md
    assert "10,000 resamples" in md
    assert (out / "study.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the paired differences: DRAW against every baseline, on average and worst case
    diffs = [r for r in rows if r["kind"] == "difference"]
    assert {(r["method"], r["baseline"], r["row"]) for r in diffs} == {
        ("draw", b, m) for b in ("natural", "uniform") for m in ("average", "worst-case")}
    nat = [_last_eval(out / f"seed_{s}" / "runs" / "natural")["avg"] for s in (1, 2)]
    d = np.array(x) - np.array(nat)
    row = next(r for r in diffs if r["baseline"] == "natural" and r["row"] == "average")
    assert float(row["mean"]) == pytest.approx(d.mean(), abs=1e-6)
    assert float(row["ci_low"]) <= d.mean() <= float(row["ci_high"])
    assert float(row["ci_low"]) == pytest.approx(d.min(), abs=1e-6)  # n = 2: {d1, mean, d2}


def test_bootstrap_is_reproducible_and_holds_the_mean(tool):
    diff = np.array([0.3, -0.1, 0.2, 0.05])
    a = tool.bootstrap_interval(diff, 2000, seed=7)
    assert a == tool.bootstrap_interval(diff, 2000, seed=7)
    assert a[0] <= diff.mean() <= a[1] and a[0] < a[1]
    assert tool.bootstrap_interval(diff, 2000, seed=8) != a


def test_rerun_reuses_finished_pipelines(tool, fake, data, tmp_path, capsys):
    out = tmp_path / "study"
    assert tool.main(_argv(data, out)) == 0
    first = (out / "study.csv").read_text()
    fake.calls.clear()
    os.remove(out / "study.md")
    assert tool.main(_argv(data, out)) == 0
    assert fake.calls == []  # no pipeline call for finished seeds
    assert (out / "study.csv").read_text() == first and (out / "study.md").is_file()
    assert "seed_2: finished, reused" in capsys.readouterr().out
    # one unfinished seed: only its pipeline runs again
    os.remove(out / "seed_2" / "comparison.md")
    assert tool.main(_argv(data, out)) == 0
    assert [c[c.index("--out") + 1] for c in fake.calls] == [str(out / "seed_2")]


def test_evidence_values_share_what_does_not_read_the_posterior(tool, fake, data, tmp_path):
    out = tmp_path / "study"
    assert tool.main(_argv(data, out, "--evidence", "1,8", "--baselines", "natural,static")) == 0
    seed = out / "seed_1"
    assert [c[c.index("--evidence") + 1] for c in fake.calls] == ["1", "8", "1", "8"]
    second = seed / "evidence_8" / "runs"
    for name in ("reference", "proxy_dro", "natural"):
        assert os.path.islink(second / name)
        assert os.path.realpath(second / name) == str(seed / "evidence_1" / "runs" / name)
    for name in ("draw", "static"):  # they read the posterior: trained again
        assert not os.path.islink(second / name) and (second / name).is_dir()
    methods = {r["method"] for r in _csv(out) if r["kind"] == "loss"}
    assert methods == {"draw [s=1]", "draw [s=8]", "natural", "static [s=1]", "static [s=8]"}
    # seeds are not shared under --vary all
    assert not os.path.islink(out / "seed_2" / "evidence_1" / "runs" / "natural")


def test_vary_proxy_changes_only_the_proxy_stages(tool, fake, data, tmp_path):
    out = tmp_path / "study"
    assert tool.main(_argv(data, out, "--vary", "proxy", "--baselines", "natural,doremi")) == 0
    assert "--proxy-seed" in fake.calls[1] and not any("run.seed=" in c for c in fake.calls[1])
    runs = out / "seed_2" / "runs"
    for name in ("reference", "natural"):
        assert os.path.islink(runs / name)
    for name in ("proxy_dro", "doremi_proxy", "draw", "doremi"):
        assert not os.path.islink(runs / name)


def test_dry_run_lists_and_writes_nothing(tool, fake, data, tmp_path, capsys):
    out = tmp_path / "study"
    assert tool.main(_argv(data, out, "--evidence", "1,8", "--dry-run")) == 0
    text = capsys.readouterr().out
    assert "[to run] seed_1/evidence_8" in text and "--proxy-seed" not in text
    assert "[shared with seed_1/evidence_1/runs/natural] natural" in text
    assert "[todo] draw" in text and fake.calls == [] and not out.exists()


@pytest.mark.parametrize("seeds", ["", " ", "1,", "1,x", "-1", "1,1"])
def test_bad_seeds_are_one_line_errors(tool, fake, data, tmp_path, seeds, capsys):
    argv = _argv(data, tmp_path / "s")
    argv[argv.index("--seeds") + 1] = seeds
    assert tool.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --seeds") and err.count("\n") == 1
    assert fake.calls == []


@pytest.mark.parametrize("extra,message", [(["run.seed=3"], "run.seed"),
                                           (["--vary", "proxy", "--proxy-seed", "3"],
                                            "--proxy-seed"),
                                           (["--evidence", "1,x"], "--evidence"),
                                           (["--steps", "0"], "--steps")])
def test_other_bad_arguments(tool, fake, data, tmp_path, extra, message, capsys):
    assert tool.main(_argv(data, tmp_path / "s", *extra)) == 2
    assert message in capsys.readouterr().err


def test_failed_pipeline_stops_the_study(tool, data, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(tool, "run_pipeline_process", lambda argv: 1)
    assert tool.main(_argv(data, tmp_path / "s")) == 2
    err = capsys.readouterr().err
    assert "seed_1 failed" in err and not (tmp_path / "s" / "study.md").exists()


def test_evidence_variants_meet_baselines_of_their_own_evidence(tool, fake, data, tmp_path):
    out = tmp_path / "study"
    assert tool.main(_argv(data, out, "--evidence", "1,8", "--baselines", "natural,static")) == 0
    pairs = {(r["method"], r["baseline"]) for r in _csv(out) if r["kind"] == "difference"}
    assert pairs == {("draw [s=1]", "natural"), ("draw [s=1]", "static [s=1]"),
                     ("draw [s=8]", "natural"), ("draw [s=8]", "static [s=8]")}
    assert "`seed_2/evidence_8/`" in (out / "study.md").read_text()


def test_pipeline_argv_is_accepted_by_the_real_run_pipeline(tool, data, tmp_path, capfd):
    """The command each pipeline gets (key=value before and after flags), run for real with
    --plan so nothing trains."""
    args, rest = tool.parse_args(_argv(data, tmp_path / "s", "train.lr=0.002", "--evidence", "8"))
    pipe = tool.plan_study(args, rest)[1]
    assert tool.run_pipeline_process([*pipe.argv, "--plan"]) == 0
    out = capfd.readouterr().out
    assert "run.seed=2" in out and "train.lr=0.002" in out and "--evidence 8" in out
    assert not (tmp_path / "s").exists()


def _fake_scores(run_dir: str) -> dict:
    """lm-eval results of a fake run, fixed by its folder."""
    rng = np.random.default_rng(zlib.crc32(run_dir.encode()) + 1)
    return {"results": {"task_a": {"alias": "task_a", "acc,none": float(rng.random()),
                                   "acc_stderr,none": 0.01, "sample_len": 10},
                        "task_b": {"bits_per_byte,none": float(2 + rng.random())}},
            "higher_is_better": {"task_a": {"acc": True}, "task_b": {"bits_per_byte": False}},
            "n-shot": {"task_a": 0, "task_b": 0}}


def test_downstream_scores_every_run_and_summarises_them(tool, fake, data, tmp_path,
                                                         monkeypatch):
    calls = []

    def fake_eval(argv):
        calls.append(argv)
        out = argv[argv.index("--out") + 1]
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "results.json"), "w") as fh:
            json.dump(_fake_scores(os.path.realpath(argv[0])), fh)
        return 0

    monkeypatch.setattr(tool, "run_eval_process", fake_eval)
    out = tmp_path / "study"
    tasks = tmp_path / "tasks"
    extra = ["--lm-tasks", "task_a,task_b", "--lm-include-path", str(tasks),
             "--lm-only-include-path"]
    assert tool.main(_argv(data, out, *extra)) == 0
    # every method of every seed once (reference and proxies are not methods)
    runs = {os.path.relpath(c[0], out) for c in calls}
    assert runs == {f"seed_{s}/runs/{m}" for s in (1, 2) for m in ("draw", "natural", "uniform")}
    assert all(c[1:3] == ["--tasks", "task_a,task_b"] and "--only-include-path" in c
               and str(tasks) in c for c in calls)
    rows = _csv(out)
    for method in ("draw", "natural"):
        acc = [_fake_scores(os.path.realpath(out / f"seed_{s}" / "runs" / method))
               ["results"]["task_a"]["acc,none"] for s in (1, 2)]
        row = next(r for r in rows if r["kind"] == "downstream" and r["method"] == method
                   and r["row"] == "task_a 0-shot acc")
        assert float(row["mean"]) == pytest.approx(np.mean(acc), abs=1e-6)
        assert float(row["sd"]) == pytest.approx(np.std(acc, ddof=1), abs=1e-6)
    md = (out / "study.md").read_text()
    assert "## Downstream (lm-eval)" in md
    assert "task_a 0-shot acc higher" in md and "task_b 0-shot bits_per_byte lower" in md
    assert "| draw | natural | task_b 0-shot bits_per_byte |" in md
    assert "sample_len" not in md  # a count, not a metric
    # a rerun reuses every score
    calls.clear()
    assert tool.main(_argv(data, out, *extra)) == 0
    assert calls == []
