"""Tests of keras_cc.distributions.ContinuousCategorical against independent references.

References used (none of them is the code under test):
- exact divided differences in mpmath (``tests.reference``);
- one-dimensional marginal densities integrated numerically with scipy;
- Monte-Carlo estimates with tolerances derived from the sample size;
- central finite differences of ``cc_mean`` in float64.

Statistical tests use fixed seeds, so they are deterministic; their
thresholds (``Z_MAX`` standard errors, KS p-value > 1e-3) would fail for a
biased sampler at the sample sizes used (see the comments at each test).
K = 2 against the continuous Bernoulli is in tests/test_continuous_bernoulli.py.
"""

from __future__ import annotations

import doctest
import os
import pathlib
import re
import subprocess
import sys

import mpmath
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from scipy import integrate, stats

from keras_cc.distributions import ContinuousCategorical
from keras_cc.distributions.continuous_categorical import (
    _log_acceptance_rates,
    _proposal_rates,
    _propose_normalised,
    _propose_truncated,
    _sample_cc,
)
from keras_cc.ops import cc_log_partition, cc_mean
from tests import reference
from tests.reference import Z_MAX

tfd = tfp.distributions


# --------------------------------------------------------------------------
# Helpers.


def _marginal_cdf(density, lo: float, hi: float, scale: float):
    """CDF of a 1-D density on [lo, hi] by adaptive quadrature on a fine grid.

    The grid is dense within ``scale`` of ``lo`` (where a concentrated
    marginal puts its mass) and uniform elsewhere; the result is normalised
    numerically, so no normalising constant from the code under test enters.
    """
    grid = np.unique(
        np.concatenate(
            [
                lo + scale * np.linspace(0.0, 40.0, 801),
                np.linspace(lo, hi, 801),
            ]
        ).clip(lo, hi)
    )
    pieces = [
        integrate.quad(density, a, b, epsabs=0, epsrel=1e-10)[0]
        for a, b in zip(grid[:-1], grid[1:], strict=True)
    ]
    cdf = np.concatenate([[0.0], np.cumsum(pieces)])
    cdf /= cdf[-1]
    return lambda t: np.interp(t, grid, cdf)


def _cc(logits, dtype=np.float64, **kwargs) -> ContinuousCategorical:
    return ContinuousCategorical(logits=np.asarray(logits, dtype), **kwargs)


# --------------------------------------------------------------------------
# Density and normaliser.


def test_log_prob_is_normalised_and_matches_mpmath():
    z = np.array([0.3, -1.2, 2.0, 0.0])
    dist = _cc(z)
    log_z = reference.log_partition(z)
    np.testing.assert_allclose(dist.log_normalizer(), log_z, rtol=1e-12)
    x = np.array([[0.1, 0.2, 0.3, 0.4], [1.0, 0.0, 0.0, 0.0], [0.25] * 4])
    np.testing.assert_allclose(dist.log_prob(x), x @ z - log_z, rtol=1e-12)
    # K=3: integrate the density over the simplex numerically: it must be 1.
    z3 = np.array([1.0, -2.0, 0.5])
    log_norm3 = float(_cc(z3).log_normalizer())

    def density(s, t):
        return np.exp(np.dot(z3, [t, s, 1.0 - t - s]) - log_norm3)

    total, _ = integrate.dblquad(density, 0.0, 1.0, 0.0, lambda t: 1.0 - t, epsrel=1e-8)
    np.testing.assert_allclose(total, 1.0, rtol=1e-6)


def test_log_prob_outside_simplex_is_minus_inf():
    dist = _cc([[0.0, 1.0, 2.0]])
    x = np.array([[0.5, 0.6, -0.1], [0.2, 0.2, 0.2], [0.2, 0.3, 0.5]])
    lp = dist.log_prob(x).numpy()
    assert lp.shape == (3,)
    assert np.all(np.isneginf(lp[:2])) and np.isfinite(lp[2])
    assert np.all(dist.prob(x).numpy()[:2] == 0.0)


