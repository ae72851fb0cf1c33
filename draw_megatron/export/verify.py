"""Check an exported folder against its source: logits in fp32, and tokenizer ids.

Both load the export exactly as a user would (``AutoModelForCausalLM`` /
``AutoTokenizer.from_pretrained``, no custom code) and compare with our own model and our
own :class:`~draw_megatron.data.tokenizer.Tokenizer`.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from draw_megatron.config.model import ModelConfig
from draw_megatron.data.tokenizer import Tokenizer
from draw_megatron.model.checkpoint_io import load_full_state_dict
from draw_megatron.model.gpt import GPT
from draw_megatron.parallel import ParallelTopology


def random_tokens(vocab_size: int, num_sequences: int, seq_len: int, seed: int = 0) -> Tensor:
    """[num_sequences, seq_len] ids below ``vocab_size`` from a seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab_size, (num_sequences, seq_len), generator=generator)


def logits_max_abs_diff(folder: str, state: dict[str, Tensor], cfg: ModelConfig,
                        tokens_BT: Tensor) -> float:
    """max |our logits − the exported model's| over ``tokens_BT`` and the real vocabulary,
    both in fp32 on CPU."""
    from transformers import AutoModelForCausalLM

    single = ParallelTopology.single()
    ours = GPT(cfg, single, device="cpu")
    load_full_state_dict(ours, {k: v.float() for k, v in state.items()}, single)
    theirs = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    ours.eval()
    theirs.eval()
    with torch.no_grad():
        ours_BTV = ours(tokens_BT)[..., :cfg.vocab_size]
        theirs_BTV = theirs(tokens_BT).logits[..., :cfg.vocab_size]
    return (ours_BTV - theirs_BTV).abs().max().item()


def tokenizer_mismatches(folder: str, sp_model: str, texts: Iterable[str]) -> list[int]:
    """Indices of the texts whose ids from the exported tokenizer differ from ours."""
    from transformers import AutoTokenizer

    ours = Tokenizer(sp_model)
    theirs = AutoTokenizer.from_pretrained(folder)
    return [i for i, text in enumerate(texts) if theirs(text)["input_ids"] != ours.encode(text)]
