"""Reading The Pile's jsonl / jsonl.zst files without losing good documents to bad ones.

Each line is ``{"text": ..., "meta": {"pile_set_name": ...}}``. A bad line (invalid JSON or
UTF-8, missing or empty text, missing domain) is counted by reason with its first few
``file:line`` locations and skipped; a truncated .zst stream keeps every complete line
before the break. Reading (main process) and parsing (worker processes) are separate so the
converter can parallelise the parse without changing the order of documents.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import zstandard

# The Pile's epochs per component (its README; docs/algorithms.md §6). Natural weights are
# sequence counts x epochs (DRAW App. E.4); any other domain name gets 1.0.
PILE_EPOCHS: dict[str, float] = {
    "Pile-CC": 1.0, "PubMed Central": 2.0, "Books3": 1.5, "OpenWebText2": 2.0,
    "ArXiv": 2.0, "Github": 1.0, "FreeLaw": 1.5, "StackExchange": 2.0,
    "USPTO Backgrounds": 2.0, "PubMed Abstracts": 2.0, "Gutenberg (PG-19)": 2.5,
    "OpenSubtitles": 1.5, "Wikipedia (en)": 3.0, "DM Mathematics": 2.0, "Ubuntu IRC": 2.0,
    "BookCorpus2": 1.5, "EuroParl": 2.0, "HackerNews": 2.0, "YoutubeSubtitles": 2.0,
    "PhilPapers": 2.0, "NIH ExPorter": 2.0, "Enron Emails": 2.0,
}

BAD_REASONS = (
    "invalid_utf8",
    "invalid_json",
    "not_an_object",
    "missing_text",
    "empty_text",
    "missing_pile_set_name",
    "truncated_zst",
)
MAX_LOCATIONS = 5
_READ_BYTES = 1 << 20


@dataclass
class BadInputLog:
    """Counts of skipped input by reason, with the first few ``file:line`` locations."""

    counts: dict[str, int] = field(default_factory=dict)
    locations: dict[str, list[str]] = field(default_factory=dict)

    def add(self, reason: str, where: object) -> None:
        """Count one bad input at ``where`` (a ``file:line`` string, or an object whose str is)."""
        assert reason in BAD_REASONS, reason
        self.counts[reason] = self.counts.get(reason, 0) + 1
        locs = self.locations.setdefault(reason, [])
        if len(locs) < MAX_LOCATIONS:
            locs.append(str(where))

    def merge(self, other: BadInputLog) -> None:
        for reason, num in other.counts.items():
            self.counts[reason] = self.counts.get(reason, 0) + num
            locs = self.locations.setdefault(reason, [])
            locs.extend(other.locations.get(reason, [])[: MAX_LOCATIONS - len(locs)])

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict:
        return {r: {"count": self.counts[r], "first": self.locations.get(r, [])}
                for r in BAD_REASONS if r in self.counts}

    def describe(self) -> str:
        if not self.counts:
            return "no bad input"
        return "; ".join(f"{self.counts[r]} {r} (first at {', '.join(self.locations[r])})"
                         for r in BAD_REASONS if r in self.counts)


def expand_inputs(patterns: Iterable[str]) -> list[str]:
    """Files named by paths, globs or folders (a folder means its *.jsonl and *.jsonl.zst).

    Raises FileNotFoundError naming a pattern that matches nothing.
    """
    files: list[str] = []
    for pattern in patterns:
        if os.path.isdir(pattern):
            found = sorted(glob.glob(os.path.join(pattern, "*.jsonl"))
                           + glob.glob(os.path.join(pattern, "*.jsonl.zst")))
        else:
            found = sorted(glob.glob(pattern))
        if not found:
            raise FileNotFoundError(f"no input file matches {pattern!r}")
        files.extend(found)
    return files


def pile_layout(root: str) -> dict[str, list[str]]:
    """Files per split of The Pile's own layout: train/*.jsonl[.zst], val.jsonl[.zst],
    test.jsonl[.zst] (FileNotFoundError naming ``root`` when it has none of them)."""
    splits: dict[str, list[str]] = {}
    train = sorted(glob.glob(os.path.join(root, "train", "*.jsonl.zst"))
                   + glob.glob(os.path.join(root, "train", "*.jsonl")))
    if train:
        splits["train"] = train
    for split in ("val", "test"):
        found = [p for p in (os.path.join(root, f"{split}.jsonl.zst"),
                             os.path.join(root, f"{split}.jsonl")) if os.path.isfile(p)]
        if found:
            splits[split] = found[:1]
    if not splits:
        raise FileNotFoundError(f"{root} has none of The Pile's files (train/*.jsonl.zst, "
                                "val.jsonl.zst, test.jsonl.zst); name files with "
                                "--split NAME=PATH")
    return splits


def _iter_zst_blocks(fh) -> Iterator[bytes]:
    """Decompressed blocks of a (multi-frame) zstd file; a truncated last frame is logged.

    zstandard's stream reader ends silently at a truncated frame, so frames are followed
    by hand: a decompressor that has consumed input without reaching its frame's end when
    the file ends means the file was cut short.
    """
    dctx = zstandard.ZstdDecompressor()
    dobj = dctx.decompressobj()
    in_frame = False
    while True:
        chunk = fh.read(_READ_BYTES)
        if not chunk:
            break
        while chunk:
            in_frame = True
            out = dobj.decompress(chunk)
            if out:
                yield out
            if dobj.eof:
                chunk = dobj.unused_data
                dobj = dctx.decompressobj()
                in_frame = False
            else:
                chunk = b""
    if in_frame:
        raise _Truncated()


class _Truncated(Exception):
    """A .zst file ended inside a frame."""


def iter_raw_lines(path: str, log: BadInputLog) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, raw bytes) of each complete line of a .jsonl or .jsonl.zst file.

    A truncated .zst stream is logged as ``truncated_zst`` at the line where it broke; the
    incomplete last line is dropped and every complete line before it is kept.
    """
    lineno = 0
    carry = b""
    with open(path, "rb") as fh:
        blocks: Iterator[bytes]
        if path.endswith(".zst"):
            blocks = _iter_zst_blocks(fh)
        else:
            blocks = iter(lambda: fh.read(_READ_BYTES), b"")
        try:
            for block in blocks:
                lines = (carry + block).split(b"\n")
                carry = lines.pop()
                for line in lines:
                    lineno += 1
                    yield lineno, line
        except (_Truncated, zstandard.ZstdError):
            log.add("truncated_zst", f"{path}:{lineno + 1}")
            return
    if carry:
        yield lineno + 1, carry


