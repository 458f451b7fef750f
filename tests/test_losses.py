"""Tests of keras_cc.losses against independent references.

Backend-agnostic: CI runs this module under the TensorFlow backend and again
with KERAS_BACKEND=jax; it passes under KERAS_BACKEND=torch too (docs/api.md,
"Backends"). Backend-specific behaviour (softmax-logit recovery, graph-mode
asserts) is asserted per backend, never skipped.
"""

from __future__ import annotations

import doctest
import math
import pathlib
import re
import warnings

import keras
import numpy as np
import pytest
from keras import ops

from keras_cc import losses as cc_losses
from tests import reference as ref
from tests.helpers import JIT_COMPILE, compiled, value_and_grad
from tests.helpers import to_numpy as _np

BACKEND = keras.backend.backend()
# Backends whose tensors carry `_keras_logits`, the logits behind a softmax.
RECOVERS_SOFTMAX_LOGITS = BACKEND in ("tensorflow", "torch")
# Most tests use batches of B rows and K in {2, 3, 5, 10, 100}: on JAX every
# new eager shape costs seconds of compilation, so shapes are shared.
B = 6


def _distinct_logits(
    rng: np.random.Generator,
    shape: tuple[int, ...],
    scale: float = 3.0,
    min_gap: float = 1e-2,
) -> np.ndarray:
    """Random logits whose entries along the last axis are >= min_gap apart
    (the explicit-formula reference needs distinct nodes)."""
    while True:
        z = rng.normal(size=shape, scale=scale).astype(np.float32)
        gaps = np.abs(z[..., :, None] - z[..., None, :])
        gaps += np.eye(shape[-1]) * 1e9
        if gaps.min() >= min_gap:
            return z


def _soft_targets(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    y = rng.dirichlet(np.ones(shape[-1]), size=shape[:-1]).astype(np.float32)
    return y


def _nll_tol(y, z, rel=ref.BAR["float32"]["a"]):
    """Float32 bar: 1e-5 relative to the size of the terms that are summed."""
    z = np.asarray(z, np.float64)
    zs = z - z.max(axis=-1, keepdims=True)
    return rel * (1.0 + np.abs(ref.nll_rows(y, zs)) + np.sum(np.abs(y * zs), -1))


# ---------------------------------------------------------------- values


@pytest.mark.parametrize("num_classes", [2, 3, 5, 8])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_value_matches_mpmath_explicit_formula(rng, num_classes, label_smoothing):
    z = _distinct_logits(rng, (6, num_classes))
    y = _soft_targets(rng, (6, num_classes))
    y[0] = np.eye(num_classes, dtype=np.float32)[1]  # a one-hot row too
    got = _np(
        cc_losses.continuous_categorical_crossentropy(
            y, z, from_logits=True, label_smoothing=label_smoothing, logit_scale=1.0
        )
    )
    y_s = ref.smooth(y, label_smoothing)
    want = ref.nll_rows(y_s, z)
    assert got.dtype == np.float32 and got.shape == (6,)
    np.testing.assert_array_less(np.abs(got - want), _nll_tol(y_s, z))


def test_value_float64_matches_mpmath_to_1e_10(rng):
    z = _distinct_logits(rng, (B, 5)).astype(np.float64) * 7.0
    y = _soft_targets(rng, (B, 5)).astype(np.float64)
    got = _np(cc_losses.continuous_categorical_crossentropy(y, z, from_logits=True))
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, ref.nll_rows(y, z), rtol=0, atol=1e-10)


def test_ties_and_large_offset_identities(rng):
    # A(c·1) = c - log((K-1)!), so with any target summing to exactly 1 the
    # loss is -log((K-1)!) whatever the offset c. (One-hot targets: a float32
    # 1/K summed K times misses 1 by ~K·eps, which the exact formula
    # multiplies by c.)
    offsets = np.array([0.0, -50.0, 1e4, -1e4, 3.5, 300.0], np.float32)
    for k in (3, 10, 100):
        z = np.repeat(offsets[:, None], k, axis=1)
        y = np.eye(k, dtype=np.float32)[np.arange(B) % k]
        y[0] = 1.0 / k  # uniform too, at offset 0
        got = _np(cc_losses.continuous_categorical_crossentropy(y, z, from_logits=True))
        np.testing.assert_allclose(got, -math.lgamma(k), rtol=1e-5, atol=1e-5)
    # A large common offset: float64 targets summing to 1, value vs mpmath
    # on the offset logits themselves.
    z = _distinct_logits(rng, (B, 5)).astype(np.float64) + 1e4
    y = _soft_targets(rng, (B, 5)).astype(np.float64)
    y /= y.sum(-1, keepdims=True)
    got = _np(cc_losses.continuous_categorical_crossentropy(y, z, from_logits=True))
    np.testing.assert_allclose(got, ref.nll_rows(y, z), rtol=0, atol=1e-9)
    # float32: dyadic targets sum to exactly 1, so the value is conditioned
    # like A(z - max z) (for float-rounded targets summing to 1 +- 6e-8 the
    # exact value itself moves by max(z) * 6e-8 ~ 6e-4 at this offset).
    z32 = z.astype(np.float32)
    y32 = np.tile(np.array([0.5, 0.25, 0.125, 0.0625, 0.0625], np.float32), (B, 1))
    got32 = _np(
        cc_losses.continuous_categorical_crossentropy(y32, z32, from_logits=True)
    )
    np.testing.assert_array_less(
        np.abs(got32 - ref.nll_rows(y32, z32)), _nll_tol(y32, z32)
    )


