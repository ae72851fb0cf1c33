"""Our SentencePiece model as a Hugging Face fast tokenizer that gives the same ids.

The project's :class:`~draw_megatron.data.tokenizer.Tokenizer` is BPE with identity
normalisation, no dummy prefix, byte fallback, and one twist: a literal U+2581 (SentencePiece's
whitespace symbol "▁") is encoded as its three UTF-8 byte pieces, never as a space. The
stock Llama conversion (a Metaspace step that turns " " into "▁") cannot tell the two apart,
so the ``tokenizers`` pipeline built here has no normaliser and no pre-tokeniser at all and
instead renames "▁" to " " inside the vocabulary and the merges: text reaches the BPE model
as it is, a space matches the pieces that held "▁", and a literal "▁", which then no piece
contains, falls back to its bytes, exactly as our wrapper encodes it.

SentencePiece's BPE encoder merges, anywhere in the text (it does not split at spaces), the
adjacent pair whose concatenation is the highest-scoring piece, leftmost first on a tie;
``tokenizers`` merges the lowest-ranked pair, leftmost first. Ranking the merges by the
score of the piece they make reproduces it (transformers' ``generate_merges``). The two can
differ only where two different splits of the same piece overlap (pieces "aa", "aaa" and the
symbols a|aa|a); the tests compare ids on every document of a corpus.

Nothing special is added: ``encode`` adds no BOS and no EOS (the training data has one EOS
after each document, which the caller adds), and ``split_special_tokens`` makes a literal
"</s>" in the text its characters, as SentencePiece does.
"""

from __future__ import annotations

import os

import sentencepiece as spm
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models
from transformers import PreTrainedTokenizerFast
from transformers.tokenization_utils_base import generate_merges

from draw_megatron.data.tokenizer import META_SYMBOL


def _pieces(sp: spm.SentencePieceProcessor) -> tuple[dict[str, int], dict[str, float], set[str]]:
    """(vocab piece → id with "▁" as " ", scores of the mergeable pieces, non-mergeable pieces).

    Control, unknown and byte pieces are never the result of a merge in SentencePiece.
    """
    vocab: dict[str, int] = {}
    scores: dict[str, float] = {}
    fixed: set[str] = set()
    for i in range(sp.get_piece_size()):
        piece = sp.id_to_piece(i)
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_byte(i) or sp.is_unused(i):
            fixed.add(piece)
        else:
            piece = piece.replace(META_SYMBOL, " ")
            scores[piece] = sp.get_score(i)
        vocab[piece] = i
    return vocab, scores, fixed


def build_backend(model_path: str) -> HFTokenizer:
    """The ``tokenizers`` pipeline that encodes like our wrapper of ``model_path``."""
    sp = spm.SentencePieceProcessor(model_file=model_path)
    if sp.unk_id() < 0 or sp.piece_to_id("<0x00>") == sp.unk_id():
        raise ValueError(f"{model_path}: a tokenizer without byte-fallback pieces cannot be "
                         "exported (tools/train_tokenizer.py always adds them)")
    vocab, scores, fixed = _pieces(sp)
    merges = generate_merges(vocab, scores, skip_tokens=fixed)
    backend = HFTokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=sp.id_to_piece(sp.unk_id()),
                                     byte_fallback=True, fuse_unk=True))
    backend.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])
    return backend


def build_hf_tokenizer(model_path: str, model_max_length: int | None = None
                       ) -> PreTrainedTokenizerFast:
    """A transformers tokenizer (no custom code) with our SentencePiece ids; see the module
    docstring. ``model_max_length``: the context the model was trained at (evaluation
    harnesses read it), or None for no limit."""
    if not os.path.isfile(model_path):
        raise FileNotFoundError(f"tokenizer model {model_path!r} not found")
    sp = spm.SentencePieceProcessor(model_file=model_path)
    special = {name: sp.id_to_piece(index) for name, index in
               (("unk_token", sp.unk_id()), ("bos_token", sp.bos_id()), ("eos_token", sp.eos_id()),
                ("pad_token", sp.pad_id())) if index >= 0}
    return PreTrainedTokenizerFast(
        tokenizer_object=build_backend(model_path), add_bos_token=False, add_eos_token=False,
        clean_up_tokenization_spaces=False, split_special_tokens=True,
        **({} if model_max_length is None else {"model_max_length": model_max_length}), **special)
