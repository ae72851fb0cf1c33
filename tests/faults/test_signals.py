"""SIGUSR1 (SLURM's warning before the time limit) or SIGTERM to one rank of a real 2-process
run: both ranks stop at the same step boundary with a checkpoint and exit 75 (requeue me);
the same command then resumes, and the finished run's losses equal an uninterrupted run's
bitwise."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from draw_megatron.train.metrics import read_metrics
from draw_megatron.train.stopping import EXIT_PREEMPTED
from tests.distributed.test_launchers import CONFIG, LAUNCHER, REPO, _free_port, srun_env
from tests.unit.data.synthetic import make_synthetic_root

STEPS = 120
TIMEOUT = 240


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("signals") / "data"
    return make_synthetic_root(str(root), [24, 16], seq_len=16, vocab_size=384,
                               splits=("train", "val"))


def _args(root: str, run_dir: str) -> list[str]:
    return [LAUNCHER, "--config", CONFIG, f"run.dir={run_dir}", f"data.root={root}",
            f"train.steps={STEPS}", "model.preset=null", "model.n_layers=1", "model.n_heads=2",
            "model.head_dim=16", "model.d_model=32", "model.ffn_hidden=64",
            "model.vocab_size=384", "model.seq_len=16", "train.global_batch=4",
            "train.micro_batch=2", "eval.sequences_per_domain=2", "eval.every=0",
            "checkpoint.every=50", "log.every=1", "log.tensorboard=false"]


def _launch(root: str, run_dir: str, logs: list) -> list[subprocess.Popen]:
    """Two ranks as srun starts them (SLURM variables, no RANK/WORLD_SIZE)."""
    port, procs = str(_free_port()), []
    for rank in range(2):
        env = srun_env(rank, port)
        log = open(os.path.join(run_dir + f".rank{rank}.log"), "a+")
        logs.append(log)
        procs.append(subprocess.Popen([sys.executable, *_args(root, run_dir)], cwd=REPO,
                                      env=env, stdout=log, stderr=subprocess.STDOUT, text=True))
    return procs


def _wait(procs, logs) -> list[int]:
    try:
        return [p.wait(timeout=TIMEOUT) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for log in logs:
            log.close()


def _train_steps(run_dir: str) -> int:
    path = os.path.join(run_dir, "metrics.jsonl")
    return len(read_metrics(path, "train")) if os.path.exists(path) else 0


@pytest.mark.parametrize("signame", ["SIGUSR1", "SIGTERM"])
def test_signal_checkpoints_and_the_rerun_resumes_exactly(data_root, tmp_path, signame):
    os.makedirs(tmp_path, exist_ok=True)
    run_dir = str(tmp_path / "run")
    logs: list = []
    procs = _launch(data_root, run_dir, logs)
    deadline = time.time() + TIMEOUT
    while _train_steps(run_dir) < 5 and time.time() < deadline and procs[1].poll() is None:
        time.sleep(0.02)
    sent_after = _train_steps(run_dir)
    procs[1].send_signal(getattr(signal, signame))  # one rank only: the ranks must agree
    codes = _wait(procs, logs)
    text = open(run_dir + ".rank0.log").read()
    assert codes == [EXIT_PREEMPTED] * 2, text[-3000:]
    (stop,) = read_metrics(os.path.join(run_dir, "metrics.jsonl"), "preempted")
    assert stop["signal"] == signame and 5 <= stop["step"] < STEPS
    assert stop["step"] <= sent_after + 2  # within a step or so of the signal's arrival
    assert os.path.isfile(os.path.join(run_dir, "checkpoints", f"step_{stop['step']:08d}",
                                       "COMPLETE"))
    assert "preempted: stopped by" in text

    if signame != "SIGUSR1":
        return  # the resume is the same whatever the signal: checked once
    logs = []
    assert _wait(_launch(data_root, run_dir, logs), logs) == [0, 0]  # the requeued job
    clean_dir = str(tmp_path / "clean")
    logs = []
    assert _wait(_launch(data_root, clean_dir, logs), logs) == [0, 0]
    resumed = [r["loss"] for r in read_metrics(os.path.join(run_dir, "metrics.jsonl"), "train")]
    clean = [r["loss"] for r in read_metrics(os.path.join(clean_dir, "metrics.jsonl"), "train")]
    assert len(clean) == STEPS and resumed == clean


def _catches(pid: int, sig: signal.Signals) -> bool:
    """Whether process ``pid`` has a handler installed for ``sig`` (/proc SigCgt mask)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            mask = next(line for line in fh if line.startswith("SigCgt:")).split()[1]
    except (OSError, StopIteration):
        return False
    return bool(int(mask, 16) >> (sig - 1) & 1)


def test_signal_while_the_run_starts_is_kept_for_the_first_step_boundary(data_root, tmp_path):
    """SIGUSR1 to one rank while it is still importing torch and building the engine (as
    soon as the launcher records signals): no rank dies; both checkpoint step 0 and exit
    75, and the requeued run trains to the end."""
    run_dir = str(tmp_path / "early")
    logs = []
    procs = _launch(data_root, run_dir, logs)
    deadline = time.time() + 60
    while not _catches(procs[1].pid, signal.SIGUSR1) and time.time() < deadline:
        assert procs[1].poll() is None
        time.sleep(0.005)
    procs[1].send_signal(signal.SIGUSR1)
    codes = _wait(procs, logs)
    text = open(run_dir + ".rank0.log").read()
    assert codes == [EXIT_PREEMPTED] * 2, text[-3000:]
    (stop,) = read_metrics(os.path.join(run_dir, "metrics.jsonl"), "preempted")
    assert stop["step"] == 0 and stop["signal"] == "SIGUSR1"
    assert os.path.isfile(os.path.join(run_dir, "checkpoints", "step_00000000", "COMPLETE"))
    logs = []
    assert _wait(_launch(data_root, run_dir, logs), logs) == [0, 0]
    assert len(read_metrics(os.path.join(run_dir, "metrics.jsonl"), "train")) == STEPS
