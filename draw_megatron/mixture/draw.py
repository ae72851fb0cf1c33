"""DRAW's Dirichlet maths: prior, posterior, scaling to the main model, moments (docs/algorithms.md §1).

Pure numpy. Notation as in docs/algorithms.md: k domains, n1 / n2 the proxy / main widths (``d_model``),
α* ∈ Δ^k the proxy's DRO weights, s the evidence (pseudo-counts given to α*), Dir(β).

    β1 = (√n1/k)·1                      prior                (docs/algorithms.md §1.1, paper Eq. 1)
    β1_new = β1 + s·α*                  posterior            (docs/algorithms.md §1.3, Eq. 3, App. B)
    β2 = √(n2/n1)·β1_new                main-model Dirichlet (docs/algorithms.md §1.4, Eq. 4/5)
       = √(n2/n1)·s·α* + (√n2/k)·1
    E[α_i] = β_i/S, Var[α_i] = β_i(S − β_i)/(S²(S + 1)), S = Σβ   (docs/algorithms.md §1.6, Eq. 7)

With s = 1 the main mixture stays near uniform by design (docs/algorithms.md §1.7): the prior carries √n1
pseudo-counts and α* one. That is the method, not a bug to fix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from draw_megatron.mixture.files import SIMPLEX_TOL


def _check_width(name: str, n: float) -> float:
    if isinstance(n, bool) or not isinstance(n, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number (a model width, d_model), got {n!r}")
    if not (math.isfinite(n) and n > 0):
        raise ValueError(f"{name}={n} must be a finite width > 0")
    return float(n)


def _check_evidence(evidence: float) -> float:
    if not (math.isfinite(evidence) and evidence > 0):
        raise ValueError(f"evidence s={evidence} must be finite and > 0")
    return float(evidence)


def check_simplex(alpha, name: str = "alpha_star", k: int | None = None) -> np.ndarray:
    """``alpha`` as a float vector, checked to lie on the simplex (Σ = 1 ± SIMPLEX_TOL).

    Raises ValueError for a wrong length, a negative or non-finite entry, or a sum off 1.
    The values are returned as given (not renormalised), so files record what they read.
    """
    alpha = np.asarray(alpha, dtype=np.float64)
    if alpha.ndim != 1 or alpha.size == 0:
        raise ValueError(f"{name} must be a non-empty vector, got shape {alpha.shape}")
    if k is not None and alpha.size != k:
        raise ValueError(f"{name} has {alpha.size} entries but there are k={k} domains")
    if not np.all(np.isfinite(alpha)):
        raise ValueError(f"{name} has non-finite entries: {alpha.tolist()}")
    if np.any(alpha < 0):
        raise ValueError(f"{name} has negative entries (index {int(np.argmin(alpha))}): "
                         f"{alpha.tolist()}; it must lie on the simplex")
    if abs(alpha.sum() - 1.0) > SIMPLEX_TOL:
        raise ValueError(f"{name} sums to {alpha.sum():.9g}, not 1 (tolerance {SIMPLEX_TOL}): "
                         "it is not on the simplex")
    return alpha


def check_concentration(beta, name: str = "beta") -> np.ndarray:
    """``beta`` as a float vector of finite concentrations > 0 (ValueError otherwise)."""
    beta = np.asarray(beta, dtype=np.float64)
    if beta.ndim != 1 or beta.size == 0:
        raise ValueError(f"{name} must be a non-empty vector, got shape {beta.shape}")
    if not np.all(np.isfinite(beta)) or np.any(beta <= 0):
        raise ValueError(f"{name} must be finite and > 0, got {beta.tolist()}")
    return beta


def prior_concentration(k: int, n1: float) -> np.ndarray:
    """The DRAW prior β1 = (√n1/k)·1 (docs/algorithms.md §1.1, paper Eq. 1).

    Its total Σβ1 = √n1: the prior carries √n1 pseudo-counts, spread evenly over k domains.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k (the number of domains) must be an integer >= 1, got {k!r}")
    return np.full(int(k), math.sqrt(_check_width("n1", n1)) / int(k))


