"""Mixture files (docs/architecture.md, Contract 2): static weights or Dirichlet concentrations, as JSON.

``{"format": "draw-mixture/v1", "domains": [...], "kind": "static" | "dirichlet",
"weights" | "concentration": [...], "stats": {"mean", "var"}, "provenance": {...}}``.
Kind ``hierarchical_dirichlet`` (groups of domains, two levels of concentrations) is read by
draw_megatron/mixture/hierarchical.py, to which :func:`load_mixture` hands such a file.
Loading checks the names against the data's domains (order may differ; it is normalised
to the data's order) and the numbers (weights on the simplex, concentrations > 0, finite).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from draw_megatron.utils.fs import atomic_write_json

if TYPE_CHECKING:
    from draw_megatron.mixture.hierarchical import HierarchicalDirichlet

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
        return {"format": MIXTURE_FORMAT, "domains": list(self.domains), "kind": self.kind,
                _VALUE_KEY[self.kind]: [float(v) for v in self.values],
                **stats_and_provenance(self.stats, self.provenance)}

    def save(self, path: str) -> None:
        atomic_write_json(path, self.to_dict())

    def reorder(self, names: Sequence[str], where: str = "mixture") -> MixtureSpec:
        """The same mixture in the order of ``names``; an error names any mismatch."""
        index = match_domains(self.domains, names, where)
        return MixtureSpec(self.kind, list(names), self.values[index],
                           reorder_stats(self.stats, index), self.provenance)


def stats_and_provenance(stats: dict, provenance: dict) -> dict:
    """The entries a mixture file ends with: ``stats`` (when any), ``provenance``."""
    out = {}
    if stats:
        out["stats"] = {k: [float(v) for v in vals] for k, vals in stats.items()}
    out["provenance"] = provenance
    return out


def reorder_stats(stats: dict, index: Sequence[int]) -> dict:
    """Per-domain ``stats`` lists taken in the order ``index``."""
    return {k: [v[i] for i in index] for k, v in stats.items()}


MAX_NAMES_SHOWN = 5


def match_domains(file_names: Sequence[str], data_names: Sequence[str],
                  where: str = "mixture") -> list[int]:
    """Position in ``file_names`` of each of ``data_names``, in data order.

    The two sets of names must be equal; otherwise MixtureFileError says how many each side
    has and names the first few missing and unknown ones. Shared by mixture and basis files.
    """
    file_set, data_set = set(file_names), set(data_names)
    missing = [n for n in data_names if n not in file_set]
    extra = [n for n in file_names if n not in data_set]
    if missing or extra:
        parts = []
        if len(file_names) != len(data_names):
            parts.append(f"it has k={len(file_names)} domains but the data has {len(data_names)}")
        if missing:
            parts.append(f"missing domain(s) {_first_names(missing)}")
        if extra:
            parts.append(f"unknown domain(s) {_first_names(extra)}")
        raise MixtureFileError(f"{where} does not match the data: " + "; ".join(parts))
    position = {n: i for i, n in enumerate(file_names)}
    return [position[n] for n in data_names]


def _first_names(names: list[str]) -> str:
    shown = repr(names[:MAX_NAMES_SHOWN])
    more = len(names) - MAX_NAMES_SHOWN
    return shown + (f" and {more} more" if more > 0 else "")


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


def read_json_file(path: str, what: str, file_format: str, required: Sequence[str]) -> dict:
    """The JSON object in ``path``, with its format string and required keys checked."""
    try:
        with open(path, encoding="utf-8") as fh:
            raw = json.load(fh)
    except FileNotFoundError:
        raise MixtureFileError(f"{what} {path!r} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MixtureFileError(f"cannot read {what} {path!r}: {exc}") from exc
    if not isinstance(raw, dict):
        raise MixtureFileError(f"{path}: top level must be a JSON object")
    for key in required:
        if key not in raw:
            raise MixtureFileError(f"{path}: missing required key {key!r}")
    if raw["format"] != file_format:
        raise MixtureFileError(f"{path}: format is {raw['format']!r}, expected {file_format!r}")
    return raw


def check_names(names: object, where: str) -> list[str]:
    """``names`` as a list of distinct strings, or MixtureFileError naming the first repeat."""
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise MixtureFileError(f"{where} must be a list of names")
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise MixtureFileError(f"{where}: duplicate name {name!r}")
        seen.add(name)
    return names


def load_mixture(path: str, domain_names: Sequence[str] | None = None
                 ) -> MixtureSpec | HierarchicalDirichlet:
    """Read and validate a mixture file, reordered to ``domain_names`` when given.

    A ``hierarchical_dirichlet`` file comes back as a HierarchicalDirichlet; callers that
    take one kind only check ``.kind`` (every result has it).
    """
    raw = read_json_file(path, "mixture file", MIXTURE_FORMAT, ("format", "domains", "kind"))
    kind = raw["kind"]
    if kind == "hierarchical_dirichlet":
        # Imported here: hierarchical.py builds on this module's checks.
        from draw_megatron.mixture.hierarchical import hierarchical_from_dict

        return hierarchical_from_dict(raw, path, domain_names)
    if kind not in _VALUE_KEY:
        raise MixtureFileError(f"{path}: kind must be 'static', 'dirichlet' or "
                               f"'hierarchical_dirichlet', got {kind!r}")
    key = _VALUE_KEY[kind]
    if key not in raw:
        raise MixtureFileError(f"{path}: kind {kind!r} needs key {key!r}")
    domains = check_names(raw["domains"], f"{path}: 'domains'")
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
