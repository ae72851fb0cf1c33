"""The project's embedded default corpus: real text that ships with CPython, in The Pile's layout.

``build_demo_corpus(out_dir)`` writes::

    out_dir/train/00.jsonl.zst   out_dir/val.jsonl.zst   out_dir/test.jsonl.zst   out_dir/SUMMARY.json

Each line is ``{"text": ..., "meta": {"pile_set_name": <domain display name>}}`` as in The Pile.
Six domains are real text found through ``sysconfig`` (the standard library's sources, the
pydoc topics, docstrings, licence texts, C headers, the other text files of the stdlib) and
two are generated: "Arithmetic" (DeepMind-Mathematics-like problems with answers) and
"Noise" (deliberate garbage for a DRO pass to learn to down-weight).

Determinism: for one Python installation and seed the bytes of every file are identical.
File lists are sorted, subsets are chosen in an order given by sha256 of (seed, domain,
id), generated documents come from per-document ``random.Random`` string seeds, and
zstd's level is fixed. A document's split depends on a hash of its id only (not the seed),
so a file never moves between train and evaluation across seeds.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import platform
import random
import re
import sys
import sysconfig
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import zstandard
from tqdm import tqdm

from draw_megatron.data.pile import slugify
from draw_megatron.utils.fs import atomic_output_dir
from draw_megatron.utils.log import get_logger

logger = get_logger(__name__)

FORMAT = "draw-demo-corpus/v1"
SPLITS = ("train", "val", "test")
SPLIT_FILES = {"train": "train/00.jsonl.zst", "val": "val.jsonl.zst", "test": "test.jsonl.zst"}
SUMMARY_FILE = "SUMMARY.json"
DEFAULT_MAX_MB_PER_DOMAIN = 0.8
ZSTD_LEVEL = 10
# Hash thresholds of the ~90/5/5 split; every split then gets at least MIN_EVAL_DOCS.
VAL_FRACTION = 0.05
TEST_FRACTION = 0.05
MIN_EVAL_DOCS = 2
# A document is at most budget / DOCS_PER_BUDGET bytes, so a filled domain has >= ~8.
DOCS_PER_BUDGET = 8
MIN_DOCS_PER_DOMAIN = 2 * MIN_EVAL_DOCS + 2
MAX_DOC_BYTES = 64 * 1024
# The noise domain gets this share of the per-domain budget: present, not dominant.
NOISE_BUDGET_SHARE = 0.5
# Folders of the stdlib that are test suites, third-party or build-specific; skipped.
_SKIP_DIRS = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}
_BINARY_EXTS = {".py", ".pyc", ".pyo", ".so", ".pyd", ".dll", ".exe", ".whl", ".pickle",
                ".gif", ".png", ".ico", ".o", ".a", ".zip", ".gz", ".tar"}
_LICENSE_FILES = ("LICENSE.txt", "LICENSE", "idlelib/CREDITS.txt")
_NOTICE_RE = re.compile(r"copyright|licen[cs]e|all rights reserved|warrant|"
                        r"permission is hereby|redistribution", re.IGNORECASE)
_NOTICE_HEAD_LINES = 100


@dataclass(frozen=True)
class DemoCorpusConfig:
    """How the demo corpus is built."""

    seed: int = 0
    """Seed of the subsets chosen and of the generated domains."""
    max_mb_per_domain: float = DEFAULT_MAX_MB_PER_DOMAIN
    """Cap per domain in MB (10^6 bytes of UTF-8 text); small domains stay below it."""
    zstd_level: int = ZSTD_LEVEL
    """zstd compression level of the .jsonl.zst files (fixed for identical bytes)."""

    def __post_init__(self) -> None:
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if not 0.005 <= self.max_mb_per_domain <= 100:
            raise ValueError("max_mb_per_domain must be in [0.005, 100] MB, "
                             f"got {self.max_mb_per_domain}")
        if not 1 <= self.zstd_level <= 22:
            raise ValueError(f"zstd_level must be in [1, 22], got {self.zstd_level}")

    @property
    def budget_bytes(self) -> int:
        return int(self.max_mb_per_domain * 1e6)


@dataclass(frozen=True)
class Doc:
    id: str
    text: str


@dataclass
class _Context:
    """What every domain source needs: paths, seed, size limits, and a skip counter."""

    seed: int
    stdlib: str
    include: str
    max_doc_bytes: int
    skipped_not_utf8: int = 0

    def seeded_order(self, ids: list[str], domain: str) -> list[str]:
        key = lambda i: hashlib.sha256(f"{self.seed}/{domain}/{i}".encode()).digest()  # noqa: E731
        return sorted(sorted(ids), key=key)

    def read_text(self, path: str) -> str | None:
        """The file's text, or None if it is not valid UTF-8 (or holds NUL bytes)."""
        with open(path, "rb") as fh:
            raw = fh.read()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            self.skipped_not_utf8 += 1
            return None
        return None if "\x00" in text else text


