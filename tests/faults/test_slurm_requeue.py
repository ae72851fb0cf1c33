"""launch/slurm/pretrain.sbatch on a real (loopback) SLURM cluster: a 2-task CPU job gets
SIGUSR1 on its tasks the way Slurm's time-limit warning sends it, the ranks checkpoint and
exit 75, the batch script requeues the job, and the requeued job resumes and completes with
the losses of an uninterrupted run. tools/bench_requeue.sh drives the job and prints how
long the job was away (run pytest with -s to see the figures)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from draw_megatron.train.metrics import read_metrics
from tests.distributed.slurm_cluster import job_fields, slurm_cluster  # noqa: F401 (fixture)
from tests.faults.test_signals import STEPS, _args, _launch, _wait, data_root  # noqa: F401
from tests.distributed.test_launchers import REPO

BENCH = os.path.join(REPO, "tools", "bench_requeue.sh")


def test_preempted_job_requeues_and_resumes_exactly(slurm_cluster, data_root, tmp_path):
    run_dir, clean_dir = str(tmp_path / "run"), str(tmp_path / "clean")
    args = _args(data_root, run_dir)  # [launcher, --config, CONFIG, key=value ...]
    overrides = [a for a in args[3:] if not a.startswith("run.dir=")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update({"GPUS_PER_NODE": "0", "NTASKS_PER_NODE": "2", "PYTHON": sys.executable,
                "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO, "SBATCH_ARGS": "--time 10"})
    logs: list = []
    # The uninterrupted run first, not beside the job: two runs opening their datasets at
    # the same moment on one host can race for the MDS library's shared-memory prefix.
    assert _wait(_launch(data_root, clean_dir, logs), logs) == [0, 0]
    bench = subprocess.run(["bash", BENCH, run_dir, args[2], *overrides], cwd=REPO,
                           env={**env, "TIMEOUT": "240"}, capture_output=True, text=True,
                           timeout=900)
    print(bench.stdout)
    assert bench.returncode == 0, bench.stdout + bench.stderr
    job = re.search(r"^job (\d+) submitted", bench.stdout, re.M).group(1)
    fields = job_fields(job)
    assert fields["JobState"] == "COMPLETED" and fields["Restarts"] == "1"
    assert fields["ExitCode"] == "0:0"
    log = open(fields["StdOut"]).read()  # --open-mode=append: both attempts in one log
    assert "(attempt 1)" in log and "(attempt 2)" in log
    assert f"exited 75; requeueing job {job}" in log
    assert "Exited with exit code 75" in log and "Terminated" not in log  # no task killed
    seconds = re.search(r"requeue_seconds_to_running=([\d.]+)", bench.stdout).group(1)
    assert float(seconds) > 0

    metrics = os.path.join(run_dir, "metrics.jsonl")
    (stop,) = read_metrics(metrics, "preempted")
    assert stop["signal"] == "SIGUSR1" and 5 <= stop["step"] < STEPS
    resumed = [r["loss"] for r in read_metrics(metrics, "train")]
    expected = [r["loss"] for r in read_metrics(os.path.join(clean_dir, "metrics.jsonl"),
                                                "train")]
    assert len(expected) == STEPS and resumed == expected
    assert os.path.isfile(os.path.join(run_dir, "model.safetensors"))
