import pytest

from draw_megatron.engine.launch_env import env_from_slurm, expand_tasks_per_node


def test_expand_tasks_per_node():
    assert expand_tasks_per_node("2(x3),1") == [2, 2, 2, 1]
    assert expand_tasks_per_node("8") == [8]
    with pytest.raises(ValueError, match="tasks-per-node"):
        expand_tasks_per_node("two")


def test_srun_step_maps_onto_torch_variables():
    env = {"SLURM_STEP_ID": "0", "SLURM_PROCID": "5", "SLURM_STEP_NUM_TASKS": "6",
           "SLURM_NTASKS": "8", "SLURM_LOCALID": "1", "SLURM_NODEID": "2",
           "SLURM_STEP_TASKS_PER_NODE": "2(x2),4"}
    env_from_slurm(env)
    assert (env["RANK"], env["WORLD_SIZE"], env["LOCAL_RANK"], env["LOCAL_WORLD_SIZE"]) == \
        ("5", "6", "1", "4")


def test_batch_shell_and_other_launchers_are_left_alone():
    batch = {"SLURM_PROCID": "0", "SLURM_NTASKS": "2"}  # the batch script's own shell
    env_from_slurm(batch)
    assert "RANK" not in batch
    torchrun = {"SLURM_STEP_ID": "0", "SLURM_PROCID": "0", "RANK": "3", "WORLD_SIZE": "4"}
    env_from_slurm(torchrun)
    assert torchrun["RANK"] == "3" and torchrun["WORLD_SIZE"] == "4"
