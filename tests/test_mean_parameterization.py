"""The inverse mean map and the mean-parameterised CC loss.

References, all independent of the code under test:

- the mpmath mean (``tests/reference``): the natural parameters the op
  returns must have, at 30 digits, the mean they were asked for, to the mean
  bar of docs/numerics.md;
- K = 2: the continuous Bernoulli's closed-form mean, inverted by bisection
  in mpmath, and TFP's continuous Bernoulli log density for the loss;
- central finite differences for the op's custom (implicit-function)
  gradient, and the mpmath covariance for the loss gradient's closed form
  ``(diag p - p p^T) Cov^-1 (p - y)``.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

import keras_cc
from keras_cc.losses import (
    ContinuousCategoricalCrossentropy,
    continuous_categorical_crossentropy,
    label_smoothing_logit_scale,
    sparse_continuous_categorical_crossentropy,
)
from keras_cc.ops import cc_natural_from_mean, cc_natural_from_mean_logits
from tests.helpers import compiled, to_numpy, value_and_grad
from tests.reference import (
    BAR,
    continuous_bernoulli_mean,
    divided_difference,
    longdouble_series,
    tfp_continuous_bernoulli,
)

DTYPES = ["float32", "float64"]


def _means(k: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Mean vectors of every shape training produces, for K = k."""
    smoothed = np.full(k, 0.1 / k)
    smoothed[0] += 0.9
    hard = np.full(k, 1e-6 / k)
    hard[-1] += 1 - 1e-6
    near_uniform = 1 / k + 1e-4 / k * rng.standard_normal(k)
    logits = 8.0 * rng.standard_normal(k)
    cases = {
        "uniform": np.full(k, 1 / k),
        "near uniform": near_uniform,
        "label smoothing, alpha 0.1": smoothed,
        "nearly one-hot, 1e-6": hard,
        "dirichlet(1)": rng.dirichlet(np.ones(k)),
        "dirichlet(0.2)": rng.dirichlet(np.full(k, 0.2)) + 1e-9,
        "softmax of N(0, 8^2)": np.exp(logits - logits.max()) + 1e-12,
        "two tied tops": np.r_[0.4, 0.4, np.full(k - 2, 0.2 / max(k - 2, 1))][:k],
    }
    return {name: p / p.sum() for name, p in cases.items()}


def _mean_error_over_bar(p_ref, eta, dtype: str) -> float:
    """Worst |mpmath mean(eta) - p| as a multiple of the mean bar."""
    got = divided_difference.mean(np.asarray(eta, np.float64))
    bar = BAR[dtype]
    allowed = bar["mean_abs"] + bar["mean_rel"] * p_ref
    return float(np.max(np.abs(got - p_ref) / allowed))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [3, 10])
def test_inverse_mean_map_against_mpmath(dtype, k):
    rng = np.random.default_rng(k)
    cases = _means(k, rng)
    p = np.stack(list(cases.values()))
    # The op sees p rounded to the dtype; judge it on that rounded mean.
    p_in = p.astype(dtype)
    p_ref = p_in.astype(np.float64) / p_in.astype(np.float64).sum(-1, keepdims=True)
    eta = to_numpy(cc_natural_from_mean(p_in))
    assert eta.dtype == np.dtype(dtype)
    assert np.all(np.isfinite(eta))
    assert np.allclose(eta.max(-1), 0.0)
    for name, row, want in zip(cases, eta, p_ref, strict=True):
        ratio = _mean_error_over_bar(want, row, dtype)
        assert ratio <= 1.0, f"{name}: mean error {ratio:.3g} x the bar"


def test_inverse_mean_map_at_k100_against_the_positive_series():
    """K = 100 (float32, compiled as in training), means whose natural
    parameters span up to ~1e3, judged by the longdouble positive series."""
    rng = np.random.default_rng(100)
    cases = {
        name: p
        for name, p in _means(100, rng).items()
        if name in ("uniform", "near uniform", "label smoothing, alpha 0.1")
    }
    cases["dirichlet(5)"] = rng.dirichlet(np.full(100, 5.0))
    p = np.stack(list(cases.values())).astype("float32")
    p_ref = p.astype(np.float64) / p.astype(np.float64).sum(-1, keepdims=True)
    eta = to_numpy(compiled(cc_natural_from_mean)(p))
    bar = BAR["float32"]
    for name, row, want in zip(cases, eta, p_ref, strict=True):
        _, got = longdouble_series(row.astype(np.float64))
        ratio = np.max(np.abs(got - want) / (bar["mean_abs"] + bar["mean_rel"] * want))
        assert ratio <= 1.0, f"{name}: mean error {ratio:.3g} x the bar"