def test_far_vertex_label_smoothing_optimum_region():
    """One large logit and K-1 tight ones: the CC-LS optimum's shape."""
    k = 10
    z = np.zeros((B, k), np.float32)
    z[:, 0] = [10.0, 30.0, 100.0, 300.0, 1000.0, -5.0]
    z[:, 1:] += np.linspace(0, 0.09, k - 1, dtype=np.float32)  # distinct, tight
    y = ref.smooth(np.eye(k)[[0] * B], 0.1).astype(np.float32)
    got = _np(cc_losses.continuous_categorical_crossentropy(y, z, from_logits=True))
    want = ref.nll_rows(y, z)
    np.testing.assert_array_less(np.abs(got - want), _nll_tol(y, z))


def test_axis_argument(rng):
    z = _distinct_logits(rng, (2, 4, 3))  # classes on axis 1
    y = _soft_targets(rng, (2, 3, 4)).transpose(0, 2, 1).copy()
    got = _np(
        cc_losses.continuous_categorical_crossentropy(y, z, from_logits=True, axis=1)
    )
    want = ref.nll_rows(y.transpose(0, 2, 1), z.transpose(0, 2, 1))
    assert got.shape == (2, 3)
    np.testing.assert_allclose(got, want, atol=1e-4)
    loss = cc_losses.ContinuousCategoricalCrossentropy(
        from_logits=True, axis=1, reduction=None
    )
    np.testing.assert_allclose(_np(loss(y, z)), want, atol=1e-4)


def test_label_smoothing_one_is_uniform_target(rng):
    z = _distinct_logits(rng, (B, 5))
    y = np.eye(5, dtype=np.float32)[np.arange(B) % 5]
    got = _np(
        cc_losses.continuous_categorical_crossentropy(
            y, z, from_logits=True, label_smoothing=1.0
        )
    )
    np.testing.assert_allclose(got, ref.nll_rows(np.full((B, 5), 0.2), z), atol=1e-4)


# ------------------------------------------------------------- gradients


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_gradient_is_mean_minus_target(rng, label_smoothing):
    z = _distinct_logits(rng, (B, 5))
    y = _soft_targets(rng, (B, 5))

    def total(logits):
        return ops.sum(
            cc_losses.continuous_categorical_crossentropy(
                y,
                logits,
                from_logits=True,
                label_smoothing=label_smoothing,
                logit_scale=1.0,
            )
        )

    _, grad = value_and_grad(total, z)
    want = np.stack([ref.mean(row) for row in z]) - ref.smooth(y, label_smoothing)
    np.testing.assert_allclose(grad, want, atol=2e-5)


def test_gradient_finite_at_ties_and_extremes():
    z = np.array(
        [
            [0.0] * 5,
            [1e-7, 0, 0, 0, 0],
            [500.0, 0, 0, 0, 0],
            [-1e4] * 5,
            [0.0, 1e-6, 2e-6, 800.0, 800.0],
            [0.0, 1.0, 2.0, 3.0, 4.0],
        ],
        np.float32,
    )
    y = ref.smooth(np.eye(5)[[0, 1, 2, 3, 4, 0]], 0.1).astype(np.float32)

    def total(logits):
        return ops.sum(
            cc_losses.continuous_categorical_crossentropy(y, logits, from_logits=True)
        )

    value, grad = value_and_grad(total, z)
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    # The docs/numerics.md float32 bar on the mean: 1e-5 + 1e-3 * mean.
    mu = np.stack([ref.mean(row) for row in z])
    bar = ref.BAR["float32"]
    allowed = bar["mean_abs"] + bar["mean_rel"] * mu + 1e-7
    np.testing.assert_array_less(np.abs(grad - (mu - y)), allowed)
    np.testing.assert_allclose(grad[0], 1 / 5 - y[0], atol=1e-6)


# ---------------------------------------------------- probabilities input


