"""K = 2: CC(logits=[a, b]) is the continuous Bernoulli with logit a - b.

Two references for it: TensorFlow Probability's ``ContinuousBernoulli`` (a
peer implementation) and its mean in closed form in mpmath (TFP's own mean
is only good to about 1e-7 near some logits, where it switches to a Taylor
expansion).
"""

from __future__ import annotations

import mpmath as mp
import numpy as np


def tfp_continuous_bernoulli(logit_diff):
    """TFP's ContinuousBernoulli(logits=a - b) in float64.

    The logits go in as a float64 tensor: a NumPy scalar would become float32.
    TFP is imported here, not with the package, so that importing the
    references does not start TensorFlow under other Keras backends.
    """
    import tensorflow as tf
    import tensorflow_probability as tfp

    return tfp.distributions.ContinuousBernoulli(
        logits=tf.constant(logit_diff, tf.float64), dtype=tf.float64
    )


def continuous_bernoulli_mean(logit_diff) -> np.ndarray:
    """E[x_0] = e^eta / (e^eta - 1) - 1 / eta for each eta = a - b, in
    50-digit arithmetic (1/2 at eta = 0). E[x_1] is the mean at -eta."""

    def one(eta: float) -> float:
        if eta == 0.0:
            return 0.5
        with mp.workdps(50):
            e = mp.mpf(eta)
            return float(mp.exp(e) / mp.expm1(e) - 1 / e)

    diffs = np.asarray(logit_diff, np.float64)
    return np.array([one(float(eta)) for eta in diffs.ravel()]).reshape(diffs.shape)