def test_probs_parameterisation_matches_logits():
    probs = np.array([[0.2, 0.5, 0.3], [0.05, 0.05, 0.9]])
    by_probs = ContinuousCategorical(probs=probs)
    by_logits = _cc(np.log(probs) + 3.0)  # a shift does not change the law
    x = np.array([0.1, 0.3, 0.6])
    np.testing.assert_allclose(by_probs.log_prob(x), by_logits.log_prob(x), rtol=1e-12)
    np.testing.assert_allclose(by_probs.mean(), by_logits.mean(), rtol=1e-12)
    np.testing.assert_allclose(by_probs.probs_parameter(), probs)
    np.testing.assert_allclose(
        tf.nn.softmax(by_probs.logits_parameter()), probs, rtol=1e-12
    )


# --------------------------------------------------------------------------
# Moments.


# Batches of logits grouped by K: far gaps (float32 variance of the dominant
# class cancels), near-ties, a tight pair plus far classes, exact ties.
COV_CASES = [
    [[0.0, -100.0], [0.0, -1000.0], [3.0, 3.0]],
    [[0.0, -3.0, -50.0], [2.0, 2.0, 2.0]],
    [[0.0, 0.0, 0.0, -7.0]],
    [[0.0, -1e-7, -30.0, -30.000001, -500.0]],
]


@pytest.mark.parametrize("z", COV_CASES, ids=lambda z: f"K{len(z[0])}")
def test_covariance_matches_mpmath_hessian(z):
    z = np.array(z)
    ref = np.stack([reference.covariance(row) for row in z])
    diag = np.diagonal(ref, axis1=1, axis2=2)
    scale = np.sqrt(diag[:, :, None] * diag[:, None, :])
    for dtype, tol in [(np.float64, 1e-10), (np.float32, 1e-5)]:
        cov = _cc(z, dtype=dtype).covariance().numpy().astype(np.float64)
        assert np.all(np.abs(cov - ref) <= tol * scale), (dtype, cov, ref)
    np.testing.assert_allclose(_cc(z).variance(), diag, rtol=1e-10)


def test_covariance_matches_finite_differences_of_mean():
    rng = np.random.default_rng(0)
    z = np.concatenate([rng.normal(size=(3, 6)) * [[0.1], [3.0], [30.0]]], 0)
    cov = _cc(z).covariance().numpy()
    h = 1e-6
    fd = np.zeros_like(cov)
    for k in range(6):
        step = np.zeros(6)
        step[k] = h
        fd[:, :, k] = (cc_mean(z + step).numpy() - cc_mean(z - step).numpy()) / (2 * h)
    scale = np.sqrt(np.einsum("bi,bj->bij", *2 * [np.diagonal(cov, axis1=1, axis2=2)]))
    assert np.max(np.abs(cov - fd) / scale) < 1e-6
    # Structural facts: symmetric, PSD, rows sum to 0 (sum x = 1).
    np.testing.assert_allclose(cov, np.swapaxes(cov, 1, 2), atol=1e-15)
    assert np.all(np.linalg.eigvalsh(cov) > -1e-12)
    np.testing.assert_allclose(cov.sum(-1), 0.0, atol=1e-12)


def test_covariance_at_k1000_matches_finite_differences_of_mean():
    # The contour's second moments at large K, column by column against
    # central differences of cc_mean (float64, h = 1e-5: truncation ~h^2 and
    # rounding ~1e-16 / h, both far below the tolerance).
    rng = np.random.default_rng(1)
    z = rng.normal(size=(1, 1000)) * 3
    dist = _cc(z)
    cov = dist.covariance().numpy()[0]
    var = dist.variance().numpy()[0]
    np.testing.assert_allclose(var, np.diagonal(cov), rtol=1e-9)
    scale = np.sqrt(np.outer(var, var))
    h = 1e-5
    for k in [int(np.argmax(z)), int(np.argmin(z)), *rng.choice(1000, 3)]:
        step = np.zeros(1000)
        step[k] = h
        fd = (cc_mean(z + step).numpy() - cc_mean(z - step).numpy())[0] / (2 * h)
        assert np.max(np.abs(cov[:, k] - fd) / scale[:, k]) < 1e-6, k
    np.testing.assert_allclose(cov.sum(-1), 0.0, atol=1e-15)


