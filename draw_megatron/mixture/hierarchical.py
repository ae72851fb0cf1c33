"""Hierarchical Dirichlet priors for DRAW: source groups → domains (docs/algorithms.md §7).

Pure numpy. Domains are partitioned into G groups (e.g. code, web, academic; read from a
``draw-groups/v1`` file). The mixture is drawn in two levels, independently:

    w ~ Dir(γ)                  group weights over the G groups
    v_g ~ Dir(β_g)              within group g, weights over its |g| domains
    α_i = w_g(i) · v_g(i),i     the domain weight; α lies on the simplex

The flat Dir(β) is the special case γ_g = Σ_{i∈g} β_i (the Dirichlet's aggregation
property); the hierarchy frees how sure we are of the split between groups from how sure we
are of each group's inner split.

Prior, posterior and scaling, level by level (flat DRAW: docs/algorithms.md §1.1–1.4):

    γ1 = (√n1/G)·1,  β_g1 = (√n1/|g|)·1       every level carries √n1 pseudo-counts
    A_g = Σ_{i∈g} α*_i                          the proxy's mass on group g
    γ1_new = γ1 + s·A                           group level sees A as s pseudo-counts
    β_g1_new = β_g1 + s·α*_g / A_g              group g's level sees α*'s split of g
                                                (no evidence when A_g = 0)
    γ2 = √(n2/n1)·γ1_new,  β_g2 = √(n2/n1)·β_g1_new

Why this rule: α* factorises uniquely into the group masses A (a point of the G-simplex) and
each group's composition α*_g/A_g (a point of the |g|-simplex). Each level is a Dirichlet
of its own and each factor is one observation of that level, worth s pseudo-counts, so the
prior : evidence ratio is √n1 : s at every level, exactly as in flat DRAW. (The strict
multinomial-conjugate update would add s·α*_i to β_g, leaving a group with little proxy mass
almost no evidence about its composition; the prior gives every group √n1 pseudo-counts
whatever its mass, and the evidence follows the same convention.) With one group, A = 1 and
every formula is flat DRAW's: prior (√n1/k)·1, posterior β1 + s·α*, the same draws.

Moments of α are exact in closed form, since w and v are independent (E[α_i] = E[w_g]E[v_i],
E[α_i α_j] = E[w_g w_h]E[v_i v_j]); only quantiles are Monte Carlo, and
:class:`AlphaSummary` says which numbers are which.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from draw_megatron.mixture.draw import _check_evidence, _check_width, check_simplex
from draw_megatron.mixture.files import (MIXTURE_FORMAT, MixtureFileError, check_names,
                                         check_values, match_domains, read_json_file,
                                         reorder_stats, stats_and_provenance)
from draw_megatron.mixture.schedule import DIRICHLET_STREAM, Broadcast, DirichletSchedule
from draw_megatron.utils.fs import atomic_write_json

GROUPS_FORMAT = "draw-groups/v1"
HIERARCHICAL_KIND = "hierarchical_dirichlet"


class GroupsFileError(MixtureFileError):
    """Groups that do not partition the data's domains (a groups file or a mixture file)."""


# --------------------------------------------------------------------------- groups


@dataclass(frozen=True, eq=False)
class DomainGroups:
    """A partition of the domains into named groups."""

    names: tuple[str, ...]
    """Group names, in the order the groups are drawn and reported."""
    domains: tuple[str, ...]
    """Domain names, in the data's (manifest) order."""
    group_of: np.ndarray
    """(k,) int: the group index of each domain."""

    def __post_init__(self) -> None:
        group_of = np.asarray(self.group_of, dtype=np.int64)
        object.__setattr__(self, "group_of", group_of)
        if group_of.shape != (len(self.domains),) or np.any(group_of < 0) \
                or np.any(group_of >= len(self.names)):
            raise GroupsFileError(f"group_of must give each of the {len(self.domains)} domains "
                                  f"a group index in [0, {len(self.names)})")
        empty = [n for n, size in zip(self.names, self.sizes()) if size == 0]
        if empty:
            raise GroupsFileError(f"group(s) {empty} have no domains")

    @property
    def num_groups(self) -> int:
        return len(self.names)

    @property
    def num_domains(self) -> int:
        return len(self.domains)

    def members(self, g: int) -> np.ndarray:
        """Indices of group g's domains, ascending (so in the data's order)."""
        return np.flatnonzero(self.group_of == g)

    def sizes(self) -> np.ndarray:
        """(G,) the number of domains in each group."""
        return np.bincount(self.group_of, minlength=self.num_groups)