def test_from_probabilities_uses_clipped_log(rng):
    p = rng.dirichlet(np.ones(5), size=B).astype(np.float32)
    p[0] = [1.0, 0.0, 0.0, 0.0, 0.0]  # exercises the clip
    y = _soft_targets(rng, (B, 5))
    got = _np(cc_losses.continuous_categorical_crossentropy(y, p))
    eps = keras.backend.epsilon()
    z = np.log(np.clip(p.astype(np.float64), eps, 1 - eps))
    want = ref.nll_rows(y, z)
    np.testing.assert_array_less(np.abs(got - want), _nll_tol(y, z, rel=3e-5))


def test_softmax_output_logits_recovered_where_tensors_carry_them(rng):
    """TF, PyTorch: the logits behind a Keras softmax are used (gap 100 >
    clip's ~16). JAX arrays carry no logits: there the clipped probabilities
    are used."""
    z = np.concatenate(
        [
            np.array([[100.0, 0.5, 0.0], [0.0, 1.0, 2.0]]),
            _distinct_logits(rng, (B - 2, 3)),
        ]
    ).astype(np.float32)
    y = ref.smooth(np.eye(3)[np.arange(B) % 3 * 2 % 3], 0.1).astype(np.float32)
    probs = keras.activations.softmax(ops.convert_to_tensor(z))
    loss = cc_losses.ContinuousCategoricalCrossentropy(reduction=None)
    got = _np(loss(y, probs))
    from_logits = ref.nll_rows(y, z)
    eps = keras.backend.epsilon()
    clipped_z = np.log(np.clip(_np(probs).astype(np.float64), eps, 1 - eps))
    from_clipped = ref.nll_rows(y, clipped_z)
    assert abs(from_logits[0] - from_clipped[0]) > 1.0  # the paths differ
    want = from_logits if RECOVERS_SOFTMAX_LOGITS else from_clipped
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_softmax_op_recovered_in_tf_graph_or_clipped_when_compiled_elsewhere(rng):
    z = np.concatenate(
        [np.array([[40.0, 0.5, 0.0]]), _distinct_logits(rng, (B - 1, 3))]
    ).astype(np.float32)
    y = ref.smooth(np.eye(3)[np.arange(B) % 3], 0.1).astype(np.float32)

    def fn(logits):
        if BACKEND == "tensorflow":
            import tensorflow as tf

            probs = tf.nn.softmax(logits)  # no _keras_logits: graph op lookup
        else:
            probs = ops.softmax(logits)
        return cc_losses.continuous_categorical_crossentropy(y, probs)

    got = _np(compiled(fn)(ops.convert_to_tensor(z)))
    eps = keras.backend.epsilon()
    e = np.exp(z.astype(np.float64) - z.max(-1, keepdims=True))
    p = e / e.sum(-1, keepdims=True)
    clipped = ref.nll_rows(y, np.log(np.clip(p, eps, 1 - eps)))
    want = ref.nll_rows(y, z) if BACKEND == "tensorflow" else clipped
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_from_logits_true_on_softmax_output_warns_like_keras():
    probs = keras.activations.softmax(
        ops.convert_to_tensor(np.zeros((B, 3), np.float32))
    )
    y = np.full((B, 3), 1 / 3, np.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cc_losses.continuous_categorical_crossentropy(y, probs, from_logits=True)
    warned = any("softmax" in str(w.message) for w in caught)
    assert warned == RECOVERS_SOFTMAX_LOGITS


# ------------------------------------------------------------ sparse


@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_sparse_equals_dense_on_one_hot(rng, label_smoothing):
    z = _distinct_logits(rng, (B, 5))
    labels = rng.integers(0, 5, size=B)
    dense = _np(
        cc_losses.continuous_categorical_crossentropy(
            np.eye(5, dtype=np.float32)[labels],
            z,
            from_logits=True,
            label_smoothing=label_smoothing,
            logit_scale=1.0,
        )
    )
    want = ref.nll_rows(ref.smooth(np.eye(5)[labels], label_smoothing), z)
    for lab in (labels, labels[:, None]):
        loss = cc_losses.SparseContinuousCategoricalCrossentropy(
            from_logits=True,
            label_smoothing=label_smoothing,
            logit_scale=1.0,
            reduction=None,
        )
        got = _np(loss(lab, z))
        np.testing.assert_allclose(got, dense, atol=1e-6)
        np.testing.assert_allclose(got, want, atol=1e-4)
    fn = _np(
        cc_losses.sparse_continuous_categorical_crossentropy(
            labels,
            z,
            from_logits=True,
            label_smoothing=label_smoothing,
            logit_scale=1.0,
        )
    )
    np.testing.assert_allclose(fn, dense, atol=1e-6)


# --------------------------------------------- reductions, weights, masks


@pytest.mark.parametrize(
    "reduction", ["sum", "sum_over_batch_size", "mean", "mean_with_sample_weight", None]
)
@pytest.mark.parametrize("weighted", [False, True])
def test_reductions_and_sample_weights_match_keras_semantics(rng, reduction, weighted):
    z = _distinct_logits(rng, (B, 5))
    y = _soft_targets(rng, (B, 5))
    sw = rng.uniform(0.0, 2.0, size=B).astype(np.float32) if weighted else None
    # The reference reduction reproduces Keras' own CategoricalCrossentropy on
    # the same inputs, so it is Keras' semantics, not our reading of them.
    cce_none = _np(
        keras.losses.CategoricalCrossentropy(from_logits=True, reduction=None)(y, z)
    )
    cce = _np(
        keras.losses.CategoricalCrossentropy(from_logits=True, reduction=reduction)(
            y, z, sample_weight=sw
        )
    )
    np.testing.assert_allclose(
        cce, ref.reduce(cce_none, sw, reduction=reduction), rtol=1e-5
    )

    per_example = ref.nll_rows(y, z)
    got = _np(
        cc_losses.ContinuousCategoricalCrossentropy(
            from_logits=True, reduction=reduction
        )(y, z, sample_weight=sw)
    )
    np.testing.assert_allclose(
        got, ref.reduce(per_example, sw, reduction=reduction), rtol=1e-4, atol=1e-5
    )


def test_per_timestep_sample_weights_and_masks_match_keras_semantics(rng):
    """[B, T, K] outputs of a masked sequence model, 2-D sample weights."""
    b, t, f, k = 3, 4, 2, 3
    x = rng.normal(size=(b, t, f)).astype(np.float32)
    x[0, 2:] = 0.0  # masked steps
    x[2, 3:] = 0.0
    inputs = keras.Input((t, f))
    masked = keras.layers.Masking(mask_value=0.0)(inputs)
    outputs = keras.layers.Dense(
        k, kernel_initializer=keras.initializers.RandomNormal(stddev=3.0, seed=1)
    )(masked)
    model = keras.Model(inputs, outputs)
    z = model(x)
    mask = _np(z._keras_mask) if hasattr(z, "_keras_mask") else np.any(x != 0, axis=-1)
    assert mask.sum() == b * t - 3
    y = _soft_targets(rng, (b, t, k))
    sw = rng.uniform(0.5, 1.5, size=(b, t)).astype(np.float32)
    per_step = ref.nll_rows(y, _np(z))
    cce_none = _np(
        keras.losses.CategoricalCrossentropy(from_logits=True, reduction=None)(
            y, _np(z)
        )
    )
    for reduction in ("sum_over_batch_size", "sum", "mean_with_sample_weight"):
        for weights in (None, sw):
            keras_value = _np(
                keras.losses.CategoricalCrossentropy(
                    from_logits=True, reduction=reduction
                )(y, z, sample_weight=weights)
            )
            np.testing.assert_allclose(
                keras_value, ref.reduce(cce_none, weights, mask, reduction), rtol=1e-5
            )
            got = _np(
                cc_losses.ContinuousCategoricalCrossentropy(
                    from_logits=True, reduction=reduction
                )(y, z, sample_weight=weights)
            )
            np.testing.assert_allclose(
                got, ref.reduce(per_step, weights, mask, reduction), rtol=1e-4
            )


# --------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "bad, what",
    [
        ([[0.5, 0.6, -0.1], [0.2, 0.3, 0.5]], "negative"),
        ([[0.5, 0.4, 0.0], [0.2, 0.3, 0.5]], "sum to 1"),
        ([[0.0, 0.0, 0.0], [0.2, 0.3, 0.5]], "sum to 1"),
        ([[np.nan, 0.5, 0.5], [0.2, 0.3, 0.5]], "finite"),
    ],
)
def test_invalid_targets_raise_value_error_eagerly(rng, bad, what):
    z = _distinct_logits(rng, (B, 3))
    bad = np.concatenate([bad, np.full((B - 2, 3), 0.25)]).astype(np.float32)
    bad[2:, 2] = 0.5
    loss = cc_losses.ContinuousCategoricalCrossentropy(
        from_logits=True, label_smoothing=0.1
    )
    with pytest.raises(ValueError, match="y_true") as info:
        loss(bad, z)
    assert what in str(info.value)
    with pytest.raises(ValueError, match="y_true"):
        cc_losses.continuous_categorical_crossentropy(bad, z, from_logits=True)
    # Opting out computes the formula as written (nothing renormalised).
    got = _np(
        cc_losses.ContinuousCategoricalCrossentropy(
            from_logits=True, validate_targets=False, reduction=None
        )(bad, z)
    )
    if what != "finite":
        np.testing.assert_allclose(got, ref.nll_rows(bad, z), atol=1e-4)


