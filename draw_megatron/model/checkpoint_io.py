"""The model as full tensors, independent of the TP layout, and the consolidated file.

``full_state_dict`` gathers every tensor-parallel parameter into its full tensor (names are
the module's parameter names, which do not depend on TP), ``load_full_state_dict`` loads
such a dict into a model of any TP size. The vocabulary matrices keep their padding rows
(``padded_vocab_size``, zero unless training moved them, which masked ids cannot), and
the config recorded beside them says which rows are real (``vocab_size``).

The consolidated file (``model.safetensors``, docs/architecture.md, Contract 5) holds those tensors and,
in the safetensors metadata, the model config as JSON: no pickle anywhere. It is written
by global rank 0 only, through a temporary file moved into place, so a crash never leaves
half a file under the final name.

Parameters are taken as the module holds them (dtype included). Under ZeRO-3 gather them
first (``deepspeed.zero.GatheredParameters``); under ZeRO-1/2 pass the engine's module.
"""

from __future__ import annotations

import json
import os
import tempfile

import torch.distributed as dist
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from draw_megatron.config.model import ModelConfig
from draw_megatron.model.init import full_shape
from draw_megatron.parallel import ParallelTopology, gather_full_param, load_full_
from draw_megatron.utils.fs import umask

FORMAT = "draw-megatron-gpt/v1"
FILENAME = "model.safetensors"

# What decides the tensors and the maths; seq_len, dropout, attention backend, activation
# checkpointing and init_std may differ between the file and the model that loads it.
ARCHITECTURE_FIELDS = ("n_layers", "n_heads", "head_dim", "d_model", "ffn_hidden", "vocab_size",
                       "padded_vocab_size", "norm", "norm_eps", "mlp", "tie_embeddings",
                       "rotary_base")


def full_state_dict(model: nn.Module, topology: ParallelTopology) -> dict[str, Tensor]:
    """Every parameter as a full CPU tensor, on every rank (collective over the TP group)."""
    return {name: gather_full_param(param, topology.tp_group).cpu().contiguous()
            for name, param in model.named_parameters()}


def load_full_state_dict(model: nn.Module, state: dict[str, Tensor],
                         topology: ParallelTopology) -> None:
    """Load full tensors (from :func:`full_state_dict`, any TP size) into ``model``'s shards.

    Raises ValueError naming missing or unexpected parameters, or a parameter whose full
    shape differs. No communication: each rank cuts its own shard.
    """
    params = dict(model.named_parameters())
    missing = sorted(set(params) - set(state))
    unexpected = sorted(set(state) - set(params))
    if missing or unexpected:
        raise ValueError(f"state dict does not match the model: missing {missing or 'none'}, "
                         f"unexpected {unexpected or 'none'}")
    for name, param in params.items():
        want = full_shape(param, topology.tp_size)
        if tuple(state[name].shape) != want:
            raise ValueError(f"parameter {name!r}: the state holds shape "
                             f"{tuple(state[name].shape)}, the model needs {want}")
    for name, param in params.items():
        load_full_(param, state[name].to(device=param.device, dtype=param.dtype),
                   topology.tp_group)


def consolidated_path(path: str) -> str:
    """``path`` itself if it names a ``.safetensors`` file, else ``path/model.safetensors``."""
    return path if path.endswith(".safetensors") else os.path.join(path, FILENAME)


def save_consolidated(path: str, model: nn.Module, topology: ParallelTopology,
                      model_cfg: ModelConfig) -> str:
    """Write the full model and its config to ``path`` (a file or a run folder); return the file.

    Collective: every rank calls it (each TP group gathers; global rank 0 writes; all ranks
    wait until the file is in place).
    """
    state = full_state_dict(model, topology)
    check_state_matches_config(state, model_cfg)
    out = consolidated_path(path)
    distributed = dist.is_available() and dist.is_initialized()
    error: BaseException | None = None
    if (dist.get_rank() if distributed else topology.rank) == 0:
        metadata = {"format": FORMAT, "model_config": json.dumps(model_cfg.to_dict())}
        try:
            _atomic_save(state, out, metadata)
        except Exception as exc:  # tell the other ranks instead of leaving them waiting
            error = exc
    if distributed:
        message = [None if error is None else repr(error)]
        dist.broadcast_object_list(message, src=0)
        if message[0] is not None and error is None:
            raise RuntimeError(f"global rank 0 failed to write {out}: {message[0]}")
    if error is not None:
        raise error
    return out


