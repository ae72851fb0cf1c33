"""Tiny trained-looking models and run folders for the export tests (fp32, CPU)."""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

import torch

from draw_megatron.config.model import ModelConfig
from draw_megatron.data.manifest import MANIFEST_FORMAT, MANIFEST_NAME
from draw_megatron.model import GPT, save_consolidated
from draw_megatron.parallel import ParallelTopology
from tests.conftest import DEMO_VOCAB_SIZE

SINGLE = ParallelTopology.single()


def tiny_model(**fields: Any) -> tuple[GPT, ModelConfig]:
    """2 layers, 4 heads of 16, the demo tokenizer's vocabulary (padded to 1,024), every
    weight moved off its initial value (norm weights 1 and biases 0 would hide a swapped or
    dropped norm tensor)."""
    base = dict(n_layers=2, n_heads=4, head_dim=16, d_model=64, ffn_hidden=128,
                vocab_size=DEMO_VOCAB_SIZE, seq_len=48, rotary_base=500.0, norm_eps=1e-6)
    cfg = ModelConfig.from_dict({**base, **fields}, prefix="model")
    model = GPT(cfg, SINGLE, seed=3)
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * torch.randn(param.shape, generator=generator))
    return model, cfg


def make_run(run_dir: str, tokenizer_path: str, **fields: Any) -> tuple[GPT, ModelConfig]:
    """A run folder as training leaves it: model.safetensors, and config.yaml whose
    data.root holds a manifest.json naming a copy of the tokenizer."""
    model, cfg = tiny_model(**fields)
    save_consolidated(run_dir, model, SINGLE, cfg)
    root = os.path.join(run_dir, "data")
    os.makedirs(root)
    shutil.copy(tokenizer_path, os.path.join(root, "tokenizer.model"))
    manifest = {"format": MANIFEST_FORMAT, "seq_len": cfg.seq_len, "dtype": "uint16",
                "tokenizer": {"path": "tokenizer.model", "sha256": "", "eos_id": 2,
                              "vocab_size": DEMO_VOCAB_SIZE},
                "splits": ["train"],
                "domains": [{"name": "A", "slug": "a", "epochs": 1.0, "splits": {}}]}
    with open(os.path.join(root, MANIFEST_NAME), "w", encoding="utf-8") as fh:
        json.dump(manifest, fh)
    with open(os.path.join(run_dir, "config.yaml"), "w", encoding="utf-8") as fh:
        fh.write(f"data:\n  root: {json.dumps(root)}\n")
    return model, cfg
