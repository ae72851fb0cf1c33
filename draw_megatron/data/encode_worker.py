"""The converter's worker side: parse and tokenize a chunk of raw Pile lines.

Kept apart from convert.py so that spawned worker processes import only numpy and
SentencePiece (not torch or the streaming library) and start in a fraction of a second.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from draw_megatron.data.pile import BadInputLog, parse_line
from draw_megatron.data.tokenizer import Tokenizer

_TOKENIZER: Tokenizer | None = None


def init_worker(model_path: str) -> None:
    global _TOKENIZER
    _TOKENIZER = Tokenizer(model_path)


@dataclass(frozen=True)
class EncodeTask:
    """Picklable work function: a chunk of (location, raw line) -> good documents + bad log."""

    dtype: str

    def __call__(self, chunk: list[tuple[str, bytes]]
                 ) -> tuple[list[tuple[str, np.ndarray]], BadInputLog]:
        tok = _TOKENIZER
        assert tok is not None, "init_worker was not called in this process"
        bad = BadInputLog()
        domains, texts = [], []
        for where, raw in chunk:
            parsed = parse_line(raw, where, bad)
            if parsed is not None:
                domains.append(parsed[0])
                texts.append(parsed[1])
        docs = []
        for domain, ids in zip(domains, tok.encode_batch(texts)):
            arr = np.empty(len(ids) + 1, dtype=self.dtype)  # the document, then EOS
            arr[:-1] = ids
            arr[-1] = tok.eos_id
            docs.append((domain, arr))
        return docs, bad
