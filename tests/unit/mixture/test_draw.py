"""DRAW's prior, posterior, scaling and moments (docs/algorithms.md §1), against numbers worked by hand."""

import math

import numpy as np
import pytest

from draw_megatron.mixture.draw import (
    dirichlet_moments,
    draw_posterior,
    main_concentration,
    posterior_concentration,
    prior_concentration,
    scale_concentration,
)

# The worked example: k = 4, n1 = 256 (√n1 = 16), n2 = 1024 (√(n2/n1) = 2), s = 1.
ALPHA_STAR = [0.4, 0.3, 0.2, 0.1]
N1, N2 = 256, 1024


def test_worked_example_by_hand():
    # β1 = (16/4)·1 = (4, 4, 4, 4)
    prior = prior_concentration(4, N1)
    assert prior.tolist() == [4.0, 4.0, 4.0, 4.0]
    # β1_new = β1 + α* = (4.4, 4.3, 4.2, 4.1), Σ = 17 = √n1 + s
    post = posterior_concentration(prior, ALPHA_STAR)
    np.testing.assert_allclose(post, [4.4, 4.3, 4.2, 4.1], rtol=0, atol=1e-12)
    # β2 = 2·β1_new = (8.8, 8.6, 8.4, 8.2), Σ = 34
    main = scale_concentration(post, N1, N2)
    np.testing.assert_allclose(main, [8.8, 8.6, 8.4, 8.2], rtol=0, atol=1e-12)
    # Eq. 5's closed form: √(n2/n1)·s·α* + (√n2/k)·1 = 2·α* + 32/4
    np.testing.assert_allclose(main_concentration(ALPHA_STAR, N1, N2), [8.8, 8.6, 8.4, 8.2],
                               rtol=0, atol=1e-12)


def test_worked_example_moments_by_hand():
    mean, var = dirichlet_moments([8.8, 8.6, 8.4, 8.2])
    # E[α_i] = β_i / 34
    np.testing.assert_allclose(mean, [8.8 / 34, 8.6 / 34, 8.4 / 34, 8.2 / 34], rtol=1e-12)
    np.testing.assert_allclose(mean, [0.2588235, 0.2529412, 0.2470588, 0.2411765], atol=1e-7)
    # Var[α_1] = 8.8·(34 − 8.8) / (34²·35) = 221.76 / 40460
    assert var[0] == pytest.approx(221.76 / 40460, rel=1e-12)
    assert var[0] == pytest.approx(0.0054810, abs=1e-7)
    assert var[3] == pytest.approx(8.2 * 25.8 / (34**2 * 35), rel=1e-12)


def test_scaling_keeps_the_mean_and_shrinks_the_variance():
    post = posterior_concentration(prior_concentration(4, N1), ALPHA_STAR)
    mean1, var1 = dirichlet_moments(post)
    mean2, var2 = dirichlet_moments(scale_concentration(post, N1, N2))
    np.testing.assert_allclose(mean1, mean2, rtol=1e-12)
    # proxy scale, Σ = 17: Var[α_1] = 4.4·12.6 / (17²·18)
    assert var1[0] == pytest.approx(4.4 * 12.6 / (289 * 18), rel=1e-12)
    assert np.all(var2 < var1)


@pytest.mark.parametrize("k, n1, n2, s", [(4, 256, 1024, 1.0), (17, 256, 4096, 1.0),
                                          (17, 512, 2048, 5.0), (3, 64, 64, 0.5)])
def test_mean_is_eq10(k, n1, n2, s):
    alpha_star = np.random.default_rng(k).dirichlet(np.ones(k))
    mean, _ = dirichlet_moments(main_concentration(alpha_star, n1, n2, evidence=s))
    expected = (math.sqrt(n1) / k + s * alpha_star) / (math.sqrt(n1) + s)
    np.testing.assert_allclose(mean, expected, rtol=1e-12)


def test_variance_matches_monte_carlo():
    beta2 = main_concentration(ALPHA_STAR, N1, N2)
    mean, var = dirichlet_moments(beta2)
    draws = np.random.default_rng(1234).dirichlet(beta2, size=400_000)
    np.testing.assert_allclose(draws.mean(axis=0), mean, rtol=2e-3)
    np.testing.assert_allclose(draws.var(axis=0), var, rtol=2e-2)


