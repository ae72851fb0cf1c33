"""The data root's manifest.json (docs/architecture.md, Contract 1): what the converter wrote,
validated.

A data root is a local folder or a URL of object storage (``s3://bucket/prefix``). A remote
root is read through a local cache folder: its manifest is downloaded at every load, and
the tokenizer and shards are kept under ``<cache_dir>/<key>/``, where the key hashes the
root and the manifest's bytes, so a re-converted dataset never reads stale cached shards.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from draw_megatron.data import remote

if TYPE_CHECKING:
    from draw_megatron.config.run import DataConfig

MANIFEST_FORMAT = "draw-data/v1"
MANIFEST_NAME = "manifest.json"
INDEX_NAME = "index.json"  # the MDS library's index of one dataset's shards
SHARD_HASH = "xxh64"  # recorded for every shard in index.json (raw_data.hashes), the library's name


class ManifestError(ValueError):
    """A manifest that is missing, unreadable or inconsistent."""


@dataclass(frozen=True)
class DomainInfo:
    name: str
    """Display name, as in The Pile's ``pile_set_name`` (e.g. "Wikipedia (en)")."""
    slug: str
    """Folder name of the domain under each split."""
    epochs: float
    """Epochs per pass over the data, used in the natural weights (DRAW App. E.4)."""
    splits: dict
    """Per split: documents, tokens, sequences, dropped_tokens, natural_weight."""


@dataclass(frozen=True)
class Manifest:
    root: str
    seq_len: int
    dtype: str
    tokenizer: dict
    splits: tuple[str, ...]
    domains: tuple[DomainInfo, ...]
    local_root: str = ""
    """Local folder of the tokenizer and the shards: the root itself, or for a remote root
    its folder in the cache ("" means the root)."""
    cache_limit: int | str | None = None
    """Remote roots: the most bytes of shards each split's dataset keeps in the cache (the
    MDS library's ``cache_limit``, e.g. "20gb"); None: no limit."""

    @classmethod
    def load(cls, root: str, cache_dir: str | None = None,
             cache_limit: int | str | None = None) -> Manifest:
        """The manifest of ``root``; a remote root needs ``cache_dir`` (its local cache)."""
        if remote.is_remote(root):
            return cls._load_remote(root, cache_dir, cache_limit)
        path = os.path.join(root, MANIFEST_NAME)
        if not os.path.isfile(path):
            raise ManifestError(f"no {MANIFEST_NAME} under data root {root!r}: convert the "
                                "corpus with tools/convert_pile.py first")
        try:
            with open(path, encoding="utf-8") as fh:
                raw = json.load(fh)
        except (OSError, json.JSONDecodeError) as exc:
            raise ManifestError(f"cannot read {path}: {exc}") from exc
        return cls.from_dict(raw, root)

    @classmethod
    def from_config(cls, data: DataConfig) -> Manifest:
        """The manifest of a ``data`` config section (root, cache_dir, cache_limit)."""
        return cls.load(data.root, cache_dir=data.cache_dir, cache_limit=data.cache_limit)

    @classmethod
    def _load_remote(cls, root: str, cache_dir: str | None,
                     cache_limit: int | str | None) -> Manifest:
        if not cache_dir:
            raise ManifestError(f"data root {root!r} is remote: give a local cache folder "
                                "(data.cache_dir)")
        url = remote.join(root, MANIFEST_NAME)
        try:
            data = remote.read_bytes(url)
        except remote.RemoteError as exc:
            hint = (": convert the corpus with tools/convert_pile.py --out "
                    f"{root} first" if exc.missing else "")
            raise ManifestError(f"{exc}{hint}") from None
        try:
            raw = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ManifestError(f"cannot read {url}: {exc}") from None
        key = hashlib.sha256(root.rstrip("/").encode() + b"\n" + data).hexdigest()[:16]
        local_root = os.path.join(os.path.abspath(cache_dir), key)
        return cls.from_dict(raw, root, local_root=local_root, cache_limit=cache_limit)

    @classmethod
    def from_dict(cls, raw: dict, root: str, local_root: str = "",
                  cache_limit: int | str | None = None) -> Manifest:
        where = remote.join(root, MANIFEST_NAME)
        if raw.get("format") != MANIFEST_FORMAT:
            raise ManifestError(f"{where}: format is {raw.get('format')!r}, "
                                f"expected {MANIFEST_FORMAT!r}")
        for key in ("seq_len", "dtype", "tokenizer", "splits", "domains"):
            if key not in raw:
                raise ManifestError(f"{where}: missing key {key!r}")
        domains = tuple(_domain(d, i, where) for i, d in enumerate(raw["domains"]))
        if not domains:
            raise ManifestError(f"{where}: no domains")
        for attr in ("name", "slug"):
            values = [getattr(d, attr) for d in domains]
            repeated = sorted({v for v in values if values.count(v) > 1})
            if repeated:
                raise ManifestError(f"{where}: duplicate domain {attr}s {repeated}")
        if not remote.is_remote(root):
            root = os.path.abspath(root)
        return cls(root=root, seq_len=int(raw["seq_len"]), dtype=raw["dtype"],
                   tokenizer=raw["tokenizer"], splits=tuple(raw["splits"]), domains=domains,
                   local_root=local_root or root, cache_limit=cache_limit)

    @property
    def is_remote(self) -> bool:
        return remote.is_remote(self.root)

    @property
    def domain_names(self) -> list[str]:
        return [d.name for d in self.domains]

    @property
    def num_domains(self) -> int:
        return len(self.domains)

    @property
    def tokenizer_path(self) -> str:
        """A local file; for a remote root its copy in the cache, downloaded on first use."""
        local = os.path.join(self.local_root, self.tokenizer["path"])
        if self.is_remote and not os.path.isfile(local):
            try:
                remote.download(remote.join(self.root, self.tokenizer["path"]), local)
            except remote.RemoteError as exc:
                raise ManifestError(str(exc)) from None
        return local

    @property
    def eos_id(self) -> int:
        return int(self.tokenizer["eos_id"])

    @property
    def vocab_size(self) -> int:
        return int(self.tokenizer["vocab_size"])

    def check_split(self, split: str) -> None:
        if split not in self.splits:
            raise ManifestError(f"split {split!r} is not in the data at {self.root} "
                                f"(it has {', '.join(self.splits)})")

    def num_sequences(self, split: str) -> np.ndarray:
        """Sequences per domain in ``split``, in manifest order (0 where a domain is absent)."""
        self.check_split(split)
        return np.array([d.splits.get(split, {}).get("sequences", 0) for d in self.domains],
                        dtype=np.int64)

    def natural_weights(self, split: str = "train") -> np.ndarray:
        """Sequence counts x epochs, normalised (DRAW App. E.4)."""
        self.check_split(split)
        return np.array([d.splits.get(split, {}).get("natural_weight", 0.0)
                         for d in self.domains], dtype=np.float64)

    def domain_dir(self, split: str, index: int) -> str:
        """The local folder of a domain's shards (for a remote root, its cache folder)."""
        return os.path.join(self.local_root, split, self.domains[index].slug)

    def domain_remote(self, split: str, index: int) -> str | None:
        """The URL of a domain's shards, or None for a local root."""
        if not self.is_remote:
            return None
        return remote.join(self.root, split, self.domains[index].slug)


