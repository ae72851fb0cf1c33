"""The data root's manifest.json (DESIGN.md Contract 1): what the converter wrote, validated."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np

MANIFEST_FORMAT = "draw-data/v1"
MANIFEST_NAME = "manifest.json"


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

    @classmethod
    def load(cls, root: str) -> Manifest:
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
    def from_dict(cls, raw: dict, root: str) -> Manifest:
        where = os.path.join(root, MANIFEST_NAME)
        if raw.get("format") != MANIFEST_FORMAT:
            raise ManifestError(f"{where}: format is {raw.get('format')!r}, "
                                f"expected {MANIFEST_FORMAT!r}")
        for key in ("seq_len", "dtype", "tokenizer", "splits", "domains"):
            if key not in raw:
                raise ManifestError(f"{where}: missing key {key!r}")
        domains = tuple(
            DomainInfo(name=d["name"], slug=d["slug"], epochs=float(d["epochs"]),
                       splits=d["splits"])
            for d in raw["domains"]
        )
        if not domains:
            raise ManifestError(f"{where}: no domains")
        names = [d.name for d in domains]
        if len(set(names)) != len(names):
            raise ManifestError(f"{where}: duplicate domain names")
        return cls(root=os.path.abspath(root), seq_len=int(raw["seq_len"]), dtype=raw["dtype"],
                   tokenizer=raw["tokenizer"], splits=tuple(raw["splits"]), domains=domains)

    @property
    def domain_names(self) -> list[str]:
        return [d.name for d in self.domains]

    @property
    def num_domains(self) -> int:
        return len(self.domains)

    @property
    def tokenizer_path(self) -> str:
        return os.path.join(self.root, self.tokenizer["path"])

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
        return os.path.join(self.root, split, self.domains[index].slug)


def natural_weights(sequences: list[int], epochs: list[float]) -> list[float]:
    """sequences x epochs, normalised; all zeros when there is no sequence at all."""
    mass = [s * e for s, e in zip(sequences, epochs)]
    total = sum(mass)
    return [m / total if total > 0 else 0.0 for m in mass]