def test_target_sum_tolerance_is_1e_3_for_float32(rng):
    z = _distinct_logits(rng, (B, 5))
    ok = np.full((B, 5), 0.2, np.float32)
    bad = ok.copy()
    ok[0, 4] = 0.2008
    bad[0, 4] = 0.2012
    cc_losses.continuous_categorical_crossentropy(ok, z, from_logits=True)
    with pytest.raises(ValueError, match="y_true"):
        cc_losses.continuous_categorical_crossentropy(bad, z, from_logits=True)


def test_sparse_labels_out_of_range_raise(rng):
    z = _distinct_logits(rng, (2, 3))
    for labels in ([0, 3], [-1, 0]):
        with pytest.raises(ValueError, match="y_true"):
            cc_losses.SparseContinuousCategoricalCrossentropy(from_logits=True)(
                np.array(labels), z
            )


# Compiled code cannot raise on values. A TensorFlow graph asserts when the
# step runs; XLA drops the asserts, and jax.jit and torch.compile have none:
# there the rows of invalid targets are NaN, in the loss and in the gradient.
COMPILED_MODES = [False, True] if BACKEND == "tensorflow" else [True]


def _raises_in_graph(xla: bool):
    """The error a TensorFlow graph without XLA raises, else None."""
    if BACKEND != "tensorflow" or xla:
        return None
    import tensorflow as tf

    return tf.errors.InvalidArgumentError


