"""The specific (target) set y of DGA (docs/algorithms.md §3): where ``dga.specific`` points, opened.

``dga.specific`` takes one of three forms:

- ``SPLIT`` (e.g. ``test``): a whole split of the run's data root, all its domains, drawn
  in proportion to their sequence counts;
- ``SPLIT:NAME`` (e.g. ``test:Wikipedia (en)``): one domain of that split, by its display
  name as in manifest.json (or its slug, e.g. ``test:wikipedia_en``);
- a folder, file or glob of The Pile's jsonl / jsonl.zst documents (a folder means its
  ``*.jsonl`` and ``*.jsonl.zst``, not its subfolders). They are tokenized with the data
  root's tokenizer into a one-domain MDS root at the data's seq_len, cached under
  ``<run.dir>/specific/<key>/data``; the key hashes the files' paths, sizes and mtimes, the
  tokenizer's sha256 and seq_len, so a restart reuses the cache and a changed input file
  converts again. Documents without ``meta.pile_set_name`` are accepted.

How a value is read: when the text before the first ``:`` (or the whole value) is one of
the manifest's splits, it is a split (a folder named like a split is written ``./test``);
otherwise a value that contains a path separator, starts with ``~`` or ``.``, holds a glob
character or ends in ``.jsonl`` / ``.zst``, or names an existing file or folder, is a path
(relative to the working directory); anything else is an unknown split.

A split is refused when training (``data.split``) or evaluation (``eval.split``, else
``data.eval_split``) reads it: the target would leak into what it is compared with.
"""

from __future__ import annotations

import dataclasses
import difflib
import glob
import hashlib
import json
import os
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
import torch
import torch.distributed as dist

from draw_megatron.config.base import ConfigError
from draw_megatron.data.convert import ConversionError, ConvertConfig, convert_corpus
from draw_megatron.data.domains import DomainData
from draw_megatron.data.loader import Batch, ProbeSampler
from draw_megatron.data.manifest import MANIFEST_NAME, Manifest
from draw_megatron.data.tokenizer import Tokenizer
from draw_megatron.utils.fs import atomic_output_dir, atomic_write_json
from draw_megatron.utils.log import get_logger

log = get_logger(__name__)

KEY = "dga.specific"
SPECIFIC_STREAM = 0x5350454349  # "SPECI": the specific set's own probe randomness
CACHE_DIR = "specific"
CACHE_FORMAT = "draw-specific-cache/v1"
CONVERTED_SPLIT = "specific"
CONVERTED_DOMAIN = "specific"
INPUT_SUFFIXES = (".jsonl", ".jsonl.zst")
_GLOB_CHARS = set("*?[")


class SpecificSource(NamedTuple):
    """What a ``dga.specific`` value names (``parse_specific``)."""

    kind: Literal["split", "domain", "files"]
    split: str | None
    """The data root's split (kinds split and domain)."""
    domain: int | None
    """The domain's index in manifest order (kind domain)."""
    files: tuple[str, ...]
    """Absolute paths of the jsonl / jsonl.zst inputs, sorted (kind files)."""


@dataclass
class SpecificSet:
    """The opened specific set: its data and how to draw a probe batch from it."""

    data: DomainData
    """One split, opened as one StreamingDataset (Contract 1)."""
    domain: int | None
    """None: the whole split, domains in proportion to their sequence counts; else this
    domain of ``data`` only."""
    description: str
    """What it is, for logs and provenance."""
    shares_domains: bool = True
    """True when ``data`` is a split of the training data root, so batch domain ids index
    the training manifest's domains; False for converted files (their batches carry domain
    id -1: they belong to no training domain)."""

    @property
    def num_sequences(self) -> int:
        """Sequences the probes draw from."""
        counts = self.data.num_sequences
        return int(counts.sum() if self.domain is None else counts[self.domain])

    def sampler(self, seed: int, dp_rank: int = 0, dp_size: int = 1) -> ProbeSampler:
        """A probe sampler over this set on its own random stream (checkpoint its state)."""
        return ProbeSampler(self.data, seed, dp_rank, dp_size, stream=SPECIFIC_STREAM)

    def batch(self, sampler: ProbeSampler, num: int) -> Batch:
        """This rank's share of one probe of ``num`` sequences of the set.

        Only ``tokens`` and ``labels`` mean the same as in a training batch: ``alpha`` has
        one entry per domain of ``data`` (one for converted files), and ``domain_ids`` are -1
        unless ``shares_domains``.
        """
        if sampler.data is not self.data:
            raise ValueError("the sampler reads other data than this specific set: build it "
                             "with SpecificSet.sampler()")
        if self.domain is None:
            batch = sampler.mixed_batch(num)
        else:
            batch = sampler.domain_batch(self.domain, num)
        if not self.shares_domains:
            batch = dataclasses.replace(batch, domain_ids=torch.full_like(batch.domain_ids, -1))
        return batch

    def close(self) -> None:
        """Release the dataset (its shared memory)."""
        self.data.close()

    def __enter__(self) -> SpecificSet:
        return self

    def __exit__(self, *_) -> None:
        self.close()


