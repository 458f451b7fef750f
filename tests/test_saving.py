"""Serialization of the keras_cc losses and metrics.

Backend-agnostic (the fresh-process load runs under the same KERAS_BACKEND
as the test session; `model.export` goes through jax2tf on JAX).
"""

from __future__ import annotations

import json
import os

import keras
import numpy as np
import pytest
from keras import ops

from keras_cc import losses as cc_losses
from keras_cc import metrics as cc_metrics
from tests import reference as ref
from tests.helpers import run_python
from tests.helpers import to_numpy as _np

B, K = 6, 5


LOSS_CASES = [
    (
        cc_losses.ContinuousCategoricalCrossentropy,
        dict(
            from_logits=True,
            label_smoothing=0.1,
            axis=-1,
            reduction="sum",
            name="my_cc",
            validate_targets=False,
        ),
    ),
    (
        cc_losses.SparseContinuousCategoricalCrossentropy,
        dict(from_logits=False, label_smoothing=0.25, reduction=None),
    ),
]


@pytest.mark.parametrize("cls, kwargs", LOSS_CASES)
def test_loss_config_round_trip(rng, cls, kwargs):
    loss = cls(**kwargs)
    config = loss.get_config()
    for key, value in kwargs.items():
        assert config[key] == value
    clone = cls.from_config(config)
    assert clone.get_config() == config
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(restored) is cls and restored.get_config() == config
    # The clone computes the same thing (label smoothing, reduction, ...).
    z = rng.normal(size=(B, K)).astype(np.float32)
    if not kwargs.get("from_logits"):
        z = _np(ops.softmax(z))
    if cls is cc_losses.SparseContinuousCategoricalCrossentropy:
        y = rng.integers(0, K, size=B)
    else:
        y = rng.dirichlet(np.ones(K), size=B).astype(np.float32)
    np.testing.assert_allclose(_np(restored(y, z)), _np(loss(y, z)), rtol=1e-6)
    assert keras.saving.get_registered_name(cls) == f"keras_cc>{cls.__name__}"


def test_loss_functions_are_registered():
    for fn in (
        cc_losses.continuous_categorical_crossentropy,
        cc_losses.sparse_continuous_categorical_crossentropy,
    ):
        name = f"keras_cc>{fn.__name__}"
        assert keras.saving.get_registered_object(name) is fn
        assert keras.saving.get_registered_name(fn) == name


def _trained_model(
    rng: np.random.Generator, epochs: int
) -> tuple[keras.Model, np.ndarray, np.ndarray]:
    """A small model compiled with a CC loss and metric, fitted for `epochs`
    on random one-hot data; the model and that data."""
    keras.utils.set_random_seed(5)
    model = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(8, activation="tanh"),
            keras.layers.Dense(K),
        ]
    )
    model.compile(
        optimizer="adam",
        loss=cc_losses.ContinuousCategoricalCrossentropy(
            from_logits=True,
            label_smoothing=0.1,
            logit_scale=1.0,
            reduction="sum",
            name="cc_ls",
        ),
        metrics=[
            cc_metrics.ContinuousCategoricalCrossentropy(from_logits=True, name="cc"),
        ],
    )
    x = rng.normal(size=(B, 3)).astype(np.float32)
    y = np.eye(K, dtype=np.float32)[rng.integers(0, K, size=B)]
    model.fit(x, y, batch_size=B, epochs=epochs, verbose=0)
    return model, x, y


def test_keras_file_loads_in_fresh_process_with_only_import_keras_cc(rng, tmp_path):
    model, x, y = _trained_model(rng, epochs=2)
    path = str(tmp_path / "m.keras")
    model.save(path)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    want_eval = model.evaluate(x, y, batch_size=B, verbose=0, return_dict=True)
    want_pred = _np(model(x))
    # The loss value really carries the config (label smoothing, "sum").
    want_loss = ref.nll_rows(ref.smooth(y, 0.1), want_pred).sum()
    np.testing.assert_allclose(want_eval["loss"], want_loss, rtol=1e-5)

    code = f"""
import json, sys
import numpy as np
import keras
import keras_cc  # nothing else from keras_cc: registration must come from here

model = keras.saving.load_model({path!r})
x = np.load({str(tmp_path / "x.npy")!r})
y = np.load({str(tmp_path / "y.npy")!r})
result = model.evaluate(x, y, batch_size=len(x), verbose=0, return_dict=True)
print(json.dumps({{
    "loss_class": type(model.loss).__module__ + "." + type(model.loss).__name__,
    "loss_config": model.loss.get_config(),
    "eval": {{k: float(v) for k, v in result.items()}},
    "pred": np.asarray(keras.ops.convert_to_numpy(model(x))).tolist(),
}}))
"""
    out = run_python(code, env={"KERAS_BACKEND": keras.backend.backend()})
    got = json.loads(out.strip().splitlines()[-1])
    assert got["loss_class"] == "keras_cc.losses.ContinuousCategoricalCrossentropy"
    assert got["loss_config"] == model.loss.get_config()
    np.testing.assert_allclose(np.array(got["pred"]), want_pred, rtol=1e-6, atol=1e-6)
    assert set(got["eval"]) == set(want_eval)
    for key, value in want_eval.items():
        np.testing.assert_allclose(got["eval"][key], value, rtol=1e-5)


