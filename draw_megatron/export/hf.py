"""Export a trained model and its tokenizer as a Hugging Face checkpoint folder.

``export_hf(source, out)`` reads the consolidated ``model.safetensors`` (a run folder or the
file itself) and the SentencePiece model the run was trained with, and writes into ``out``
what ``AutoModelForCausalLM.from_pretrained(out)`` and ``AutoTokenizer.from_pretrained(out)``
load with stock classes only (no ``trust_remote_code``):

    out/config.json  generation_config.json  model.safetensors     (model.py: the class)
    out/tokenizer.json  tokenizer_config.json                      (tokenizer.py)
    out/draw_export.json                                           where it came from

The folder is built under a temporary name beside ``out`` and renamed when complete.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass

import sentencepiece as spm
import torch
from torch import Tensor

from draw_megatron.config.base import ConfigError, load_yaml
from draw_megatron.config.model import ModelConfig
from draw_megatron.data.manifest import Manifest
from draw_megatron.export.model import hf_config_dict, hf_family, hf_state_dict
from draw_megatron.export.tokenizer import build_hf_tokenizer
from draw_megatron.model.checkpoint_io import FILENAME, consolidated_path, load_consolidated
from draw_megatron.utils.fs import atomic_output_dir, umask
from draw_megatron.utils.log import get_logger

logger = get_logger(__name__)

FORMAT = "draw-hf-export/v1"
PROVENANCE_FILE = "draw_export.json"


class ExportError(ValueError):
    """An input the export cannot use; the message names it."""


@dataclass(frozen=True)
class TokenizerInfo:
    """What the export needs to know about the SentencePiece model."""

    path: str
    """The .model file."""
    vocab_size: int
    """Pieces in the model."""
    bos_id: int | None
    """Its BOS id (never added by encode), or None."""
    eos_id: int | None
    """Its EOS id (the training data's document separator), or None."""

    @classmethod
    def read(cls, path: str) -> TokenizerInfo:
        if not os.path.isfile(path):
            raise ExportError(f"tokenizer model {path!r} not found")
        try:
            sp = spm.SentencePieceProcessor(model_file=path)
        except Exception as exc:  # OSError or RuntimeError, by sentencepiece version
            raise ExportError(f"{path!r} is not a SentencePiece model: {exc}") from exc
        return cls(path, sp.get_piece_size(), sp.bos_id() if sp.bos_id() >= 0 else None,
                   sp.eos_id() if sp.eos_id() >= 0 else None)


def model_file(source: str) -> str:
    """The consolidated file of ``source`` (a run folder or a .safetensors file)."""
    path = consolidated_path(source)
    if not os.path.isfile(path):
        where = f"run folder {source!r} holds no {FILENAME}" if os.path.isdir(source) else \
            f"model file {path!r} not found"
        raise ExportError(f"{where}: a finished run writes it (launch/pretrain_main.py "
                          "--export exports a checkpoint)")
    return path


def run_tokenizer_path(model_path: str) -> str:
    """The tokenizer named by the manifest of the data root in the run's ``config.yaml``."""
    config = os.path.join(os.path.dirname(os.path.abspath(model_path)), "config.yaml")
    if not os.path.isfile(config):
        raise ExportError(f"no config.yaml beside {model_path} to find the run's tokenizer; "
                          "pass --tokenizer PATH.model")
    try:
        root = load_yaml(config)["data"]["root"]
        return Manifest.load(root).tokenizer_path
    except (KeyError, TypeError, ConfigError, ValueError) as exc:
        raise ExportError(f"cannot find the tokenizer through {config} (data.root → "
                          f"manifest.json): {exc}; pass --tokenizer PATH.model") from exc


def check_vocabularies(cfg: ModelConfig, tok: TokenizerInfo) -> None:
    """Every tokenizer id must have a row in the model."""
    if cfg.vocab_size < tok.vocab_size:
        raise ExportError(f"the model's vocabulary (model.vocab_size={cfg.vocab_size}) is "
                          f"smaller than the tokenizer's {tok.vocab_size} pieces ({tok.path}): "
                          "wrong tokenizer for this model")


def prepare_out(out: str, overwrite: bool) -> bool:
    """Whether ``out`` must be replaced; ExportError if it holds files and not ``overwrite``."""
    if not os.path.exists(out):
        return False
    if not os.path.isdir(out):
        raise ExportError(f"--out {out!r} exists and is not a folder")
    if os.listdir(out) and not overwrite:
        raise ExportError(f"--out {out!r} exists and is not empty; pass --overwrite to replace it")
    return True


def export_hf(source: str, out: str, tokenizer: str | None = None,
              overwrite: bool = False) -> str:
    """Write the Hugging Face folder ``out`` (see the module docstring); return its path.

    ``tokenizer``: the SentencePiece .model; default: the one of the run's data root.
    """
    path = model_file(source)
    replace = prepare_out(out, overwrite)  # before any work: a long export must not fail late
    tok = TokenizerInfo.read(tokenizer or run_tokenizer_path(path))
    state, cfg = load_consolidated(path)
    check_vocabularies(cfg, tok)
    family = hf_family(cfg)
    with atomic_output_dir(out, overwrite=replace) as tmp:
        save_model(tmp, state, cfg, tok)
        build_hf_tokenizer(tok.path, model_max_length=cfg.seq_len).save_pretrained(tmp)
        _write_provenance(tmp, path, tok, family.architecture)
        _usual_modes(tmp)
    logger.info("exported %s (%s) with tokenizer %s to %s", path, family.architecture,
                tok.path, out)
    return os.path.abspath(out)


def save_model(folder: str, state: dict[str, Tensor], cfg: ModelConfig,
               tok: TokenizerInfo) -> None:
    """config.json, generation_config.json and model.safetensors through the stock class.

    Loading strictly into the class (built on the meta device: no second copy of the
    weights) proves every tensor has its place before anything is written.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    fields = hf_config_dict(cfg, cfg.vocab_size, bos_id=tok.bos_id, eos_id=tok.eos_id)
    dtype = state["embedding.weight"].dtype
    fields["dtype"] = str(dtype).removeprefix("torch.")
    config = AutoConfig.for_model(**fields)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    weights = hf_state_dict(state, cfg, cfg.vocab_size)
    result = model.load_state_dict(weights, strict=False, assign=True)
    tied = {"lm_head.weight"} if cfg.tie_embeddings else set()
    if set(result.missing_keys) - tied or result.unexpected_keys:
        raise RuntimeError(f"tensors do not fit {type(model).__name__}: missing "
                           f"{result.missing_keys}, unexpected {result.unexpected_keys}")
    model.tie_weights()
    model.save_pretrained(folder)


def _usual_modes(folder: str) -> None:
    """mkdtemp and safetensors make 0700 / 0600: give what a plain mkdir / open would."""
    mask = umask()
    os.chmod(folder, 0o777 & ~mask)
    for name in os.listdir(folder):
        os.chmod(os.path.join(folder, name), 0o666 & ~mask)


def _write_provenance(folder: str, model_path: str, tok: TokenizerInfo, architecture: str) -> None:
    with open(tok.path, "rb") as fh:
        sha256 = hashlib.sha256(fh.read()).hexdigest()
    info = {"format": FORMAT, "model": os.path.abspath(model_path), "architecture": architecture,
            "tokenizer": {"path": os.path.abspath(tok.path), "sha256": sha256,
                          "vocab_size": tok.vocab_size, "eos_id": tok.eos_id,
                          "adds_bos": False, "adds_eos": False}}
    with open(os.path.join(folder, PROVENANCE_FILE), "w", encoding="utf-8") as fh:
        json.dump(info, fh, indent=1)
        fh.write("\n")