def test_mean_entropy_and_mode():
    z = np.array([[0.0, 3.0, -1.0, 3.0], [5.0, 0.0, 0.0, 0.0]])
    dist = _cc(z)
    np.testing.assert_allclose(dist.mean(), cc_mean(z), rtol=1e-14)
    # Entropy A(z) - z·mean, against mpmath: A and the mean from exp[.].
    for row, h in zip(z, dist.entropy().numpy(), strict=True):
        ref = reference.log_partition(row) - float(np.dot(row, reference.mean(row)))
        np.testing.assert_allclose(h, ref, rtol=1e-10)
    # Ties: the first maximal logit's vertex (documented).
    np.testing.assert_array_equal(dist.mode(), [[0, 1, 0, 0], [1, 0, 0, 0]])


def test_entropy_and_kl_vs_monte_carlo():
    za = np.array([[0.0, 2.0, -1.0, 0.5, 4.0], [0.0, -20.0, -3.0, 1.0, 1.0]])
    zb = np.array([1.0, 0.0, 0.0, -2.0, 3.0])
    a, b = _cc(za), _cc(zb)
    n = 40000
    x = a.sample(n, seed=(5, 6))
    log_pa = a.log_prob(x).numpy()
    log_pb = b.log_prob(x).numpy()
    for est_samples, exact in [
        (-log_pa, a.entropy().numpy()),
        (log_pa - log_pb, tfd.kl_divergence(a, b).numpy()),
    ]:
        mc = est_samples.mean(0)
        se = est_samples.std(0) / np.sqrt(n)
        assert np.all(np.abs(mc - exact) < Z_MAX * se), (mc, exact, se)
    np.testing.assert_allclose(tfd.kl_divergence(a, a), 0.0, atol=1e-12)


# --------------------------------------------------------------------------
# The sampler.

SAMPLER_CASES = [
    ("K3 ties", np.zeros(3)),
    ("K3 mixed", np.array([1.0, -0.5, 0.3])),
    ("K10 spread 10", np.linspace(0.0, -10.0, 10)),
    ("K100 random sd 10", np.random.default_rng(1).normal(size=100) * 10.0),
    ("K100 one far cluster", np.array([0.0] + [-1000.0] * 99)),
    ("K1000 spread 0", np.zeros(1000)),
    ("K1000 spread 100", np.linspace(0.0, -100.0, 1000)),
    ("K1000 spread 1", np.random.default_rng(2).uniform(-1.0, 0.0, 1000)),
]


def _assert_samples_match_cc_mean(x, z, name: str) -> None:
    """Samples ``x`` ``[n, K]`` lie in the simplex and their mean is ``cc_mean(z)``.

    z-scores of the sample mean against the exact mean (float64 cc_mean). A
    sampler that drops the acceptance step is off by 10s of SEs here.
    """
    x = np.asarray(x, np.float64)
    n = x.shape[0]
    assert x.shape == (n, z.size)
    assert np.all(x >= 0.0)
    np.testing.assert_allclose(x.sum(-1), 1.0, atol=1e-4)
    mean = cc_mean(z).numpy()
    se = x.std(0) / np.sqrt(n)
    z_scores = np.abs(x.mean(0) - mean) / np.maximum(se, 1e-300)
    assert np.max(z_scores) < Z_MAX, (name, np.max(z_scores))


@pytest.mark.parametrize("name,z", SAMPLER_CASES, ids=[c[0] for c in SAMPLER_CASES])
def test_sample_mean_matches_cc_mean(name, z):
    n = 20000 if z.size <= 100 else 4000
    x = _cc(z, dtype=np.float32).sample(n, seed=(7, 8))
    _assert_samples_match_cc_mean(x, z, name)


def test_sampling_under_xla_is_exact_and_efficient():
    # One batch whose rows use both proposals: a spread (normalised
    # exponentials), one logit far above a cluster (truncated exponentials),
    # ties, and a NaN row. Under XLA the loop once lost the accepted slots of
    # every round after the first: exact samples still, but ~2x the
    # proposals at n = 1000 and growing with n.
    z = np.stack(
        [
            np.linspace(0.0, -10.0, 10),
            np.array([0.0] + [-1000.0] * 9),
            np.zeros(10),
            np.full(10, np.nan),
        ]
    )
    n = 20000
    dist = _cc(z, dtype=np.float32)

    @tf.function(jit_compile=True)
    def sample():
        return _sample_cc(n, dist.logits, (7, 8))

    x, proposals = (t.numpy() for t in sample())
    for row in range(3):
        _assert_samples_match_cc_mean(x[:, row], z[row], f"row {row}")
    assert np.isnan(x[:, 3]).all()
    expected = np.sum(n / dist.sampler_acceptance_rate().numpy()[:3])
    assert proposals < 1.05 * expected, (proposals, expected)


