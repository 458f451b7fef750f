"""Writes cc_v0_1_model.keras and cc_v0_1_model.npz with keras_cc 0.1.

Run from a checkout of keras_cc 0.1 (git commit f93650a), TensorFlow backend:

    git worktree add /tmp/v01 f93650a
    PYTHONPATH=/tmp/v01 python tests/data/make_v0_1_model.py tests/data

The .keras file is a two-head model compiled with both losses and both
metrics with non-default options; the .npz holds its inputs, targets,
predictions and evaluation results, which tests/test_saving.py compares
against the current code.
"""

import os
import sys

import keras
import numpy as np

import keras_cc

out = sys.argv[1]
keras.utils.set_random_seed(11)
inputs = keras.Input((4,), name="x")
hidden = keras.layers.Dense(8, activation="relu")(inputs)
outputs = {
    "soft": keras.layers.Dense(3, name="soft")(hidden),
    "label": keras.layers.Dense(3, name="label")(hidden),
}
model = keras.Model(inputs, outputs)
model.compile(
    optimizer="adam",
    loss={
        "soft": keras_cc.losses.ContinuousCategoricalCrossentropy(
            from_logits=True, label_smoothing=0.1, logit_scale="auto"
        ),
        "label": keras_cc.losses.SparseContinuousCategoricalCrossentropy(
            from_logits=True, reduction="sum", validate_targets=False
        ),
    },
    metrics={
        "soft": [keras_cc.metrics.ContinuousCategoricalCrossentropy(from_logits=True)],
        "label": [
            keras_cc.metrics.SparseContinuousCategoricalCrossentropy(
                from_logits=True, label_smoothing=0.2
            )
        ],
    },
)
rng = np.random.default_rng(0)
x = rng.normal(size=(8, 4)).astype("float32")
labels = np.arange(8) % 3
y = {"soft": np.eye(3, dtype="float32")[labels], "label": labels}
model.fit(x, y, epochs=1, batch_size=8, verbose=0)
predictions = model.predict(x, verbose=0)
results = model.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)
model.save(os.path.join(out, "cc_v0_1_model.keras"))
np.savez(
    os.path.join(out, "cc_v0_1_model.npz"),
    x=x,
    labels=labels,
    pred_soft=predictions["soft"],
    pred_label=predictions["label"],
    result_names=np.array(sorted(results)),
    result_values=np.array([results[k] for k in sorted(results)]),
)
print(results)
