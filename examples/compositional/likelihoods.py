"""The four likelihoods: each model head, its Keras loss, its predictions.

The model is a plain Keras 3 model whose output holds the parameters of the
likelihood (logits, log concentrations, or log-ratio means and a covariance
factor), and the loss builds the TFP distribution from that output and
returns its negative log-density at the target. That is the Keras 3 idiom
for a distribution head: ``tfp.layers.DistributionLambda`` is a
``tf_keras`` (Keras 2) layer and cannot be part of a Keras 3 model, while a
loss of ``(y_true, y_pred)`` works with ``compile``/``fit``/``evaluate`` as
any other. Predictions build the same distribution from ``model.predict``
(:func:`predictive`).

- ``cc``: K logits; ``ContinuousCategorical(logits)``.
- ``dirichlet``: K log-concentrations; ``Dirichlet(exp(outputs))``.
- ``xe``: K logits; no distribution (a quasi-likelihood with mean
  ``softmax``).
- ``logistic_normal``: K-1 log-ratio means and the K(K-1)/2 entries of a
  constant Cholesky factor; :class:`LogisticNormal`.

All densities are with respect to Lebesgue measure on the first K-1 shares,
so held-out log-densities of the CC, the Dirichlet and the logistic-normal
are comparable where all three are defined (rows without zeros).

    >>> import numpy as np
    >>> outputs = np.zeros((2, 3), "float32")  # equal logits: uniform CC
    >>> dist = predictive("cc", outputs)
    >>> [round(float(v), 4) for v in dist.log_prob([0.2, 0.3, 0.5])]
    [0.6931, 0.6931]
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

import keras_cc
from keras_cc.distributions import ContinuousCategorical

tfd = tfp.distributions
tfb = tfp.bijectors

# Likelihoods whose targets must be strictly positive (zeros replaced first).
NEEDS_POSITIVE: frozenset[str] = frozenset({"dirichlet", "logistic_normal"})


def output_width(likelihood: str, num_parts: int) -> int:
    """Number of model outputs the head of ``likelihood`` needs."""
    if likelihood == "logistic_normal":
        dim = num_parts - 1
        return dim + dim * (dim + 1) // 2
    if likelihood in ("cc", "dirichlet", "xe"):
        return num_parts
    raise ValueError(f"unknown likelihood {likelihood!r}")


@keras.saving.register_keras_serializable(package="examples.compositional")
class Constant(keras.layers.Layer):
    """A trainable vector, the same for every row of the batch.

    The logistic-normal's covariance factor: constant over covariates, as in
    Aitchison's logistic-normal regression (the mean depends on ``x``, the
    spread does not).
    """

    def __init__(self, units: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape) -> None:
        self.value = self.add_weight(
            shape=(self.units,), initializer="zeros", name="value"
        )

    def call(self, inputs):
        rows = keras.ops.shape(inputs)[0]
        return keras.ops.broadcast_to(self.value[None, :], (rows, self.units))

    def get_config(self) -> dict:
        return {**super().get_config(), "units": self.units}


def build_model(
    model: str,
    likelihood: str,
    num_features: int,
    num_parts: int,
    hidden: int = 32,
) -> keras.Model:
    """A GLM (``model="glm"``) or a one-hidden-layer MLP with the head of
    ``likelihood``.

    >>> build_model("glm", "cc", 4, 6).output_shape
    (None, 6)
    >>> build_model("mlp", "logistic_normal", 4, 3, hidden=8).output_shape
    (None, 5)
    """
    inputs = keras.Input((num_features,))
    if model == "glm":
        features = inputs
    elif model == "mlp":
        features = keras.layers.Dense(hidden, activation="relu")(inputs)
    else:
        raise ValueError(f"model must be glm or mlp; got {model!r}")
    width = output_width(likelihood, num_parts)
    if likelihood == "logistic_normal":
        loc = keras.layers.Dense(num_parts - 1, name="loc")(features)
        scale = Constant(width - (num_parts - 1), name="scale")(inputs)
        outputs = keras.layers.Concatenate()([loc, scale])
    else:
        outputs = keras.layers.Dense(width, name="parameters")(features)
    return keras.Model(inputs, outputs, name=f"{model}_{likelihood}")


class LogisticNormal:
    """The logistic-normal on the simplex: ``x = softmax([v, 0])``,
    ``v ~ N(loc, L Lᵀ)`` (additive log-ratios with the last part as reference).

    The log-density of ``x`` (Lebesgue measure on its first K-1 shares) is
    ``log N(alr(x); loc, L Lᵀ) - sum_k log x_k``: the Jacobian of
    ``alr(x)_i = log(x_i / x_K)`` has determinant ``1 / prod_k x_k``. Written
    out here because TFP's ``SoftmaxCentered`` bijector fails to build under
    NumPy 2.4 (it calls ``np.reshape(..., newshape=...)``).
    """

    def __init__(self, loc, scale_tril) -> None:
        self.gaussian = tfd.MultivariateNormalTriL(loc, scale_tril)
        self.dtype = self.gaussian.dtype

    def log_prob(self, x) -> tf.Tensor:
        x = tf.convert_to_tensor(x, self.dtype)
        log_x = tf.math.log(x)
        alr = log_x[..., :-1] - log_x[..., -1:]
        return self.gaussian.log_prob(alr) - tf.reduce_sum(log_x, axis=-1)

    def sample(self, num: int, seed=None) -> tf.Tensor:
        v = self.gaussian.sample(num, seed=seed)
        return tf.math.softmax(tf.concat([v, tf.zeros_like(v[..., :1])], -1), -1)


def _logistic_normal(outputs, num_parts: int) -> LogisticNormal:
    dim = num_parts - 1
    loc, scale = outputs[..., :dim], outputs[..., dim:]
    # FillScaleTriL: softplus on the diagonal (plus 1e-5), a valid Cholesky
    # factor for every real vector (the shift in the outputs' dtype).
    fill = tfb.FillScaleTriL(diag_shift=tf.constant(1e-5, outputs.dtype))
    return LogisticNormal(loc, fill(scale))


def predictive(likelihood: str, outputs, num_parts: int | None = None):
    """The predictive distribution for model outputs ``[B, width]``.

    ``None`` for ``xe`` (cross-entropy is not the log-density of any
    distribution on the simplex). ``num_parts`` is needed for the
    logistic-normal only (its width is not ``K``).
    """
    outputs = tf.convert_to_tensor(outputs)
    if likelihood == "cc":
        return ContinuousCategorical(logits=outputs)
    if likelihood == "dirichlet":
        # The log link of Dirichlet regression; exp can overflow for a
        # diverging model, which the fit then reports as non-finite.
        return tfd.Dirichlet(tf.exp(outputs))
    if likelihood == "xe":
        return None
    if likelihood == "logistic_normal":
        if num_parts is None:
            raise ValueError("the logistic-normal needs num_parts")
        return _logistic_normal(outputs, num_parts)
    raise ValueError(f"unknown likelihood {likelihood!r}")


def logistic_normal_parts(width: int) -> int:
    """K from the logistic-normal's output width ``(K-1) + K(K-1)/2``."""
    for num_parts in range(2, width + 2):
        if output_width("logistic_normal", num_parts) == width:
            return num_parts
    raise ValueError(f"no number of parts has a logistic-normal width {width}")