# ----------------------------------------------------------------------------- file lists

def _walk(root: str, keep: Callable[[str], bool]) -> list[str]:
    """Sorted '/'-separated paths under root (test suites and third-party folders pruned)."""
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames
                             if d not in _SKIP_DIRS and not d.startswith("config-"))
        for name in sorted(filenames):
            rel = os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/")
            if keep(rel):
                found.append(rel)
    return sorted(found)


def _stdlib_sources(ctx: _Context) -> list[str]:
    # _sysconfigdata* holds this build's paths and flags: not text worth learning.
    return _walk(ctx.stdlib, lambda r: r.endswith(".py") and "_sysconfigdata" not in r)


def _half_of_stdlib(ctx: _Context, half: int) -> list[str]:
    """A fixed half of the stdlib sources, so "Python Stdlib" and "Docstrings" never share
    a file (a docstring in one domain's val and its source in another's train would leak)."""
    return [r for r in _stdlib_sources(ctx)
            if hashlib.sha256(r.encode()).digest()[0] % 2 == half]


def split_text(text: str, max_bytes: int) -> list[str]:
    """Consecutive pieces of text, each at most max_bytes of UTF-8, cut at paragraph
    boundaries where possible, else at line ends, else anywhere; "".join(pieces) == text."""
    if len(text.encode("utf-8")) <= max_bytes:
        return [text]
    for pattern in (r"(?<=\n\n)", r"(?<=\n)"):
        parts = [p for p in re.split(pattern, text) if p]
        if len(parts) > 1:
            break
    else:
        step = max(1, max_bytes // 4)  # a UTF-8 character is at most 4 bytes
        return [text[i:i + step] for i in range(0, len(text), step)]
    pieces: list[str] = []
    current = ""
    for part in parts:
        if current and len((current + part).encode("utf-8")) > max_bytes:
            pieces.append(current)
            current = ""
        current += part
    pieces.append(current)
    return [q for p in pieces for q in split_text(p, max_bytes)]


def _prose_docs(doc_id: str, text: str, max_bytes: int) -> Iterator[tuple[str, str]]:
    pieces = split_text(text, max_bytes)
    for k, piece in enumerate(pieces):
        yield (doc_id if len(pieces) == 1 else f"{doc_id}#{k}"), piece


# ----------------------------------------------------------------------------- real domains

def _python_stdlib(ctx: _Context) -> Iterator[tuple[str, str]]:
    # Whole files only: cutting source code mid-function would make worse documents.
    for rel in ctx.seeded_order(_half_of_stdlib(ctx, 0), "stdlib"):
        text = ctx.read_text(os.path.join(ctx.stdlib, rel))
        if text is not None:
            yield rel, text


def _python_docs(ctx: _Context) -> Iterator[tuple[str, str]]:
    from pydoc_data.topics import topics  # the text behind help("keyword")

    for name in ctx.seeded_order(list(topics), "docs"):
        yield from _prose_docs(f"pydoc/{name}", topics[name], ctx.max_doc_bytes)


def _module_name(rel: str) -> str:
    name = rel[:-3].replace("/", ".")
    return name[: -len(".__init__")] if name.endswith(".__init__") else name


def _docstrings_of(tree: ast.Module, module: str) -> str:
    """pydoc-like text: each documented module, class and function with its docstring."""
    entries: list[str] = []
    doc = ast.get_docstring(tree)
    if doc:
        entries.append(f"module {module}\n\n{doc}\n")

    def visit(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc:
                    entries.append(f"def {prefix}{node.name}({ast.unparse(node.args)})\n\n{doc}\n")
            elif isinstance(node, ast.ClassDef):
                doc = ast.get_docstring(node)
                if doc:
                    entries.append(f"class {prefix}{node.name}\n\n{doc}\n")
                visit(node.body, f"{prefix}{node.name}.")

    visit(tree.body, f"{module}.")
    return "\n\n".join(entries)


def _docstrings(ctx: _Context) -> Iterator[tuple[str, str]]:
    for rel in ctx.seeded_order(_half_of_stdlib(ctx, 1), "docstrings"):
        source = ctx.read_text(os.path.join(ctx.stdlib, rel))
        if source is None:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # invalid escapes in old modules
                tree = ast.parse(source)
        except SyntaxError:
            continue
        yield from _prose_docs(rel, _docstrings_of(tree, _module_name(rel)), ctx.max_doc_bytes)


def _license_sections(text: str) -> list[str]:
    """LICENSE.txt cut at its headings (a line underlined with === or ---)."""
    lines = text.splitlines(keepends=True)
    starts = [i for i in range(len(lines) - 1)
              if lines[i].strip() and re.fullmatch(r"[=-]{5,}\s*", lines[i + 1])]
    if not starts or starts[0] != 0:
        starts = [0] + starts
    bounds = starts + [len(lines)]
    return ["".join(lines[a:b]).strip("\n") + "\n" for a, b in zip(bounds, bounds[1:])]


def _notice(text: str) -> str:
    """Copyright / licence paragraphs from the head of a source file, or ""."""
    head = "".join(text.splitlines(keepends=True)[:_NOTICE_HEAD_LINES])
    paragraphs = [p.strip("\n") for p in re.split(r"\n\s*\n", head)]
    found = [p for p in paragraphs if p.strip() and _NOTICE_RE.search(p)]
    return "\n\n".join(found) + "\n" if found else ""


def _licenses(ctx: _Context) -> Iterator[tuple[str, str]]:
    units: dict[str, Callable[[], list[tuple[str, str]]]] = {}
    for rel in _LICENSE_FILES:
        path = os.path.join(ctx.stdlib, rel)
        if os.path.isfile(path):
            units[rel] = lambda path=path, rel=rel: [
                (f"{rel}#{k}", s) for k, s in enumerate(_license_sections(ctx.read_text(path) or ""))]
    units["sys.copyright"] = lambda: [("sys.copyright", sys.copyright + "\n")]
    sources = [("stdlib", ctx.stdlib, r) for r in _stdlib_sources(ctx)]
    sources += [("include", ctx.include, r) for r in _walk(ctx.include, lambda r: r.endswith(".h"))]
    for tag, root, rel in sources:
        def unit(root: str = root, rel: str = rel, tag: str = tag) -> list[tuple[str, str]]:
            text = ctx.read_text(os.path.join(root, rel))
            notice = _notice(text) if text else ""
            return [(f"notice/{tag}/{rel}", notice)] if notice.strip() else []
        units[f"notice/{tag}/{rel}"] = unit
    seen: set[str] = set()  # many files carry the same notice
    for unit_id in ctx.seeded_order(list(units), "licenses"):
        for doc_id, text in units[unit_id]():
            if text not in seen:
                seen.add(text)
                yield from _prose_docs(doc_id, text, ctx.max_doc_bytes)


def _c_headers(ctx: _Context) -> Iterator[tuple[str, str]]:
    for rel in ctx.seeded_order(_walk(ctx.include, lambda r: r.endswith(".h")), "headers"):
        text = ctx.read_text(os.path.join(ctx.include, rel))
        if text is not None:
            yield rel, text


def _stdlib_text(ctx: _Context) -> Iterator[tuple[str, str]]:
    """The stdlib's other text files: IDLE's news and help, grammars, configs, scripts."""
    def keep(rel: str) -> bool:
        return (os.path.splitext(rel)[1].lower() not in _BINARY_EXTS
                and rel not in _LICENSE_FILES and "_sysconfigdata" not in rel)

    for rel in ctx.seeded_order(_walk(ctx.stdlib, keep), "text"):
        text = ctx.read_text(os.path.join(ctx.stdlib, rel))
        if text is not None:
            yield from _prose_docs(rel, text, ctx.max_doc_bytes)


# ----------------------------------------------------------------------------- generated

def _arithmetic_problem(rng: random.Random) -> tuple[str, str]:
    """One question with its exact answer (integers, so no float formatting questions)."""
    kind = rng.randrange(9)
    a, b = rng.randint(-9999, 9999), rng.randint(-9999, 9999)
    if kind == 0:
        return f"What is {a} + {b}?", str(a + b)
    if kind == 1:
        return f"Calculate {a} - {b}.", str(a - b)
    if kind == 2:
        a, b = rng.randint(-999, 999), rng.randint(-99, 99)
        return f"Multiply {a} and {b}.", str(a * b)
    if kind == 3:
        q, d = rng.randint(-999, 999), rng.choice([i for i in range(-60, 61) if i])
        return f"Divide {q * d} by {d}.", str(q)
    if kind == 4:
        n, d = rng.randint(100, 99999), rng.randint(2, 97)
        return f"What is the remainder when {n} is divided by {d}?", str(n % d)
    if kind == 5:
        x, k, c = rng.randint(-50, 50), rng.choice([-9, -7, -5, -3, -2, 2, 3, 4, 6, 8, 11]), b % 200
        return f"Solve {k}*x + {c} = {k * x + c} for x.", str(x)
    if kind == 6:
        g = rng.randint(2, 60)
        m, n = g * rng.randint(1, 90), g * rng.randint(1, 90)
        return f"Calculate the greatest common divisor of {m} and {n}.", str(_gcd(m, n))
    if kind == 7:
        xs = [rng.randint(-99, 99) for _ in range(rng.randint(3, 7))]
        return f"Sort {', '.join(map(str, xs))} in increasing order.", ", ".join(map(str, sorted(xs)))
    x, y, z = rng.randint(-20, 20), rng.randint(-20, 20), rng.randint(1, 12)
    return f"Evaluate ({x} - {y}) * {z} + {a % 100}.", str((x - y) * z + a % 100)


def _gcd(m: int, n: int) -> int:
    while n:
        m, n = n, m % n
    return m


def _arithmetic(ctx: _Context) -> Iterator[tuple[str, str]]:
    for i in range(10**9):
        rng = random.Random(f"demo-corpus/{ctx.seed}/arithmetic/{i}")
        pairs = [_arithmetic_problem(rng) for _ in range(rng.randint(8, 40))]
        yield f"arithmetic/{i:06d}", "".join(f"Question: {q}\nAnswer: {a}\n\n" for q, a in pairs)


# Noise uses a bounded alphabet: a few hundred distinct characters at most, so a tokenizer
# trained on a balanced sample keeps its character set (and vocabulary) reasonable. U+2581,
# SentencePiece's whitespace symbol, is in it on purpose: round-trips must survive it.
_PRINTABLE = "".join(chr(c) for c in range(0x20, 0x7F))
_LATIN1 = "".join(chr(c) for c in range(0xA0, 0x100))
_SYMBOLS = "▁█▓▒░■□▪▫●○◆◇★☆♠♣♥♦←↑→↓↔⇒∀∃∅∈∑√∞≠≤≥⊂⊃⌘⌥€™✓✗😀😂🙃🔥💾🧪"


def _noise_doc(rng: random.Random) -> str:
    kind = rng.randrange(5)
    size = rng.randint(200, 3000)
    if kind == 0:  # hex dump of random bytes
        rows = [" ".join(f"{rng.randrange(256):02x}" for _ in range(16)) for _ in range(size // 48 + 1)]
        return "\n".join(f"{i * 16:08x}  {r}" for i, r in enumerate(rows)) + "\n"
    if kind == 1:  # random bytes shown as Latin-1 text (mojibake)
        alphabet = _PRINTABLE + _LATIN1
    elif kind == 2:  # base64-like blob
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    elif kind == 3:  # keyboard mash with symbols and emoji
        alphabet = _PRINTABLE + _SYMBOLS * 2 + " \t" * 8
    else:  # printable ASCII soup
        alphabet = _PRINTABLE
    text = "".join(rng.choice(alphabet) for _ in range(size))
    width = rng.choice([40, 64, 76, 120, 500])
    return "\n".join(text[i:i + width] for i in range(0, len(text), width)) + "\n"


def _noise(ctx: _Context) -> Iterator[tuple[str, str]]:
    for i in range(10**9):
        rng = random.Random(f"demo-corpus/{ctx.seed}/noise/{i}")
        yield f"noise/{i:06d}", _noise_doc(rng)


@dataclass(frozen=True)
class DomainSource:
    name: str
    """Display name written as pile_set_name."""
    description: str
    docs: Callable[[_Context], Iterator[tuple[str, str]]]
    """(id, text) candidates in seeded order; the first that fit the budget are kept."""
    budget_share: float = 1.0


DOMAINS: tuple[DomainSource, ...] = (
    DomainSource("Python Stdlib", "half of the standard library's .py files, whole", _python_stdlib),
    DomainSource("Python Docs", "pydoc_data.topics (the text behind help())", _python_docs),
    DomainSource("Docstrings", "docstrings (ast) of the other half of the stdlib", _docstrings),
    DomainSource("Licenses", "LICENSE.txt sections, CREDITS, copyright notices", _licenses),
    DomainSource("C Headers", "CPython's C headers (sysconfig include)", _c_headers),
    DomainSource("Stdlib Text", "non-Python text files of the stdlib (IDLE, grammars)", _stdlib_text),
    DomainSource("Arithmetic", "generated arithmetic questions with answers", _arithmetic),
    DomainSource("Noise", "generated garbage: hex dumps, mojibake, symbol soup", _noise,
                 budget_share=NOISE_BUDGET_SHARE),
)


# ----------------------------------------------------------------------------- assembly

def select_documents(candidates: Iterator[tuple[str, str]], budget: int,
                     max_doc_bytes: int) -> list[Doc]:
    """The first candidates (in their seeded order) that fit the byte budget.

    Documents over max_doc_bytes, empty or blank are skipped. Stops once the budget is
    within 1% of full, after 50 candidates in a row that were too big for what is left,
    or after 1000 in a row skipped for any reason (the generated sources never end).
    """
    chosen: list[Doc] = []
    used, full_misses, misses = 0, 0, 0
    for doc_id, text in candidates:
        size = len(text.encode("utf-8"))
        if not text.strip() or size > max_doc_bytes or used + size > budget:
            misses += 1
            full_misses += size <= max_doc_bytes and used + size > budget
            if full_misses >= 50 or misses >= 1000:
                break
            continue
        chosen.append(Doc(doc_id, text))
        used, full_misses, misses = used + size, 0, 0
        if budget - used < budget // 100:
            break
    return chosen


def _unit_hash(domain: str, doc_id: str) -> float:
    digest = hashlib.sha256(f"{domain}/{doc_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def assign_splits(domain: str, docs: list[Doc]) -> dict[str, list[Doc]]:
    """~90/5/5 by a hash of (domain, id); then at least MIN_EVAL_DOCS in val and in test,
    taken from the split with the most documents, closest in hash first."""
    if len(docs) < MIN_DOCS_PER_DOMAIN:
        raise ValueError(f"domain {domain!r} has {len(docs)} documents, fewer than the "
                         f"{MIN_DOCS_PER_DOMAIN} needed to fill train, val and test; "
                         "raise max_mb_per_domain")
    by_hash = sorted(docs, key=lambda d: (_unit_hash(domain, d.id), d.id))
    splits: dict[str, list[Doc]] = {s: [] for s in SPLITS}
    for doc in by_hash:
        u = _unit_hash(domain, doc.id)
        split = "val" if u < VAL_FRACTION else "test" if u < VAL_FRACTION + TEST_FRACTION else "train"
        splits[split].append(doc)
    for split in ("val", "test"):
        while len(splits[split]) < MIN_EVAL_DOCS:
            donor = max((s for s in SPLITS if s != split), key=lambda s: (len(splits[s]), s == "train"))
            splits[split].append(splits[donor].pop(0 if donor == "train" else -1))
    order = {d.id: i for i, d in enumerate(docs)}  # keep the selection order within a split
    return {s: sorted(v, key=lambda d: order[d.id]) for s, v in splits.items()}


def _split_bytes(docs: list[Doc]) -> int:
    return sum(len(d.text.encode("utf-8")) for d in docs)


def _jsonl_zst(rows: list[tuple[str, Doc]], level: int) -> bytes:
    # json.dumps' default ensure_ascii=True, as The Pile's own files: every line is ASCII, so
    # no reader can split a line at U+2028 or U+0085 inside a text.
    lines = [json.dumps({"text": d.text, "meta": {"pile_set_name": name}}) + "\n" for name, d in rows]
    return zstandard.ZstdCompressor(level=level).compress("".join(lines).encode("utf-8"))


def _write_corpus(tmp: str, cfg: DemoCorpusConfig,
                  per_domain: list[tuple[DomainSource, dict[str, list[Doc]], int]]) -> dict:
    files: dict[str, dict] = {}
    for split in SPLITS:
        rows = [(src.name, d) for src, splits, _ in per_domain for d in splits[split]]
        random.Random(f"demo-corpus/{cfg.seed}/{split}/order").shuffle(rows)  # mixed, as in the Pile
        data = _jsonl_zst(rows, cfg.zstd_level)
        path = os.path.join(tmp, SPLIT_FILES[split])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(data)
        files[SPLIT_FILES[split]] = {"documents": len(rows), "compressed_bytes": len(data),
                                     "sha256": hashlib.sha256(data).hexdigest()}
    domains = [{"name": src.name, "slug": slugify(src.name), "description": src.description,
                "skipped_not_utf8": skipped,
                "splits": {s: {"documents": len(sp[s]), "bytes": _split_bytes(sp[s])} for s in SPLITS}}
               for src, sp, skipped in per_domain]
    summary = {"format": FORMAT, "seed": cfg.seed, "max_mb_per_domain": cfg.max_mb_per_domain,
               "zstd_level": cfg.zstd_level, "python": platform.python_version(),
               "domains": domains, "files": files,
               "totals": {s: {"documents": sum(d["splits"][s]["documents"] for d in domains),
                              "bytes": sum(d["splits"][s]["bytes"] for d in domains)} for s in SPLITS}}
    # Written last: the Makefile treats SUMMARY.json as the stamp of a complete corpus.
    with open(os.path.join(tmp, SUMMARY_FILE), "w", encoding="utf-8") as fh:
        json.dump(summary, fh, indent=1)
        fh.write("\n")
    return summary


def collect_domains(cfg: DemoCorpusConfig, progress: bool = False
                    ) -> list[tuple[DomainSource, dict[str, list[Doc]], int]]:
    """Every domain's documents by split, with its count of files skipped as not UTF-8."""
    paths = sysconfig.get_paths()
    out = []
    for src in tqdm(DOMAINS, desc="demo corpus", unit="domain", disable=not progress):
        budget = int(cfg.budget_bytes * src.budget_share)
        ctx = _Context(cfg.seed, paths["stdlib"], paths["include"],
                       max_doc_bytes=min(MAX_DOC_BYTES, budget // DOCS_PER_BUDGET))
        docs = select_documents(src.docs(ctx), budget, ctx.max_doc_bytes)
        if not docs:
            raise RuntimeError(f"domain {src.name!r} found no documents ({src.description}; "
                               f"stdlib {ctx.stdlib}, include {ctx.include}); on a distribution "
                               "Python, install its development headers and full stdlib")
        out.append((src, assign_splits(src.name, docs), ctx.skipped_not_utf8))
        logger.debug("%s: %d documents", src.name, len(docs))
    return out


def build_demo_corpus(out_dir: str, cfg: DemoCorpusConfig | None = None, overwrite: bool = False,
                      progress: bool = False) -> dict:
    """Write the demo corpus into out_dir (atomically: a temporary folder beside it is
    renamed into place when complete) and return its summary (SUMMARY.json's content).

    Raises FileExistsError if out_dir exists and overwrite is False.
    """
    cfg = cfg or DemoCorpusConfig()
    if os.path.exists(out_dir) and not overwrite:  # before the work, not after it
        raise FileExistsError(f"{os.path.abspath(out_dir)} exists; pass --overwrite to replace it")
    per_domain = collect_domains(cfg, progress)
    with atomic_output_dir(out_dir, overwrite=overwrite) as tmp:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's 0700 would otherwise become out_dir's mode
        summary = _write_corpus(tmp, cfg, per_domain)
    return summary


def format_summary(summary: dict) -> str:
    """A plain-text table: documents and size per domain and split."""
    head = f"{'domain':<16}" + "".join(f"{s + ' docs':>11}{s + ' KB':>10}" for s in SPLITS)
    lines = [head, "-" * len(head)]
    rows = [(d["name"], d["splits"]) for d in summary["domains"]] + [("total", summary["totals"])]
    for name, splits in rows:
        if name == "total":
            lines.append("-" * len(head))
        lines.append(f"{name:<16}" + "".join(
            f"{splits[s]['documents']:>11}{splits[s]['bytes'] / 1e3:>10.1f}" for s in SPLITS))
    compressed = sum(f["compressed_bytes"] for f in summary["files"].values())
    lines.append(f"compressed: {compressed / 1e6:.2f} MB in {len(summary['files'])} files; "
                 f"seed {summary['seed']}, cap {summary['max_mb_per_domain']} MB per domain")
    return "\n".join(lines)