def _k3_marginal_density(z, coord: int):
    """Unnormalised marginal density of x_coord for K=3 by numerical integration."""
    others = [i for i in range(3) if i != coord]

    def density(t):
        def inner(s):
            x = np.empty(3)
            x[coord], x[others[0]], x[others[1]] = t, s, 1.0 - t - s
            return np.exp(np.dot(z, x) - z.max())

        return integrate.quad(inner, 0.0, 1.0 - t, epsabs=0, epsrel=1e-11)[0]

    return density


@pytest.mark.parametrize(
    "z,coord",
    [
        ([1.0, -0.5, 0.3], 0),
        ([1.0, -0.5, 0.3], 1),
        ([0.0, -3.0, -80.0], 2),
        ([0.0, -3.0, -80.0], 1),
    ],
)
def test_k3_marginals_vs_numerical_marginals(z, coord):
    # KS test of one coordinate against its marginal CDF obtained by
    # integrating the closed-form joint density twice with scipy.
    z = np.asarray(z)
    rate = max(1.0, z.max() - z[coord])  # the marginal lives on ~[0, 40/rate]
    cdf = _marginal_cdf(_k3_marginal_density(z, coord), 0.0, 1.0, 1.0 / rate)
    x = _cc(z, dtype=np.float32).sample(20000, seed=(21, 22)).numpy()
    p_value = stats.kstest(x[:, coord].astype(np.float64), cdf).pvalue
    assert p_value > 1e-3, p_value


def test_k5_marginal_vs_mpmath_marginal():
    # x_0 = t has density ∝ exp(z_0 t) (1-t)^(K-2) exp[(1-t) z_{1:}] (the
    # remaining mass is a scaled K-1 simplex), evaluated with mpmath.
    z = np.array([0.5, -1.0, 2.0, 0.1, -4.0])

    def density(t):
        if t >= 1.0:
            return 0.0
        inner = reference.exp_divided_difference((1.0 - t) * z[1:])
        return float(mpmath.exp(z[0] * t - 2.0) * (1.0 - t) ** 3 * inner)

    grid = np.linspace(0.0, 1.0, 2001)
    pdf = np.array([density(t) for t in grid])
    cdf = integrate.cumulative_trapezoid(pdf, grid, initial=0.0)
    cdf /= cdf[-1]
    x = _cc(z, dtype=np.float32).sample(20000, seed=(31, 32)).numpy()
    p_value = stats.kstest(
        x[:, 0].astype(np.float64), lambda t: np.interp(t, grid, cdf)
    ).pvalue
    assert p_value > 1e-3, p_value


@pytest.mark.parametrize(
    "z",
    [
        np.zeros(4),
        np.array([0.0, -100.0]),
        np.array([0.0] + [-1000.0] * 49),
        np.linspace(0, -30, 30),
        np.array([0.0] * 4 + [-1000.0] * 96),  # the weakest regime we know
    ],
)
def test_acceptance_rate_formula_matches_empirical(z):
    # The closed-form acceptance probability vs the sampler's own count of
    # proposals: accepted / proposals is a binomial proportion.
    dist = _cc(z)
    rate = float(dist.sampler_acceptance_rate())
    n = 20000
    _, proposals = _sample_cc(n, tf.constant(z), seed=(41, 42))
    empirical = n / int(proposals)
    se = np.sqrt(rate * (1.0 - rate) / int(proposals)) + 1e-12
    assert abs(empirical - rate) < Z_MAX * se, (empirical, rate)
    assert 0.0 < rate <= 1.0
    if np.all(z == z[0]):
        np.testing.assert_allclose(rate, 1.0, rtol=1e-10)


