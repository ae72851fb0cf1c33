"""A real one-node SLURM cluster on 127.0.0.1 for tests (launch/slurm/local_cluster.sh).

The ``slurm_cluster`` fixture installs the Debian packages when they are missing (as root,
with apt), starts munged, slurmctld and slurmd, and stops them again afterwards unless they
were already running before the tests. It skips, naming the reason, only where the
packages are absent and cannot be installed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LOCAL_CLUSTER = os.path.join(REPO, "launch", "slurm", "local_cluster.sh")
BINARIES = ("/usr/sbin/slurmctld", "/usr/sbin/slurmd", "/usr/bin/sbatch", "/usr/sbin/munged")
PIDFILES = {"munged": "/run/munge/munged.pid", "slurmctld": "/run/slurmctld.pid",
            "slurmd": "/run/slurmd.pid"}


def _cluster(command: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", LOCAL_CLUSTER, command], capture_output=True, text=True,
                          timeout=timeout)


def _running_daemons() -> set[str]:
    """The daemons whose pid file (where local_cluster.sh keeps it) names a live process."""
    running = set()
    for name, pidfile in PIDFILES.items():
        try:
            os.kill(int(open(pidfile).read().strip()), 0)
        except (OSError, ValueError):
            continue
        running.add(name)
    return running


@pytest.fixture(scope="module")
def slurm_cluster():
    """Yields once the node is idle; the daemons this fixture started are stopped after."""
    missing = [b for b in BINARIES if not os.access(b, os.X_OK)]
    if missing and (os.geteuid() != 0 or shutil.which("apt-get") is None):
        pytest.skip(f"SLURM is not installed ({', '.join(missing)} missing) and cannot be: "
                    "installing slurmctld slurmd slurm-client munge needs root and apt-get")
    if os.geteuid() != 0:
        pytest.skip("the local SLURM cluster needs root (it writes /etc/slurm, starts daemons)")
    before = set() if missing else _running_daemons()
    up = _cluster("up", 900)
    if up.returncode != 0:
        if any(not os.access(b, os.X_OK) for b in BINARIES):
            pytest.skip("apt-get could not install slurmctld slurmd slurm-client munge: "
                        + (up.stderr or up.stdout).strip()[-500:])
        pytest.fail(f"local_cluster.sh up failed:\n{up.stdout}\n{up.stderr}")
    try:
        yield
    finally:
        if not {"slurmctld", "slurmd"} <= before:
            for job in squeue_ids():  # nothing may keep running once the daemons are gone
                subprocess.run(["scancel", job], check=False)
            down = _cluster("down", 120)
            assert down.returncode == 0, down.stderr
            assert not _running_daemons() - before, "daemons left running"


def squeue_ids() -> list[str]:
    res = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True)
    return res.stdout.split()


def job_fields(job: str) -> dict[str, str]:
    """``scontrol show job``'s Key=Value fields of one job (kept MinJobAge after its end)."""
    res = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True,
                         text=True, check=True)
    return dict(re.findall(r"(\w+)=(\S*)", res.stdout))


def wait_for_end(jobs: list[str], timeout: float) -> dict[str, dict[str, str]]:
    """Poll until none of ``jobs`` is pending, running or completing; their last fields."""
    deadline = time.time() + timeout
    while True:
        fields = {j: job_fields(j) for j in jobs}
        if all(f["JobState"] not in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING",
                                     "REQUEUED") for f in fields.values()):
            return fields
        if time.time() > deadline:
            for job in jobs:
                subprocess.run(["scancel", job], check=False)
            raise AssertionError(f"jobs still not ended after {timeout:.0f} s: "
                                 + ", ".join(f"{j} {f['JobState']}" for j, f in fields.items()))
        time.sleep(1)