@pytest.mark.parametrize("xla", COMPILED_MODES)
def test_invalid_targets_in_compiled_code_give_nan_rows(rng, xla):
    z = _distinct_logits(rng, (B, 3))
    bad = np.full((B, 3), 0.25, np.float32)
    bad[:, 2] = 0.5
    bad[0] = [0.5, 0.6, -0.1]  # a negative entry
    bad[1] = [0.5, 0.4, 0.0]  # sums to 0.9
    bad[2] = [np.nan, 0.5, 0.5]  # not finite
    y = ops.convert_to_tensor(bad)
    fn = compiled(
        lambda a, b: cc_losses.continuous_categorical_crossentropy(
            a, b, from_logits=True, label_smoothing=0.1, logit_scale=1.0
        ),
        xla=xla,
    )
    error = _raises_in_graph(xla)
    if error is not None:
        with pytest.raises(error, match="y_true"):
            fn(y, ops.convert_to_tensor(z))
        return
    got = _np(fn(y, ops.convert_to_tensor(z)))
    assert np.all(np.isnan(got[:3])), got
    smoothed = ref.smooth(bad[3:], 0.1)
    np.testing.assert_allclose(got[3:], ref.nll_rows(smoothed, z[3:]), atol=1e-4)
    _, grad = value_and_grad(lambda t: fn(y, t), z)
    assert np.all(np.isnan(grad[:3])), grad
    want = np.stack([ref.mean(row) for row in z[3:]]) - smoothed
    np.testing.assert_allclose(grad[3:], want, atol=2e-5)


@pytest.mark.parametrize("xla", COMPILED_MODES)
def test_sparse_labels_out_of_range_in_compiled_code_give_nan_rows(rng, xla):
    """Label 3 with K = 3 under XLA gave a finite wrong loss before."""
    z = _distinct_logits(rng, (B, 3))
    labels = np.array([3, -1, 0, 1, 2, 0])
    fn = compiled(
        lambda a, b: cc_losses.sparse_continuous_categorical_crossentropy(
            a, b, from_logits=True
        ),
        xla=xla,
    )
    error = _raises_in_graph(xla)
    if error is not None:
        with pytest.raises(error, match="y_true"):
            fn(ops.convert_to_tensor(labels), ops.convert_to_tensor(z))
        return
    got = _np(fn(ops.convert_to_tensor(labels), ops.convert_to_tensor(z)))
    assert np.all(np.isnan(got[:2])), got
    np.testing.assert_allclose(
        got[2:], ref.nll_rows(np.eye(3)[labels[2:]], z[2:]), atol=1e-4
    )


def test_logits_passed_as_probabilities_raise_eagerly(rng):
    """Raw logits with from_logits=False used to give a finite wrong loss
    (the log of clipped "probabilities"); now a clear error, for the dense
    and sparse functions and classes."""
    z = _distinct_logits(rng, (B, 3))
    z[0, 0] = -abs(z[0, 0]) - 0.5  # certainly a negative entry
    y = np.eye(3, dtype=np.float32)[np.arange(B) % 3]
    calls = [
        lambda: cc_losses.continuous_categorical_crossentropy(y, z),
        lambda: cc_losses.sparse_continuous_categorical_crossentropy(
            np.arange(B) % 3, z
        ),
        lambda: cc_losses.ContinuousCategoricalCrossentropy()(y, z),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="from_logits=True") as info:
            call()
        assert "`y_pred` must hold probabilities" in str(info.value)
    # Probabilities (unnormalised ones in [0, 1] too: only ratios matter) pass.
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    got = _np(cc_losses.continuous_categorical_crossentropy(y, 0.5 * p))
    np.testing.assert_allclose(got, ref.nll_rows(y, np.log(p)), atol=1e-4)