def groups_from_mapping(mapping: dict, domain_names: Sequence[str], where: str) -> DomainGroups:
    """Check that ``mapping`` (group name → domain names) partitions ``domain_names``.

    Groups keep the mapping's order. Raises GroupsFileError for an empty group, an unknown
    domain (suggesting a close name), a domain listed twice, or a domain in no group.
    """
    if not isinstance(mapping, dict) or not mapping:
        raise GroupsFileError(f"{where}: 'groups' must be a non-empty object of "
                              "group name → list of domain names")
    position = {name: i for i, name in enumerate(domain_names)}
    group_of = np.full(len(domain_names), -1, dtype=np.int64)
    for g, (group, members) in enumerate(mapping.items()):
        if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
            raise GroupsFileError(f"{where}: group {group!r} must be a list of domain names")
        if not members:
            raise GroupsFileError(f"{where}: group {group!r} is empty")
        for name in members:
            if name not in position:
                raise GroupsFileError(f"{where}: group {group!r} names unknown domain "
                                      f"{name!r}{_suggestion(name, domain_names)}")
            first = group_of[position[name]]
            if first >= 0:
                raise GroupsFileError(_twice(where, name, list(mapping)[first], group))
            group_of[position[name]] = g
    orphans = [n for n, g in zip(domain_names, group_of) if g < 0]
    if orphans:
        raise GroupsFileError(f"{where}: domain(s) {orphans} are in no group")
    return DomainGroups(tuple(mapping), tuple(domain_names), group_of)


