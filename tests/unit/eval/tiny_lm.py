"""A tiny consolidated model in a run directory, and lm-eval requests, for the lm-eval tests."""

from __future__ import annotations

import json
import os
from typing import Any

import yaml
from lm_eval.api.instance import Instance

from draw_megatron.config.model import ModelConfig
from draw_megatron.data.manifest import MANIFEST_FORMAT, MANIFEST_NAME
from draw_megatron.model import GPT, save_consolidated
from draw_megatron.parallel import ParallelTopology

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
TASKS_DIR = os.path.join(REPO, "tests", "assets", "lm_eval")
VOCAB = 1000  # the session tokenizer's (tests/conftest.py)

CONTEXTS = ["Question: What did the farmer see near the river?\nAnswer:",
            "The red cat walked along the road",
            "def add(a, b):\n    return",
            "x"]
CONTINUATIONS = [" a green fish", " on day 3, and", " a + b", " = 1"]


def tiny_config(**fields: Any) -> ModelConfig:
    """d_model 64, 2 layers, 4 heads of 16, FFN 128, the tokenizer's 1,000 ids, seq_len 64."""
    base = dict(n_layers=2, n_heads=4, head_dim=16, d_model=64, ffn_hidden=128,
                vocab_size=VOCAB, seq_len=64)
    return ModelConfig.from_dict({**base, **fields}, prefix="model")


def write_run(run_dir: str, tokenizer_path: str, *, seed: int = 3, **fields: Any) -> str:
    """A run directory as training leaves it, for lm-eval: model.safetensors, and a
    config.yaml whose data root's manifest names ``tokenizer_path``."""
    cfg = tiny_config(**fields)
    topology = ParallelTopology.single()
    save_consolidated(run_dir, GPT(cfg, topology, seed=seed), topology, cfg)
    root = os.path.join(run_dir, "data")
    os.makedirs(root, exist_ok=True)
    manifest = {"format": MANIFEST_FORMAT, "seq_len": cfg.seq_len, "dtype": "uint16",
                "tokenizer": {"path": os.path.abspath(tokenizer_path), "sha256": "",
                              "vocab_size": VOCAB, "eos_id": 2},
                "splits": ["train"],
                "domains": [{"name": "d", "slug": "d00000", "epochs": 1.0, "splits": {}}]}
    with open(os.path.join(root, MANIFEST_NAME), "w", encoding="utf-8") as fh:
        json.dump(manifest, fh)
    with open(os.path.join(run_dir, "config.yaml"), "w", encoding="utf-8") as fh:
        yaml.safe_dump({"data": {"root": root}, "model": cfg.to_dict()}, fh)
    return run_dir


def requests(kind: str, arguments: list[tuple]) -> list[Instance]:
    return [Instance(request_type=kind, doc={}, arguments=args, idx=0) for args in arguments]


def loglikelihood_requests() -> list[Instance]:
    return requests("loglikelihood", list(zip(CONTEXTS, CONTINUATIONS)) + [("", "The road")])


def rolling_requests() -> list[Instance]:
    long = "The farmer wrote it down in a small book. " * 12  # longer than 64 tokens
    return requests("loglikelihood_rolling", [("The red cat walked along the road.",), (long,)])


def generation_requests(until: list[str], max_gen_toks: int = 6) -> list[Instance]:
    kwargs = {"until": until, "max_gen_toks": max_gen_toks, "do_sample": False}
    return requests("generate_until", [(c, dict(kwargs)) for c in CONTEXTS])
