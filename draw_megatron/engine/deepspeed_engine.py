"""DeepSpeed, configured from our config tree (docs/architecture.md: ZeRO 0–3, mixed precision,
checkpoint files) with the project's process groups passed as ``mpu``.

One code path: NCCL and bf16 on GPUs; gloo and fp32 on CPU (``DS_ACCELERATOR=cpu``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from draw_megatron.utils.host_malloc import keep_freed_memory

from draw_megatron.config.run import RunConfig
from draw_megatron.engine.launch_env import env_from_slurm
from draw_megatron.engine.lr_schedule import lr_at, warmup_steps
from draw_megatron.parallel import ParallelTopology


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def on_gpu(self) -> bool:
        return self.device.type == "cuda"


def init_distributed() -> DistEnv:
    """Start torch.distributed through DeepSpeed from the launcher's environment.

    Works under ``deepspeed``, ``torchrun`` and ``srun`` (SLURM variables are mapped onto
    RANK / WORLD_SIZE / LOCAL_RANK when the launcher did not set them) and as a plain
    single process.
    """
    env_from_slurm()
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("LOCAL_RANK", "0")
    # The streaming library elects one shared-memory leader per node from LOCAL_WORLD_SIZE,
    # which torchrun sets and the deepspeed launcher calls LOCAL_SIZE.
    os.environ.setdefault("LOCAL_WORLD_SIZE", os.environ.get("LOCAL_SIZE", os.environ["WORLD_SIZE"]))
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29500")
    local_rank = int(os.environ["LOCAL_RANK"])
    on_gpu = torch.cuda.is_available() and os.environ.get("DS_ACCELERATOR", "cuda") != "cpu"
    if not on_gpu:
        os.environ["DS_ACCELERATOR"] = "cpu"
    import deepspeed

    if on_gpu:
        # A site that binds one GPU per task shows each task only device 0.
        torch.cuda.set_device(local_rank if torch.cuda.device_count() > local_rank else 0)
        deepspeed.init_distributed(dist_backend="nccl")
        device = torch.device("cuda", torch.cuda.current_device())
    else:
        _skip_cpu_shm_op(deepspeed)
        deepspeed.init_distributed(dist_backend="gloo")
        device = torch.device("cpu")
        # Ranks sharing a CPU each get their share of its cores (oversubscription is slow).
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"]))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
        # Freed tensors stay in the process instead of being faulted in again every step.
        keep_freed_memory()
    import torch.distributed as dist

    return DistEnv(dist.get_rank(), dist.get_world_size(), local_rank, device)


def _skip_cpu_shm_op(deepspeed) -> None:
    # DeepSpeed's CPU backend JIT-compiles a shared-memory all-reduce op (deepspeed_shm_comm,
    # about 80 s on a fresh machine, and it faults without AVX2). gloo's all-reduce is what
    # the CPU path needs; marking the op incompatible makes DeepSpeed fall back to it.
    from deepspeed.ops.op_builder.cpu.comm import ShareMemCommBuilder

    deepspeed.ops.__compatible_ops__[ShareMemCommBuilder.NAME] = False


def precision(cfg: RunConfig, on_gpu: bool) -> str:
    if cfg.train.precision == "auto":
        return "bf16" if on_gpu else "fp32"
    return cfg.train.precision


def deepspeed_config(cfg: RunConfig, dp_size: int, on_gpu: bool) -> dict:
    """The DeepSpeed JSON for this run, generated from our config (never hand-written)."""
    t = cfg.train
    zero: dict = {"stage": cfg.zero.stage}
    if cfg.zero.offload:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": on_gpu}
    return {
        "train_batch_size": t.global_batch,
        "train_micro_batch_size_per_gpu": t.micro_batch,
        "gradient_accumulation_steps": t.global_batch // (t.micro_batch * dp_size),
        "gradient_clipping": t.grad_clip,
        "zero_optimization": zero,
        "bf16": {"enabled": precision(cfg, on_gpu) == "bf16"},
        # A client torch.optim.AdamW: DeepSpeed's own "AdamW" may JIT-compile a C++ op on CPU.
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices; none on norms and biases (1-D parameters)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def build_engine(model: torch.nn.Module, cfg: RunConfig, topology: ParallelTopology,
                 on_gpu: bool):
    """``deepspeed.initialize`` with a client AdamW, our LR schedule and our process groups."""
    import deepspeed

    if cfg.zero.stage == 3:  # a tied head uses the embedding outside its owner's forward
        for owner, param in getattr(model, "external_parameters", list)():
            deepspeed.zero.register_external_parameter(owner, param)
    t = cfg.train
    # Fused (one kernel for all tensors) where the optimizer state lives on the GPU.
    optimizer = torch.optim.AdamW(param_groups(model, t.weight_decay), lr=t.lr,
                                  betas=tuple(t.betas), eps=1e-8,
                                  fused=on_gpu and not cfg.zero.offload)
    warm = warmup_steps(t.steps, t.warmup_fraction)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_at(s, lr=t.lr, min_lr=t.min_lr, total_steps=t.steps,
                                   warmup_steps=warm) / t.lr)
    engine, _, _, _ = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=scheduler, mpu=topology.mpu(),
        config=deepspeed_config(cfg, topology.dp_size, on_gpu))
    return engine