@pytest.mark.parametrize("z", [[0.0, -3.0, -8.0], [0.0, -0.5, -6.0]])
def test_each_proposal_alone_is_exact(z):
    # The sampler picks one of two proposals per row; test each one directly
    # (both have fair acceptance here): KS of every coordinate's accepted
    # draws against the numerical marginal, and the acceptance fraction
    # against its closed form.
    z = np.asarray(z)
    rate_1, rate_2 = (float(np.exp(r[0])) for r in _log_acceptance_rates(z[None]))
    n = 30000
    zt = tf.constant(np.broadcast_to(z, (n, 3)))
    seed = tf.constant([51, 52])
    x1, ok1 = _propose_normalised(_proposal_rates(zt), seed, tf.float64, 1e-300)
    top = tf.zeros([n], tf.int32)  # z[0] is the largest logit
    x2, ok2 = _propose_truncated(-zt, top, seed, tf.float64)
    for x, ok, rate in [(x1, ok1, rate_1), (x2, ok2, rate_2)]:
        ok = ok.numpy()
        se = np.sqrt(rate * (1 - rate) / n)
        assert abs(ok.mean() - rate) < Z_MAX * se, (ok.mean(), rate)
        accepted = x.numpy()[ok]
        np.testing.assert_allclose(accepted.sum(-1), 1.0, atol=1e-12)
        for coord in range(3):
            scale = 1.0 / max(1.0, z.max() - z[coord])
            cdf = _marginal_cdf(_k3_marginal_density(z, coord), 0.0, 1.0, scale)
            p_value = stats.kstest(accepted[:, coord], cdf).pvalue
            assert p_value > 1e-3, (coord, p_value)


def test_sampling_is_seeded_and_stateless():
    dist = _cc(np.linspace(0.0, -5.0, 7), dtype=np.float32)
    a = dist.sample(50, seed=(1, 2)).numpy()
    b = dist.sample(50, seed=(1, 2)).numpy()
    c = dist.sample(50, seed=(1, 3)).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    sample_fn = tf.function(lambda seed: dist.sample(50, seed=seed))
    np.testing.assert_array_equal(sample_fn(tf.constant([1, 2])), a)


def test_sampling_nonfinite_logits_gives_nan_rows_only():
    dist = _cc(
        [[0.0, 1.0, 2.0], [0.0, np.nan, 1.0], [np.inf, 0.0, 0.0]], dtype=np.float32
    )
    x = dist.sample(5, seed=(3, 3)).numpy()
    assert np.all(np.isfinite(x[:, 0])) and np.all(np.isnan(x[:, 1:]))


# --------------------------------------------------------------------------
# Shapes and dtypes.


def test_batch_shapes_and_broadcasting():
    z = np.random.default_rng(3).normal(size=(2, 3, 4))
    dist = _cc(z, dtype=np.float32)
    assert dist.batch_shape == (2, 3) and dist.event_shape == (4,)
    np.testing.assert_array_equal(dist.batch_shape_tensor(), [2, 3])
    np.testing.assert_array_equal(dist.event_shape_tensor(), [4])
    assert dist.sample(5, seed=(1, 1)).shape == (5, 2, 3, 4)
    assert dist.sample([5, 6], seed=(1, 1)).shape == (5, 6, 2, 3, 4)
    assert dist.mean().shape == (2, 3, 4)
    assert dist.variance().shape == (2, 3, 4)
    assert dist.covariance().shape == (2, 3, 4, 4)
    assert dist.entropy().shape == (2, 3)
    assert dist.mode().shape == (2, 3, 4)
    assert dist.log_normalizer().shape == (2, 3)
    assert dist.sampler_acceptance_rate().shape == (2, 3)
    x = np.full(4, 0.25, np.float32)
    assert dist.log_prob(x).shape == (2, 3)
    assert dist.log_prob(np.broadcast_to(x, (7, 1, 1, 4))).shape == (7, 2, 3)
    assert dist.log_prob(np.broadcast_to(x, (3, 4))).shape == (2, 3)
    # Row-by-row agreement with unbatched distributions.
    xs = np.random.default_rng(4).dirichlet(np.ones(4), size=(2, 3)).astype(np.float32)
    batched = dist.log_prob(xs).numpy()
    for i in range(2):
        for j in range(3):
            single = _cc(z[i, j], dtype=np.float32).log_prob(xs[i, j]).numpy()
            np.testing.assert_allclose(batched[i, j], single, rtol=1e-5)
    # KL broadcasts batch shapes [2, 1] and [3].
    kl = tfd.kl_divergence(_cc(z[:, :1, :]), _cc(z[0]))
    assert kl.shape == (2, 3)
    # Slicing through TFP's parameter properties.
    assert dist[0].batch_shape == (3,) and dist[:, 1:].batch_shape == (2, 2)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_dtypes(dtype):
    dist = _cc([0.0, 1.0, -2.0], dtype=dtype)
    assert dist.dtype == dtype
    for value in [
        dist.sample(3, seed=(1, 2)),
        dist.mean(),
        dist.entropy(),
        dist.log_prob([0.2, 0.3, 0.5]),
    ]:
        assert value.dtype == dtype
    np.testing.assert_allclose(
        dist.mean().numpy().astype(np.float64),
        cc_mean(np.array([0.0, 1.0, -2.0])),
        rtol=2e-3,
    )