_SLUG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")


def _domain(raw: object, index: int, where: str) -> DomainInfo:
    """One manifest domain, checked: a hand-edited manifest must not send reads outside the
    data root (a slug is one plain path component) or carry impossible numbers."""
    if not isinstance(raw, dict):
        raise ManifestError(f"{where}: domains[{index}] is not an object")
    missing = [k for k in ("name", "slug", "epochs", "splits") if k not in raw]
    if missing:
        raise ManifestError(f"{where}: domains[{index}] lacks {missing}")
    name, slug = raw["name"], raw["slug"]
    if not isinstance(slug, str) or not _SLUG.match(slug) or slug in (".", ".."):
        raise ManifestError(f"{where}: domain {name!r} has slug {slug!r}: a slug must be one "
                            "plain folder name (letters, digits, '.', '_', '-'), never a path "
                            "that leaves the data root")
    try:
        epochs = float(raw["epochs"])
    except (TypeError, ValueError):
        epochs = float("nan")
    if not (math.isfinite(epochs) and epochs > 0):
        raise ManifestError(f"{where}: domain {name!r} has epochs {raw['epochs']!r}; it must be "
                            "a finite number > 0")
    for split, counts in (raw["splits"] or {}).items():
        weight = counts.get("natural_weight", 0.0) if isinstance(counts, dict) else None
        if not isinstance(weight, (int, float)) or not (math.isfinite(weight) and weight >= 0):
            raise ManifestError(f"{where}: domain {name!r}, split {split!r}: natural_weight "
                                f"{weight!r} must be a finite number >= 0")
    return DomainInfo(name=name, slug=slug, epochs=epochs, splits=raw["splits"])


def natural_weights(sequences: list[int], epochs: list[float]) -> list[float]:
    """sequences x epochs, normalised; all zeros when there is no sequence at all."""
    mass = [s * e for s, e in zip(sequences, epochs)]
    total = sum(mass)
    return [m / total if total > 0 else 0.0 for m in mass]