@pytest.mark.parametrize("dtype", DTYPES)
def test_inverse_mean_map_k2_against_continuous_bernoulli(dtype):
    """K = 2: the logit difference whose continuous-Bernoulli mean is p_0,
    found by a root finder on the closed form (monotone in the logit)."""
    p0 = np.array([1e-4, 0.01, 0.2, 0.4999, 0.5, 0.6, 0.9, 0.999])
    p = np.stack([p0, 1 - p0], -1).astype(dtype)
    eta = to_numpy(cc_natural_from_mean(p))
    for row, first in zip(eta, p[:, 0].astype(np.float64), strict=True):
        want = _continuous_bernoulli_logit(first)
        tol = 1e-3 if dtype == "float32" else 1e-8
        assert abs((row[0] - row[1]) - want) <= tol * (1 + abs(want))


def _continuous_bernoulli_logit(first: float) -> float:
    """The logit difference whose continuous-Bernoulli mean is ``first``,
    by bisection on the closed form (increasing in the logit)."""
    low, high = -1e6, 1e6
    for _ in range(200):
        middle = 0.5 * (low + high)
        if continuous_bernoulli_mean(np.array([middle]))[0] < first:
            low = middle
        else:
            high = middle
    return 0.5 * (low + high)


def test_inverse_mean_map_gradient_by_finite_differences(rng):
    """The implicit-function gradient against central differences of the
    op itself (float64), for random upstream weights; every perturbed row
    goes through one call (rows are independent)."""
    k, step = 6, 1e-6
    z = np.concatenate([s * rng.standard_normal((1, k)) for s in (0.1, 2.0, 8.0)])
    weights = rng.standard_normal(z.shape)

    def weighted(t, weights=weights):
        return keras.ops.sum(cc_natural_from_mean_logits(t) * weights, axis=-1)

    _, grad = value_and_grad(weighted, z)
    bumps = np.eye(k) * step  # (k, k)
    plus = z[:, None, :] + bumps  # (rows, k, k): row r bumped at class j
    minus = z[:, None, :] - bumps
    stacked = np.concatenate([plus, minus]).reshape(-1, k)
    eta = to_numpy(cc_natural_from_mean_logits(stacked)).reshape(2, len(z), k, k)
    values = np.einsum("srjk,rk->srj", eta, weights)
    fd = (values[0] - values[1]) / (2 * step)
    assert np.allclose(grad, fd, rtol=1e-5, atol=1e-6 * np.abs(fd).max())