# ---------------------------------------------------------------------------------------
# Parsing: cheap, no process group, no file opened.


def parse_specific(spec: str | None, manifest: Manifest, *, train_split: str,
                   eval_split: str) -> SpecificSource:
    """What ``spec`` names, validated against ``manifest`` (module docstring for the forms).

    ``train_split`` / ``eval_split``: the splits training and evaluation read, which the
    specific set must not be. Raises ConfigError naming ``dga.specific`` and the problem.
    """
    if spec is None or not str(spec).strip():
        raise ConfigError(f"{KEY} is empty: give a held-out split ('test'), one of its "
                          "domains ('test:Wikipedia (en)') or a folder of jsonl files")
    spec = str(spec).strip()
    split, colon, name = spec.partition(":")
    if split in manifest.splits:
        _check_held_out(spec, manifest, split, train_split, eval_split)
        if not colon:
            return _whole_split(spec, manifest, split)
        return SpecificSource("domain", split, _domain_index(spec, manifest, split, name.strip()),
                              ())
    if _looks_like_path(spec) or os.path.exists(os.path.expanduser(spec)):
        files = _input_files(spec)
        if not os.path.isfile(manifest.tokenizer_path):
            raise ConfigError(f"{KEY}={spec!r} names files to tokenize with the data root's "
                              f"tokenizer, but {manifest.tokenizer_path} does not exist")
        return SpecificSource("files", None, None, files)
    hint = _did_you_mean(split, manifest.splits)
    raise ConfigError(f"{KEY}={spec!r}: {split!r} is not a split of {manifest.root} "
                      f"(it has {', '.join(manifest.splits)}{'; ' + hint if hint else ''}), "
                      f"and no file or folder {spec!r} exists")


def _check_held_out(spec: str, manifest: Manifest, split: str, train_split: str,
                    eval_split: str) -> None:
    readers = []
    if split == train_split:
        readers.append(f"training (data.split={train_split!r})")
    if split == eval_split:
        readers.append(f"evaluation (eval split {eval_split!r})")
    if readers:
        held_out = [s for s in manifest.splits if s not in (train_split, eval_split)]
        advice = (f"use a held-out split ({', '.join(held_out)})" if held_out else
                  "the data root has no other split: convert one, or give a folder of jsonl")
        raise ConfigError(f"{KEY}={spec!r} reads split {split!r}, which {' and '.join(readers)} "
                          f"also reads: the target set would leak into it; {advice}")


def _whole_split(spec: str, manifest: Manifest, split: str) -> SpecificSource:
    if manifest.num_sequences(split).sum() == 0:
        raise ConfigError(f"{KEY}={spec!r}: split {split!r} of {manifest.root} holds no sequence")
    return SpecificSource("split", split, None, ())