def test_paper_eq11_is_off_by_sqrt_n1_and_we_do_not_use_it():
    """docs/algorithms.md §1.6: Eq. 11's last line is the general variance divided by √n1 (1/16 at 256)."""
    a, r1, r2, k = np.asarray(ALPHA_STAR), math.sqrt(N1), math.sqrt(N2), 4
    eq11 = (r1 / k + a) * (r1 + 1 - r1 / k - a) / ((r1 + 1) ** 2 * (r2 * (r1 + 1) + r1))
    _, var = dirichlet_moments(main_concentration(a, N1, N2))
    np.testing.assert_allclose(eq11 * r1, var, rtol=1e-12)
    assert not np.allclose(eq11, var)


def test_spec_item7_s1_stays_near_uniform():
    """k = 17, n1 = 256, s = 1: E[α_i] ∈ [(16/17)/17, (16/17 + 1)/17] ≈ [0.0554, 0.1142]."""
    k, n1 = 17, 256
    low, high = (16 / 17) / 17, (16 / 17 + 1) / 17
    assert low == pytest.approx(0.05536, abs=1e-5) and high == pytest.approx(0.11419, abs=1e-5)
    one_hot = np.eye(k)[5]
    mean, _ = dirichlet_moments(main_concentration(one_hot, n1, 2048))
    assert mean[5] == pytest.approx(high, rel=1e-12)
    np.testing.assert_allclose(np.delete(mean, 5), low, rtol=1e-12)
    for seed in range(20):  # any α* on the simplex stays inside the bound
        alpha_star = np.random.default_rng(seed).dirichlet(np.full(k, 0.3))
        mean, _ = dirichlet_moments(main_concentration(alpha_star, n1, 2048))
        assert np.all(mean >= low - 1e-12) and np.all(mean <= high + 1e-12)
    assert 0.055 <= low and high <= 0.115


def test_evidence_gives_alpha_star_more_weight():
    means = [dirichlet_moments(main_concentration(ALPHA_STAR, N1, N2, s))[0] for s in (1, 16, 1e6)]
    gaps = [np.abs(m - ALPHA_STAR).max() for m in means]
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 1e-4


def test_draw_posterior_collects_every_stage():
    post = draw_posterior(ALPHA_STAR, N1, N2)
    assert post.num_domains == 4 and post.evidence == 1.0
    np.testing.assert_allclose(post.main, [8.8, 8.6, 8.4, 8.2])
    np.testing.assert_allclose(post.mean, post.main / 34)
    assert post.prior.tolist() == [4.0] * 4


@pytest.mark.parametrize("call, message", [
    (lambda: posterior_concentration([4.0] * 4, [0.5, 0.3, 0.1, 0.05]), "sums to 0.95"),
    (lambda: posterior_concentration([4.0] * 4, [1.2, -0.2, 0.0, 0.0]), "negative"),
    (lambda: posterior_concentration([4.0] * 4, [0.5, np.nan, 0.25, 0.25]), "non-finite"),
    (lambda: posterior_concentration([4.0] * 4, [0.5, 0.5, 0.0]), "3 entries but there are k=4"),
    (lambda: posterior_concentration([4.0, 0.0], [0.5, 0.5]), "prior must be finite and > 0"),
    (lambda: posterior_concentration([4.0] * 2, [0.5, 0.5], evidence=0), "evidence"),
    (lambda: prior_concentration(4, 0), "n1=0"),
    (lambda: prior_concentration(4, -256), "n1=-256"),
    (lambda: prior_concentration(0, 256), "k"),
    (lambda: scale_concentration([1.0, 2.0], 256, float("nan")), "n2=nan"),
    (lambda: main_concentration(ALPHA_STAR, 256, 0), "n2=0"),
    (lambda: dirichlet_moments([1.0, -1.0]), "finite and > 0"),
    (lambda: dirichlet_moments([[1.0, 1.0]]), "vector"),
])
def test_validation_errors_are_clear(call, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(")):
        call()
