"""The lm-eval tests run offline: no Hub, and a missing dataset fails at once (not after
half a minute of retries)."""

from __future__ import annotations

import datasets
import huggingface_hub
import pytest

from tests.unit.eval.tiny_lm import write_run


@pytest.fixture(autouse=True)
def hub_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="session")
def tiny_run(demo_tokenizer_path, tmp_path_factory) -> str:
    """A run directory holding a tiny model.safetensors and the tokenizer's data root."""
    return write_run(str(tmp_path_factory.mktemp("lm_eval_run")), demo_tokenizer_path)
