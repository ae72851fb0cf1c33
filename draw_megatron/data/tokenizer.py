"""The project's SentencePiece tokenizer: a seeded, domain-balanced training sample and a
lossless encode/decode wrapper.

Training (``train_tokenizer``) reads The Pile's jsonl / jsonl.zst files, cuts documents into
chunks of at most ``max_chunk_chars`` at line ends, and gives every domain the same
character budget (a domain with less text gives all of it and the rest is shared by the
others). Which chunks are taken is decided by a per-domain numpy generator seeded by
(seed, domain): the chunks with the smallest random keys, so the sample depends on the
seed and the input, not on how domains interleave in the files.

Losslessness: ``Tokenizer.decode(Tokenizer.encode(text)) == text`` for every str without
lone surrogates. SentencePiece itself is lossless under the options below except for one
character: U+2581 "▁", its whitespace meta symbol, which it decodes as a space. The wrapper
encodes each U+2581 as its three UTF-8 byte-fallback pieces, which decode to U+2581 itself.
"""

from __future__ import annotations

import hashlib
import heapq
import io
import json
import os
import re
import shutil
import tempfile
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import sentencepiece as spm
from tqdm import tqdm

from draw_megatron.data.pile import BadInputLog, expand_inputs, iter_documents
from draw_megatron.utils.log import get_logger

logger = get_logger(__name__)

FORMAT = "draw-tokenizer/v1"
META_SYMBOL = "\u2581"  # SentencePiece's stand-in for " "; decode turns it into a space
DEFAULT_SAMPLE_MB = 16.0
MAX_CHUNK_CHARS = 2000
# The model's trainer_spec records num_threads, so the .model bytes (and sha256) depend on
# it although the pieces and scores do not: a fixed default keeps the sha256 reproducible
# across machines. BPE training is mostly single-threaded anyway.
DEFAULT_NUM_THREADS = 2
SPECIAL_IDS = {"unk_id": 0, "bos_id": 1, "eos_id": 2, "pad_id": -1}
NUM_BYTE_PIECES = 256
MIN_VOCAB_SIZE = len(SPECIAL_IDS) - 1 + NUM_BYTE_PIECES + 1  # one character at least

_TOO_HIGH_RE = re.compile(r"Vocabulary size too high \((\d+)\).*<= (\d+)")
_TOO_LOW_RE = re.compile(r"Vocabulary size is smaller than required_chars\. (\d+) vs (\d+)")


@dataclass(frozen=True)
class TokenizerTrainConfig:
    """How the SentencePiece model is trained (the sample and the trainer's options)."""

    vocab_size: int
    """Pieces in the model, including 3 special and 256 byte-fallback pieces."""
    seed: int = 0
    """Seed of the training sample."""
    sample_mb: float = DEFAULT_SAMPLE_MB
    """Characters in the sample, in millions, split equally between the domains."""
    num_threads: int = DEFAULT_NUM_THREADS
    """SentencePiece trainer threads (recorded in the model; the pieces do not depend on it)."""
    max_chunk_chars: int = MAX_CHUNK_CHARS
    """Longest training chunk; documents are cut at line ends (a longer line, anywhere)."""
    character_coverage: float = 0.9995
    """Share of the sample's characters that get their own piece; the rest use bytes."""

    def __post_init__(self) -> None:
        if not isinstance(self.vocab_size, int) or self.vocab_size < MIN_VOCAB_SIZE:
            raise ValueError(f"vocab_size must be an integer >= {MIN_VOCAB_SIZE} (3 special "
                             f"+ 256 byte pieces + characters), got {self.vocab_size!r}")
        if not self.sample_mb > 0:
            raise ValueError(f"sample_mb must be > 0, got {self.sample_mb}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {self.num_threads}")
        if self.max_chunk_chars < 100:
            raise ValueError(f"max_chunk_chars must be >= 100, got {self.max_chunk_chars}")
        if not 0.9 <= self.character_coverage <= 1.0:
            raise ValueError(f"character_coverage must be in [0.9, 1], got {self.character_coverage}")

    @property
    def sample_chars(self) -> int:
        return int(self.sample_mb * 1e6)