def test_log_prob_is_differentiable_in_logits():
    z = tf.Variable([0.5, -1.0, 2.0], dtype=tf.float64)
    x = tf.constant([0.2, 0.3, 0.5], tf.float64)
    with tf.GradientTape() as tape:
        lp = ContinuousCategorical(logits=z).log_prob(x)
    # d/dz (z·x - A(z)) = x - mean.
    np.testing.assert_allclose(tape.gradient(lp, z), x - cc_mean(z.numpy()), rtol=1e-12)
    np.testing.assert_allclose(
        lp, float(np.dot(z.numpy(), x)) - cc_log_partition(z.numpy())
    )


# --------------------------------------------------------------------------
# Argument validation.


def test_constructor_errors():
    with pytest.raises(ValueError, match="exactly one"):
        ContinuousCategorical()
    with pytest.raises(ValueError, match="exactly one"):
        ContinuousCategorical(logits=[0.0, 1.0], probs=[0.5, 0.5])
    with pytest.raises(ValueError, match="at least 2 classes"):
        ContinuousCategorical(logits=[[0.0]])
    with pytest.raises(ValueError, match="at least one dimension"):
        ContinuousCategorical(logits=0.0)


def test_validate_args_errors():
    # A tf.Variable's value is not known when the distribution is built, so
    # validate_args checks it when it is used.
    zero = tf.Variable([0.0, 1.0])
    with pytest.raises(tf.errors.InvalidArgumentError, match="strictly positive"):
        ContinuousCategorical(probs=zero, validate_args=True).mean()
    with pytest.raises(tf.errors.InvalidArgumentError, match="sum to 1"):
        ContinuousCategorical(probs=[0.5, 0.6], validate_args=True)
    with pytest.raises(tf.errors.InvalidArgumentError, match="finite"):
        ContinuousCategorical(logits=[0.0, np.inf], validate_args=True)
    dist = ContinuousCategorical(logits=[0.0, 1.0, 2.0], validate_args=True)
    with pytest.raises(tf.errors.InvalidArgumentError, match="negative"):
        dist.log_prob([0.5, 0.6, -0.1])
    with pytest.raises(tf.errors.InvalidArgumentError, match="sum to 1"):
        dist.prob([0.2, 0.2, 0.2])
    # Valid points (incl. a float32 sample of K=3) pass validation.
    assert np.isfinite(dist.log_prob(dist.sample(10, seed=(1, 1))).numpy()).all()
    assert np.isfinite(dist.log_prob([1.0, 0.0, 0.0]).numpy())


@pytest.mark.parametrize("validate_args", [False, True])
@pytest.mark.parametrize(
    "probs,where",
    [
        ([0.5, 0.5, 0.0], "probs[2] = 0.0"),
        ([[0.5, 0.5], [np.nan, 1.0]], "probs[1, 0] = nan"),
        ([0.2, -0.1, 0.9], "probs[1] = -0.1"),
    ],
)
def test_known_nonpositive_probs_raise_a_value_error(probs, where, validate_args):
    # Before: CC(probs=[0.5, 0.5, 0.0]).mean() was NaN, silently.
    with pytest.raises(ValueError, match="`probs` must be strictly positive") as err:
        ContinuousCategorical(probs=probs, validate_args=validate_args)
    assert where in str(err.value)


def test_known_zero_probs_raise_inside_tf_function_too():
    @tf.function
    def mean():
        return ContinuousCategorical(probs=tf.constant([0.5, 0.5, 0.0])).mean()

    with pytest.raises(ValueError, match="strictly positive"):
        mean()