DATA = os.path.join(os.path.dirname(__file__), "data")


def test_keras_file_written_by_version_0_1_loads():
    """A model saved by keras_cc 0.1 (tests/data/make_v0_1_model.py): two
    heads, both losses and both metrics with non-default options."""
    model = keras.saving.load_model(os.path.join(DATA, "cc_v0_1_model.keras"))
    saved = np.load(os.path.join(DATA, "cc_v0_1_model.npz"))
    # Saved before `parameterization` existed: loaded as trained, "natural".
    options = dict(axis=-1, from_logits=True, parameterization="natural")
    assert isinstance(model.loss["soft"], cc_losses.ContinuousCategoricalCrossentropy)
    assert model.loss["soft"].get_config() == dict(
        name="continuous_categorical_crossentropy",
        reduction="sum_over_batch_size",
        label_smoothing=0.1,
        validate_targets=True,
        logit_scale="auto",
        **options,
    )
    assert isinstance(
        model.loss["label"], cc_losses.SparseContinuousCategoricalCrossentropy
    )
    assert model.loss["label"].get_config() == dict(
        name="sparse_continuous_categorical_crossentropy",
        reduction="sum",
        label_smoothing=0.0,
        validate_targets=False,
        logit_scale=1.0,
        **options,
    )
    assert model.loss["soft"].logit_scale == "auto"  # options read as attributes
    predictions = model.predict(saved["x"], verbose=0)
    # float32 matmuls round differently on other CPUs (about 1e-7 absolute);
    # weights that failed to load would be off by about 0.1.
    tolerance = dict(rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(predictions["soft"], saved["pred_soft"], **tolerance)
    np.testing.assert_allclose(predictions["label"], saved["pred_label"], **tolerance)
    labels = saved["labels"]
    y = {"soft": np.eye(3, dtype=np.float32)[labels], "label": labels}
    results = model.evaluate(
        saved["x"], y, batch_size=len(labels), verbose=0, return_dict=True
    )
    assert sorted(results) == list(saved["result_names"])
    np.testing.assert_allclose(
        [results[k] for k in saved["result_names"]], saved["result_values"], rtol=1e-5
    )
    metrics = {
        type(m).__module__ + "." + type(m).__name__: m.get_config()
        for group in model.metrics  # the compiled metrics are grouped
        for m in getattr(group, "metrics", [group])
        if type(m).__module__ == "keras_cc.metrics"
    }
    assert len(metrics) == 2
    assert metrics["keras_cc.metrics.SparseContinuousCategoricalCrossentropy"] == {
        "name": "sparse_continuous_categorical_crossentropy",
        "dtype": "float32",
        "label_smoothing": 0.2,
        "validate_targets": True,
        "logit_scale": 1.0,
        **options,
    }
    assert metrics["keras_cc.metrics.ContinuousCategoricalCrossentropy"] == {
        "name": "continuous_categorical_crossentropy",
        "dtype": "float32",
        "label_smoothing": 0.0,
        "validate_targets": True,
        "logit_scale": 1.0,
        **options,
    }


def test_export_tf_saved_model_serves(rng, tmp_path):
    import tensorflow as tf

    model, x, _ = _trained_model(rng, epochs=1)
    path = str(tmp_path / "exported")
    model.export(path, verbose=False)
    assert os.path.exists(os.path.join(path, "saved_model.pb"))
    served = tf.saved_model.load(path)
    got = served.serve(tf.constant(x)).numpy()
    np.testing.assert_allclose(got, _np(model(x)), rtol=1e-5, atol=1e-6)
