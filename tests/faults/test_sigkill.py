"""SIGKILL of one rank of a real 2-process run of launch/pretrain_main.py (srun's
environment) at a seeded random step; the surviving rank stops by itself (gloo sees its
peer's sockets close) or is killed after a bound; the same command relaunched finishes, and
the finished run consumed exactly the samples of an uninterrupted run (none lost, none
repeated) and logs bitwise the same losses.

The samples are recorded by a wrapper that runs the launcher unchanged in each process,
with DomainSampler.take wrapped to append (stream position, global sample ids) to a file
per rank: the loader draws the whole global batch on every rank, so the position (samples
drawn before this batch) names the batch; after a relaunch the last record of a position
is the one the finished run trained on.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

from draw_megatron.train.metrics import read_metrics
from tests.distributed.test_launchers import REPO, _free_port, srun_env
from tests.faults.test_signals import _args
from tests.unit.data.synthetic import make_synthetic_root

SEED = 20261203
STEPS = 30
BATCH = 4
TIMEOUT = 240
SURVIVOR_BOUND = 60  # seconds the surviving rank gets to stop by itself

_WRAPPER = """
import json, os, runpy, sys
import numpy as np
from draw_megatron.data import loader

log = open(os.environ["SAMPLE_LOG"] + "." + os.environ["SLURM_PROCID"], "a")
take = loader.DomainSampler.take

def recording_take(self, domains):
    position = int(self.cursors.sum())
    ids = take(self, domains)
    log.write(json.dumps([position, np.asarray(ids).tolist()]) + "\\n")
    log.flush()
    return ids

loader.DomainSampler.take = recording_take
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _launch(root: str, run_dir: str, overrides: list[str]) -> list[subprocess.Popen]:
    port, procs = str(_free_port()), []
    for rank in range(2):
        env = {**srun_env(rank, port), "SAMPLE_LOG": run_dir + ".samples"}
        log = open(f"{run_dir}.rank{rank}.log", "a")
        procs.append(subprocess.Popen([sys.executable, "-c", _WRAPPER,
                                       *_args(root, run_dir), *overrides],
                                      cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT))
        log.close()
    return procs


def _wait(procs: list[subprocess.Popen], timeout: float) -> list[int | None]:
    """Exit codes; a process still running after ``timeout`` is killed (None)."""
    deadline, codes = time.time() + timeout, []
    for p in procs:
        try:
            codes.append(p.wait(timeout=max(deadline - time.time(), 0.1)))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            codes.append(None)
    return codes


def _train_steps(run_dir: str) -> int:
    path = os.path.join(run_dir, "metrics.jsonl")
    return len(read_metrics(path, "train")) if os.path.exists(path) else 0


def _consumed(run_dir: str, rank: int) -> list[list[int]]:
    """The global sample ids of each step of the finished run, as rank ``rank`` drew them."""
    batches: dict[int, list[int]] = {}
    with open(f"{run_dir}.samples.{rank}") as fh:
        for line in fh:
            position, ids = json.loads(line)
            batches[position] = ids  # a relaunch redraws a position: the last one counts
    assert sorted(batches) == [BATCH * s for s in range(len(batches))]
    return [batches[BATCH * s] for s in range(len(batches))]


def test_sigkill_of_one_rank_then_relaunch_loses_and_repeats_nothing(tmp_path):
    root = make_synthetic_root(str(tmp_path / "data"), [24, 16], seq_len=16, vocab_size=384,
                               splits=("train", "val"))
    overrides = [f"train.steps={STEPS}", "checkpoint.every=5", "checkpoint.keep=2"]
    kill_at = random.Random(SEED).randint(8, STEPS - 8)
    run_dir = str(tmp_path / "run")
    procs = _launch(root, run_dir, overrides)
    deadline = time.time() + TIMEOUT
    while _train_steps(run_dir) < kill_at and time.time() < deadline and procs[1].poll() is None:
        time.sleep(0.01)
    killed_after = _train_steps(run_dir)
    procs[1].send_signal(signal.SIGKILL)
    start = time.time()
    survivor = _wait(procs[:1], SURVIVOR_BOUND)[0]
    survivor_seconds = time.time() - start
    procs[1].wait()
    log0 = open(run_dir + ".rank0.log").read()
    print(f"rank 1 SIGKILLed after step {killed_after} (target {kill_at}); rank 0 exited "
          f"with {survivor} after {survivor_seconds:.1f} s")
    assert kill_at <= killed_after < STEPS, log0[-3000:]
    assert survivor not in (0, None), log0[-3000:]  # it noticed, and did not claim success

    relaunched = _launch(root, run_dir, overrides)
    assert _wait(relaunched, TIMEOUT) == [0, 0], open(run_dir + ".rank0.log").read()[-3000:]
    clean_dir = str(tmp_path / "clean")
    assert _wait(_launch(root, clean_dir, overrides), TIMEOUT) == [0, 0]

    losses = [r["loss"] for r in read_metrics(os.path.join(run_dir, "metrics.jsonl"), "train")]
    clean = [r["loss"] for r in read_metrics(os.path.join(clean_dir, "metrics.jsonl"), "train")]
    assert len(clean) == STEPS and losses == clean
    expected = _consumed(clean_dir, 0)
    assert len(expected) == STEPS
    for rank in range(2):
        got = _consumed(run_dir, rank)
        assert got == expected, rank
    flat = [i for ids in expected for i in ids]
    print(f"{len(flat)} samples consumed in both runs, 0 lost, 0 repeated")