def posterior_concentration(prior, alpha_star, evidence: float = 1.0) -> np.ndarray:
    """The posterior β1_new = β1 + s·α* (docs/algorithms.md §1.3, paper Eq. 3 and App. B with s = 1).

    α* counts as s pseudo-observations spread by its weights (Dirichlet–multinomial
    conjugacy); the paper's s = 1 is the default.
    """
    prior = check_concentration(prior, "prior")
    alpha_star = check_simplex(alpha_star, "alpha_star", k=prior.size)
    return prior + _check_evidence(evidence) * alpha_star


def scale_concentration(beta, n1: float, n2: float) -> np.ndarray:
    """The concentration scaled from width n1 to width n2: √(n2/n1)·β (docs/algorithms.md §1.4, Eq. 4).

    The mean β/Σβ is unchanged; the total grows with √n2, so a wider model's draws are
    more concentrated around that mean.
    """
    beta = check_concentration(beta)
    return math.sqrt(_check_width("n2", n2) / _check_width("n1", n1)) * beta


def main_concentration(alpha_star, n1: float, n2: float, evidence: float = 1.0) -> np.ndarray:
    """The main run's β2 = √(n2/n1)·(β1 + s·α*) = √(n2/n1)·s·α* + (√n2/k)·1.

    docs/algorithms.md §1.4, paper Eq. 5: the composition of :func:`prior_concentration`,
    :func:`posterior_concentration` and :func:`scale_concentration`.
    """
    alpha_star = check_simplex(alpha_star)
    prior = prior_concentration(alpha_star.size, n1)
    return scale_concentration(posterior_concentration(prior, alpha_star, evidence), n1, n2)


def dirichlet_moments(beta) -> tuple[np.ndarray, np.ndarray]:
    """(E[α], Var[α]) of Dir(β).

    E[α_i] = β_i/S, Var[α_i] = β_i(S − β_i)/(S²(S + 1)), S = Σβ: the general moments
    (docs/algorithms.md §1.6, paper Eq. 7). Not the paper's simplified Eq. 11, whose last line is off by
    a factor √n1 (docs/algorithms.md §1.6). For β2 the mean is Eq. 10's
    E[α_i] = (√n1/k + s·α_i*)/(√n1 + s).
    """
    beta = check_concentration(beta)
    total = beta.sum()
    return beta / total, beta * (total - beta) / (total**2 * (total + 1.0))


@dataclass(frozen=True)
class DrawPosterior:
    """Every stage of DRAW's Bayesian transfer from the proxy (width n1) to the main model."""

    alpha_star: np.ndarray
    """The proxy's DRO weights α* (on the simplex)."""
    n1: float
    """Proxy width (d_model)."""
    n2: float
    """Main width (d_model)."""
    evidence: float
    """Pseudo-counts s given to α*."""
    prior: np.ndarray
    """β1 = (√n1/k)·1."""
    posterior: np.ndarray
    """β1_new = β1 + s·α*."""
    main: np.ndarray
    """β2 = √(n2/n1)·β1_new: the main run's Dirichlet."""
    mean: np.ndarray
    """E[α] under Dir(β2)."""
    var: np.ndarray
    """Var[α] under Dir(β2)."""

    @property
    def num_domains(self) -> int:
        return self.alpha_star.size


def draw_posterior(alpha_star, n1: float, n2: float, evidence: float = 1.0) -> DrawPosterior:
    """Prior, posterior, main-model concentration and its moments for α* (docs/algorithms.md §1.1–1.6)."""
    alpha_star = check_simplex(alpha_star)
    n1, n2, evidence = _check_width("n1", n1), _check_width("n2", n2), _check_evidence(evidence)
    prior = prior_concentration(alpha_star.size, n1)
    posterior = posterior_concentration(prior, alpha_star, evidence)
    main = scale_concentration(posterior, n1, n2)
    mean, var = dirichlet_moments(main)
    return DrawPosterior(alpha_star, n1, n2, evidence, prior, posterior, main, mean, var)