def load_consolidated(path: str) -> tuple[dict[str, Tensor], ModelConfig]:
    """(full CPU tensors, the model config) from a file :func:`save_consolidated` wrote."""
    file = consolidated_path(path)
    with safe_open(file, framework="pt", device="cpu") as fh:
        metadata = fh.metadata() or {}
        if metadata.get("format") != FORMAT or "model_config" not in metadata:
            raise ValueError(f"{file} is not a draw_megatron consolidated model "
                             f"(metadata format {metadata.get('format')!r}, expected {FORMAT!r})")
        state = {name: fh.get_tensor(name) for name in fh.keys()}
    cfg = ModelConfig.from_dict(json.loads(metadata["model_config"]), prefix="model")
    check_state_matches_config(state, cfg)
    return state, cfg


def load_consolidated_into(path: str, model: nn.Module, topology: ParallelTopology) -> ModelConfig:
    """Load a consolidated file into ``model`` (any TP size) after checking the architecture.

    Raises ValueError naming every architecture field where the file's config and
    ``model.cfg`` differ. Returns the file's config.
    """
    state, file_cfg = load_consolidated(path)
    check_same_architecture(file_cfg, model.cfg, source=consolidated_path(path))
    load_full_state_dict(model, state, topology)
    return file_cfg


def check_same_architecture(found: ModelConfig, expected: ModelConfig, source: str) -> None:
    """Raise ValueError listing each architecture field where ``found`` differs from
    ``expected``."""
    diffs = [f"model.{name}: file has {getattr(found, name)!r}, model has "
             f"{getattr(expected, name)!r}"
             for name in ARCHITECTURE_FIELDS if getattr(found, name) != getattr(expected, name)]
    if diffs:
        raise ValueError(f"{source} holds a different architecture: " + "; ".join(diffs))


def expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Full shape of every parameter of a GPT with config ``cfg``, by name."""
    d, vocab, inner = cfg.d_model, cfg.padded_vocab_size, cfg.n_heads * cfg.head_dim
    norm = ("weight", "bias") if cfg.norm == "layernorm" else ("weight",)
    up = ("gate_up", 2 * cfg.ffn_hidden) if cfg.mlp == "swiglu" else ("up", cfg.ffn_hidden)
    shapes: dict[str, tuple[int, ...]] = {"embedding.weight": (vocab, d)}
    for i in range(cfg.n_layers):
        block = f"blocks.{i}"
        shapes.update({f"{block}.attn_norm.{p}": (d,) for p in norm})
        shapes[f"{block}.attention.qkv.weight"] = (3 * inner, d)
        shapes[f"{block}.attention.proj.weight"] = (d, inner)
        shapes.update({f"{block}.mlp_norm.{p}": (d,) for p in norm})
        shapes[f"{block}.mlp.{up[0]}.weight"] = (up[1], d)
        shapes[f"{block}.mlp.down.weight"] = (d, cfg.ffn_hidden)
    shapes.update({f"final_norm.{p}": (d,) for p in norm})
    if not cfg.tie_embeddings:
        shapes["head.weight"] = (vocab, d)
    return shapes


def check_state_matches_config(state: dict[str, Tensor], cfg: ModelConfig) -> None:
    """Raise ValueError if ``state``'s names or full shapes are not those ``cfg`` implies."""
    want = expected_shapes(cfg)
    bad = [f"{name}: missing" for name in want if name not in state]
    bad += [f"{name}: not in the config's model" for name in state if name not in want]
    bad += [f"{name}: shape {tuple(state[name].shape)}, config implies {shape}"
            for name, shape in want.items()
            if name in state and tuple(state[name].shape) != shape]
    if bad:
        raise ValueError("tensors do not match the model config: " + "; ".join(bad[:10])
                         + (f"; … {len(bad) - 10} more" if len(bad) > 10 else ""))


def _atomic_save(state: dict[str, Tensor], out: str, metadata: dict[str, str]) -> None:
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(out)}.tmp-", dir=parent)
    os.close(fd)
    try:
        save_file(state, tmp, metadata=metadata)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~umask())  # mkstemp makes 0600
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