def parse_line(raw: bytes, where: object, log: BadInputLog,
               default_domain: str | None = None) -> tuple[str, str] | None:
    """(domain display name, text) of one Pile line, or None after logging why it is bad.

    ``default_domain``: the domain of a line without ``meta.pile_set_name`` (None: such a
    line is bad)."""
    if not raw.strip():
        return None  # blank lines (e.g. a trailing newline) are not documents
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError:
        log.add("invalid_utf8", where)
        return None
    try:
        obj = json.loads(line)
    except json.JSONDecodeError:
        log.add("invalid_json", where)
        return None
    if not isinstance(obj, dict):
        log.add("not_an_object", where)
        return None
    text = obj.get("text")
    if not isinstance(text, str):
        log.add("missing_text", where)
        return None
    if not text:
        log.add("empty_text", where)
        return None
    meta = obj.get("meta")
    domain = meta.get("pile_set_name") if isinstance(meta, dict) else None
    if (not isinstance(domain, str) or not domain) and default_domain is not None:
        domain = default_domain
    if not isinstance(domain, str) or not domain:
        log.add("missing_pile_set_name", where)
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates from \ud800-style escapes
        log.add("invalid_utf8", where)
        return None
    return domain, text


def iter_documents(paths: Iterable[str], log: BadInputLog) -> Iterator[tuple[str, str]]:
    """(domain, text) of every good document of the files, in file and line order."""
    for path in paths:
        for lineno, raw in iter_raw_lines(path, log):
            parsed = parse_line(raw, f"{path}:{lineno}", log)
            if parsed is not None:
                yield parsed


def slugify(name: str) -> str:
    """A folder-safe slug of a display name: "Wikipedia (en)" -> "wikipedia_en".

    A name with no ASCII letter or digit gets a stable hash-based slug.
    """
    slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    return slug or "domain_" + hashlib.sha256(name.encode("utf-8")).hexdigest()[:8]
