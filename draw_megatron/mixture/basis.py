"""Basis files for DGA distribution reweighting (DGA paper Eq. 9; docs/architecture.md, Contract 2).

``{"format": "draw-basis/v1", "domains": [k names], "bases": [{"name": ..., "weights": [k]},
...], "provenance": {...}}``. Each basis p_j is a distribution over the k fine-grained
domains (an importance-sampling histogram, Eq. 4); DGA learns α_dist ∈ Δ^N over the N bases
and draws batches from mix(P α_dist), P = [p_1 … p_N] ∈ R^{k×N}.

Loading checks what a mixture file's loader checks (docs/architecture.md, Contract 2): the set of domain
names equals the data's (order is normalised to the data's), every basis on the simplex.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from draw_megatron.mixture.files import (MixtureFileError, check_names, check_values,
                                         match_domains, read_json_file)
from draw_megatron.utils.fs import atomic_write_json

BASIS_FORMAT = "draw-basis/v1"


@dataclass
class BasisSpec:
    domains: list[str]
    """The k fine-grained domain (cluster) names, in the order of the weights' columns."""
    names: list[str]
    """The N basis names (distinct), e.g. the basis sets' Pile domains."""
    weights: np.ndarray
    """[N, k]: row j is basis p_j on the simplex over ``domains``."""
    provenance: dict = field(default_factory=dict)
    """How the bases were made (clusters file, basis sets, specific set, ...)."""

    def __post_init__(self) -> None:
        self.weights = np.asarray(self.weights, dtype=np.float64)
        check_names(list(self.domains), "'domains'")
        check_names(list(self.names), "basis names")
        if not self.names:
            raise MixtureFileError("no bases: a basis file needs at least one")
        if self.weights.shape != (len(self.names), len(self.domains)):
            raise MixtureFileError(f"weights have shape {self.weights.shape}, expected "
                                   f"[N={len(self.names)}, k={len(self.domains)}]")
        for name, row in zip(self.names, self.weights):
            try:
                check_values("static", row, self.domains)
            except MixtureFileError as exc:
                raise MixtureFileError(f"basis {name!r}: {exc}") from None

    @property
    def num_bases(self) -> int:
        return len(self.names)

    @property
    def matrix(self) -> np.ndarray:
        """P ∈ R^{k×N}: column j is basis p_j (Eq. 9: α_domain = P α_dist)."""
        return self.weights.T

    def to_dict(self) -> dict:
        return {"format": BASIS_FORMAT, "domains": list(self.domains),
                "bases": [{"name": n, "weights": [float(v) for v in row]}
                          for n, row in zip(self.names, self.weights)],
                "provenance": self.provenance}

    def save(self, path: str) -> None:
        atomic_write_json(path, self.to_dict())

    def reorder(self, domain_names: Sequence[str], where: str = "basis") -> BasisSpec:
        """The same bases with columns in the order of ``domain_names`` (the data's)."""
        index = match_domains(self.domains, domain_names, where)
        return BasisSpec(list(domain_names), list(self.names), self.weights[:, index],
                         self.provenance)


def load_basis(path: str, domain_names: Sequence[str] | None = None) -> BasisSpec:
    """Read and validate a basis file; columns reordered to ``domain_names`` when given.

    ``domain_names`` are the data manifest's names in manifest order. Every problem raises
    MixtureFileError naming the file.
    """
    raw = read_json_file(path, "basis file", BASIS_FORMAT, ("format", "domains", "bases"))
    domains = check_names(raw["domains"], f"{path}: 'domains'")
    bases = raw["bases"]
    if not isinstance(bases, list) or not bases:
        raise MixtureFileError(f"{path}: 'bases' must be a non-empty list of "
                               "{'name': ..., 'weights': [...]} objects")
    names, rows = [], []
    for j, basis in enumerate(bases):
        if not isinstance(basis, dict) or "name" not in basis or "weights" not in basis:
            raise MixtureFileError(f"{path}: basis #{j} must be an object with keys 'name' "
                                   "and 'weights'")
        name, weights = basis["name"], basis["weights"]
        if not isinstance(weights, list) or len(weights) != len(domains):
            size = len(weights) if isinstance(weights, list) else type(weights).__name__
            raise MixtureFileError(f"{path}: basis {name!r} has {size} weights but the file "
                                   f"has k={len(domains)} domains")
        try:
            rows.append(np.asarray(weights, dtype=np.float64))
        except (TypeError, ValueError):
            raise MixtureFileError(f"{path}: weights of basis {name!r} must be numbers") from None
        names.append(name)
    if not all(isinstance(n, str) for n in names):
        raise MixtureFileError(f"{path}: basis names must be strings")
    provenance = raw.get("provenance") or {}
    try:
        spec = BasisSpec(domains, names, np.stack(rows), provenance)
    except MixtureFileError as exc:
        raise MixtureFileError(f"{path}: {exc}") from None
    return spec.reorder(domain_names, where=path) if domain_names is not None else spec