def _domain_index(spec: str, manifest: Manifest, split: str, name: str) -> int:
    if not name:
        raise ConfigError(f"{KEY}={spec!r}: no domain name after ':' (write "
                          f"'{split}:<display name>', or '{split}' for the whole split)")
    names = manifest.domain_names
    slugs = [d.slug for d in manifest.domains]
    if name in names:
        index = names.index(name)
    elif name in slugs:
        index = slugs.index(name)
    else:
        hint = _did_you_mean(name, names)
        if not hint:
            shown = ", ".join(map(repr, names[:8])) + (", ..." if len(names) > 8 else "")
            hint = f"its {len(names)} domains: {shown}"
        raise ConfigError(f"{KEY}={spec!r}: no domain {name!r} in {manifest.root} ({hint})")
    num = int(manifest.num_sequences(split)[index])
    if num == 0:
        raise ConfigError(f"{KEY}={spec!r}: domain {names[index]!r} has no sequence in split "
                          f"{split!r} of {manifest.root}; pick another domain or split")
    return index


def _did_you_mean(word: str, choices) -> str:
    """'did you mean ...?' with up to three close or containing choices, or ''."""
    lowered = {c.lower(): c for c in choices}
    word = word.lower()
    close = difflib.get_close_matches(word, list(lowered), n=3, cutoff=0.5)
    close += [c for c in lowered if word in c and c not in close]
    if not close:
        return ""
    return f"did you mean {' or '.join(repr(lowered[c]) for c in close[:3])}?"


def _looks_like_path(spec: str) -> bool:
    return ("/" in spec or os.sep in spec or spec.startswith(("~", "."))
            or bool(_GLOB_CHARS & set(spec)) or spec.endswith((".jsonl", ".zst")))


def _input_files(spec: str) -> tuple[str, ...]:
    path = os.path.expanduser(spec)
    if os.path.isdir(path):
        files = [os.path.join(path, f) for f in os.listdir(path) if f.endswith(INPUT_SUFFIXES)]
        files = [f for f in files if os.path.isfile(f)]
        if not files:
            raise ConfigError(f"{KEY}={spec!r}: the folder holds no *.jsonl or *.jsonl.zst file "
                              "(subfolders are not searched)")
    elif os.path.isfile(path):
        files = [path]
    elif _GLOB_CHARS & set(path):
        files = glob.glob(path)
        if not files:
            raise ConfigError(f"{KEY}={spec!r}: the pattern matches no file")
    else:
        raise ConfigError(f"{KEY}={spec!r}: no such file or folder")
    bad = [f for f in files if not (os.path.isfile(f) and f.endswith(INPUT_SUFFIXES))]
    if bad:
        raise ConfigError(f"{KEY}={spec!r}: {bad[0]!r} is not a .jsonl or .jsonl.zst file")
    return tuple(sorted(os.path.abspath(f) for f in files))


# ---------------------------------------------------------------------------------------
# Opening.


def open_specific(spec: str | None, manifest: Manifest, *, train_split: str, eval_split: str,
                  run_dir: str, workers: int = 1) -> SpecificSet:
    """Resolve ``spec`` (normally ``dga.specific``) and open it on every rank.

    Collective under torch.distributed (every rank calls it, in the same order as its other
    DomainData). Files are converted by global rank 0 only (``workers`` tokenizer
    processes) while the others wait; inputs and ``run.dir`` must be visible to all ranks.
    """
    source = parse_specific(spec, manifest, train_split=train_split, eval_split=eval_split)
    if source.kind == "files":
        root = _on_rank0(lambda: _converted_root(spec, source.files, manifest, run_dir,
                                                 workers))
        if not os.path.isfile(os.path.join(root, MANIFEST_NAME)):
            raise ConfigError(f"{KEY}={spec!r}: {root}, converted by global rank 0, is not "
                              "visible on this rank: run.dir must be on a shared file system")
        data = DomainData(Manifest.load(root), CONVERTED_SPLIT)
        what = (f"{len(source.files)} file(s) of {spec!r}, converted to {root} "
                f"({int(data.num_sequences.sum())} sequences)")
        specific = SpecificSet(data, None, what, shares_domains=False)
    else:
        data = DomainData(manifest, source.split)
        if source.domain is None:
            what = (f"split {source.split!r} of {manifest.root} "
                    f"({int(np.count_nonzero(data.num_sequences))} domains, "
                    f"{int(data.num_sequences.sum())} sequences)")
        else:
            what = (f"domain {manifest.domain_names[source.domain]!r} of split "
                    f"{source.split!r} of {manifest.root} "
                    f"({int(data.num_sequences[source.domain])} sequences)")
        specific = SpecificSet(data, source.domain, what)
    log.info("specific set: %s", specific.description)
    return specific


