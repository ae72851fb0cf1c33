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
    """Picklable work function: consecutive raw lines of one file -> good documents + bad log.

    A chunk is ``(path, number of its first line, lines)``; a line's ``file:line`` location is
    only formatted when the line is bad.
    """

    dtype: str
    single_domain: str | None = None
    """Put every document in this domain, whatever its ``pile_set_name`` (which may then be
    missing); None: each document's own."""

    def __call__(self, chunk: tuple[str, int, list[bytes]]
                 ) -> tuple[list[tuple[str, np.ndarray]], BadInputLog]:
        tok = _TOKENIZER
        assert tok is not None, "init_worker was not called in this process"
        path, first, lines = chunk
        bad = BadInputLog()
        domains, texts = [], []
        for i, raw in enumerate(lines):
            parsed = parse_line(raw, _Where(path, first + i), bad, self.single_domain)
            if parsed is not None:
                domains.append(self.single_domain or parsed[0])
                texts.append(parsed[1])
        docs = []
        for domain, ids in zip(domains, tok.encode_batch(texts)):
            arr = np.empty(len(ids) + 1, dtype=self.dtype)  # the document, then EOS
            arr[:-1] = ids
            arr[-1] = tok.eos_id
            docs.append((domain, arr))
        return docs, bad


@dataclass(frozen=True)
class _Where:
    """A lazily formatted ``path:line`` (most lines are good and never need it)."""

    path: str
    line: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}"
