"""Fixtures for the tools' tests: the tools loaded as modules, a manifest-only data root."""

from __future__ import annotations

import importlib.util
import json
import os
import sys

import pytest

from draw_megatron.data.manifest import MANIFEST_FORMAT, MANIFEST_NAME

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))


def load_tool(name: str):
    """tools/<name>.py as a module (tools/ is not a package), so tests can call main(argv)."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def write_manifest(root: str, names: list[str]) -> str:
    """A data root holding only manifest.json (enough for the domain names)."""
    os.makedirs(root, exist_ok=True)
    counts = {"documents": 1, "tokens": 9, "sequences": 1, "dropped_tokens": 0,
              "natural_weight": 1 / len(names)}
    manifest = {"format": MANIFEST_FORMAT, "seq_len": 8, "dtype": "uint16",
                "tokenizer": {"path": "none", "sha256": "", "vocab_size": 1000, "eos_id": 2},
                "splits": ["train"],
                "domains": [{"name": n, "slug": f"d{i:05d}", "epochs": 1.0,
                             "splits": {"train": dict(counts)}} for i, n in enumerate(names)]}
    with open(os.path.join(root, MANIFEST_NAME), "w", encoding="utf-8") as fh:
        json.dump(manifest, fh)
    return root


@pytest.fixture(scope="session")
def draw_posterior_tool():
    return load_tool("draw_posterior")


@pytest.fixture(scope="session")
def plot_tool():
    return load_tool("plot_mixture")  # matplotlib is a dependency of the package
