"""launch/slurm/pretrain.sbatch's checks that need no SLURM daemon: LAUNCHER must name one of
the training launchers (the batch job fails at once, naming it)."""

import os
import subprocess

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