def trainer_options(cfg: TokenizerTrainConfig) -> dict:
    """SentencePieceTrainer.train's keyword arguments (besides the iterator and writer)."""
    return {
        # BPE rather than unigram: on the demo corpus it trains in ~1 s against ~13 s, its
        # pieces and scores do not depend on num_threads (checked), and it is what the GPT
        # family uses. Encoding is deterministic (no sampling) either way.
        "model_type": "bpe",
        "vocab_size": cfg.vocab_size,
        # Lossless: no NFKC, keep every space, bytes for anything without a piece.
        "normalization_rule_name": "identity",
        "remove_extra_whitespaces": False,
        "byte_fallback": True,
        "add_dummy_prefix": False,
        "allow_whitespace_only_pieces": True,  # runs of indentation as single pieces
        "split_digits": True,  # numbers digit by digit: arithmetic generalises
        "character_coverage": cfg.character_coverage,
        "max_sentence_length": 4 * cfg.max_chunk_chars + 16,  # bytes; a chunk always fits
        # The sample is chosen here, seeded; SentencePiece must not subsample it again.
        "input_sentence_size": 0,
        "shuffle_input_sentence": False,
        "num_threads": cfg.num_threads,
        "minloglevel": 2,
        **SPECIAL_IDS,
    }


def chunk_document(text: str, max_chars: int) -> list[str]:
    """Consecutive pieces of at most max_chars, cut after a newline where possible."""
    chunks: list[str] = []
    current = ""
    for line in text.splitlines(keepends=True):
        while len(line) > max_chars:  # one very long line: cut it anywhere
            if current:
                chunks.append(current)
                current = ""
            chunks.append(line[:max_chars])
            line = line[max_chars:]
        if current and len(current) + len(line) > max_chars:
            chunks.append(current)
            current = ""
        current += line
    if current:
        chunks.append(current)
    return chunks


@dataclass
class _DomainReservoir:
    """The chunks of one domain with the smallest random keys, up to max_chars in all.

    A max-heap on the key: pushing and then evicting the largest keys while over budget
    keeps exactly the smallest-key prefix that fits, in O(log n) per chunk.
    """

    rng: np.random.Generator
    max_chars: int
    heap: list[tuple[float, int, str]] = field(default_factory=list)
    num_chars: int = 0
    num_docs_seen: int = 0
    num_chars_seen: int = 0
    _counter: int = 0

    def add(self, chunk: str) -> None:
        key = float(self.rng.random())
        self._counter += 1
        heapq.heappush(self.heap, (-key, self._counter, chunk))
        self.num_chars += len(chunk)
        self.num_chars_seen += len(chunk)
        while self.num_chars > self.max_chars:
            _, _, dropped = heapq.heappop(self.heap)
            self.num_chars -= len(dropped)

    def take(self, budget: int) -> list[str]:
        """The smallest-key chunks totalling at most budget characters (at least one)."""
        taken: list[str] = []
        used = 0
        for _, _, chunk in sorted(self.heap, key=lambda e: (-e[0], e[1])):
            if taken and used + len(chunk) > budget:
                break
            taken.append(chunk)
            used += len(chunk)
        return taken


