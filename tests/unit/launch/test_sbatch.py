"""launch/slurm/pretrain.sbatch's checks that need no SLURM daemon: LAUNCHER must name one of
the training launchers (the batch job fails at once, naming it); srun's status 75 requeues
the job, another failure fails it; a signal sent to the batch shell is passed to srun."""

import os
import signal
import subprocess
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
SCRIPT = os.path.join(REPO, "launch", "slurm", "pretrain.sbatch")


def _job(launcher):
    env = {**os.environ, "SLURM_JOB_ID": "7", "REPO_DIR": REPO, "LAUNCHER": launcher}
    return subprocess.run(["bash", SCRIPT, "configs/experiments/smoke_cpu.yaml"], env=env,
                          capture_output=True, text=True, timeout=30)


def test_unknown_launcher_is_refused():
    res = _job("launch/nope.py")
    assert res.returncode == 2
    assert "LAUNCHER=launch/nope.py: not one of launch/pretrain_main.py" in res.stderr
    assert "launch/dga_align.py" in res.stderr


def test_each_launcher_named_in_the_script_exists():
    with open(SCRIPT) as fh:
        text = fh.read()
    for name in ("pretrain_main", "train_reference", "proxy_dro", "dga_align"):
        assert f"launch/{name}.py" in text and os.path.isfile(
            os.path.join(REPO, "launch", f"{name}.py"))


# The batch script's answer to srun's exit status, with srun and scontrol replaced by
# stand-ins on PATH (the real cluster runs: tests/faults/test_slurm_requeue.py).
SRUN = """#!/bin/bash
trap 'echo "srun got USR1" >> "$CALLS"; exit 75' USR1
echo "srun $*" >> "$CALLS"
if [[ $SRUN_STATUS == wait ]]; then
  touch "$CALLS.started"
  for _ in $(seq 1 200); do sleep 0.05; done
  exit 9
fi
exit "$SRUN_STATUS"
"""
SCONTROL = """#!/bin/bash
echo "scontrol $*" >> "$CALLS"
[[ $1 == show ]] && { echo node1; exit 0; }
exit "$REQUEUE_STATUS"
"""


def _batch(tmp_path, srun_status: str, requeue_status: int = 0) -> subprocess.Popen:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("srun", SRUN), ("scontrol", SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = {**os.environ, "SLURM_JOB_ID": "42", "SLURM_JOB_NODELIST": "node1",
           "SLURM_NTASKS": "2", "REPO_DIR": REPO, "PATH": f"{bin_dir}:{os.environ['PATH']}",
           "CALLS": str(tmp_path / "calls"), "SRUN_STATUS": srun_status,
           "REQUEUE_STATUS": str(requeue_status), "PYTHON": "python"}
    return subprocess.Popen(["bash", SCRIPT, "configs/experiments/smoke_cpu.yaml", "k=v"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _calls(tmp_path) -> list[str]:
    return (tmp_path / "calls").read_text().splitlines()


def test_status_75_requeues_the_job(tmp_path):
    proc = _batch(tmp_path, "75")
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "requeueing job 42" in out
    assert _calls(tmp_path)[-1] == "scontrol requeue 42"
    srun = next(c for c in _calls(tmp_path) if c.startswith("srun "))
    assert "--kill-on-bad-exit=0 --wait=60" in srun and srun.endswith(
        "launch/pretrain_main.py --config configs/experiments/smoke_cpu.yaml k=v")


def test_status_75_without_a_requeue_ends_the_job_with_it(tmp_path):
    proc = _batch(tmp_path, "75", requeue_status=1)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 75 and "resubmit the same command to resume" in err


def test_other_failures_fail_the_job_without_requeue(tmp_path):
    proc = _batch(tmp_path, "3")
    proc.communicate(timeout=30)
    assert proc.returncode == 3
    assert not any(c.startswith("scontrol requeue") for c in _calls(tmp_path))


def test_a_signal_to_the_batch_shell_reaches_srun(tmp_path):
    proc = _batch(tmp_path, "wait")  # srun exits 75 once it gets USR1
    deadline = time.time() + 30
    while not (tmp_path / "calls.started").exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGUSR1)
    out, _ = proc.communicate(timeout=30)
    assert "batch shell got SIGUSR1: forwarding it to srun" in out
    assert "srun got USR1" in _calls(tmp_path)
    assert proc.returncode == 0 and _calls(tmp_path)[-1] == "scontrol requeue 42"


def test_preemption_directives():
    with open(SCRIPT) as fh:
        lines = fh.read().splitlines()
    assert {"#SBATCH --signal=USR1@120", "#SBATCH --requeue",
            "#SBATCH --open-mode=append"} <= set(lines)