def test_inverse_mean_map_is_shift_invariant_and_axis_aware(rng):
    z = rng.standard_normal((2, 5, 4))
    base = to_numpy(cc_natural_from_mean_logits(z, axis=1))
    shifted = to_numpy(cc_natural_from_mean_logits(z + 123.0, axis=1))
    moved = to_numpy(cc_natural_from_mean_logits(np.moveaxis(z, 1, -1)))
    assert np.allclose(base, shifted, rtol=1e-9, atol=1e-9)
    assert np.allclose(np.moveaxis(base, 1, -1), moved, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_saturated_softmax_is_held_at_the_mean_floor(dtype):
    """A class whose softmax is far below the op's range (gap 200 in the
    logits: p ~ 1e-87) is raised to the floor: finite natural parameters
    whose mean is the floored mean, not NaN and not an overflow."""
    floor = keras_cc.ops.cc_mean_floor(dtype)
    z = np.array([[0.0, -200.0, -1.0], [0.0, -1000.0, -2000.0]], dtype)
    eta = to_numpy(cc_natural_from_mean_logits(z))
    assert np.all(np.isfinite(eta))
    p = np.exp(z.astype(np.float64) - z.max(-1, keepdims=True))
    p = np.maximum(p / p.sum(-1, keepdims=True), floor)
    p /= p.sum(-1, keepdims=True)
    for row, want in zip(eta, p, strict=True):
        assert _mean_error_over_bar(want, row, dtype) <= 1.0
    # The gap of a floored class is about 1 / floor.
    assert -eta[1, 1] == pytest.approx(1 / floor, rel=0.05)


def test_non_finite_and_zero_means_give_nan_rows():
    p = np.array([[0.5, 0.5, 0.0], [np.nan, 0.5, 0.5], [0.2, 0.3, 0.5]])
    eta = to_numpy(cc_natural_from_mean(p))
    assert np.all(np.isnan(eta[:2]))
    assert np.all(np.isfinite(eta[2]))


def test_inverse_mean_map_rejects_integers_and_single_classes():
    with pytest.raises(TypeError, match="floating-point"):
        cc_natural_from_mean(np.array([[1, 2]]))
    with pytest.raises(ValueError, match="at least 2 classes"):
        cc_natural_from_mean_logits(np.zeros((3, 1)))


# --------------------------------------------------------------------------
# The loss with parameterization="mean".
# --------------------------------------------------------------------------
def _mean_loss(y, z, **kwargs):
    return continuous_categorical_crossentropy(
        y, z, from_logits=True, parameterization="mean", **kwargs
    )


def test_mean_loss_k2_against_tfp_continuous_bernoulli():
    """K = 2: -log density of y_0 under the continuous Bernoulli whose mean
    is softmax(z)_0 (the logit found by bisection on the closed form)."""
    pytest.importorskip("tensorflow_probability")
    z = np.array([[0.3, -0.2], [2.0, -1.0], [-4.0, 1.0]])
    y = np.array([[0.9, 0.1], [0.25, 0.75], [0.05, 0.95]])
    got = to_numpy(_mean_loss(y, z))
    p0 = np.exp(z[:, 0]) / np.exp(z).sum(-1)
    for value, first, target in zip(got, p0, y[:, 0], strict=True):
        diff = _continuous_bernoulli_logit(float(first))
        want = -float(tfp_continuous_bernoulli(diff).log_prob(target))
        assert value == pytest.approx(want, rel=1e-8, abs=1e-8)


def test_mean_loss_gradient_is_fisher_weighted_residual(rng):
    """d loss / dz = (diag p - p p^T) Cov^-1 (p - y), Cov from mpmath at the
    natural parameters whose mean is p = softmax(z)."""
    k = 4
    z = rng.standard_normal((2, k)) * 2.0
    y = rng.dirichlet(np.ones(k), 2)
    _, grad = value_and_grad(lambda t: _mean_loss(y, t), z)
    eta = to_numpy(cc_natural_from_mean_logits(z))
    for row in range(2):
        p = np.exp(z[row] - z[row].max())
        p /= p.sum()
        cov = divided_difference.covariance(eta[row])
        # Cov^-1 on the tangent space: solve with the last class pinned.
        v = np.zeros(k)
        v[:-1] = np.linalg.solve(cov[:-1, :-1], (p - y[row])[:-1])
        want = (np.diag(p) - np.outer(p, p)) @ v
        assert np.allclose(grad[row], want, rtol=1e-6, atol=1e-9)


def test_mean_loss_is_minimised_where_crossentropy_is():
    """For every target shape (label smoothing, near uniform, nearly
    one-hot) the gradient vanishes at softmax(z) = y, the cross-entropy
    optimum (no logit scale), and is clearly non-zero next to it."""
    k = 10
    smoothed = np.full(k, 0.1 / k)
    smoothed[3] += 0.9
    near_uniform = np.full(k, 1 / k) + np.linspace(-1e-3, 1e-3, k)
    one_hot = np.full(k, 1e-5 / k)
    one_hot[0] += 1 - 1e-5
    y = np.stack([smoothed, near_uniform, one_hot])
    y /= y.sum(-1, keepdims=True)
    y = np.concatenate([y, y])
    z = np.log(y)
    z[3:, 1] += 0.01  # the second copy sits next to the optimum
    _, grad = value_and_grad(lambda t: _mean_loss(y, t), z)
    at_optimum, nearby = np.abs(grad[:3]).max(-1), np.abs(grad[3:]).max(-1)
    assert np.all(at_optimum < 1e-6 * nearby)
    assert np.all(nearby > 1e-4)


def test_mean_loss_has_a_log_barrier_where_the_natural_one_is_bounded():
    """Why the mean parameterisation trains badly (docs/label_smoothing.md):
    a class the model gives p_j << y_j has gradient ~ 1 - y_j / p_j (the
    small-class covariance of the CC is ~ p_j^2, and d p_j / d z_j ~ p_j),
    unbounded as p_j -> 0; under the natural parameterisation with scale s
    every component is s (mean - y), at most s in size."""
    k, alpha = 10, 0.1
    y = np.full(k, alpha / k)
    y[0] += 1 - alpha
    small = np.array([1e-4, 1e-5, 1e-6])
    p = np.tile(y, (3, 1))
    p[:, 1] = small
    p[:, 0] = 1 - p[:, 1:].sum(-1)
    z, targets = np.log(p), np.tile(y, (3, 1))
    _, grad = value_and_grad(lambda t: _mean_loss(targets, t), z)
    barrier = 1 - y[1] / small
    assert np.allclose(grad[:, 1], barrier, rtol=0.02)
    scale = label_smoothing_logit_scale(k, alpha)
    _, natural = value_and_grad(
        lambda t: continuous_categorical_crossentropy(
            targets, t, from_logits=True, logit_scale=scale
        ),
        z,
    )
    assert np.abs(natural).max() <= scale


def test_mean_loss_from_probabilities_and_sparse_labels(rng):
    z = rng.standard_normal((4, 6))
    labels = np.array([0, 5, 2, 2])
    dense = np.eye(6)[labels] * 0.9 + 0.1 / 6
    want = to_numpy(_mean_loss(dense, z))
    probs = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    from_probs = continuous_categorical_crossentropy(
        dense, probs, parameterization="mean"
    )
    sparse = sparse_continuous_categorical_crossentropy(
        labels, z, from_logits=True, label_smoothing=0.1, parameterization="mean"
    )
    assert np.allclose(to_numpy(from_probs), want, rtol=1e-9, atol=1e-9)
    assert np.allclose(to_numpy(sparse), want, rtol=1e-9, atol=1e-9)


def test_mean_loss_options_are_checked_and_saved():
    with pytest.raises(ValueError, match="parameterization"):
        ContinuousCategoricalCrossentropy(parameterization="softmax")
    with pytest.raises(ValueError, match="logit_scale"):
        ContinuousCategoricalCrossentropy(
            label_smoothing=0.1, logit_scale="auto", parameterization="mean"
        )
    loss = ContinuousCategoricalCrossentropy(
        from_logits=True, label_smoothing=0.1, parameterization="mean"
    )
    config = loss.get_config()
    assert config["parameterization"] == "mean"
    restored = ContinuousCategoricalCrossentropy.from_config(config)
    assert restored.parameterization == "mean"
    # A config saved before the option existed loads as the natural
    # parameterisation, with which such a model was trained.
    del config["parameterization"]
    assert ContinuousCategoricalCrossentropy.from_config(config).parameterization == (
        "natural"
    )
    metric = keras_cc.metrics.ContinuousCategoricalCrossentropy(
        from_logits=True, parameterization="mean"
    )
    assert metric.get_config()["parameterization"] == "mean"


def test_mean_loss_trains_compiled_saves_and_loads(tmp_path, rng):
    x = rng.standard_normal((64, 8)).astype("float32")
    labels = (x[:, 0] > 0).astype("int32") + 2 * (x[:, 1] > 0).astype("int32")
    y = (np.eye(4)[labels] * 0.9 + 0.025).astype("float32")
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
    loss = ContinuousCategoricalCrossentropy(from_logits=True, parameterization="mean")
    # A compiled graph on TensorFlow (XLA would only add compile time here);
    # jax.jit on JAX, whose eager op-by-op training is many times slower.
    jit = keras.backend.backend() == "jax"
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss=loss, jit_compile=jit)
    history = model.fit(x, y, epochs=30, batch_size=32, verbose=0)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
    accuracy = np.mean(np.argmax(to_numpy(model(x)), -1) == labels)
    assert accuracy > 0.85
    path = tmp_path / "mean.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    assert restored.loss.parameterization == "mean"
    assert np.allclose(to_numpy(restored(x)), to_numpy(model(x)), rtol=1e-6, atol=1e-6)
    assert restored.evaluate(x, y, verbose=0) == pytest.approx(
        model.evaluate(x, y, verbose=0), rel=1e-5
    )