def make_loss(likelihood: str) -> Callable:
    """The Keras loss (per example) that trains ``likelihood``.

    The CC uses ``keras_cc.losses.ContinuousCategoricalCrossentropy`` (the
    CC negative log-density ``A(z) - y·z``, with its target checks); the
    Dirichlet and the logistic-normal ``-log_prob`` of their TFP
    distribution; ``xe`` Keras' cross-entropy on the shares.
    """
    if likelihood == "cc":
        return keras_cc.losses.ContinuousCategoricalCrossentropy(from_logits=True)
    if likelihood == "xe":
        return keras.losses.CategoricalCrossentropy(from_logits=True)
    if likelihood not in NEEDS_POSITIVE:
        raise ValueError(f"unknown likelihood {likelihood!r}")

    def negative_log_density(y_true, y_pred):
        width = y_pred.shape[-1]
        num_parts = (
            logistic_normal_parts(width) if likelihood == "logistic_normal" else None
        )
        return -predictive(likelihood, y_pred, num_parts).log_prob(y_true)

    negative_log_density.__name__ = f"{likelihood}_nll"
    return negative_log_density


def predicted_mean(
    likelihood: str,
    outputs: np.ndarray,
    num_parts: int,
    seed: int = 0,
    mc_samples: int = 4000,
) -> np.ndarray:
    """The predictive mean ``[B, K]`` of each row.

    Closed form for the CC (``mean()``), the Dirichlet and cross-entropy
    (``softmax``). The logistic-normal's mean has no closed form: it is the
    average of ``mc_samples`` draws (Monte-Carlo error about
    ``std / sqrt(mc_samples)``, ~1e-3 for shares of spread 0.1).
    """
    if likelihood == "xe":
        return keras.ops.convert_to_numpy(keras.ops.softmax(outputs, axis=-1))
    dist = predictive(likelihood, outputs, num_parts)
    if likelihood == "logistic_normal":
        draws = dist.sample(mc_samples, seed=(seed, 1))
        return tf.reduce_mean(draws, axis=0).numpy()
    return dist.mean().numpy()


def predictive_samples(
    likelihood: str, outputs: np.ndarray, num_parts: int, num: int, seed: int = 0
) -> np.ndarray | None:
    """``num`` draws ``[num, B, K]`` from each row's predictive distribution
    (exact samplers of TFP and keras_cc); ``None`` for ``xe``."""
    dist = predictive(likelihood, outputs, num_parts)
    if dist is None:
        return None
    return dist.sample(num, seed=(seed, 2)).numpy()


def log_density(likelihood: str, outputs: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-row log-density ``[B]`` of the observed ``y`` (NaN rows for ``xe``).

    For the Dirichlet and the logistic-normal a zero share gives ``±inf`` or
    NaN: callers evaluate them on rows without zeros only.
    """
    dist = predictive(likelihood, outputs, y.shape[-1])
    if dist is None:
        return np.full(len(y), np.nan)
    return dist.log_prob(tf.constant(y, dtype=dist.dtype)).numpy().astype(np.float64)
