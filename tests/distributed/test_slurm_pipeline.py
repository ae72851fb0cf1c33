"""tools/run_pipeline.py --slurm against a real (loopback) SLURM cluster.

The whole graph (every baseline, DGA, evidence from both) is submitted held: each job's
Dependency field, as slurmctld keeps it, must name exactly the jobs of the stages it reads
from, and a rerun must submit nothing while they wait. Then a tiny pipeline (reference →
proxy_dro → posterior → draw → compare, plots; 3 domains, as the simplex plot needs) runs
for real through the batch jobs, and a rerun finds every stage done.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from tests.distributed.slurm_cluster import (job_fields, slurm_cluster,  # noqa: F401
                                             squeue_ids, wait_for_end)
from tests.unit.data.synthetic import make_synthetic_root
from tests.unit.tools.conftest import REPO, load_tool, write_manifest

TOOL = os.path.join(REPO, "tools", "run_pipeline.py")


@pytest.fixture(scope="module")
def tool():
    return load_tool("run_pipeline")


def _pipeline(argv: list[str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update({"PYTHONPATH": REPO, "OMP_NUM_THREADS": "1"})
    return subprocess.run([sys.executable, TOOL, *argv], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def _jobs(out) -> dict[str, str]:
    with open(os.path.join(out, "slurm_jobs.json")) as fh:
        return json.load(fh)


def test_held_jobs_carry_the_stage_graph(slurm_cluster, tool, tmp_path):
    data = write_manifest(str(tmp_path / "data"), ["A", "B", "C"])
    out = str(tmp_path / "p")
    argv = ["--data", data, "--proxy", "tiny-64", "--main", "tiny-128", "--out", out,
            "--dga-specific", "test:A", "--evidence-from", "dro,dga", "--gpus-per-node", "0",
            "--slurm", "--sbatch-args=--hold"]
    first = _pipeline(argv)
    assert first.returncode == 0, first.stderr
    jobs = _jobs(out)
    try:
        stages = tool.plan(tool.parse_args(argv), cuda=False)
        deps = tool.stage_dependencies(stages)
        assert sorted(jobs) == sorted(s.name for s in stages)
        for name, job in jobs.items():
            fields = job_fields(job)
            assert fields["JobName"] == f"draw-{name}" and fields["JobState"] == "PENDING"
            assert fields["StdOut"] == f"{out}/logs/{name}.slurm-{job}.out"
            waits_for = sorted(re.findall(r"afterok:(\d+)\(unfulfilled\)",
                                          fields["Dependency"]))
            assert waits_for == sorted(jobs[d] for d in deps[name]), name
        assert job_fields(jobs["online_draw"])["Dependency"].count("afterok") == 2
        train = job_fields(jobs["dga"])
        assert train["Command"].endswith("launch/slurm/pretrain.sbatch")
        assert train["NumTasks"] == "2" and train["Requeue"] == "1"
        script = subprocess.run(["scontrol", "write", "batch_script", jobs["posterior_dga"],
                                 "-"], capture_output=True, text=True, check=True).stdout
        assert "tools/run_pipeline.py" in script and "--stage posterior_dga" in script
        assert "--slurm" not in script and "--hold" not in script

        again = _pipeline(argv)  # nothing finished, nothing failed: nothing to submit
        assert again.returncode == 0, again.stderr
        assert again.stdout.count("still queued from the last submission") == len(jobs)
        assert _jobs(out) == jobs and sorted(squeue_ids()) == sorted(jobs.values())
    finally:
        subprocess.run(["scancel", *jobs.values()], check=False)


def test_tiny_pipeline_runs_as_batch_jobs(slurm_cluster, tmp_path):
    data = make_synthetic_root(str(tmp_path / "data"), [24, 16, 16], seq_len=16, vocab_size=384,
                               splits=("train", "val"))
    out = str(tmp_path / "p")
    argv = ["--data", data, "--proxy", "tiny-64", "--main", "tiny-128", "--out", out,
            "--baselines", "", "--steps", "2", "--proxy-steps", "2", "--gpus-per-node", "0",
            "--slurm", "model.vocab_size=384", "model.seq_len=16",
            "eval.sequences_per_domain=2", "checkpoint.every=0"]
    first = _pipeline(argv)
    assert first.returncode == 0, first.stderr
    jobs = _jobs(out)
    assert list(jobs) == ["reference", "proxy_dro", "posterior", "draw", "compare", "plots"]
    assert f"squeue -j {','.join(jobs.values())}" in first.stdout
    ended = wait_for_end(list(jobs.values()), timeout=600)
    logs = {n: open(f["StdOut"]).read()[-3000:] for n, f in zip(jobs, ended.values())}
    assert {n: f["JobState"] for n, f in zip(jobs, ended.values())} == {
        n: "COMPLETED" for n in jobs}, logs
    assert os.path.isfile(os.path.join(out, "runs", "proxy_dro", "alpha_star.json"))
    assert os.path.isfile(os.path.join(out, "mixtures", "draw.json"))
    assert os.path.isfile(os.path.join(out, "comparison.md"))
    assert sorted(os.listdir(os.path.join(out, "plots"))) == ["alpha_dro.png", "losses.png",
                                                              "simplex.png"]
    rerun = _pipeline(argv)
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stdout.count("done, skipped") == len(jobs)
    assert "every stage is done" in rerun.stdout and _jobs(out) == jobs
