"""Tests of keras_cc.distillation: CC-KD for keras.distillation.Distiller.

The loss is checked against the independent CC reference (mpmath, no
keras_cc code) at the tempered targets and logits, its T² convention against
the limit it is there for, and its use in `keras.distillation.Distiller`:
training, configs, saving and loading.
"""

from __future__ import annotations

import doctest
import importlib
import sys

import keras
import numpy as np
import pytest

import keras_cc
from keras_cc.distillation import ContinuousCategoricalDistillation
from tests import reference as ref
from tests.helpers import to_numpy


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("temperature,scale", [(1.0, 1.0), (2.5, 1.7), (4.0, 26.0)])
def test_loss_matches_the_reference(rng, temperature, scale):
    t = rng.normal(scale=3.0, size=(5, 4))
    z = rng.normal(scale=2.0, size=(5, 4))
    loss = ContinuousCategoricalDistillation(temperature, logit_scale=scale)
    got = float(to_numpy(loss.compute_loss(t.astype("float32"), z.astype("float32"))))
    targets = _softmax(t / temperature)
    want = temperature**2 * np.mean(ref.nll_rows(targets, scale * z / temperature))
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-5)


def test_mean_parameterisation_is_the_losses(rng):
    t, z = rng.normal(size=(2, 6, 5)).astype("float32")
    loss = ContinuousCategoricalDistillation(2.0, parameterization="mean")
    plain = keras_cc.losses.ContinuousCategoricalCrossentropy(
        from_logits=True, parameterization="mean"
    )
    want = 4.0 * plain(keras.ops.softmax(t / 2.0), z / 2.0)
    np.testing.assert_allclose(
        to_numpy(loss.compute_loss(t, z)), to_numpy(want), rtol=1e-5
    )


def test_temperature_squared_keeps_the_gradient_level(rng):
    """With T² the gradient in the student's logits tends to a limit as T
    grows (without it, it would halve from T = 100 to T = 200)."""
    import tensorflow as tf

    t = tf.constant(rng.normal(scale=3.0, size=(4, 5)), tf.float32)
    z = tf.Variable(rng.normal(scale=3.0, size=(4, 5)), dtype=tf.float32)
    grads = []
    for temperature in (100.0, 200.0):
        loss = ContinuousCategoricalDistillation(temperature, logit_scale=2.0)
        with tf.GradientTape() as tape:
            value = loss.compute_loss(t, z)
        grads.append(tape.gradient(value, z).numpy())
    # Each is T · s · (cc_mean - target), a difference of nearly uniform
    # float32 vectors times 200-400: compare sizes and directions, not bits.
    sizes = [np.linalg.norm(g) for g in grads]
    assert sizes[0] > 1e-2
    assert abs(sizes[1] / sizes[0] - 1.0) < 0.05
    cosine = np.sum(grads[0] * grads[1]) / (sizes[0] * sizes[1])
    assert cosine > 0.99


def test_bad_arguments_are_errors():
    for kwargs, name in [
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": float("inf")}, "temperature"),
        ({"temperature": "4"}, "temperature"),
        ({"logit_scale": "auto"}, "logit_scale"),
        ({"logit_scale": None}, "logit_scale"),
        ({"logit_scale": -1.0}, "logit_scale"),
        ({"parameterization": "moment"}, "parameterization"),
        ({"parameterization": "mean", "logit_scale": 2.0}, "logit_scale"),
    ]:
        with pytest.raises(ValueError, match=f"`{name}`"):
            ContinuousCategoricalDistillation(**kwargs)
    loss = ContinuousCategoricalDistillation()
    with pytest.raises(ValueError, match="one logits tensor"):
        loss.validate_outputs([np.zeros((2, 3))], [np.zeros((2, 3))])
    with pytest.raises(ValueError, match="same shape"):
        loss.compute_loss(np.zeros((2, 3)), np.zeros((2, 4)))


def _models(seed: int = 0):
    keras.utils.set_random_seed(seed)
    teacher = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4)])
    student = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4)])
    return teacher, student


@pytest.mark.filterwarnings("ignore:`compile\\(\\)` was not called")
def test_distiller_trains_saves_and_loads(tmp_path, rng):
    teacher, student = _models()
    loss = ContinuousCategoricalDistillation(temperature=4.0, logit_scale=7.5)
    distiller = keras.distillation.Distiller(
        teacher=teacher,
        student=student,
        distillation_losses=loss,
        student_loss_weight=0.25,
    )
    x = rng.normal(size=(16, 6)).astype("float32")
    y = np.arange(16) % 4
    teacher_before = [w.copy() for w in teacher.get_weights()]
    student_before = [w.copy() for w in student.get_weights()]
    # Eagerly: tracing a train function costs seconds, two steps do not.
    distiller.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        run_eagerly=True,
    )
    distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
    for a, b in zip(teacher_before, teacher.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)  # the teacher is frozen
    assert not np.array_equal(student_before[0], student.get_weights()[0])

    config = keras.saving.serialize_keras_object(loss)
    assert config["registered_name"] == "keras_cc>ContinuousCategoricalDistillation"
    clone = keras.saving.deserialize_keras_object(config)
    assert clone.get_config() == {
        "temperature": 4.0,
        "logit_scale": 7.5,
        "parameterization": "natural",
    }

    path = tmp_path / "distiller.keras"
    distiller.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, keras.distillation.Distiller)
    (restored,) = loaded.distillation_losses
    assert isinstance(restored, ContinuousCategoricalDistillation)
    assert restored.get_config() == loss.get_config()
    assert loaded.student_loss_weight == 0.25
    assert not loaded.teacher.trainable
    np.testing.assert_allclose(to_numpy(loaded(x)), to_numpy(distiller(x)), rtol=1e-6)
    # Keras' Distiller does not save its compile settings (it warns): compile
    # again, and the loss is the same.
    loaded.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    np.testing.assert_allclose(
        to_numpy(loaded.compute_loss(x, y, loaded(x))),
        to_numpy(distiller.compute_loss(x, y, distiller(x))),
        rtol=1e-6,
    )


def test_docstring_example_runs():
    globs = {"np": np, "keras": keras, "keras_cc": keras_cc}
    result = doctest.testmod(keras_cc.distillation, extraglobs=globs)
    assert result.attempted > 0 and result.failed == 0


def test_clear_error_without_keras_distillation(monkeypatch):
    """On a Keras before 3.12 (no keras.distillation) the import says what
    to upgrade; `import keras_cc` itself does not need it."""
    monkeypatch.delattr(keras, "distillation")
    monkeypatch.setitem(sys.modules, "keras.distillation", None)
    monkeypatch.delitem(sys.modules, "keras_cc.distillation")
    with pytest.raises(ImportError, match=r"Keras added in version 3\.12\.0"):
        importlib.import_module("keras_cc.distillation")
    monkeypatch.delattr(keras_cc, "distillation")
    with pytest.raises(ImportError, match=r"keras>=3\.12\.0"):
        keras_cc.distillation  # noqa: B018