@pytest.mark.parametrize("xla", COMPILED_MODES)
def test_logits_passed_as_probabilities_in_compiled_code_give_nan_rows(rng, xla):
    z = _distinct_logits(rng, (B, 3))
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    p[:2] = z[:2]  # two rows of logits, each with a negative entry
    p[:2, 0] = -1.0
    y = np.eye(3, dtype=np.float32)[np.arange(B) % 3]
    fn = compiled(
        lambda a, b: cc_losses.continuous_categorical_crossentropy(a, b),
        xla=xla,
    )
    error = _raises_in_graph(xla)
    if error is not None:
        with pytest.raises(error, match="from_logits=True"):
            fn(ops.convert_to_tensor(y), ops.convert_to_tensor(p))
        return
    got = _np(fn(ops.convert_to_tensor(y), ops.convert_to_tensor(p)))
    assert np.all(np.isnan(got[:2])), got
    np.testing.assert_allclose(got[2:], ref.nll_rows(y[2:], z[2:]), atol=1e-4)


def test_fit_on_invalid_targets_stops_instead_of_training_silently(rng):
    """`fit` compiled (XLA on TensorFlow, jit on JAX) reports a NaN loss and
    `TerminateOnNaN` stops it; eager `fit` (PyTorch's default) raises."""
    x = rng.normal(size=(8, 4)).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[np.arange(8) % 3]
    y[1] = [0.5, 0.4, 0.0]
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile(
        optimizer="sgd",
        loss=cc_losses.ContinuousCategoricalCrossentropy(from_logits=True),
        jit_compile=JIT_COMPILE,
    )
    fit = dict(batch_size=4, epochs=3, verbose=0, shuffle=False)
    if not JIT_COMPILE:
        with pytest.raises(ValueError, match="y_true"):
            model.fit(x, y, **fit)
        return
    history = model.fit(x, y, callbacks=[keras.callbacks.TerminateOnNaN()], **fit)
    assert len(history.history["loss"]) == 1
    assert np.isnan(history.history["loss"][0])


def test_shape_inference_placeholders_are_not_checked(rng):
    """Keras infers output shapes by running the loss on placeholders inside
    `keras.SymbolicScope` (all ones on PyTorch, whose `fit` failed on valid
    one-hot targets because of them): they are not data and must pass."""
    z = ops.convert_to_tensor(_distinct_logits(rng, (B, 3)))
    with keras.SymbolicScope():
        dense = cc_losses.continuous_categorical_crossentropy(
            ops.ones((B, 3)), z, from_logits=True
        )
        sparse = cc_losses.sparse_continuous_categorical_crossentropy(
            ops.full((B,), 7, dtype="int32"), z, from_logits=True
        )
    assert tuple(dense.shape) == (B,) and tuple(sparse.shape) == (B,)


def test_shape_mismatch_raises_at_trace_time(rng):
    z = _distinct_logits(rng, (2, 4))
    y = np.full((2, 3), 1 / 3, np.float32)
    with pytest.raises(ValueError, match="shape"):
        cc_losses.continuous_categorical_crossentropy(y, z, from_logits=True)
    fn = compiled(
        lambda a, b: cc_losses.continuous_categorical_crossentropy(
            a, b, from_logits=True
        )
    )
    with pytest.raises(ValueError, match="shape"):
        fn(ops.convert_to_tensor(y), ops.convert_to_tensor(z))
    with pytest.raises(ValueError, match="y_true"):
        cc_losses.sparse_continuous_categorical_crossentropy(
            np.array([[0, 1]]), z, from_logits=True
        )


def test_bad_arguments(rng):
    z = _distinct_logits(rng, (2, 3))
    y = np.full((2, 3), 1 / 3, np.float32)
    with pytest.raises(ValueError, match="label_smoothing"):
        cc_losses.continuous_categorical_crossentropy(y, z, label_smoothing=1.5)
    with pytest.raises(ValueError, match="axis"):
        cc_losses.continuous_categorical_crossentropy(y, z, axis=True)
    with pytest.raises(ValueError, match="reduction"):
        cc_losses.ContinuousCategoricalCrossentropy(reduction="average")


