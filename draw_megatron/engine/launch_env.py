"""The launcher's environment as torch.distributed and the streaming library read it.

``deepspeed`` and ``torchrun`` set RANK / WORLD_SIZE / LOCAL_RANK (and LOCAL_SIZE or
LOCAL_WORLD_SIZE); ``srun`` sets SLURM_* variables instead. No torch import here: the
launcher reads the world size before anything heavy, to validate the config first.
"""

from __future__ import annotations

import os
import re


def expand_tasks_per_node(spec: str) -> list[int]:
    """SLURM's compressed tasks-per-node list: "2(x3),1" -> [2, 2, 2, 1]."""
    out: list[int] = []
    for part in spec.split(","):
        m = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip())
        if not m:
            raise ValueError(f"cannot read SLURM tasks-per-node list {spec!r}")
        out += [int(m.group(1))] * int(m.group(2) or 1)
    return out


def env_from_slurm(env: dict | None = None) -> None:
    """Map an srun step's SLURM_* variables onto RANK, WORLD_SIZE, LOCAL_RANK and
    LOCAL_WORLD_SIZE, unless a launcher already set RANK.

    Only inside a step (SLURM_STEP_ID is set): a batch script's own shell carries the job's
    SLURM_PROCID=0 and SLURM_NTASKS, and a lone python there must stay a world of one.
    """
    env = os.environ if env is None else env
    if "RANK" in env or "SLURM_STEP_ID" not in env or "SLURM_PROCID" not in env:
        return
    env["RANK"] = env["SLURM_PROCID"]
    env["WORLD_SIZE"] = env.get("SLURM_STEP_NUM_TASKS", env.get("SLURM_NTASKS", "1"))
    env["LOCAL_RANK"] = env.get("SLURM_LOCALID", "0")
    per_node = env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_NTASKS_PER_NODE")
    if per_node and "LOCAL_WORLD_SIZE" not in env:
        counts = expand_tasks_per_node(per_node)
        node = int(env.get("SLURM_NODEID", "0"))
        env["LOCAL_WORLD_SIZE"] = str(counts[node] if node < len(counts) else counts[0])


def world_size_from_env() -> int:
    """The world size the launcher gives this process (1 when launched alone)."""
    env_from_slurm()
    return int(os.environ.get("WORLD_SIZE", "1"))
