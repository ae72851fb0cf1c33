"""tools/run_pipeline.py: stage planning, the skip/resume logic, the timing table — no training
is launched (run_stage is replaced where execute() is exercised)."""

import importlib.util
import json
import os
import shlex
import subprocess
import sys

import pytest

from tests.unit.tools.conftest import REPO, write_manifest

DOMAINS = ["A", "B", "C", "D"]


@pytest.fixture(scope="module")
def tool():
    # registered in sys.modules while it loads: its dataclasses look their module up there
    spec = importlib.util.spec_from_file_location("run_pipeline",
                                                  os.path.join(REPO, "tools", "run_pipeline.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules["run_pipeline"] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules["run_pipeline"]
    return module


@pytest.fixture
def data(tmp_path):
    return write_manifest(str(tmp_path / "data"), DOMAINS)


def _args(tool, data, out, *extra):
    return tool.parse_args(["--data", data, "--proxy", "tiny-64", "--main", "tiny-128",
                            "--out", str(out), "--steps", "12", "--proxy-steps", "6", *extra])


def _complete_run(run_dir, steps: int, extra=("model.safetensors",), truncated=False):
    os.makedirs(run_dir, exist_ok=True)
    for name in extra:
        with open(os.path.join(run_dir, name), "w") as fh:
            fh.write("{}")
    with open(os.path.join(run_dir, "metrics.jsonl"), "w") as fh:
        for step in range(steps):  # train records carry the 0-based step index
            fh.write(json.dumps({"kind": "train", "step": step, "loss": 1.0}) + "\n")
        fh.write(json.dumps({"kind": "eval", "step": steps, "avg": 1.0}) + "\n")
        if truncated:
            fh.write('{"kind": "train", "st')


def _stage(stages, name):
    return next(s for s in stages if s.name == name)


def test_plan_orders_stages_and_sets_each_runs_keys(tool, data, tmp_path):
    args = _args(tool, data, tmp_path / "p", "train.lr=0.002")
    stages = tool.plan(args, cuda=False)
    assert [s.name for s in stages] == ["reference", "proxy_dro", "doremi_proxy", "posterior",
                                        "draw", "natural", "uniform", "random", "doremi",
                                        "static", "odm", "online_draw", "compare", "plots"]
    out = os.path.abspath(tmp_path / "p")
    ref = _stage(stages, "reference")
    assert ref.cmd[:3][1:] == ["--num_gpus", "2"] and ref.env == {"DS_ACCELERATOR": "cpu"}
    assert ref.cmd[3].endswith("launch/train_reference.py")
    assert f"run.dir={out}/runs/reference" in ref.cmd and "model.preset=tiny-64" in ref.cmd
    assert "train.steps=6" in ref.cmd and "train.lr=0.002" in ref.cmd
    # the user's overrides come before the stage's own keys
    assert ref.cmd.index("train.lr=0.002") < ref.cmd.index(f"run.dir={out}/runs/reference")
    dro = _stage(stages, "proxy_dro")
    assert f"dro.reference={out}/runs/reference/model.safetensors" in dro.cmd
    post = _stage(stages, "posterior")
    assert post.cmd[post.cmd.index("--proxy-config") + 1] == f"{out}/runs/proxy_dro/config.yaml"
    assert post.cmd[post.cmd.index("--main-config") + 1].endswith("configs/models/tiny-128.yaml")
    assert post.cmd[post.cmd.index("--main-width") + 1] == "128"
    assert post.cmd[post.cmd.index("--evidence") + 1] == "1"  # mixture.evidence's default
    draw = _stage(stages, "draw")
    assert "mixture.kind=dirichlet" in draw.cmd and "model.preset=tiny-128" in draw.cmd
    assert f"mixture.file={out}/mixtures/draw.json" in draw.cmd and "train.steps=12" in draw.cmd
    # DoReMi's α* comes from its own proxy, started from uniform weights
    doremi_proxy = _stage(stages, "doremi_proxy")
    assert "dro.init=uniform" in doremi_proxy.cmd and "model.preset=tiny-64" in doremi_proxy.cmd
    assert f"mixture.file={out}/runs/doremi_proxy/alpha_star.json" in _stage(stages,
                                                                            "doremi").cmd
    assert {"passes=[odm]", "mixture.kind=online"} <= set(_stage(stages, "odm").cmd)
    online = _stage(stages, "online_draw")
    assert {"passes=[dro_evidence]", "mixture.kind=online_draw",
            f"mixture.file={out}/mixtures/draw.json", "dro_evidence.every=20",
            f"dro_evidence.reference={out}/runs/natural/model.safetensors",
            "mixture.evidence=1"} <= set(online.cmd)
    assert f"mixture.file={out}/mixtures/static.json" in _stage(stages, "static").cmd
    assert "mixture.kind=random" in _stage(stages, "random").cmd
    compare = _stage(stages, "compare")
    assert [c for c in compare.cmd if "/runs/" in c] == [
        f"{out}/runs/{n}" for n in ("draw", "natural", "uniform", "random", "doremi", "static",
                                    "odm", "online_draw")]
    assert any(o.endswith("alpha_doremi.png") for o in _stage(stages, "plots").outputs)


def test_overrides_reach_the_posterior_width_and_evidence(tool, data, tmp_path):
    """n2 is the main runs' d_model with the user's overrides; s defaults to mixture.evidence."""
    args = _args(tool, data, tmp_path / "p", "model.d_model=256", "model.n_heads=8",
                 "mixture.evidence=3", "--baselines", "")
    post = _stage(tool.plan(args, cuda=False), "posterior")
    assert post.cmd[post.cmd.index("--main-width") + 1] == "256"
    assert post.cmd[post.cmd.index("--evidence") + 1] == "3" and post.evidence == 3.0


def test_online_draw_brings_its_reference_run(tool, data, tmp_path):
    args = _args(tool, data, tmp_path / "p", "--baselines", "online_draw", "--online-every", "7")
    names = [s.name for s in tool.plan(args, cuda=False)]
    assert names[names.index("draw"):] == ["draw", "natural", "online_draw", "compare", "plots"]


def test_evidence_from_dga_and_both(tool, data, tmp_path):
    args = _args(tool, data, tmp_path / "p", "--baselines", "", "--dga-specific", "test:A",
                 "--evidence-from", "dro,dga")
    stages = tool.plan(args, cuda=False)
    names = [s.name for s in stages]
    assert names == ["reference", "proxy_dro", "dga", "posterior", "draw", "posterior_dga",
                     "draw_dga", "compare", "plots"]
    out = os.path.abspath(tmp_path / "p")
    post = _stage(stages, "posterior_dga")
    assert post.cmd[post.cmd.index("--alpha-star") + 1] == f"{out}/runs/dga/dga_alpha_star.json"
    assert post.cmd[post.cmd.index("--proxy-config") + 1] == f"{out}/runs/dga/config.yaml"
    assert f"mixture.file={out}/mixtures/draw_dga.json" in _stage(stages, "draw_dga").cmd
    assert [c for c in _stage(stages, "compare").cmd if "/runs/" in c] == [
        f"{out}/runs/{n}" for n in ("draw", "draw_dga", "dga")]
    only = tool.plan(_args(tool, data, tmp_path / "q", "--baselines", "", "--dga-specific",
                           "test:A", "--evidence-from", "dga"), cuda=False)
    assert [s.name for s in only][2:5] == ["dga", "posterior", "draw"]
    assert "dga_alpha_star.json" in _stage(only, "posterior").cmd[3]


def test_torchrun_and_baseline_subset(tool, data, tmp_path):
    args = _args(tool, data, tmp_path / "p", "--launcher", "torchrun", "--nproc", "1",
                 "--baselines", "uniform,doremi")
    stages = tool.plan(args, cuda=False)
    assert [s.name for s in stages][3:] == ["posterior", "draw", "uniform", "doremi", "compare",
                                            "plots"]
    ref = _stage(stages, "reference")
    assert "torch.distributed.run" in ref.cmd and "--nproc_per_node=1" in ref.cmd
    assert ref.env == {}


def test_dga_stage_joins_the_comparison_and_plots(tool, data, tmp_path):
    args = _args(tool, data, tmp_path / "p", "--baselines", "natural",
                 "--dga-specific", "test:Python Docs", "--dga-eta", "2.5", "--dga-every", "5")
    stages = tool.plan(args, cuda=False)
    assert [s.name for s in stages][2:] == ["dga", "posterior", "draw", "natural", "compare",
                                            "plots"]
    dga = _stage(stages, "dga")
    assert dga.cmd[dga.cmd.index("--config") - 1].endswith("launch/dga_align.py")
    assert {"dga.specific=test:Python Docs", "dga.eta=2.5", "dga.every=5",
            "model.preset=tiny-128", "train.steps=12"} <= set(dga.cmd)
    assert [os.path.basename(o) for o in dga.outputs] == [
        "model.safetensors", "dga_alpha_star.json", "dga_trajectory.json"]
    assert dga.run_dir in _stage(stages, "compare").cmd
    plots = _stage(stages, "plots")
    assert any(o.endswith("alpha_dga.png") for o in plots.outputs)
    assert ["--kind", "dga"] == [c for c in tool.plot_commands(plots)[-1] if c in ("--kind", "dga")]
    # Without --dga-specific there is no DGA stage.
    assert "dga" not in [s.name for s in tool.plan(_args(tool, data, tmp_path / "q"), cuda=False)]


@pytest.mark.parametrize("bad", [["run.dir=x"], ["mixture.kind=uniform"], ["train.steps=3"],
                                 ["notakeyvalue"], ["--baselines", "natural,regmix"],
                                 ["--steps", "0"], ["dga.eta=3"], ["--dga-eta", "0"],
                                 ["--dga-every", "0"], ["passes=[odm]"], ["--online-every", "0"],
                                 ["--evidence-from", "dga"], ["--evidence-from", "dpo"],
                                 ["--evidence", "0"]])
def test_bad_arguments_are_clear_errors(tool, data, tmp_path, bad, capsys):
    argv = ["--data", data, "--proxy", "tiny-64", "--main", "tiny-128",
            "--out", str(tmp_path / "p"), *bad]
    assert tool.main(argv) == 2
    assert "error:" in capsys.readouterr().err


def test_missing_manifest_is_an_error(tool, tmp_path, capsys):
    argv = ["--data", str(tmp_path / "nodata"), "--proxy", "tiny-64", "--main", "tiny-128",
            "--out", str(tmp_path / "p")]
    assert tool.main(argv) == 2
    assert "manifest.json" in capsys.readouterr().err


def test_training_stage_done_only_at_its_last_step(tool, data, tmp_path):
    args = _args(tool, data, tmp_path / "p")
    ref = _stage(tool.plan(args, cuda=False), "reference")
    assert not tool.is_done(ref)
    _complete_run(ref.run_dir, 4)  # an unfinished run (resumes from its checkpoint)
    assert not tool.is_done(ref)
    _complete_run(ref.run_dir, 6, truncated=True)
    assert tool.is_done(ref)
    os.remove(os.path.join(ref.run_dir, "model.safetensors"))
    assert not tool.is_done(ref)
    dro = _stage(tool.plan(args, cuda=False), "proxy_dro")
    _complete_run(dro.run_dir, 6)  # model.safetensors but no alpha_star.json yet
    assert not tool.is_done(dro)
    _complete_run(dro.run_dir, 6, extra=("model.safetensors", "alpha_star.json",
                                         "dro_trajectory.json"))
    assert tool.is_done(dro)


def test_posterior_redone_when_evidence_or_alpha_star_changes(tool, data, tmp_path):
    args = _args(tool, data, tmp_path / "p", "--evidence", "4")
    post = _stage(tool.plan(args, cuda=False), "posterior")
    alpha_star = post.inputs[0]
    os.makedirs(os.path.dirname(alpha_star), exist_ok=True)
    with open(alpha_star, "w") as fh:
        fh.write("{}")
    os.utime(alpha_star, (1000, 1000))
    os.makedirs(os.path.dirname(post.outputs[0]), exist_ok=True)
    for path in post.outputs:
        with open(path, "w") as fh:
            json.dump({"provenance": {"evidence": 4.0}}, fh)
    assert tool.is_done(post)
    with open(post.outputs[0], "w") as fh:
        json.dump({"provenance": {"evidence": 1.0}}, fh)
    assert not tool.is_done(post)
    with open(post.outputs[0], "w") as fh:
        json.dump({"provenance": {"evidence": 4.0}}, fh)
    os.utime(alpha_star, None)  # a newer α* (the proxy was rerun)
    for path in post.outputs:
        os.utime(path, (1000, 1000))
    assert not tool.is_done(post)


def test_plan_mode_prints_status_and_runs_nothing(tool, data, tmp_path, capsys):
    out = tmp_path / "p"
    args = _args(tool, data, out)
    _complete_run(_stage(tool.plan(args), "reference").run_dir, 6)
    argv = ["--data", data, "--proxy", "tiny-64", "--main", "tiny-128", "--out", str(out),
            "--steps", "12", "--proxy-steps", "6", "--plan"]
    assert tool.main(argv) == 0
    text = capsys.readouterr().out
    assert "[done] reference" in text and "[todo] proxy_dro" in text and "[todo] plots" in text
    assert "launch/proxy_dro.py" in text
    assert sorted(os.listdir(out)) == ["runs"] and os.listdir(out / "runs") == ["reference"]


def test_execute_skips_completed_stages_and_writes_timings(tool, data, tmp_path, monkeypatch,
                                                           capsys):
    out = tmp_path / "p"
    args = _args(tool, data, out, "--baselines", "natural")
    stages = tool.plan(args, cuda=False)
    _complete_run(_stage(stages, "reference").run_dir, 6)
    os.makedirs(out, exist_ok=True)
    with open(out / "timings.json", "w") as fh:  # an earlier invocation's record
        json.dump({"stages": [{"stage": "reference", "status": "ran", "seconds": 42.0}]}, fh)
    ran = []

    def fake_run_stage(stage, log_path, out_dir):
        ran.append(stage.name)
        assert log_path == os.path.join(out_dir, "logs", f"{stage.name}.log")
        if stage.name == "draw":
            raise tool.PipelineError(f"stage draw failed (exit status 1); see its log {log_path}")

    monkeypatch.setattr(tool, "run_stage", fake_run_stage)
    assert tool.execute(args, stages) == 1
    assert ran == ["proxy_dro", "posterior", "draw"]  # reference skipped; stopped at draw
    captured = capsys.readouterr()
    assert "stage draw failed" in captured.err and "logs/draw.log" in captured.err
    assert "reference: done, skipped" in captured.out
    timings = json.load(open(out / "timings.json"))
    rows = {r["stage"]: r for r in timings["stages"]}
    assert rows["reference"]["status"] == "skipped (done)"
    assert rows["reference"]["seconds"] == 42.0  # the earlier run's time is kept
    assert rows["draw"]["status"] == "FAILED" and "natural" not in rows
    md = open(out / "timings.md").read()
    assert "| reference | skipped (done) | 42.0 |" in md and "| draw | FAILED |" in md


def test_simplex_domains_two_largest_and_smallest(tool, tmp_path):
    path = tmp_path / "alpha.json"
    path.write_text(json.dumps({"domains": ["A", "B", "C", "D", "E"], "kind": "static",
                                "weights": [0.1, 0.4, 0.05, 0.25, 0.2]}))
    assert tool.simplex_domains(str(path)) == ["B", "D", "C"]


def test_each_deepspeed_stage_gets_a_free_rendezvous_port(tool, data, tmp_path):
    ref = _stage(tool.plan(_args(tool, data, tmp_path / "p"), cuda=False), "reference")
    cmd = tool.with_free_port(ref.cmd)
    port = [c for c in cmd if c.startswith("--master_port=")]
    assert len(port) == 1 and 0 < int(port[0].split("=")[1]) < 65536
    assert cmd.index(port[0]) < cmd.index("--num_gpus")
    assert tool.with_free_port(["python", "x.py"]) == ["python", "x.py"]


# --------------------------------------------------------------------------- --slurm


def test_slurm_dependencies_follow_what_each_stage_reads(tool, data, tmp_path):
    args = _args(tool, data, tmp_path / "p", "--dga-specific", "test:A",
                 "--evidence-from", "dro,dga")
    deps = tool.stage_dependencies(tool.plan(args, cuda=False))
    mains = ["draw", "draw_dga", "natural", "uniform", "random", "doremi", "static", "odm",
             "online_draw", "dga"]
    assert deps == {
        "reference": [], "proxy_dro": ["reference"], "doremi_proxy": ["reference"], "dga": [],
        "posterior": ["proxy_dro"], "draw": ["posterior"],
        "posterior_dga": ["dga"], "draw_dga": ["posterior_dga"],  # draw_dga/ is not draw/
        "natural": [], "uniform": [], "random": [], "odm": [],
        "doremi": ["doremi_proxy"], "static": ["posterior"],
        "online_draw": ["posterior", "natural"],
        "compare": [n for n in deps if n in mains],
        "plots": ["proxy_dro", "doremi_proxy", "dga", "posterior", *[n for n in deps
                                                                     if n in mains[:-1]]]}
    assert sorted(deps["compare"]) == sorted(mains)


def test_slurm_tool_jobs_rerun_this_command_without_the_submission_flags(tool):
    argv = ["--data", "d", "--slurm", "--sbatch-args", "--partition x", "--plan",
            "--sbatch-args=--qos y", "--out", "o", "--stage", "plots", "k=v"]
    assert tool.tool_job_argv(argv) == ["--data", "d", "--out", "o", "k=v"]


def test_slurm_plan_prints_a_submission_script(tool, data, tmp_path, capsys):
    out = tmp_path / "p"
    args = _args(tool, data, out)
    _complete_run(_stage(tool.plan(args), "reference").run_dir, 6)
    argv = ["--data", data, "--proxy", "tiny-64", "--main", "tiny-128", "--out", str(out),
            "--steps", "12", "--proxy-steps", "6", "--baselines", "natural,online_draw",
            "--slurm", "--plan", "--nproc", "4", "--nodes", "2",
            "--sbatch-args", "--partition gpu --time 1:00:00", "train.lr=0.002"]
    assert tool.main(argv) == 0
    script = capsys.readouterr().out
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0
    lines = {line.split("=", 1)[0]: line for line in script.splitlines() if "=$(" in line}
    assert "# reference: done" in script and "jid_reference" not in lines
    dro = lines["jid_proxy_dro"]  # reference is done: no edge to it
    assert "--dependency" not in dro and "LAUNCHER=launch/proxy_dro.py" in dro
    assert dro.endswith(f"train.lr=0.002 run.dir={out}/runs/proxy_dro model.preset=tiny-64 "
                        f"data.root={data} train.steps=6 "
                        f"dro.reference={out}/runs/reference/model.safetensors)")
    assert ("--nodes=2 --ntasks-per-node=4 --gpus-per-node=4 --chdir=" + tool.REPO) in dro
    assert "--partition gpu --time 1:00:00 " + tool.SBATCH_SCRIPT in dro
    assert '"--dependency=afterok:$jid_posterior:$jid_natural"' in lines["jid_online_draw"]
    post = lines["jid_posterior"]
    assert '"--dependency=afterok:$jid_proxy_dro"' in post and "--ntasks=1" in post
    body = shlex.split(post[post.index("--wrap") + 7:-1])[0]
    assert body.endswith("tools/run_pipeline.py --data " + data + " --proxy tiny-64 --main "
                         f"tiny-128 --out {out} --steps 12 --proxy-steps 6 --baselines "
                         "natural,online_draw --nproc 4 --nodes 2 train.lr=0.002 "
                         "--stage posterior")
    assert script.rstrip().endswith('"squeue -j $jid_proxy_dro,$jid_posterior,$jid_draw,'
                                    '$jid_natural,$jid_online_draw,$jid_compare,$jid_plots"')
    assert sorted(os.listdir(out)) == ["runs"]  # nothing submitted, nothing written


def test_slurm_rerun_submits_what_is_unfinished_once(tool, data, tmp_path, monkeypatch, capsys):
    out = tmp_path / "p"
    argv = ["--data", data, "--proxy", "tiny-64", "--main", "tiny-128", "--out", str(out),
            "--steps", "12", "--proxy-steps", "6", "--baselines", "natural", "--slurm",
            "--gpus-per-node", "0"]
    submitted, cancelled, queue = [], [], set()
    next_id = iter(range(101, 200))

    def fake_sbatch(env, cmd):
        submitted.append((env, cmd))
        job = str(next(next_id))
        queue.add(job)
        return job

    monkeypatch.setattr(tool, "sbatch", fake_sbatch)
    monkeypatch.setattr(tool, "live_jobs", lambda ids: queue & set(ids))
    monkeypatch.setattr(tool, "scancel", cancelled.append)
    assert tool.main(argv) == 0
    names = ["reference", "proxy_dro", "posterior", "draw", "natural", "compare", "plots"]
    ids = {n: str(101 + i) for i, n in enumerate(names)}
    assert json.load(open(out / "slurm_jobs.json")) == ids
    env, cmd = submitted[1]
    assert env["LAUNCHER"] == "launch/proxy_dro.py" and env["GPUS_PER_NODE"] == "0"
    assert "--dependency=afterok:101" in cmd and "--cpus-per-task=1" in cmd
    assert f"--output={out}/logs/proxy_dro.slurm-%j.out" in cmd
    assert "squeue -j 101,102,103,104,105,106,107" in capsys.readouterr().out

    # The reference finished, proxy_dro's job failed (gone), the rest still wait.
    _complete_run(str(out / "runs" / "reference"), 6)
    queue -= {ids["reference"], ids["proxy_dro"]}
    submitted.clear()
    assert tool.main(argv) == 0
    text = capsys.readouterr().out
    assert "reference: done, skipped" in text
    assert "natural: job 105, still queued" in text  # nothing it waits for was resubmitted
    # proxy_dro anew (no edge to the finished reference), then what depends on it
    assert not any(a.startswith("--dependency") for a in submitted[0][1])
    resubmitted = [next(a for a in c if a.startswith("--job-name=")) for _, c in submitted]
    assert resubmitted == [f"--job-name=draw-{n}" for n in
                           ("proxy_dro", "posterior", "draw", "compare", "plots")]
    assert "--dependency=afterok:110:105" in submitted[3][1]  # compare: new draw, kept natural
    assert "--dependency=afterok:108:109:110:105" in submitted[4][1]  # plots
    assert cancelled == [ids[n] for n in ("posterior", "draw", "compare", "plots")]
    assert json.load(open(out / "slurm_jobs.json"))["natural"] == ids["natural"]


def test_slurm_stage_mode_runs_one_tool_stage(tool, data, tmp_path, monkeypatch, capsys):
    out = tmp_path / "p"
    base = ["--data", data, "--proxy", "tiny-64", "--main", "tiny-128", "--out", str(out)]
    ran = []
    monkeypatch.setattr(tool, "run_stage", lambda stage, log, o: ran.append((stage.name, log)))
    assert tool.main([*base, "--stage", "compare"]) == 0
    assert ran == [("compare", f"{out}/logs/compare.log")]
    assert tool.main([*base, "--stage", "reference"]) == 2  # training goes through sbatch
    assert "--stage reference: not one of posterior, compare, plots" in capsys.readouterr().err
