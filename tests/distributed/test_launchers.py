"""launch/pretrain_main.py runs unchanged under torchrun and under srun's environment.

Each test starts the real launcher as 2 CPU processes (gloo) on a tiny synthetic data root
and checks the run directory: 4 train records, a complete final checkpoint and the
consolidated model.safetensors. The srun case sets only what srun sets (SLURM_PROCID,
SLURM_NTASKS, SLURM_LOCALID, SLURM_NTASKS_PER_NODE, plus MASTER_ADDR / MASTER_PORT as
launch/slurm/pretrain.sbatch exports them) and no RANK / WORLD_SIZE, so it exercises
init_distributed's SLURM mapping without a SLURM daemon.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from draw_megatron.train.metrics import read_metrics
from tests.unit.data.synthetic import make_synthetic_root

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAUNCHER = os.path.join(REPO, "launch", "pretrain_main.py")
CONFIG = os.path.join(REPO, "configs", "experiments", "smoke_cpu.yaml")
STEPS = 4
TIMEOUT = 180  # seconds per launch; a normal one takes ~15 s on 2 cores

# Launcher/cluster variables that must not leak in from the shell running pytest (a test
# run inside a SLURM allocation or under torchrun would otherwise inherit them).
_LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "LOCAL_SIZE",
                "GROUP_RANK", "ROLE_RANK", "MASTER_ADDR", "MASTER_PORT", "CROSS_RANK",
                "CROSS_SIZE", "TORCHELASTIC_RUN_ID")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in _LAUNCH_VARS and not k.startswith(("SLURM_", "PMI_", "OMPI_"))}
    env.update({"OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "CUDA_VISIBLE_DEVICES": "",
                "PYTHONPATH": os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))})
    return env


def srun_env(rank: int, port: str, world: int = 2) -> dict[str, str]:
    """What srun gives task ``rank`` of a 1-node step of ``world`` tasks (seen on SLURM
    22.05), plus MASTER_ADDR / MASTER_PORT as launch/slurm/pretrain.sbatch exports them."""
    env = _base_env()
    env.update({"SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank), "SLURM_NODEID": "0",
                "SLURM_NTASKS": str(world), "SLURM_NTASKS_PER_NODE": str(world),
                "SLURM_TASKS_PER_NODE": str(world), "SLURM_NNODES": "1", "SLURM_JOB_ID": "1",
                "SLURM_JOB_NODELIST": "localhost", "SLURM_STEP_ID": "0", "SLURM_STEPID": "0",
                "SLURM_STEP_NUM_TASKS": str(world), "SLURM_STEP_TASKS_PER_NODE": str(world),
                "SLURM_STEP_NUM_NODES": "1", "SLURM_STEP_NODELIST": "localhost",
                "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port})
    return env


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("launchers") / "data"
    return make_synthetic_root(str(root), [24, 16], seq_len=16, vocab_size=384,
                               splits=("train", "val"))


def _args(root: str, run_dir: str) -> list[str]:
    return [LAUNCHER, "--config", CONFIG,
            f"run.dir={run_dir}", f"data.root={root}", f"train.steps={STEPS}",
            "model.preset=null", "model.n_layers=1", "model.n_heads=2", "model.head_dim=16",
            "model.d_model=32", "model.ffn_hidden=64", "model.vocab_size=384",
            "model.seq_len=16", "train.global_batch=4", "train.micro_batch=2",
            "eval.sequences_per_domain=2", "eval.every=2", "checkpoint.every=2",
            "log.every=1"]


def _check_run(run_dir: str, output: str) -> None:
    # Both processes joined one world of 2 (not two independent single-process runs).
    assert "(2 ranks: tp 1 x dp 2)" in output, output[-4000:]
    train = read_metrics(os.path.join(run_dir, "metrics.jsonl"), "train")
    assert [r["step"] for r in train] == list(range(STEPS)), output[-4000:]
    assert all(r["loss"] == r["loss"] and r["loss"] > 0 for r in train)  # finite, not NaN
    assert os.path.isfile(os.path.join(run_dir, "checkpoints", f"step_{STEPS:08d}", "COMPLETE"))
    assert os.path.isfile(os.path.join(run_dir, "model.safetensors"))


def test_torchrun(data_root, tmp_path):
    run_dir = str(tmp_path / "run")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--nnodes", "1", "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           *_args(data_root, run_dir)]
    res = subprocess.run(cmd, cwd=REPO, env=_base_env(), capture_output=True, text=True,
                         timeout=TIMEOUT)
    output = res.stdout + res.stderr
    assert res.returncode == 0, output[-4000:]
    _check_run(run_dir, output)


def test_srun_environment(data_root, tmp_path):
    """What `srun --ntasks-per-node 2 python launch/pretrain_main.py ...` gives each task."""
    run_dir = str(tmp_path / "run")
    port = str(_free_port())
    procs, logs = [], []
    for rank in range(2):
        env = srun_env(rank, port)
        log = open(tmp_path / f"rank{rank}.log", "w+")
        logs.append(log)
        procs.append(subprocess.Popen([sys.executable, *_args(data_root, run_dir)], cwd=REPO,
                                      env=env, stdout=log, stderr=subprocess.STDOUT, text=True))
    try:
        codes = [p.wait(timeout=TIMEOUT) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    outputs = []
    for log in logs:
        log.seek(0)
        outputs.append(log.read())
        log.close()
    assert codes == [0, 0], "\n---\n".join(o[-4000:] for o in outputs)
    _check_run(run_dir, outputs[0])