# ------------------------------------------------------- mixed precision


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_loss_is_float32(rng, policy):
    half = policy.split("_")[1]
    z_half = ops.cast(
        ops.convert_to_tensor(_distinct_logits(rng, (B, 5), min_gap=0.05)), half
    )
    z32 = _np(ops.cast(z_half, "float32"))
    y = _soft_targets(rng, (B, 5))
    per_example = _np(
        cc_losses.continuous_categorical_crossentropy(y, z_half, from_logits=True)
    )
    assert per_example.dtype == np.float32
    np.testing.assert_array_less(
        np.abs(per_example - ref.nll_rows(y, z32)), _nll_tol(y, z32)
    )

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        model = keras.Sequential(
            [
                keras.Input((3,)),
                keras.layers.Dense(8, activation="tanh"),
                keras.layers.Dense(5),
            ]
        )
        x = rng.normal(size=(B, 3)).astype(np.float32)
        logits = model(x)
        assert keras.backend.standardize_dtype(logits.dtype) == half
        loss = cc_losses.ContinuousCategoricalCrossentropy(
            from_logits=True, label_smoothing=0.1, logit_scale=1.0
        )
        value = loss(y, logits)
        assert keras.backend.standardize_dtype(value.dtype) == "float32"
        want = ref.reduce(
            ref.nll_rows(ref.smooth(y, 0.1), _np(ops.cast(logits, "float32")))
        )
        np.testing.assert_allclose(_np(value), want, rtol=1e-4, atol=1e-5)
    finally:
        keras.config.set_dtype_policy(previous)