def _water_fill(available: dict[str, int], total: int) -> dict[str, int]:
    """Equal budgets per domain; a domain with less than its share gives it all, and what
    it leaves is shared equally by the others."""
    budgets: dict[str, int] = {}
    remaining = total
    order = sorted(available, key=lambda d: (available[d], d))
    for i, domain in enumerate(order):
        budgets[domain] = min(available[domain], remaining // (len(order) - i))
        remaining -= budgets[domain]
    return budgets


def sample_training_text(files: Sequence[str], cfg: TokenizerTrainConfig, log: BadInputLog,
                         progress: bool = False) -> tuple[list[str], dict]:
    """The seeded, domain-balanced training chunks and per-domain statistics.

    One pass over the input. The number of domains is known only at the end, so each domain
    keeps up to the whole sample's worth of chunks until then (memory: up to k x sample_mb
    million characters for k domains); all the input is read, so pass a subset of a large
    corpus's files.
    """
    reservoirs: dict[str, _DomainReservoir] = {}
    docs = iter_documents(files, log)
    for domain, text in tqdm(docs, desc="sampling", unit="doc", disable=not progress):
        res = reservoirs.get(domain)
        if res is None:
            seed_seq = [cfg.seed, zlib.crc32(domain.encode("utf-8"))]
            res = reservoirs[domain] = _DomainReservoir(np.random.default_rng(seed_seq),
                                                        cfg.sample_chars)
        res.num_docs_seen += 1
        for chunk in chunk_document(text, cfg.max_chunk_chars):
            res.add(chunk)
    if not reservoirs:
        raise ValueError(f"no documents in the input files {list(files)} "
                         f"({log.describe()}); nothing to train a tokenizer on")
    budgets = _water_fill({d: r.num_chars for d, r in reservoirs.items()}, cfg.sample_chars)
    chunks: list[str] = []
    stats: dict[str, dict] = {}
    for domain in sorted(reservoirs):
        res = reservoirs[domain]
        taken = res.take(budgets[domain])
        chunks.extend(taken)
        stats[domain] = {"documents_seen": res.num_docs_seen, "chars_seen": res.num_chars_seen,
                         "chunks": len(taken), "chars": sum(map(len, taken))}
    return chunks, stats


def _train_model(chunks: list[str], cfg: TokenizerTrainConfig) -> bytes:
    """The serialized model; SentencePiece's cryptic vocabulary errors become ValueErrors."""
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(sentence_iterator=iter(chunks), model_writer=model,
                                       **trainer_options(cfg))
    except RuntimeError as err:
        num_chars = sum(map(len, chunks))
        if m := _TOO_HIGH_RE.search(str(err)):
            raise ValueError(
                f"vocab_size {cfg.vocab_size} is too large for the training sample: "
                f"SentencePiece can make at most {m.group(2)} pieces from its {num_chars:,} "
                f"characters. Use --vocab-size {m.group(2)} or less, or train on more text "
                "(more --input files or a larger --sample-mb).") from err
        if m := _TOO_LOW_RE.search(str(err)):
            raise ValueError(
                f"vocab_size {cfg.vocab_size} is too small: the sample needs {m.group(2)} "
                f"pieces (3 special, {NUM_BYTE_PIECES} byte-fallback, one per frequent "
                f"character). Use --vocab-size {m.group(2)} or more.") from err
        raise RuntimeError(f"SentencePiece training failed: {err}") from err
    return model.getvalue()


def _vocab_text(model: bytes) -> str:
    """One ``piece<TAB>score`` line per id, as SentencePiece's .vocab, except that a
    backslash, newline, tab and carriage return in a piece are written \\\\ \\n \\t \\r so
    that line i is always id i."""
    sp = spm.SentencePieceProcessor(model_proto=model)
    escape = str.maketrans({"\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"})
    return "".join(f"{sp.id_to_piece(i).translate(escape)}\t{sp.get_score(i) + 0.0:g}\n"
                   for i in range(sp.get_piece_size()))


def train_tokenizer(files: list[str], vocab_size: int, out_prefix: str, seed: int = 0,
                    sample_mb: float = DEFAULT_SAMPLE_MB,
                    num_threads: int = DEFAULT_NUM_THREADS, progress: bool = False) -> str:
    """Train on a domain-balanced sample of the files; write PREFIX.model, .vocab, .json.

    files: paths, globs or folders of The Pile's jsonl / jsonl.zst files. The three outputs
    are written in a temporary folder beside them and moved into place, the .model last.
    Returns the .model path.
    """
    cfg = TokenizerTrainConfig(vocab_size=vocab_size, seed=seed, sample_mb=sample_mb,
                               num_threads=num_threads)
    paths = expand_inputs(files)
    log = BadInputLog()
    chunks, stats = sample_training_text(paths, cfg, log, progress)
    if log.total:
        logger.warning("skipped bad input: %s", log.describe())
    logger.info("training %d-piece BPE on %d chunks, %s characters from %d domains",
                vocab_size, len(chunks), f"{sum(map(len, chunks)):,}", len(stats))
    model = _train_model(chunks, cfg)
    sha256 = hashlib.sha256(model).hexdigest()
    info = {"format": FORMAT, "model": os.path.basename(out_prefix) + ".model", "sha256": sha256,
            "vocab_size": vocab_size, "eos_id": SPECIAL_IDS["eos_id"], "seed": seed,
            "config": asdict(cfg), "trainer_options": trainer_options(cfg),
            "sentencepiece_version": spm.__version__, "inputs": list(paths),
            "sample": {"chars": sum(s["chars"] for s in stats.values()),
                       "chunks": len(chunks), "domains": stats},
            "bad_input": log.to_dict()}
    out_dir = os.path.dirname(os.path.abspath(out_prefix))
    os.makedirs(out_dir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tokenizer-tmp-", dir=out_dir)
    try:
        contents = {".vocab": _vocab_text(model).encode("utf-8"),
                    ".json": (json.dumps(info, indent=1) + "\n").encode("utf-8"),
                    ".model": model}  # last: the Makefile's stamp
        for ext, data in contents.items():
            with open(os.path.join(tmp, "out" + ext), "wb") as fh:
                fh.write(data)
        for ext in contents:
            os.replace(os.path.join(tmp, "out" + ext), out_prefix + ext)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_prefix + ".model"


class Tokenizer:
    """A trained SentencePiece model with lossless encode / decode (U+2581 included).

    Picklable (it carries the model bytes), so worker processes can receive it.
    """

    def __init__(self, model_path: str) -> None:
        if not os.path.isfile(model_path):
            raise FileNotFoundError(f"tokenizer model {model_path!r} not found; train one with "
                                    "tools/train_tokenizer.py --input ... --out PREFIX")
        with open(model_path, "rb") as fh:
            self._load(model_path, fh.read())

    def _load(self, path: str, model: bytes) -> None:
        self.path = path
        self._model = model
        self.sha256 = hashlib.sha256(model).hexdigest()
        self._sp = spm.SentencePieceProcessor()
        try:
            self._sp.LoadFromSerializedProto(model)
        except Exception as err:  # the library raises OSError or RuntimeError by version
            raise ValueError(f"{path!r} is not a SentencePiece model: {err}") from err
        self.vocab_size: int = self._sp.get_piece_size()
        self.eos_id: int = self._sp.eos_id()
        self.bos_id: int = self._sp.bos_id()
        self.unk_id: int = self._sp.unk_id()
        self.pad_id: int = self._sp.pad_id()
        # U+2581 as byte-fallback pieces; None for a model trained without byte_fallback.
        byte_ids = [self._sp.piece_to_id(f"<0x{b:02X}>") for b in META_SYMBOL.encode("utf-8")]
        self._meta_ids = None if self.unk_id in byte_ids else byte_ids

    def __getstate__(self) -> dict:
        return {"path": self.path, "model": self._model}

    def __setstate__(self, state: dict) -> None:
        self._load(state["path"], state["model"])

    def __repr__(self) -> str:
        return f"Tokenizer({self.path!r}, vocab_size={self.vocab_size}, sha256={self.sha256[:12]}…)"

    def encode(self, text: str) -> list[int]:
        """Token ids of text (no BOS / EOS added)."""
        if META_SYMBOL not in text:
            return self._sp.encode(text)
        return self._encode_with_meta(text)

    def _encode_with_meta(self, text: str) -> list[int]:
        if self._meta_ids is None:
            raise ValueError(f"text contains U+2581, which {self.path!r} cannot round-trip "
                             "(trained without byte_fallback)")
        ids: list[int] = []
        for i, part in enumerate(text.split(META_SYMBOL)):
            if i:
                ids.extend(self._meta_ids)
            if part:
                ids.extend(self._sp.encode(part))
        return ids

    def encode_batch(self, texts: Iterable[str], num_threads: int = 1) -> list[list[int]]:
        """encode() of each text; num_threads > 1 lets SentencePiece encode in parallel
        (1 by default: the converter already runs one process per core)."""
        texts = list(texts)
        plain = [i for i, t in enumerate(texts) if META_SYMBOL not in t]
        out: list[list[int]] = [[] for _ in texts]
        if plain:
            ids = self._sp.encode([texts[i] for i in plain], num_threads=num_threads)
            for i, row in zip(plain, ids):
                out[i] = row
        for i, text in enumerate(texts):
            if META_SYMBOL in text:
                out[i] = self._encode_with_meta(text)
        return out

    def decode(self, ids: Iterable[int]) -> str:
        """The text of token ids (a list, or a numpy / torch array)."""
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        return self._sp.decode(list(ids))
