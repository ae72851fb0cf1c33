"""Shared session fixtures: a small demo corpus and a tokenizer trained on it (~1 s together)."""

from __future__ import annotations

import os

import torch

# Triton decides at decoration time whether a @triton.jit function is interpreted: set the
# interpreter before anything of the session imports a kernel (the kernel tests, the model's
# fused-loss path, liger-kernel), or a kernel decorated early cannot call its helpers under
# the interpreter. Only without CUDA: on a GPU the same tests run the real kernels.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

from draw_megatron.data.demo_corpus import DemoCorpusConfig, build_demo_corpus
from draw_megatron.data.tokenizer import train_tokenizer

# Small on purpose: ~30 KB of text per domain (8 domains, ~180 documents), and a vocabulary
# just above what its characters need (~460 pieces), so tests that convert it stay fast.
DEMO_MAX_MB_PER_DOMAIN = 0.03
DEMO_VOCAB_SIZE = 1000


@pytest.fixture(scope="session")
def demo_corpus_dir(tmp_path_factory) -> str:
    """A demo corpus in The Pile's layout: train/00.jsonl.zst, val.jsonl.zst, test.jsonl.zst."""
    out = tmp_path_factory.mktemp("demo") / "corpus"
    build_demo_corpus(str(out), DemoCorpusConfig(seed=0, max_mb_per_domain=DEMO_MAX_MB_PER_DOMAIN))
    return str(out)


@pytest.fixture(scope="session")
def demo_tokenizer_path(demo_corpus_dir, tmp_path_factory) -> str:
    """The .model path of a SentencePiece tokenizer trained on demo_corpus_dir's train split."""
    prefix = tmp_path_factory.mktemp("tokenizer") / "sp"
    return train_tokenizer([os.path.join(demo_corpus_dir, "train", "*.jsonl.zst")],
                           vocab_size=DEMO_VOCAB_SIZE, out_prefix=str(prefix), seed=0)
