"""keras_cc: the continuous categorical distribution for Keras and TFP.

Submodules:
    ops: ``cc_log_partition`` and ``cc_mean``, the stable numerical core.
    losses: Keras losses (``ContinuousCategoricalCrossentropy``, ...).
    metrics: the matching Keras metric.
    distributions: ``ContinuousCategorical``, a TFP distribution (imported on
        first use: it needs TensorFlow Probability and the TensorFlow backend).
    distillation: ``ContinuousCategoricalDistillation``, CC-KD for
        ``keras.distillation.Distiller`` (needs Keras >= 3.12, the first
        release with ``keras.distillation``).
"""

import importlib

import keras

# losses and metrics are imported eagerly: importing them registers their
# classes with Keras, so `keras.saving.load_model` works after `import keras_cc`.
from keras_cc import losses, metrics, ops

# distillation needs `keras.distillation` (Keras >= 3.12). Where Keras has it,
# it is imported now, for the same reason (registration); elsewhere
# `keras_cc.distillation` raises the ImportError that says what to upgrade.
if hasattr(keras, "distillation"):
    from keras_cc import distillation

__version__ = "0.1.0"
__all__ = ["ops", "losses", "metrics", "distributions", "distillation", "__version__"]


def __getattr__(name):
    if name in ("distributions", "distillation"):
        return importlib.import_module(f"keras_cc.{name}")
    raise AttributeError(f"module 'keras_cc' has no attribute {name!r}")
