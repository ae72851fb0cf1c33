"""Mixture files (DESIGN.md Contract 2): static weights or Dirichlet concentrations, as JSON.

``{"format": "draw-mixture/v1", "domains": [...], "kind": "static" | "dirichlet",
"weights" | "concentration": [...], "stats": {"mean", "var"}, "provenance": {...}}``.
Loading checks the names against the data's domains (order may differ; it is normalised
to the data's order) and the numbers (weights on the simplex, concentrations > 0, finite).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from draw_megatron.utils.fs import atomic_write_json

MIXTURE_FORMAT = "draw-mixture/v1"
SIMPLEX_TOL = 1e-6
_VALUE_KEY = {"static": "weights", "dirichlet": "concentration"}


class MixtureFileError(ValueError):
    """A mixture file that does not fit the data or breaks Contract 2."""


@dataclass
class MixtureSpec:
    kind: str
    """"static" (fixed weights on the simplex) or "dirichlet" (concentrations)."""
    domains: list[str]
    values: np.ndarray
    """Weights for "static", concentrations for "dirichlet", in ``domains`` order."""
    stats: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=np.float64)
        if self.kind not in _VALUE_KEY:
            raise MixtureFileError(f"kind must be 'static' or 'dirichlet', got {self.kind!r}")
        if self.values.shape != (len(self.domains),):
            raise MixtureFileError(f"{len(self.domains)} domains but {self.values.size} "
                                   f"{_VALUE_KEY[self.kind]}")
        check_values(self.kind, self.values, self.domains)

    def to_dict(self) -> dict:
        out = {"format": MIXTURE_FORMAT, "domains": list(self.domains), "kind": self.kind,
               _VALUE_KEY[self.kind]: [float(v) for v in self.values]}
        if self.stats:
            out["stats"] = {k: [float(v) for v in vals] for k, vals in self.stats.items()}
        out["provenance"] = self.provenance
        return out

    def save(self, path: str) -> None:
        atomic_write_json(path, self.to_dict())

    def reorder(self, names: Sequence[str], where: str = "mixture") -> MixtureSpec:
        """The same mixture in the order of ``names``; an error names any mismatch."""
        missing = [n for n in names if n not in self.domains]
        extra = [n for n in self.domains if n not in set(names)]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing domain(s) {missing}")
            if extra:
                parts.append(f"unknown domain(s) {extra}")
            raise MixtureFileError(f"{where} does not match the data: " + "; ".join(parts))
        index = [self.domains.index(n) for n in names]
        stats = {k: [v[i] for i in index] for k, v in self.stats.items()}
        return MixtureSpec(self.kind, list(names), self.values[index], stats, self.provenance)


def check_values(kind: str, values: np.ndarray, domains: Sequence[str]) -> None:
    """Raise MixtureFileError naming the first domain whose value breaks the contract."""
    for name, v in zip(domains, values):
        if not math.isfinite(v):
            raise MixtureFileError(f"{_VALUE_KEY[kind]} of {name!r} is {v}, not finite")
        if kind == "dirichlet" and v <= 0:
            raise MixtureFileError(f"concentration of {name!r} is {v}; it must be > 0")
        if kind == "static" and v < 0:
            raise MixtureFileError(f"weight of {name!r} is {v}; weights must be >= 0")
    if kind == "static" and abs(values.sum() - 1.0) > SIMPLEX_TOL:
        raise MixtureFileError(f"weights sum to {values.sum():.9g}, not 1 (tolerance "
                               f"{SIMPLEX_TOL}): they are not on the simplex")


def load_mixture(path: str, domain_names: Sequence[str] | None = None) -> MixtureSpec:
    """Read and validate a mixture file, reordered to ``domain_names`` when given."""
    try:
        with open(path, encoding="utf-8") as fh:
            raw = json.load(fh)
    except FileNotFoundError:
        raise MixtureFileError(f"mixture file {path!r} does not exist") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise MixtureFileError(f"cannot read mixture file {path!r}: {exc}") from exc
    if not isinstance(raw, dict):
        raise MixtureFileError(f"{path}: top level must be a JSON object")
    for key in ("format", "domains", "kind"):
        if key not in raw:
            raise MixtureFileError(f"{path}: missing required key {key!r}")
    if raw["format"] != MIXTURE_FORMAT:
        raise MixtureFileError(f"{path}: format is {raw['format']!r}, expected {MIXTURE_FORMAT!r}")
    kind = raw["kind"]
    if kind not in _VALUE_KEY:
        raise MixtureFileError(f"{path}: kind must be 'static' or 'dirichlet', got {kind!r}")
    key = _VALUE_KEY[kind]
    if key not in raw:
        raise MixtureFileError(f"{path}: kind {kind!r} needs key {key!r}")
    domains = raw["domains"]
    if not isinstance(domains, list) or not all(isinstance(d, str) for d in domains):
        raise MixtureFileError(f"{path}: 'domains' must be a list of names")
    if len(set(domains)) != len(domains):
        raise MixtureFileError(f"{path}: duplicate domain names")
    try:
        values = np.asarray(raw[key], dtype=np.float64)
    except (TypeError, ValueError):
        raise MixtureFileError(f"{path}: {key!r} must be a list of numbers") from None
    try:
        spec = MixtureSpec(kind, domains, values, raw.get("stats") or {},
                           raw.get("provenance") or {})
    except MixtureFileError as exc:
        raise MixtureFileError(f"{path}: {exc}") from None
    return spec.reorder(domain_names, where=path) if domain_names is not None else spec