def test_zero_probs_known_only_later_give_nan_without_validate_args():
    # The documented limit: a value unknown at construction is not checked
    # unless validate_args=True (then test_validate_args_errors applies).
    probs = tf.Variable([0.5, 0.5, 0.0])
    assert np.isnan(ContinuousCategorical(probs=probs).mean().numpy()).all()
    # Positive probs need not sum to 1: only their ratios matter.
    scaled = ContinuousCategorical(probs=[1.0, 2.0, 3.0]).mean().numpy()
    np.testing.assert_allclose(
        scaled, ContinuousCategorical(probs=[1 / 6, 2 / 6, 3 / 6]).mean(), rtol=1e-6
    )


@pytest.mark.parametrize("validate_args", [False, True])
@pytest.mark.parametrize("method", ["log_prob", "prob"])
@pytest.mark.parametrize("value", [[0.5, 0.5], [[1.0]], [0.25] * 4])
def test_event_of_the_wrong_size_is_a_value_error(method, value, validate_args):
    dist = _cc([0.0, 1.0, 2.0], validate_args=validate_args)
    got = np.shape(value)[-1]
    with pytest.raises(ValueError, match=f"`value` must have 3 entries .* has {got}"):
        getattr(dist, method)(value)
    with pytest.raises(ValueError, match="`value` must have the classes"):
        getattr(dist, method)(1.0)


def test_event_of_the_wrong_dynamic_size_fails_with_validate_args():
    dist = _cc([0.0, 1.0, 2.0], validate_args=True)
    log_prob = tf.function(
        dist.log_prob, input_signature=[tf.TensorSpec([None], tf.float64)]
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match="as many entries"):
        log_prob(tf.constant([0.5, 0.5], tf.float64))
    assert np.isfinite(log_prob(tf.constant([0.2, 0.3, 0.5], tf.float64)).numpy())


def test_kl_between_different_numbers_of_classes_is_a_value_error():
    with pytest.raises(
        ValueError, match="`distribution_a` has 3 and `distribution_b` has 2"
    ):
        tfd.kl_divergence(_cc([0.0, 1.0, 2.0]), _cc([0.0, 1.0]))


def test_validation_messages_end_with_a_single_period():
    # TF's asserts add their own punctuation after the message; the messages
    # once ended in a period too and printed "sum to 1..  ".
    dist = _cc([0.0, 1.0, 2.0], validate_args=True)
    messages = []
    for call in (
        lambda: dist.prob([0.2, 0.2, 0.2]),
        lambda: dist.log_prob([0.5, 0.6, -0.1]),
        lambda: ContinuousCategorical(probs=[0.5, 0.6], validate_args=True),
        lambda: ContinuousCategorical(
            probs=tf.Variable([0.0, 1.0]), validate_args=True
        ).mean(),
        lambda: _cc([0.0, np.inf], validate_args=True),
    ):
        with pytest.raises(tf.errors.InvalidArgumentError) as err:
            call()
        messages.append(err.value.message)
    assert all(".." not in m for m in messages), messages


# --------------------------------------------------------------------------
# Documentation examples.


def test_docstring_examples_run():
    from keras_cc.distributions import continuous_categorical

    result = doctest.testmod(
        continuous_categorical,
        extraglobs={"ContinuousCategorical": ContinuousCategorical},
        optionflags=doctest.ELLIPSIS,
    )
    assert result.attempted > 0 and result.failed == 0


def test_docs_distributions_examples_run(capsys):
    """Every ```python block of docs/distributions.md, in one namespace."""
    path = pathlib.Path(__file__).parents[1] / "docs" / "distributions.md"
    blocks = re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)
    assert blocks
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(path), "exec"), namespace)  # noqa: S102
    printed = capsys.readouterr().out
    assert "`probs` must be strictly positive" in printed
    assert "`value` must have 3 entries" in printed


def test_non_tensorflow_backend_gets_a_clear_import_error():
    # A fresh interpreter under the JAX backend (the backend is fixed per
    # process, so this cannot run in-process).
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, "-c", "import keras_cc.distributions"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    assert "ImportError: keras_cc.distributions needs the TensorFlow" in result.stderr