def _on_rank0(fn):
    """``fn()`` on global rank 0, its result (or failure) broadcast to every rank."""
    distributed = dist.is_available() and dist.is_initialized()
    rank = dist.get_rank() if distributed else 0
    outcome: list = [None, None]  # [result, error message]
    failure: BaseException | None = None
    if rank == 0:
        try:
            outcome[0] = fn()
        except Exception as exc:  # noqa: BLE001 - re-raised below, after the other ranks know
            if not distributed:
                raise
            failure, outcome[1] = exc, f"{type(exc).__name__}: {exc}"
    if distributed:
        # Doubles as the barrier; a failure on rank 0 reaches every rank instead of a hang.
        dist.broadcast_object_list(outcome, src=0)
    if failure is not None:
        raise failure
    if outcome[1] is not None:
        raise RuntimeError(f"global rank 0 could not prepare {KEY}: {outcome[1]}")
    return outcome[0]


def cache_key(files: tuple[str, ...], manifest: Manifest) -> tuple[str, dict]:
    """(key, what it hashes): the inputs' paths, sizes and mtimes, the tokenizer, seq_len."""
    stats = [os.stat(f) for f in files]
    material = {"format": CACHE_FORMAT,
                "files": [[f, s.st_size, s.st_mtime_ns] for f, s in zip(files, stats)],
                "tokenizer_sha256": manifest.tokenizer.get("sha256", ""),
                "seq_len": manifest.seq_len}
    blob = json.dumps(material, sort_keys=True).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16], material


def _converted_root(spec: str, files: tuple[str, ...], manifest: Manifest, run_dir: str,
                    workers: int) -> str:
    """The cached MDS root of ``files`` under ``run_dir``, converted first if missing."""
    key, material = cache_key(files, manifest)
    entry = os.path.join(os.path.abspath(run_dir), CACHE_DIR, key)
    root = os.path.join(entry, "data")
    if os.path.isfile(os.path.join(root, MANIFEST_NAME)):
        log.info("specific set: reusing %s", root)
        return root
    _check_tokenizer(spec, manifest)
    log.info("specific set: converting %d file(s) of %r into %s", len(files), spec, root)
    # The whole entry appears at once: a crash leaves no half-converted cache behind.
    with atomic_output_dir(entry, overwrite=True) as tmp:
        out = os.path.join(tmp, "data")
        conv = ConvertConfig(seq_len=manifest.seq_len, workers=workers,
                             single_domain=CONVERTED_DOMAIN)
        try:
            convert_corpus({CONVERTED_SPLIT: list(files)}, manifest.tokenizer_path, out, conv)
        except ConversionError as err:
            raise ConfigError(f"{KEY}={spec!r}: {err}") from err
        _check_not_empty(spec, Manifest.load(out))
        atomic_write_json(os.path.join(tmp, "source.json"), {**material, "spec": spec})
    return root


def _check_tokenizer(spec: str, manifest: Manifest) -> None:
    expected = manifest.tokenizer.get("sha256")
    actual = Tokenizer(manifest.tokenizer_path).sha256
    if expected and actual != expected:
        raise ConfigError(f"{KEY}={spec!r}: the tokenizer {manifest.tokenizer_path} has sha256 "
                          f"{actual[:12]}…, but {manifest.root}'s manifest.json records "
                          f"{expected[:12]}…: the data root's tokenizer was replaced")


def _check_not_empty(spec: str, converted: Manifest) -> None:
    if converted.num_sequences(CONVERTED_SPLIT).sum() > 0:
        return
    counts = converted.domains[0].splits[CONVERTED_SPLIT]
    raise ConfigError(f"{KEY}={spec!r}: its {counts['documents']} document(s) hold "
                      f"{counts['tokens']} tokens (EOS included), fewer than one sequence of "
                      f"seq_len + 1 = {converted.seq_len + 1}; give it more text")
