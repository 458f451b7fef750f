"""K = 2: CC(logits=[a, b]) is the continuous Bernoulli with logit a - b.

One test per quantity, each against TensorFlow Probability's
``ContinuousBernoulli`` (a peer implementation) or its closed form: the log
density (through the op, the loss and the distribution), the mean (the op
and the distribution), and, for the distribution (TensorFlow backend only),
the covariance, the entropy, the KL divergence and samples.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from scipy import stats

from keras_cc.losses import continuous_categorical_crossentropy
from keras_cc.ops import cc_log_partition, cc_mean
from tests.helpers import to_numpy
from tests.reference import (
    BAR,
    Z_MAX,
    continuous_bernoulli_mean,
    tfp_continuous_bernoulli,
)

TENSORFLOW_ONLY = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="keras_cc.distributions needs the TensorFlow backend",
)

# (a - b, b): logit differences from 0 (where TFP switches to a Taylor
# expansion) to far from it, with offsets b (the law depends on a - b only).
K2_LOGITS = [
    (0.0, 0.7),
    (1e-6, 0.7),
    (1e-4, 0.3 - 1e-4),
    (1e-3, 0.0),
    (0.3, 0.7),
    (-2.5, 0.7),
    (7.0, 0.7),
    (-35.0, 15.0),
    (-40.0, 0.7),
    (70.0, -30.0),
    (100.0, 0.7),
]
K2_POINTS = [0.0, 1e-4, 0.1, 0.5, 0.77, 0.999, 1.0]


def _logits() -> np.ndarray:
    """[N, 2] logits: K2_LOGITS, then seeded random rows with differences of
    scale 1e-6 to 700."""
    fixed = np.array([(diff + b, b) for diff, b in K2_LOGITS])
    rng = np.random.default_rng(5)
    scale = np.array([1e-6, 0.1, 1.0, 10.0, 100.0, 700.0] * 11)[:64]
    b = rng.normal(size=64) * 4.0
    drawn = np.stack([b + rng.normal(size=64) * scale, b], -1)
    return np.concatenate([fixed, drawn])


def _logits_and_points() -> tuple[np.ndarray, np.ndarray]:
    """[N, 2] logits and [N] points t: every K2_LOGITS row at every K2_POINTS
    point, then the random rows at uniform points in (0.01, 0.99)."""
    logits = _logits()
    fixed = len(K2_LOGITS)
    grid = np.repeat(logits[:fixed], len(K2_POINTS), axis=0)
    t_grid = np.tile(K2_POINTS, fixed)
    t_drawn = np.random.default_rng(6).uniform(0.01, 0.99, size=len(logits) - fixed)
    return np.concatenate([grid, logits[fixed:]]), np.concatenate([t_grid, t_drawn])


def _distribution(logits):
    from keras_cc.distributions import ContinuousCategorical

    return ContinuousCategorical(logits=logits)


def _log_density(source: str, logits: np.ndarray, x: np.ndarray) -> np.ndarray:
    """log p(x) under CC(logits), rows of [N, 2], through one implementation."""
    if source == "op":
        return np.sum(x * logits, -1) - to_numpy(cc_log_partition(logits))
    if source == "loss":
        return -to_numpy(
            continuous_categorical_crossentropy(x, logits, from_logits=True)
        )
    return _distribution(logits).log_prob(x).numpy()


@pytest.mark.parametrize(
    "source, dtype",
    [
        ("op", "float64"),
        ("loss", "float32"),
        pytest.param("distribution", "float64", marks=TENSORFLOW_ONLY),
    ],
)
def test_k2_log_density_matches_continuous_bernoulli(source, dtype):
    # The reference takes the inputs as the implementation sees them, rounded
    # to its dtype; the bar on A applies to the log density, relative to the
    # size of the terms a t + b (1 - t) that are summed.
    logits, t = _logits_and_points()
    logits = logits.astype(dtype)
    x = np.stack([t, 1.0 - t], -1).astype(dtype)
    got = _log_density(source, logits, x)
    logits, x = logits.astype(np.float64), x.astype(np.float64)
    diff = logits[:, 0] - logits[:, 1]
    cb = tfp_continuous_bernoulli(diff)
    want = cb.log_prob(x[:, 0]).numpy()
    scale = 1.0 + np.abs(want) + np.abs(x[:, 0] * diff) + np.abs(logits[:, 1])
    np.testing.assert_array_less(np.abs(got - want), BAR[dtype]["a"] * scale)
    if source == "distribution":
        got_prob = _distribution(logits).prob(x).numpy()
        np.testing.assert_allclose(got_prob, cb.prob(x[:, 0]), rtol=1e-9)


@pytest.mark.parametrize(
    "source", ["op", pytest.param("distribution", marks=TENSORFLOW_ONLY)]
)
def test_k2_mean_matches_continuous_bernoulli(source):
    logits = _logits()
    got = to_numpy(cc_mean(logits)) if source == "op" else _distribution(logits).mean()
    got = np.asarray(got)
    diff = logits[:, 0] - logits[:, 1]
    bar = BAR["float64"]
    # Against the closed form (x_1 is the continuous Bernoulli of -diff) ...
    np.testing.assert_allclose(
        got[:, 0],
        continuous_bernoulli_mean(diff),
        rtol=bar["mean_rel"],
        atol=bar["mean_abs"],
    )
    np.testing.assert_allclose(
        got[:, 1],
        continuous_bernoulli_mean(-diff),
        rtol=bar["mean_rel"],
        atol=bar["mean_abs"],
    )
    # ... and against TFP's mean, only good to ~1e-7 near some logits.
    tfp_mean = tfp_continuous_bernoulli(diff).mean().numpy()
    np.testing.assert_allclose(got[:, 0], tfp_mean, atol=5e-7)


@TENSORFLOW_ONLY
def test_k2_covariance_matches_continuous_bernoulli():
    logits = _logits()[: len(K2_LOGITS)]
    ours = _distribution(logits)
    variance = tfp_continuous_bernoulli(logits[:, 0] - logits[:, 1]).variance().numpy()
    np.testing.assert_allclose(ours.variance().numpy()[:, 0], variance, rtol=1e-7)
    # x_1 = 1 - x_0, so each covariance matrix is var * [[1, -1], [-1, 1]].
    want = variance[:, None, None] * np.array([[1, -1], [-1, 1]])
    np.testing.assert_allclose(ours.covariance().numpy(), want, rtol=1e-7)


@TENSORFLOW_ONLY
def test_k2_entropy_matches_continuous_bernoulli():
    logits = _logits()[: len(K2_LOGITS)]
    cb = tfp_continuous_bernoulli(logits[:, 0] - logits[:, 1])
    np.testing.assert_allclose(
        _distribution(logits).entropy(), cb.entropy(), rtol=1e-9, atol=1e-9
    )


@TENSORFLOW_ONLY
def test_k2_kl_matches_continuous_bernoulli():
    import tensorflow_probability as tfp

    diffs_a = np.array([0.0, 1.5, -3.0, 20.0, 60.0])
    diffs_b = np.array([0.4, -2.0, -3.0, 0.0, 55.0])
    ours = tfp.distributions.kl_divergence(
        _distribution(np.stack([diffs_a, np.zeros(5)], -1)),
        _distribution(np.stack([diffs_b + 2.0, np.full(5, 2.0)], -1)),  # same law
    )
    want = tfp.distributions.kl_divergence(
        tfp_continuous_bernoulli(diffs_a), tfp_continuous_bernoulli(diffs_b)
    )
    np.testing.assert_allclose(ours, want, rtol=1e-7, atol=1e-10)


@TENSORFLOW_ONLY
@pytest.mark.parametrize("diff", [0.0, 2.0, -15.0, 150.0])
def test_k2_samples_match_continuous_bernoulli(diff):
    # KS test of x_0 against the continuous Bernoulli CDF. At n = 20000 the KS
    # test detects a CDF error of ~0.015 (p < 1e-3), e.g. the ~0.05 bias of
    # using Dirichlet(1,1) proposals without the acceptance step.
    dist = _distribution(np.array([diff, 0.0], np.float32))
    t = dist.sample(20000, seed=(11, 12)).numpy()[:, 0].astype(np.float64)
    cb = tfp_continuous_bernoulli(diff)
    p_value = stats.kstest(t, lambda v: cb.cdf(np.clip(v, 0.0, 1.0)).numpy()).pvalue
    assert p_value > 1e-3, p_value
    # Moments of the sample vs the continuous Bernoulli, within Z_MAX SEs.
    se = t.std() / np.sqrt(t.size)
    assert abs(t.mean() - float(cb.mean())) < Z_MAX * se
