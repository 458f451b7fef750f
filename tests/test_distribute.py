"""The CC loss under tf.distribute.MirroredStrategy equals the 1-device run.

Two logical CPU devices must be configured before TensorFlow initialises
its devices, so the whole comparison runs in a fresh interpreter (TensorFlow
backend, whatever backend the test process uses).
"""

from __future__ import annotations

import json

import numpy as np

from tests import reference as ref
from tests.helpers import run_python

_SCRIPT = r"""
import json
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration()] * 2
)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import keras_cc.losses as cc_losses  # noqa: E402

assert keras.backend.backend() == "tensorflow"
B, D, K = 8, 4, 6
rng = np.random.default_rng(0)
x = rng.normal(size=(B, D)).astype("float32")
labels = rng.integers(0, K, size=B)
y = np.eye(K, dtype="float32")[labels]
sw = rng.uniform(0.2, 2.0, size=B).astype("float32")


def build():
    keras.utils.set_random_seed(1)
    return keras.Sequential(
        [keras.Input((D,)), keras.layers.Dense(8, activation="tanh"),
         keras.layers.Dense(K)]
    )


def make_loss():
    return cc_losses.ContinuousCategoricalCrossentropy(
        from_logits=True, label_smoothing=0.1, logit_scale=1.0
    )


# Single device: value and gradients of the weighted mean loss.
single = build()
w0 = single.get_weights()
with tf.GradientTape() as tape:
    loss_1 = make_loss()(y, single(x), sample_weight=sw)
grads_1 = tape.gradient(loss_1, single.trainable_variables)

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
assert strategy.num_replicas_in_sync == 2
with strategy.scope():
    mirrored = build()
    mirrored.set_weights(w0)
    loss_obj = make_loss()

# Custom loop: each replica sees half the batch; Keras scales the per-replica
# loss by 1/num_replicas, so the SUM over replicas is the global loss.
dataset = tf.data.Dataset.from_tensor_slices((x, y, sw)).batch(B)
dist = strategy.experimental_distribute_dataset(dataset)


# Eager replicas (MirroredStrategy runs them one after the other): the
# graph path is model.fit's, below; tracing the CC twice more costs seconds.
def replica_step(xb, yb, wb):
    with tf.GradientTape() as tape:
        loss = loss_obj(yb, mirrored(xb), sample_weight=wb)
    return loss, tape.gradient(loss, mirrored.trainable_variables)


batch = next(iter(dist))
per_replica_loss, per_replica_grads = strategy.run(replica_step, args=batch)
local_sizes = [int(t.shape[0]) for t in strategy.experimental_local_results(batch[0])]
loss_2 = strategy.reduce("SUM", per_replica_loss, axis=None)
grads_2 = [strategy.reduce("SUM", g, axis=None) for g in per_replica_grads]

# model.fit: one SGD step with learning rate 1 moves the weights by -grad.
with strategy.scope():
    fitted = build()
    fitted.set_weights(w0)
    fitted.compile(optimizer=keras.optimizers.SGD(1.0), loss=make_loss())
history = fitted.fit(x, y, sample_weight=sw, batch_size=B, epochs=1,
                     shuffle=False, verbose=0)
fit_grads = [a - b for a, b in zip(w0, fitted.get_weights())]

print(json.dumps({
    "local_sizes": local_sizes,
    "logits": single(x).numpy().tolist(),
    "y": y.tolist(),
    "sw": sw.tolist(),
    "loss_1": float(loss_1),
    "loss_2": float(loss_2),
    "fit_loss": float(history.history["loss"][0]),
    "grads_1": [g.numpy().tolist() for g in grads_1],
    "grads_2": [g.numpy().tolist() for g in grads_2],
    "fit_grads": [g.tolist() for g in fit_grads],
}))
"""


def test_mirrored_strategy_two_cpus_matches_single_device():
    out = run_python(_SCRIPT, env={"KERAS_BACKEND": "tensorflow"})
    got = json.loads(out.strip().splitlines()[-1])
    # The batch really was split across the two replicas.
    assert got["local_sizes"] == [4, 4]
    # The single-device value against the mpmath reference and Keras'
    # "sum_over_batch_size" semantics; then the three runs must agree.
    y = ref.smooth(np.array(got["y"]), 0.1)
    want = ref.reduce(ref.nll_rows(y, np.array(got["logits"])), np.array(got["sw"]))
    np.testing.assert_allclose(got["loss_1"], want, rtol=1e-5)
    np.testing.assert_allclose(got["loss_2"], got["loss_1"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["fit_loss"], got["loss_1"], rtol=1e-5, atol=1e-6)
    assert len(got["grads_1"]) == len(got["grads_2"]) == len(got["fit_grads"]) == 4
    for g1, g2, gf in zip(
        got["grads_1"], got["grads_2"], got["fit_grads"], strict=True
    ):
        g1, g2, gf = np.array(g1), np.array(g2), np.array(gf)
        assert np.abs(g1).max() > 1e-3  # a gradient worth comparing
        np.testing.assert_allclose(g2, g1, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(gf, g1, rtol=1e-4, atol=1e-6)
