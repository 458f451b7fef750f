"""The `logit_scale` option of the CC losses and metrics.

Checked against the independent mpmath references (`tests.reference`): the loss
with scale s is the CC negative log-likelihood of the target under logits
s * z, its gradient is s * (mean(s z) - y), "auto" puts the CC-LS optimum
where the LS optimum is, and the option survives get_config, `.keras`
save/load and SavedModel export.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

import keras_cc
from keras_cc import losses as cc_losses
from keras_cc import metrics as cc_metrics
from tests import reference as ref
from tests.helpers import to_numpy as _np
from tests.helpers import value_and_grad

B, K = 6, 5


@pytest.mark.parametrize("scale", [0.5, 7.0])
def test_value_is_cc_nll_of_scaled_logits(rng, scale):
    z = rng.normal(size=(B, K), scale=2.0)
    y = rng.dirichlet(np.ones(K), size=B)
    got = _np(
        cc_losses.continuous_categorical_crossentropy(
            y, z, from_logits=True, logit_scale=scale
        )
    )
    want = ref.nll_rows(y, scale * z)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


def test_gradient_is_scale_times_mean_minus_target(rng):
    scale, alpha = 3.0, 0.1
    z = rng.normal(size=(B, K))
    labels = rng.integers(0, K, size=B)
    y = np.eye(K)[labels]

    def loss(logits):
        return cc_losses.sparse_continuous_categorical_crossentropy(
            labels,
            logits,
            from_logits=True,
            label_smoothing=alpha,
            logit_scale=scale,
        )

    _, grad = value_and_grad(loss, z)
    want = scale * (
        np.stack([ref.mean(scale * row) for row in z]) - ref.smooth(y, alpha)
    )
    np.testing.assert_allclose(grad, want, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("num_classes, alpha", [(10, 0.1), (100, 0.1), (10, 0.3)])
def test_auto_scale_moves_cc_optimum_to_ls_optimum(num_classes, alpha):
    """At the LS optimum's logits z* (softmax(z*) = y_LS exactly), the CC mean
    of s * z* is close to y_LS: both losses then want the same raw logits."""
    scale = cc_losses.label_smoothing_logit_scale(num_classes, alpha)
    ls_gap = math.log(1.0 + num_classes * (1.0 - alpha) / alpha)
    z = np.zeros(num_classes)
    z[0] = ls_gap
    softmax = np.exp(z) / np.exp(z).sum()
    np.testing.assert_allclose(softmax[1:], alpha / num_classes, rtol=1e-12)
    # The positive-series reference: the K - 1 tied logits need no care.
    _, cc_mean = ref.mpmath_series(scale * z)
    # The rule is the far-vertex asymptote E[x_k] ~ 1/gap: a few % off.
    np.testing.assert_allclose(cc_mean[1:], alpha / num_classes, rtol=0.1)
    # Without the scale the CC mean is nowhere near the target.
    _, unscaled_mean = ref.mpmath_series(z)
    assert unscaled_mean[1] > 2 * alpha / num_classes


def test_auto_equals_explicit_scale(rng):
    z = rng.normal(size=(B, K))
    y = np.eye(K)[rng.integers(0, K, size=B)]
    auto = cc_losses.ContinuousCategoricalCrossentropy(
        from_logits=True, label_smoothing=0.2, logit_scale="auto", reduction=None
    )
    explicit = cc_losses.ContinuousCategoricalCrossentropy(
        from_logits=True,
        label_smoothing=0.2,
        logit_scale=(K / 0.2) / math.log(1 + K * 0.8 / 0.2),
        reduction=None,
    )
    np.testing.assert_allclose(_np(auto(y, z)), _np(explicit(y, z)), rtol=1e-12)


def test_default_scale_is_the_rule_with_label_smoothing_and_one_without(rng):
    """The headline `ContinuousCategoricalCrossentropy(label_smoothing=α)` is
    the mpmath CC NLL of y_LS under logits s*z with s the closed-form rule;
    without smoothing, and under the mean parameterisation, the default is 1;
    the config keeps `None`, so a reload follows the same rule."""
    z = rng.normal(size=(B, K))
    labels = rng.integers(0, K, size=B)
    y = np.eye(K)[labels]
    rule = (K / 0.1) / math.log(1 + K * 0.9 / 0.1)
    want = ref.nll_rows(ref.smooth(y, 0.1), rule * z)
    exact = cc_losses.continuous_categorical_crossentropy(  # float64 in and out
        y, z, from_logits=True, label_smoothing=0.1
    )
    # Logits s*z reach 60 here: float64 cancellation leaves ~1e-7 (the bar
    # of docs/numerics.md is relative to the terms, not the difference).
    np.testing.assert_allclose(_np(exact), want, rtol=1e-6, atol=1e-6)
    # The classes compute in float32 (Keras' floatx).
    headline = cc_losses.ContinuousCategoricalCrossentropy(
        from_logits=True, label_smoothing=0.1, reduction=None
    )
    np.testing.assert_allclose(_np(headline(y, z)), want, rtol=1e-5, atol=1e-5)
    sparse = cc_losses.SparseContinuousCategoricalCrossentropy(
        from_logits=True, label_smoothing=0.1, reduction=None
    )
    np.testing.assert_allclose(_np(sparse(labels, z)), want, rtol=1e-5, atol=1e-5)
    assert headline.get_config()["logit_scale"] is None
    clone = cc_losses.ContinuousCategoricalCrossentropy.from_config(
        headline.get_config()
    )
    np.testing.assert_allclose(_np(clone(y, z)), want, rtol=1e-5, atol=1e-5)
    soft = rng.dirichlet(np.ones(K), size=B)
    plain = cc_losses.continuous_categorical_crossentropy(soft, z, from_logits=True)
    np.testing.assert_allclose(_np(plain), ref.nll_rows(soft, z), rtol=1e-9, atol=1e-9)
    mean = cc_losses.continuous_categorical_crossentropy(
        y, z, from_logits=True, label_smoothing=0.1, parameterization="mean"
    )
    mean_unscaled = cc_losses.continuous_categorical_crossentropy(
        y,
        z,
        from_logits=True,
        label_smoothing=0.1,
        parameterization="mean",
        logit_scale=1.0,
    )
    np.testing.assert_allclose(_np(mean), _np(mean_unscaled), rtol=1e-12)
    metric = cc_metrics.ContinuousCategoricalCrossentropy(
        from_logits=True, label_smoothing=0.1
    )
    metric.update_state(y, z)
    np.testing.assert_allclose(float(metric.result()), want.mean(), rtol=1e-6)


def test_default_scale_with_an_unknown_number_of_classes_is_a_clear_error():
    """Traced with a class axis of unknown size, the default (like "auto")
    cannot compute the rule: the error says what to pass."""
    resolve = cc_losses._resolve_logit_scale
    with pytest.raises(ValueError, match="static number of classes.*1.0 for plain"):
        resolve(None, 0.1, None, "natural")
    assert resolve(None, 0.1, 10, "natural") == pytest.approx(
        cc_losses.label_smoothing_logit_scale(10, 0.1)
    )
    # No rule is needed without smoothing or with the mean parameterisation.
    assert resolve(None, 0.0, None, "natural") == 1.0
    assert resolve(None, 0.1, None, "mean") == 1.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"logit_scale": 0.0}, "positive finite number"),
        ({"logit_scale": -2.0}, "positive finite number"),
        ({"logit_scale": float("nan")}, "positive finite number"),
        ({"logit_scale": True}, "positive finite number"),
        ({"logit_scale": "big"}, '"auto"'),
        ({"logit_scale": "auto"}, "label_smoothing"),
        ({"logit_scale": "auto", "label_smoothing": 1.0}, "label_smoothing"),
    ],
)
def test_bad_logit_scale_is_a_clear_error(kwargs, match):
    for cls in (
        cc_losses.ContinuousCategoricalCrossentropy,
        cc_losses.SparseContinuousCategoricalCrossentropy,
        cc_metrics.ContinuousCategoricalCrossentropy,
    ):
        with pytest.raises(ValueError, match=match):
            cls(from_logits=True, **kwargs)


@pytest.mark.parametrize(
    "args, match",
    [((1, 0.1), ">= 2"), ((2.5, 0.1), "integer"), ((10, 0.0), "strictly")],
)
def test_bad_scale_rule_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        cc_losses.label_smoothing_logit_scale(*args)


def test_metric_matches_loss_and_round_trips(rng):
    z = rng.normal(size=(B, K)).astype(np.float32)
    y = rng.dirichlet(np.ones(K), size=B).astype(np.float32)
    options = dict(from_logits=True, label_smoothing=0.1, logit_scale="auto")
    metric = cc_metrics.ContinuousCategoricalCrossentropy(**options)
    metric.update_state(y, z)
    loss = cc_losses.ContinuousCategoricalCrossentropy(**options)
    np.testing.assert_allclose(float(metric.result()), float(loss(y, z)), rtol=1e-6)
    config = metric.get_config()
    assert config["logit_scale"] == "auto"
    clone = cc_metrics.ContinuousCategoricalCrossentropy.from_config(config)
    assert clone.get_config() == config


def test_keras_file_and_savedmodel_keep_the_option(rng, tmp_path):
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(K)])
    model.compile(
        optimizer="adam",
        loss=cc_losses.ContinuousCategoricalCrossentropy(
            from_logits=True, label_smoothing=0.1, logit_scale="auto"
        ),
    )
    x = rng.normal(size=(B, 4)).astype(np.float32)
    y = np.eye(K, dtype=np.float32)[rng.integers(0, K, size=B)]
    model.fit(x, y, batch_size=B, epochs=1, verbose=0)
    path = tmp_path / "m.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    assert restored.loss.get_config()["logit_scale"] == "auto"
    want = ref.nll_rows(
        ref.smooth(y, 0.1),
        cc_losses.label_smoothing_logit_scale(K, 0.1) * _np(model(x)),
    ).mean()
    got = restored.evaluate(x, y, batch_size=B, verbose=0)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        model.export(str(tmp_path / "saved"), verbose=False)
        served = tf.saved_model.load(str(tmp_path / "saved"))
        np.testing.assert_allclose(
            _np(served.serve(x)), _np(model(x)), rtol=1e-6, atol=1e-6
        )


def test_public_name():
    assert keras_cc.losses.label_smoothing_logit_scale(10, 0.1) == pytest.approx(
        100.0 / math.log(91.0)
    )