# --------------------------------------------------------------------------
# A CC from its mean.


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_from_mean_has_that_mean_by_mpmath(dtype):
    """The mpmath mean of the logits that from_mean finds is the mean asked
    for (near uniform, label-smoothing shaped, and a spread one)."""
    means = np.array(
        [
            [0.26, 0.25, 0.25, 0.24],
            [0.925, 0.025, 0.025, 0.025],
            [0.6, 0.3, 0.09, 0.01],
        ]
    )
    dist = ContinuousCategorical.from_mean(means.astype(dtype))
    assert dist.dtype == tf.as_dtype(dtype)
    logits = dist.logits.numpy().astype(np.float64)
    np.testing.assert_allclose(logits.max(-1), 0.0, atol=0)
    tol = 2e-5 if dtype == np.float32 else 1e-10
    for row, want in zip(logits, means, strict=True):
        np.testing.assert_allclose(reference.mean(row), want, rtol=tol, atol=tol)
    np.testing.assert_allclose(dist.mean().numpy(), means, rtol=tol, atol=tol)


def test_from_mean_k2_is_the_continuous_bernoulli_with_that_mean():
    """K = 2: TFP's ContinuousBernoulli whose mean is m (its logit found by
    bisection on TFP's own mean) has the same density at every point."""
    m = 0.8
    low, high = -50.0, 50.0
    for _ in range(100):
        middle = 0.5 * (low + high)
        cb_mean = float(
            tfp.distributions.ContinuousBernoulli(
                logits=tf.constant(middle, tf.float64)
            ).mean()
        )
        low, high = (middle, high) if cb_mean < m else (low, middle)
    bernoulli = tfp.distributions.ContinuousBernoulli(
        logits=tf.constant(0.5 * (low + high), tf.float64)
    )
    dist = ContinuousCategorical.from_mean(np.array([m, 1 - m]))
    t = np.array([0.05, 0.3, 0.5, 0.9])
    np.testing.assert_allclose(
        dist.log_prob(np.stack([t, 1 - t], -1)).numpy(),
        bernoulli.log_prob(t).numpy(),
        rtol=1e-6,  # TFP's float64 mean is good to ~1e-8 near its Taylor cut
    )


@pytest.mark.parametrize(
    "mean, match",
    [
        ([0.5, 0.5, 0.0], r"1 of 3 entries are not > 0.*\[2\]: 0"),
        ([[0.5, 0.5], [np.nan, 1.0]], r"1 of 4 entries are not > 0.*\[1, 0\]: nan"),
        (
            [[0.5, 0.4, 0.2], [0.2, 0.3, 0.5]],
            r"1 of 2 rows do not sum to 1.*\[0\]: 1.1",
        ),
        ([1.0], "at least 2"),
    ],
)
def test_from_mean_rejects_means_off_the_open_simplex(mean, match):
    with pytest.raises(ValueError, match=match):
        ContinuousCategorical.from_mean(mean)


def test_from_mean_validate_args_checks_a_value_known_later():
    spec = [tf.TensorSpec([2], tf.float32)]

    @tf.function(input_signature=spec)
    def checked(mean):
        return ContinuousCategorical.from_mean(mean, validate_args=True).mean()

    @tf.function(input_signature=spec)
    def unchecked(mean):
        return ContinuousCategorical.from_mean(mean).mean()

    with pytest.raises(tf.errors.InvalidArgumentError, match="sum to 1"):
        checked(tf.constant([0.5, 0.6]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="strictly positive"):
        checked(tf.constant([1.0, 0.0]))
    np.testing.assert_allclose(
        checked(tf.constant([0.3, 0.7])).numpy(), [0.3, 0.7], rtol=1e-5
    )
    # Without validate_args a bad row gives NaN statistics, no exception.
    assert np.isnan(unchecked(tf.constant([1.0, 0.0])).numpy()).all()


def test_default_event_space_bijector_maps_onto_the_simplex(rng):
    # What TFP's MCMC and VI tools use to work on unconstrained space: a
    # bijection from R^(K-1) onto the open simplex, with its inverse.
    dist = _cc(np.array([0.5, -1.0, 2.0, 0.0]), dtype=np.float64)
    bijector = dist.experimental_default_event_space_bijector()
    u = rng.normal(size=(50, 3)) * 3.0
    x = bijector.forward(u).numpy()
    assert x.shape == (50, 4)
    assert (x > 0).all()
    np.testing.assert_allclose(x.sum(-1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(bijector.inverse(x).numpy(), u, rtol=1e-8, atol=1e-8)
    assert np.isfinite(dist.log_prob(x).numpy()).all()