def test_mixed_float16_softmax_head_keeps_logits():
    """A float16 softmax output is cast to float32 by the loss; on TF the
    logits behind it must survive that cast (gap 40 > the clip's ~16)."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = keras.Sequential(
            [
                keras.Input((3,)),
                keras.layers.Dense(
                    3,
                    activation="softmax",
                    kernel_initializer="zeros",
                    bias_initializer=keras.initializers.Constant([40.0, 0.5, 0.0]),
                ),
            ]
        )
        x = np.ones((B, 3), np.float32)
        y = ref.smooth(np.eye(3)[np.arange(B) % 3], 0.1).astype(np.float32)
        got = _np(
            cc_losses.ContinuousCategoricalCrossentropy(reduction=None)(y, model(x))
        )
        # The same inside a compiled (XLA) train/eval step, with the loss-scale
        # optimizer mixed_float16 brings.
        model.compile(
            optimizer="sgd",
            loss=cc_losses.ContinuousCategoricalCrossentropy(),
            jit_compile=JIT_COMPILE,
        )
        compiled = model.evaluate(x, y, batch_size=B, verbose=0)
        history = model.fit(x, y, batch_size=B, epochs=1, verbose=0)
        assert type(model.optimizer).__name__ == "LossScaleOptimizer"
        assert np.isfinite(history.history["loss"][0])
        assert all(np.all(np.isfinite(_np(w))) for w in model.weights)
    finally:
        keras.config.set_dtype_policy(previous)
    z = np.tile(np.array([40.0, 0.5, 0.0]), (B, 1))
    p16 = np.exp(z - 40.0) / np.exp(z - 40.0).sum(-1, keepdims=True)
    eps = keras.backend.epsilon()
    clipped = ref.nll_rows(
        y, np.log(np.clip(p16.astype(np.float16).astype(np.float64), eps, 1 - eps))
    )
    want = ref.nll_rows(y, z) if RECOVERS_SOFTMAX_LOGITS else clipped
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(compiled, want.mean(), rtol=1e-3, atol=1e-4)
    assert abs(ref.nll_rows(y, z).mean() - clipped.mean()) > 0.1  # paths differ


# ------------------------------------------------------------ training


class _FiniteCheckingAdam(keras.optimizers.Adam):
    """Adam that counts the steps whose gradients had a non-finite entry."""

    def build(self, variables):
        super().build(variables)
        self.nonfinite_steps = self.add_variable(
            shape=(), initializer="zeros", dtype="float32", name="nonfinite_steps"
        )

    def apply(self, grads, trainable_variables=None):
        grads = list(grads)
        finite = ops.all(ops.stack([ops.all(ops.isfinite(g)) for g in grads]))
        # super().apply builds the optimizer (and our counter) on first use.
        result = super().apply(grads, trainable_variables)
        self.nonfinite_steps.assign_add(ops.where(finite, 0.0, 1.0))
        return result


class _BatchLosses(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.values = []

    def on_train_batch_end(self, batch, logs=None):
        self.values.append(float(logs["loss"]))


def test_finite_checking_optimizer_counts_nonfinite_gradients():
    """The gradient check of the training test is live on this backend."""
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    optimizer = _FiniteCheckingAdam(name="finite_checking_adam")
    model.compile(optimizer=optimizer, loss="mse", jit_compile=JIT_COMPILE)
    # The non-finite row comes last and unshuffled: first, it would make the
    # weights NaN and the following step would count too.
    x = np.array([[1.0, 2.0], [1.0, np.nan]], np.float32)
    model.fit(
        x, np.ones((2, 1), np.float32), batch_size=1, epochs=1, verbose=0, shuffle=False
    )
    assert float(_np(optimizer.nonfinite_steps)) == 1.0


@pytest.mark.parametrize("num_classes", [10, 100])
def test_cc_label_smoothing_training_500_steps_stays_finite(rng, num_classes):
    """CC-LS (alpha=0.1, the default logit scale) from random init, 500
    jit-compiled Adam steps.

    Training drives the CC's logit spread from ~0 towards the CC-LS optimum
    (gaps near K/alpha), through every regime of the log-partition."""
    keras.utils.set_random_seed(7)
    steps, batch, d = 500, 40, 16
    n = steps * batch  # one epoch of 500 steps: no per-epoch overhead
    centers = rng.normal(size=(num_classes, d)).astype(np.float32) * 3.0
    labels = rng.integers(0, num_classes, size=n)
    x = centers[labels] + rng.normal(size=(n, d)).astype(np.float32)
    y = np.eye(num_classes, dtype=np.float32)[labels]
    model = keras.Sequential(
        [
            keras.Input((d,)),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(num_classes),
        ]
    )
    optimizer = _FiniteCheckingAdam(learning_rate=0.03, name="finite_checking_adam")
    model.compile(
        optimizer=optimizer,
        loss=cc_losses.ContinuousCategoricalCrossentropy(
            from_logits=True, label_smoothing=0.1
        ),
        jit_compile=JIT_COMPILE,
    )
    record = _BatchLosses()
    model.fit(
        x, y, batch_size=batch, epochs=1, verbose=0, shuffle=False, callbacks=[record]
    )
    # logs["loss"] is the running mean over the epoch: one non-finite step
    # would make every later value non-finite.
    assert len(record.values) == steps
    assert np.all(np.isfinite(record.values))
    assert float(_np(optimizer.nonfinite_steps)) == 0.0
    assert int(_np(optimizer.iterations)) == 500
    for w in model.weights:
        assert np.all(np.isfinite(_np(w)))
    logits = _np(model(x[-400:]))
    # The default logit scale with label smoothing: the CC sees scale * z.
    scale = cc_losses.label_smoothing_logit_scale(num_classes, 0.1)
    spread = scale * (logits.max(-1) - logits.min(-1))
    assert np.median(spread) > 50.0  # it left the near-tie regime
    # And it learned: the loss went down, the classes are separated.
    assert record.values[-1] < record.values[9]
    assert np.mean(logits.argmax(-1) == labels[-400:]) > 0.9


def test_fit_jit_and_eager_agree(rng):
    keras.utils.set_random_seed(3)
    x = rng.normal(size=(32, 4)).astype(np.float32)
    labels = rng.integers(0, 6, size=32)
    results = []
    for jit in (False, JIT_COMPILE):
        model = keras.Sequential(
            [
                keras.Input((4,)),
                keras.layers.Dense(
                    6, kernel_initializer=keras.initializers.GlorotUniform(seed=5)
                ),
            ]
        )
        model.compile(
            loss=cc_losses.SparseContinuousCategoricalCrossentropy(
                from_logits=True, label_smoothing=0.1, logit_scale=1.0
            ),
            jit_compile=jit,
        )
        results.append(model.evaluate(x, labels, verbose=0, batch_size=32))
        z = _np(model(x))
    want = ref.reduce(ref.nll_rows(ref.smooth(np.eye(6)[labels], 0.1), z))
    np.testing.assert_allclose(results, want, rtol=1e-4)


# ---------------------------------------------------------- documentation


def test_docstring_examples():
    import keras_cc

    globs = {"np": np, "keras": keras, "keras_cc": keras_cc}
    for module in (cc_losses, keras_cc.metrics, keras_cc.ops):
        result = doctest.testmod(module, extraglobs=globs, optionflags=doctest.ELLIPSIS)
        assert result.attempted > 0 and result.failed == 0, module.__name__


def test_readme_example_runs():
    """The README's code block runs as it stands (nothing undefined)."""
    text = (pathlib.Path(__file__).parents[1] / "README.md").read_text()
    block = re.findall(r"```python\n(.*?)```", text, flags=re.S)[0]
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102
    loss = namespace["model"].loss
    assert isinstance(loss, cc_losses.ContinuousCategoricalCrossentropy)
    assert loss.label_smoothing == 0.1


def test_docs_api_examples_run():
    """Every ```python block of docs/api.md, in order, in one namespace."""
    text = (pathlib.Path(__file__).parents[1] / "docs" / "api.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 8
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "docs/api.md", "exec"), namespace)  # noqa: S102
    assert (
        namespace["restored"].loss.get_config() == namespace["model"].loss.get_config()
    )
