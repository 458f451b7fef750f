"""TensorFlow Probability distributions for keras_cc.

``ContinuousCategorical`` is a ``tfp.distributions.Distribution`` built on the
stable ops of :mod:`keras_cc.ops`. It needs TensorFlow Probability and the
TensorFlow Keras backend; importing this module under another backend raises
an ``ImportError`` that says so.
"""

from keras_cc.distributions.continuous_categorical import ContinuousCategorical

__all__ = ["ContinuousCategorical"]