def _suggestion(name: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else " (no domain of the data is close)"


def _twice(where: str, name: str, first: str, second: str) -> str:
    if first == second:
        return f"{where}: domain {name!r} is listed twice in group {first!r}"
    return f"{where}: domain {name!r} is in two groups, {first!r} and {second!r}"


def _no_duplicate_keys(pairs: list) -> dict:
    keys = [k for k, _ in pairs]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise GroupsFileError(f"key(s) {repeated} appear more than once")
    return dict(pairs)


def load_groups(path: str, domain_names: Sequence[str]) -> DomainGroups:
    """Read a ``draw-groups/v1`` file: ``{"format", "groups": {name: [domain, ...]}}``.

    Domains are named as in the data's manifest; the result follows the manifest's order
    (``domain_names``) and the file's order of groups. Errors are GroupsFileError, one line.
    """
    try:
        with open(path, encoding="utf-8") as fh:
            raw = json.load(fh, object_pairs_hook=_no_duplicate_keys)
    except FileNotFoundError:
        raise GroupsFileError(f"groups file {path!r} does not exist") from None
    except GroupsFileError as exc:
        raise GroupsFileError(f"{path}: {exc}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GroupsFileError(f"cannot read groups file {path!r}: {exc}") from None
    if not isinstance(raw, dict) or raw.get("format") != GROUPS_FORMAT:
        found = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
        raise GroupsFileError(f"{path}: not a groups file: format is {found!r}, expected "
                              f"{GROUPS_FORMAT!r}")
    if "groups" not in raw:
        raise GroupsFileError(f"{path}: missing required key 'groups'")
    return groups_from_mapping(raw["groups"], domain_names, path)


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True, eq=False)
class AlphaSummary:
    """Moments and quantiles of the domain weights α (and of the group weights w)."""

    mean: np.ndarray
    """E[α_i], exact."""
    var: np.ndarray
    """Var[α_i], exact."""
    cov: np.ndarray
    """(k, k) Cov[α_i, α_j], exact."""
    group_mean: np.ndarray
    """E[w_g], exact."""
    group_var: np.ndarray
    """Var[w_g], exact."""
    quantile_probs: tuple[float, ...]
    """The probabilities of ``quantiles``' rows."""
    quantiles: np.ndarray
    """(P, k) quantiles of each α_i, Monte Carlo."""
    num_draws: int
    """Monte Carlo draws behind ``quantiles``."""
    seed: int
    """Seed of those draws (np.random.default_rng)."""

    @property
    def method(self) -> dict[str, str]:
        """How each number was computed."""
        mc = f"Monte Carlo ({self.num_draws} draws, seed {self.seed})"
        return {"mean": "exact", "var": "exact", "cov": "exact", "group_mean": "exact",
                "group_var": "exact", "quantiles": mc}


@dataclass(frozen=True, eq=False)
class HierarchicalDirichlet:
    """Group weights w ~ Dir(γ), within-group weights v_g ~ Dir(β_g), α_i = w_g(i)·v_i.

    Also a mixture file of kind ``hierarchical_dirichlet`` (docs/architecture.md Contract 2):
    :meth:`save` and :func:`load_hierarchical`.
    """

    groups: DomainGroups
    """The partition of the domains."""
    group_concentration: np.ndarray
    """(G,) γ, in group order."""
    concentration: np.ndarray
    """(k,) β: each domain's concentration within its group, in domain order."""
    stats: dict = field(default_factory=dict)
    """Optional per-domain lists (mean, var) recorded in the file."""
    provenance: dict = field(default_factory=dict)
    """How the file was made."""

    kind = HIERARCHICAL_KIND

    def __post_init__(self) -> None:
        gamma = np.asarray(self.group_concentration, dtype=np.float64)
        beta = np.asarray(self.concentration, dtype=np.float64)
        object.__setattr__(self, "group_concentration", gamma)
        object.__setattr__(self, "concentration", beta)
        if gamma.shape != (self.groups.num_groups,):
            raise MixtureFileError(f"{self.groups.num_groups} groups but {gamma.size} group "
                                   "concentrations")
        if beta.shape != (self.groups.num_domains,):
            raise MixtureFileError(f"{self.groups.num_domains} domains but {beta.size} "
                                   "concentrations")
        check_values("dirichlet", beta, self.groups.domains)
        for name, value in zip(self.groups.names, gamma):
            if not (math.isfinite(value) and value > 0):
                raise MixtureFileError(f"group concentration of {name!r} is {value}; it must "
                                       "be finite and > 0")
        for key, values in self.stats.items():
            if not isinstance(values, list) or len(values) != beta.size:
                raise MixtureFileError(f"stats {key!r} must be a list of {beta.size} numbers")

    @property
    def domains(self) -> list[str]:
        return list(self.groups.domains)

    @property
    def num_domains(self) -> int:
        return self.groups.num_domains

    def group_concentrations(self) -> list[np.ndarray]:
        """β_g of each group, over its domains in domain order."""
        return [self.concentration[self.groups.members(g)] for g in range(self.groups.num_groups)]

    def with_concentrations(self, gamma: np.ndarray, beta: np.ndarray) -> HierarchicalDirichlet:
        """The same groups with new concentrations (no stats, no provenance)."""
        return HierarchicalDirichlet(self.groups, gamma, beta)

    # ---- sampling

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """(size, k) draws of α: every group's v_g in group order, then w.

        A Dirichlet over one component is the point 1, so a one-domain group (or a single
        group) takes no draw; with one group the generator sees exactly the flat
        ``rng.dirichlet(β, size)`` call.
        """
        within_NK = np.ones((size, self.num_domains))
        for g, beta_g in enumerate(self.group_concentrations()):
            if beta_g.size > 1:
                within_NK[:, self.groups.members(g)] = rng.dirichlet(beta_g, size)
        if self.groups.num_groups == 1:
            return within_NK
        w_NG = rng.dirichlet(self.group_concentration, size)
        return within_NK * w_NG[:, self.groups.group_of]

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        """One draw of α (the first row of :meth:`sample`)."""
        return self.sample(rng, 1)[0]

    # ---- moments

    def _levels(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per domain: E[w_g(i)], Var[w_g(i)], E[v_i], Var[v_i]."""
        gamma, beta, group_of = self.group_concentration, self.concentration, self.groups.group_of
        m_w, var_w = _dirichlet_mean_var(gamma)
        total_v = np.bincount(group_of, weights=beta)[group_of]
        m_v = beta / total_v
        var_v = beta * (total_v - beta) / (total_v**2 * (total_v + 1.0))
        return m_w[group_of], var_w[group_of], m_v, var_v

    def group_moments(self) -> tuple[np.ndarray, np.ndarray]:
        """(E[w_g], Var[w_g]) of the group weights, exact."""
        return _dirichlet_mean_var(self.group_concentration)

    def mean(self) -> np.ndarray:
        """E[α_i] = E[w_g]·E[v_i] (exact)."""
        m_w, _, m_v, _ = self._levels()
        return m_w * m_v

    def var(self) -> np.ndarray:
        """Var[α_i] = Var[w]Var[v] + Var[w]E[v]² + E[w]²Var[v] (exact; w, v independent).

        Every term is >= 0, so no cancellation; with one group Var[w] = 0 and this is the
        flat Dirichlet's variance.
        """
        m_w, var_w, m_v, var_v = self._levels()
        return var_w * var_v + var_w * m_v**2 + m_w**2 * var_v

    def cov(self) -> np.ndarray:
        """(k, k) Cov[α_i, α_j] = E[w_g w_h]·E[v_i v_j] − E[α_i]E[α_j] (exact).

        E[v_i v_j] = E[v_i]E[v_j] across groups (independent), the Dirichlet's second moment
        within one. The diagonal is :meth:`var`.
        """
        group_of = self.groups.group_of
        _, _, m_v, _ = self._levels()
        second_v = np.outer(m_v, m_v)
        for g, beta_g in enumerate(self.group_concentrations()):
            idx = self.groups.members(g)
            second_v[np.ix_(idx, idx)] = _dirichlet_second_moment(beta_g)
        second_w = _dirichlet_second_moment(self.group_concentration)[np.ix_(group_of, group_of)]
        mean = self.mean()
        cov = second_w * second_v - np.outer(mean, mean)
        np.fill_diagonal(cov, self.var())
        return cov

    def summary(self, probs: Sequence[float] = (0.05, 0.95), num_draws: int = 10_000,
                seed: int = 0) -> AlphaSummary:
        """Exact moments of α and w, and Monte Carlo quantiles of α."""
        if num_draws < 1:
            raise ValueError(f"the Monte Carlo needs >= 1 draw, got {num_draws}")
        samples_NK = self.sample(np.random.default_rng(seed), num_draws)
        m_w, var_w = self.group_moments()
        return AlphaSummary(self.mean(), self.var(), self.cov(), m_w, var_w, tuple(probs),
                            np.quantile(samples_NK, list(probs), axis=0), num_draws, seed)

    # ---- files

    def to_dict(self) -> dict:
        groups = [{"name": name, "domains": [self.groups.domains[i] for i in idx],
                   "concentration": [float(b) for b in beta_g]}
                  for name, idx, beta_g in zip(self.groups.names, map(self.groups.members,
                                               range(self.groups.num_groups)),
                                               self.group_concentrations())]
        return {"format": MIXTURE_FORMAT, "domains": self.domains, "kind": self.kind,
                "groups": groups,
                "group_concentration": [float(c) for c in self.group_concentration],
                **stats_and_provenance(self.stats, self.provenance)}

    def save(self, path: str) -> None:
        atomic_write_json(path, self.to_dict())

    def reorder(self, names: Sequence[str], where: str = "mixture") -> HierarchicalDirichlet:
        """The same mixture over the domains in the order of ``names``."""
        index = match_domains(self.domains, names, where)
        groups = DomainGroups(self.groups.names, tuple(names), self.groups.group_of[index])
        return HierarchicalDirichlet(groups, self.group_concentration, self.concentration[index],
                                     reorder_stats(self.stats, index), self.provenance)


def _dirichlet_mean_var(beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    total = beta.sum()
    return beta / total, beta * (total - beta) / (total**2 * (total + 1.0))


def _dirichlet_second_moment(beta: np.ndarray) -> np.ndarray:
    """E[x xᵀ] under Dir(β): (β βᵀ + diag β) / (S(S + 1))."""
    total = beta.sum()
    return (np.outer(beta, beta) + np.diag(beta)) / (total * (total + 1.0))


# --------------------------------------------------------------------------- DRAW per level


def hierarchical_prior(groups: DomainGroups, n1: float) -> HierarchicalDirichlet:
    """γ1 = (√n1/G)·1 and β_g1 = (√n1/|g|)·1: √n1 pseudo-counts at every level."""
    root_n1 = math.sqrt(_check_width("n1", n1))
    sizes = groups.sizes()
    return HierarchicalDirichlet(groups, np.full(groups.num_groups, root_n1 / groups.num_groups),
                                 root_n1 / sizes[groups.group_of])


def group_evidence(groups: DomainGroups, alpha_star) -> np.ndarray:
    """A_g = Σ_{i∈g} α*_i: the proxy's mass on each group."""
    alpha_star = check_simplex(alpha_star, "alpha_star", k=groups.num_domains)
    return np.bincount(groups.group_of, weights=alpha_star, minlength=groups.num_groups)


def hierarchical_posterior_concentration(prior: HierarchicalDirichlet, alpha_star,
                                         evidence: float = 1.0) -> HierarchicalDirichlet:
    """γ + s·A at the group level, β_g + s·α*_g/A_g within each group with A_g > 0."""
    s = _check_evidence(evidence)
    alpha_star = check_simplex(alpha_star, "alpha_star", k=prior.num_domains)
    mass = group_evidence(prior.groups, alpha_star)
    mass_of_domain = mass[prior.groups.group_of]
    share = np.divide(alpha_star, mass_of_domain, out=np.zeros_like(alpha_star),
                      where=mass_of_domain > 0)
    return prior.with_concentrations(prior.group_concentration + s * mass,
                                     prior.concentration + s * share)


def scale_hierarchical(spec: HierarchicalDirichlet, n1: float, n2: float) -> HierarchicalDirichlet:
    """Every level's concentration times √(n2/n1): means kept, totals grow with √n2."""
    factor = math.sqrt(_check_width("n2", n2) / _check_width("n1", n1))
    return spec.with_concentrations(factor * spec.group_concentration, factor * spec.concentration)


@dataclass(frozen=True, eq=False)
class HierarchicalPosterior:
    """Every stage of the hierarchical transfer from the proxy (width n1) to the main model."""

    alpha_star: np.ndarray
    """The proxy's DRO weights α*."""
    n1: float
    """Proxy width (d_model)."""
    n2: float
    """Main width (d_model)."""
    evidence: float
    """Pseudo-counts s given to α* at each level."""
    group_mass: np.ndarray
    """A_g = Σ_{i∈g} α*_i."""
    prior: HierarchicalDirichlet
    """γ1 = (√n1/G)·1, β_g1 = (√n1/|g|)·1."""
    posterior: HierarchicalDirichlet
    """γ1 + s·A, β_g1 + s·α*_g/A_g."""
    main: HierarchicalDirichlet
    """√(n2/n1) times the posterior at every level: the main run's mixture."""


def hierarchical_posterior(alpha_star, groups: DomainGroups, n1: float, n2: float,
                           evidence: float = 1.0) -> HierarchicalPosterior:
    """Prior, posterior and main-model hierarchical Dirichlet for α* and ``groups``."""
    alpha_star = check_simplex(alpha_star, "alpha_star", k=groups.num_domains)
    n1, n2, evidence = _check_width("n1", n1), _check_width("n2", n2), _check_evidence(evidence)
    prior = hierarchical_prior(groups, n1)
    posterior = hierarchical_posterior_concentration(prior, alpha_star, evidence)
    main = scale_hierarchical(posterior, n1, n2)
    return HierarchicalPosterior(alpha_star, n1, n2, evidence,
                                 group_evidence(groups, alpha_star), prior, posterior, main)


# --------------------------------------------------------------------------- mixture files


def hierarchical_from_dict(raw: dict, path: str,
                           domain_names: Sequence[str] | None = None) -> HierarchicalDirichlet:
    """A parsed ``hierarchical_dirichlet`` mixture file, checked, in ``domain_names`` order."""
    for key in ("groups", "group_concentration"):
        if key not in raw:
            raise MixtureFileError(f"{path}: kind {HIERARCHICAL_KIND!r} needs key {key!r}")
    domains = check_names(raw["domains"], f"{path}: 'domains'")
    entries = raw["groups"]
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise MixtureFileError(f"{path}: 'groups' must be a list of objects "
                               "{name, domains, concentration}")
    mapping, beta = {}, np.full(len(domains), np.nan)
    for entry in entries:
        name, members, conc = entry.get("name"), entry.get("domains"), entry.get("concentration")
        if not isinstance(name, str) or name in mapping:
            raise GroupsFileError(f"{path}: group name {name!r} is missing, not a string or "
                                  "repeated")
        if not isinstance(conc, list) or not isinstance(members, list) \
                or len(conc) != len(members):
            raise MixtureFileError(f"{path}: group {name!r} needs 'domains' and as many "
                                   "'concentration' values")
        mapping[name] = members
    groups = groups_from_mapping(mapping, domains, path)
    for entry in entries:
        for member, value in zip(entry["domains"], entry["concentration"]):
            beta[domains.index(member)] = _number(value, path, member)
    gamma = [_number(v, path, "group_concentration") for v in _as_list(raw, path)]
    try:
        spec = HierarchicalDirichlet(groups, gamma, beta, raw.get("stats") or {},
                                     raw.get("provenance") or {})
    except MixtureFileError as exc:
        raise MixtureFileError(f"{path}: {exc}") from None
    return spec.reorder(domain_names, where=path) if domain_names is not None else spec


def _as_list(raw: dict, path: str) -> list:
    if not isinstance(raw["group_concentration"], list):
        raise MixtureFileError(f"{path}: 'group_concentration' must be a list of numbers")
    return raw["group_concentration"]


def _number(value: object, path: str, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MixtureFileError(f"{path}: concentration of {what!r} must be a number, got "
                               f"{value!r}")
    return float(value)


def load_hierarchical(path: str,
                      domain_names: Sequence[str] | None = None) -> HierarchicalDirichlet:
    """Read and check a ``hierarchical_dirichlet`` mixture file, in ``domain_names`` order."""
    raw = read_json_file(path, "mixture file", MIXTURE_FORMAT, ("format", "domains", "kind"))
    if raw["kind"] != HIERARCHICAL_KIND:
        raise MixtureFileError(f"{path}: kind is {raw['kind']!r}, expected {HIERARCHICAL_KIND!r}")
    return hierarchical_from_dict(raw, path, domain_names)


# --------------------------------------------------------------------------- schedule


class HierarchicalDirichletSchedule(DirichletSchedule):
    """α_t drawn from a hierarchical Dirichlet, redrawn every ``redraw_every`` steps.

    Seeding, windows, broadcast and state are DirichletSchedule's: the draw for window w
    comes from np.random.default_rng([seed, DIRICHLET_STREAM, w]) on the source rank. With
    one group the draws are DirichletSchedule's, bit for bit.
    """

    kind = HIERARCHICAL_KIND

    def __init__(self, spec: HierarchicalDirichlet, redraw_every: int, seed: int,
                 broadcast: Broadcast | None = None, is_source: bool = True):
        super().__init__(spec.concentration, redraw_every, seed, broadcast, is_source)
        self.spec = spec

    def draw(self, window: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, DIRICHLET_STREAM, window])
        alpha = self.spec.draw(rng)
        return alpha / alpha.sum()

    def expected_weights(self) -> np.ndarray:
        """E[α] = E[w_g]·E[v_i] (``self.beta`` holds only the within-group concentrations)."""
        return self.spec.mean()
