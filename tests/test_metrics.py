"""Tests of keras_cc.metrics against an mpmath reference.

Backend-agnostic: CI runs this module under the TensorFlow backend and again
with KERAS_BACKEND=jax.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import ops

from keras_cc import losses as cc_losses
from keras_cc import metrics as cc_metrics
from tests import reference as ref
from tests.helpers import JIT_COMPILE
from tests.helpers import to_numpy as _np

BACKEND = keras.backend.backend()
B, K = 6, 5  # one shape throughout: JAX compiles per eager shape


def _logits(rng: np.random.Generator, rows: int = B) -> np.ndarray:
    z = rng.normal(size=(rows, K), scale=3.0).astype(np.float32)
    z += np.arange(K, dtype=np.float32) * 1e-2  # keep the nodes distinct
    return z


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_weighted_mean_over_batches(rng, label_smoothing):
    metric = cc_metrics.ContinuousCategoricalCrossentropy(
        from_logits=True, label_smoothing=label_smoothing, logit_scale=1.0
    )
    values, weights = [], []
    for step in range(3):
        z = _logits(rng)
        y = rng.dirichlet(np.ones(K), size=B).astype(np.float32)
        w = rng.uniform(0.1, 2.0, size=B).astype(np.float32) if step else None
        metric.update_state(y, z, sample_weight=w)
        values.append(ref.nll_rows(ref.smooth(y, label_smoothing), z))
        weights.append(np.ones(B) if w is None else w)
    values, weights = np.concatenate(values), np.concatenate(weights)
    want = np.sum(values * weights) / np.sum(weights)
    np.testing.assert_allclose(float(_np(metric.result())), want, rtol=1e-5, atol=1e-5)
    metric.reset_state()
    assert float(_np(metric.result())) == 0.0


@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_sparse_metric_matches_reference(rng, label_smoothing):
    metric = cc_metrics.SparseContinuousCategoricalCrossentropy(
        from_logits=True, label_smoothing=label_smoothing, logit_scale=1.0
    )
    z = _logits(rng)
    labels = rng.integers(0, K, size=B)
    metric.update_state(labels, z)
    want = ref.nll_rows(ref.smooth(np.eye(K)[labels], label_smoothing), z).mean()
    np.testing.assert_allclose(float(_np(metric.result())), want, rtol=1e-5, atol=1e-5)


def test_metric_equals_loss_with_default_reduction(rng):
    z = _logits(rng)
    y = rng.dirichlet(np.ones(K), size=B).astype(np.float32)
    metric = cc_metrics.ContinuousCategoricalCrossentropy(
        from_logits=True, label_smoothing=0.1
    )
    metric.update_state(y, z)
    loss = cc_losses.ContinuousCategoricalCrossentropy(
        from_logits=True, label_smoothing=0.1
    )
    np.testing.assert_allclose(_np(metric.result()), _np(loss(y, z)), rtol=1e-6)


def test_config_round_trip_and_serialization():
    for cls in (
        cc_metrics.ContinuousCategoricalCrossentropy,
        cc_metrics.SparseContinuousCategoricalCrossentropy,
    ):
        metric = cls(name="cc", from_logits=True, label_smoothing=0.3, axis=-1)
        config = metric.get_config()
        assert config["label_smoothing"] == 0.3 and config["from_logits"] is True
        clone = cls.from_config(config)
        assert clone.get_config() == config
        restored = keras.metrics.deserialize(keras.metrics.serialize(metric))
        assert type(restored) is cls and restored.get_config() == config
        # Distinct from the loss classes of the same name.
        registered = f"keras_cc>{cls.__name__}Metric"
        assert keras.saving.get_registered_name(cls) == registered
        assert keras.saving.get_registered_object(registered) is cls


def test_metric_in_compile_and_evaluate(rng):
    x = rng.normal(size=(B, 3)).astype(np.float32)
    labels = rng.integers(0, K, size=B)
    model = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(
                K,
                kernel_initializer=keras.initializers.RandomNormal(stddev=2.0, seed=3),
            ),
        ]
    )
    model.compile(
        loss=cc_losses.SparseContinuousCategoricalCrossentropy(
            from_logits=True, label_smoothing=0.1, logit_scale=1.0
        ),
        metrics=[
            cc_metrics.SparseContinuousCategoricalCrossentropy(
                from_logits=True, label_smoothing=0.1, logit_scale=1.0, name="sparse_cc"
            )
        ],
    )
    result = model.evaluate(x, labels, batch_size=B, verbose=0, return_dict=True)
    z = _np(model(x))
    want = ref.nll_rows(ref.smooth(np.eye(K)[labels], 0.1), z).mean()
    np.testing.assert_allclose(result["sparse_cc"], want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(result["loss"], want, rtol=1e-5, atol=1e-5)


def test_softmax_output_metric(rng):
    """TF and PyTorch recover the logits behind a softmax (gap 60 > clip's
    ~16); JAX uses the clipped probabilities."""
    z = _logits(rng)
    z[0, 0] = 60.0
    probs = keras.activations.softmax(ops.convert_to_tensor(z))
    y = ref.smooth(np.eye(K)[np.arange(B) % K], 0.1).astype(np.float32)
    metric = cc_metrics.ContinuousCategoricalCrossentropy()
    metric.update_state(y, probs)
    eps = keras.backend.epsilon()
    clipped = np.log(np.clip(_np(probs).astype(np.float64), eps, 1 - eps))
    recovers = BACKEND in ("tensorflow", "torch")
    want = ref.nll_rows(y, z if recovers else clipped).mean()
    np.testing.assert_allclose(float(_np(metric.result())), want, rtol=1e-5, atol=1e-4)


def test_invalid_targets_raise(rng):
    z = _logits(rng)
    y = np.full((B, K), 1.0 / K, np.float32)
    y[1] *= 1.1
    metric = cc_metrics.ContinuousCategoricalCrossentropy(from_logits=True)
    with pytest.raises(ValueError, match="y_true"):
        metric.update_state(y, z)
    with pytest.raises(ValueError, match="y_true"):
        cc_metrics.SparseContinuousCategoricalCrossentropy(
            from_logits=True
        ).update_state(np.full(B, K), z)


def test_invalid_targets_in_compiled_evaluate_give_nan(rng):
    """Compiled (XLA on TensorFlow, jit on JAX), an invalid row makes the
    metric NaN; eager `evaluate` (PyTorch's default) raises."""
    x = rng.normal(size=(B, 3)).astype(np.float32)
    y = np.eye(K, dtype=np.float32)[np.arange(B) % K]
    y[2] = 0.9 / K  # sums to 0.9
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(K)])
    model.compile(
        # Keras' cross-entropy does not check targets: only the metric does.
        loss=keras.losses.CategoricalCrossentropy(from_logits=True),
        metrics=[cc_metrics.ContinuousCategoricalCrossentropy(from_logits=True)],
        jit_compile=JIT_COMPILE,
    )
    if not JIT_COMPILE:
        with pytest.raises(ValueError, match="y_true"):
            model.evaluate(x, y, batch_size=B, verbose=0)
        return
    result = model.evaluate(x, y, batch_size=B, verbose=0, return_dict=True)
    assert np.isfinite(result["loss"])
    assert np.isnan(result["continuous_categorical_crossentropy"])
