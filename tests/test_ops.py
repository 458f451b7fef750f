"""Accuracy and behaviour of keras_cc.ops against independent mpmath references.

The bar is ``tests.reference.BAR`` (docs/numerics.md), for the exact value
at the rounded inputs. Every case of the regimes lies on a grid that float32
represents exactly, so one reference serves both dtypes. K = 2 against the
continuous Bernoulli is in tests/test_continuous_bernoulli.py.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_cc.ops import cc_log_partition, cc_mean
from tests import reference
from tests.helpers import compiled, for_sweeps, to_numpy, value_and_grad
from tests.reference import BAR, error_ratios, longdouble_series, mpmath_series


def _cases(k: int) -> dict[str, np.ndarray]:
    return reference.regimes(k, np.random.default_rng(k))


def _check_rows(dtype: str, k: int, cases: dict[str, np.ndarray]) -> None:
    names = list(cases)
    z = np.stack([cases[n] for n in names]).astype(dtype)
    value = to_numpy(cc_log_partition(z)).astype(np.float64)
    _, grad = value_and_grad(cc_log_partition, z)
    mean = to_numpy(cc_mean(z)).astype(np.float64)
    bar = BAR[dtype]
    failures = []
    # mpmath takes over a minute for the K = 1000 rows; the long double
    # series, checked against mpmath at K = 1000 in
    # test_longdouble_reference_agrees_with_mpmath, takes a second.
    series = mpmath_series if k <= 100 else longdouble_series
    for i, name in enumerate(names):
        a_ref, mean_ref = series(cases[name])
        a_err = abs(value[i] - a_ref) / (1 + abs(a_ref))
        for label, mu in (("cc_mean", mean[i]), ("gradient", grad[i])):
            excess = np.abs(mu - mean_ref) - (
                bar["mean_abs"] + bar["mean_rel"] * mean_ref
            )
            if not np.all(excess <= 0):
                failures.append(f"{name}: {label} off by {np.max(excess):.2e} over bar")
        if not a_err <= bar["a"]:
            failures.append(f"{name}: A relative error {a_err:.2e}")
    assert not failures, f"K={k} {dtype}:\n" + "\n".join(failures)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("k", [2, 3, 10, 100])
def test_accuracy_bar(dtype, k):
    _check_rows(dtype, k, _cases(k))


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_accuracy_bar_k1000(dtype):
    _check_rows(dtype, 1000, _cases(1000))


def test_randomised_sample_meets_the_bar():
    # A seeded sample of the sweep in benchmarks/log_partition.py (which runs
    # thousands of rows up to K = 2000): K log-uniform in 2..300, five shapes
    # of logits, offsets up to 1e4, float32 and float64; value and gradient.
    rows = reference.random_rows(np.random.default_rng(2024), 240, k_max=300, k_grid=6)
    results = reference.sweep_errors(
        rows, lambda z: value_and_grad(for_sweeps(cc_log_partition), z)
    )
    failures = [r for r in results if not max(r[3:]) <= 1]
    assert not failures, "\n".join(map(str, failures))


def test_iid_sd10_rows_at_k10_in_float64():
    # The held-out shape that a fixed 48-node float64 rule failed (5e-10
    # relative in A, 5x the bar in the mean): one logit often ~14 above the
    # next. Checked against the mpmath series.
    z = np.random.default_rng(10).normal(size=(12, 10)) * 10
    values, means = value_and_grad(cc_log_partition, z)
    for i in range(len(z)):
        ref = mpmath_series(z[i])
        assert max(error_ratios(values[i], means[i], *ref, "float64")) <= 1


def test_vocabulary_size_k_meets_the_float32_bar():
    # Vocabulary-size K: 750 chunks of 16 classes per node, in float32.
    rng = np.random.default_rng(9)
    z = np.stack(
        [rng.normal(size=12000) * 3, np.where(np.arange(12000) == 5, 100.0, 0.0)]
    ).astype("float32")
    values, means = value_and_grad(cc_log_partition, z)
    for i in range(2):
        ref = longdouble_series(z[i].astype(np.float64))
        assert max(error_ratios(values[i], means[i], *ref, "float32")) <= 1


def test_longdouble_reference_agrees_with_mpmath():
    # The sweep's fast reference against the mpmath series it vectorises.
    rng = np.random.default_rng(8)
    for k, sd in ((2, 1.0), (9, 10.0), (40, 100.0), (150, 30.0), (1000, 5.0)):
        z = rng.normal(size=k) * sd
        a, mean = longdouble_series(z)
        a_mp, mean_mp = mpmath_series(z)
        assert abs(a - a_mp) <= 1e-15 * (1 + abs(a_mp))
        np.testing.assert_allclose(mean, mean_mp, rtol=1e-14, atol=0)


def test_a_row_does_not_depend_on_its_batch():
    # Only the rows whose error estimate asks for it take the fine rule.
    rng = np.random.default_rng(6)
    easy = rng.normal(size=(3, 30))
    hard = np.concatenate([[0.0], -65 - rng.exponential(10, size=29)])
    alone = to_numpy(cc_log_partition(easy))
    together = to_numpy(cc_log_partition(np.concatenate([easy, hard[None]])))
    np.testing.assert_array_equal(together[:3], alone)


@pytest.mark.skipif(
    keras.backend.backend() == "torch",
    reason="the refinement loop is checked under XLA and jax.jit only",
)
def test_compiled_refinement_matches_eager_row_by_row():
    # float32 label-smoothing rows at K = 100 fail the first rule's estimate
    # and N(0, 3^2) rows pass it: a batch of 70 mixes them across three
    # blocks of the compiled refinement loop, in shuffled order. Each row must
    # equal the same row computed alone, eagerly, and meet the bar.
    rng = np.random.default_rng(11)
    k = 100
    hard = np.where(np.arange(k) == 0, 100.0, 0.0) + rng.normal(size=(40, k)) * 0.01
    easy = rng.normal(size=(30, k)) * 3
    z = np.concatenate([hard, easy])[rng.permutation(70)].astype("float32")

    def value_and_mean(t):
        return cc_log_partition(t), cc_mean(t)

    values, means = (to_numpy(t) for t in compiled(value_and_mean, xla=True)(z))
    for i in (0, 1, 2, 33, 69):
        alone_value, alone_mean = (to_numpy(t) for t in value_and_mean(z[i : i + 1]))
        np.testing.assert_allclose(values[i], alone_value[0], rtol=2e-6)
        np.testing.assert_allclose(means[i], alone_mean[0], rtol=1e-4, atol=1e-7)
        ref = longdouble_series(z[i].astype(np.float64))
        assert max(error_ratios(values[i], means[i], *ref, "float32")) <= 1


def test_random_float64_logits_not_on_a_grid():
    rng = np.random.default_rng(7)
    bar = BAR["float64"]
    for k in (2, 5, 20):
        for spread in (0.5, 5.0, 50.0):
            z = rng.normal(size=k) * spread + rng.normal() * 100
            a_ref, mean_ref = mpmath_series(z)
            assert abs(float(cc_log_partition(z)) - a_ref) <= bar["a"] * (
                1 + abs(a_ref)
            )
            np.testing.assert_allclose(
                to_numpy(cc_mean(z)),
                mean_ref,
                rtol=bar["mean_rel"],
                atol=bar["mean_abs"],
            )


def test_series_reference_agrees_with_divided_difference_reference():
    # Guards the references themselves: two methods that share nothing, the
    # positive series and the explicit divided-difference formula (eq. 6),
    # distinct nodes and ties.
    for z in (
        [0.0, 1.0],
        [0.3, -2.0, 5.0],
        [1.0, 2.0, 4.0, 8.0, 16.0],
        [0.0, 3.0, -1.0, 3.0],
    ):
        a_series, mean_series = mpmath_series(z)
        assert a_series == pytest.approx(reference.log_partition(z), abs=1e-14)
        np.testing.assert_allclose(
            mean_series, reference.mean(z), rtol=1e-13, atol=1e-15
        )


def test_closed_forms():
    # Ties: A(c 1) = c - log((K-1)!), mean 1/K. Unit ramp: (e-1)^(K-1)/(K-1)!.
    from math import e, lgamma, log

    for k in (2, 7, 50):
        z = np.full(k, 3.5)
        assert float(cc_log_partition(z)) == pytest.approx(3.5 - lgamma(k), abs=1e-12)
        np.testing.assert_allclose(to_numpy(cc_mean(z)), 1.0 / k, rtol=1e-12)
        ramp = np.arange(k, dtype=float)
        assert float(cc_log_partition(ramp)) == pytest.approx(
            (k - 1) * log(e - 1) - lgamma(k), abs=1e-11 * k
        )


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gradient_matches_finite_differences(dtype):
    rng = np.random.default_rng(3)
    for k in (2, 4, 10):
        z = (rng.normal(size=k) * 3).astype(dtype)
        _, grad = value_and_grad(cc_log_partition, z)
        z64 = z.astype(np.float64)
        h = 1e-5
        fd = np.empty(k)
        for i in range(k):
            e = np.zeros(k)
            e[i] = h
            # Central differences of the float64 op (itself accurate to 1e-12).
            fd[i] = (
                float(cc_log_partition(z64 + e)) - float(cc_log_partition(z64 - e))
            ) / (2 * h)
        bar = BAR[dtype]
        # The finite differences themselves are good to about 1e-9.
        np.testing.assert_allclose(
            grad, fd, atol=max(bar["mean_abs"], 1e-8), rtol=max(bar["mean_rel"], 1e-6)
        )


def test_shift_invariance():
    rng = np.random.default_rng(11)
    z = rng.normal(size=(4, 12)) * 4
    for c in (-1e3, 0.5, 7e3):
        np.testing.assert_allclose(
            to_numpy(cc_log_partition(z + c)),
            to_numpy(cc_log_partition(z)) + c,
            rtol=1e-15,
            atol=1e-11,
        )
        np.testing.assert_allclose(
            to_numpy(cc_mean(z + c)), to_numpy(cc_mean(z)), atol=1e-12
        )


def test_batch_shapes_and_axis():
    rng = np.random.default_rng(2)
    z = rng.normal(size=(3, 5, 7))
    flat = to_numpy(cc_log_partition(z.reshape(-1, 7))).reshape(3, 5)
    np.testing.assert_allclose(to_numpy(cc_log_partition(z)), flat, rtol=1e-14)
    moved = np.moveaxis(z, -1, 1)
    np.testing.assert_allclose(
        to_numpy(cc_log_partition(moved, axis=1)), flat, rtol=1e-14
    )
    mean = to_numpy(cc_mean(moved, axis=1))
    assert mean.shape == moved.shape
    np.testing.assert_allclose(
        np.moveaxis(mean, 1, -1), to_numpy(cc_mean(z)), rtol=1e-13
    )
    assert to_numpy(cc_log_partition(z[0, 0])).shape == ()


def test_non_finite_logits_give_nan_for_their_row_only():
    z = np.array(
        [[0.0, 1.0, 2.0], [np.nan, 1.0, 2.0], [np.inf, 0.0, 1.0], [-np.inf, 0.0, 1.0]]
    )
    value = to_numpy(cc_log_partition(z))
    assert np.isfinite(value[0])
    assert np.all(np.isnan(value[1:]))
    mean = to_numpy(cc_mean(z))
    assert np.all(np.isfinite(mean[0])) and np.all(np.isnan(mean[1:]))
    _, grad = value_and_grad(cc_log_partition, z)
    assert np.all(np.isfinite(grad[0])) and np.all(np.isnan(grad[1:]))


def test_never_nan_or_inf_for_finite_inputs():
    rng = np.random.default_rng(13)
    for dtype in ("float32", "float64"):
        for k in (2, 10, 64):
            scale = 10.0 ** rng.uniform(-8, 3, size=(256, 1))
            z = (
                rng.normal(size=(256, k)) * scale + rng.uniform(-1e4, 1e4, (256, 1))
            ).astype(dtype)
            value, grad = value_and_grad(for_sweeps(cc_log_partition), z)
            assert np.all(np.isfinite(value)) and np.all(np.isfinite(grad))
            assert np.all(grad > 0) and np.allclose(grad.sum(-1), 1, atol=1e-4)


def test_extreme_finite_logits():
    # Spreads near and beyond the dtype's range still give finite answers
    # within the bar (|A| ~ 1e38 there, so the bar is loose in absolute terms).
    for dtype, big in (("float32", 3e38), ("float64", 1e308)):
        z = np.array([[big, -big], [0.0, -1e30], [1e30, -1e30]], dtype)
        _, grad = value_and_grad(cc_log_partition, z)
        value = to_numpy(cc_log_partition(z)).astype(np.float64)
        assert np.all(np.isfinite(value)) and np.all(np.isfinite(grad))
        assert value[0] == pytest.approx(big, rel=1e-5)
        # A(0, -L) = log((1 - e^-L) / L) -> -log(L) for large L.
        assert value[1] == pytest.approx(-np.log(1e30), rel=1e-5)
        np.testing.assert_allclose(grad[:, 0], 1.0, atol=1e-5)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_inputs_are_computed_in_float32(dtype):
    z = keras.ops.cast(np.array([[0.0, 1.5, -3.25, 8.0]] * 2), dtype)
    value = cc_log_partition(z)
    assert keras.backend.standardize_dtype(value.dtype) == dtype
    exact = cc_log_partition(keras.ops.cast(z, "float32"))
    # Equal up to rounding the float32 result to the half-precision output.
    np.testing.assert_allclose(
        to_numpy(keras.ops.cast(value, "float32")), to_numpy(exact), rtol=1e-2
    )
    expected = to_numpy(keras.ops.cast(keras.ops.cast(exact, dtype), "float32"))
    np.testing.assert_array_equal(to_numpy(keras.ops.cast(value, "float32")), expected)


def test_fewer_than_two_classes_is_an_error():
    with pytest.raises(ValueError, match=r"at least 2 classes.*axis.*size 1"):
        cc_log_partition(np.zeros((4, 1)))
    with pytest.raises(ValueError, match="axis"):
        cc_mean(np.zeros((1, 3)), axis=0)
    with pytest.raises(TypeError, match="floating"):
        cc_log_partition(np.zeros((2, 3), np.int32))


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="tf.function is TF-only"
)
@pytest.mark.parametrize("jit_compile", [False, True])
def test_tf_function_and_xla(jit_compile):
    import tensorflow as tf

    z = np.random.default_rng(1).normal(size=(8, 10)) * 5

    @tf.function(
        jit_compile=jit_compile, input_signature=[tf.TensorSpec([None, 10], tf.float64)]
    )
    def f(t):
        with tf.GradientTape() as tape:
            tape.watch(t)
            v = tf.reduce_sum(cc_log_partition(t))
        return v, tape.gradient(v, t)

    value, grad = f(tf.constant(z))
    np.testing.assert_allclose(
        value.numpy(), to_numpy(cc_log_partition(z)).sum(), rtol=1e-13
    )
    np.testing.assert_allclose(grad.numpy(), to_numpy(cc_mean(z)), rtol=1e-11)


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="jax.jit is JAX-only")
def test_jax_jit():
    import jax

    z = np.random.default_rng(1).normal(size=(8, 10)) * 5
    jitted = jax.jit(jax.value_and_grad(lambda t: cc_log_partition(t).sum()))
    value, grad = jitted(z)
    np.testing.assert_allclose(
        float(value), to_numpy(cc_log_partition(z)).sum(), rtol=1e-13
    )
    np.testing.assert_allclose(np.asarray(grad), to_numpy(cc_mean(z)), rtol=1e-11)


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="tf.function is TF-only"
)
def test_unknown_class_count_while_tracing():
    import tensorflow as tf

    z = np.random.default_rng(4).normal(size=(2, 3, 9)) * 4
    spec = tf.TensorSpec([None, None, None], tf.float64)
    value = tf.function(cc_log_partition, input_signature=[spec])(tf.constant(z))
    mean = tf.function(cc_mean, input_signature=[spec])(tf.constant(z))
    np.testing.assert_allclose(value.numpy(), to_numpy(cc_log_partition(z)), rtol=1e-13)
    np.testing.assert_allclose(mean.numpy(), to_numpy(cc_mean(z)), rtol=1e-11)
