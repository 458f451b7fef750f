"""What keras_cc does differently per Keras backend, all in one place.

The rest of the package is written with ``keras.ops``. Backends differ in:

* whether a tensor's values are known now (eager) or only traced
  (``is_concrete``, ``concrete_int``): eager inputs can be checked in NumPy
  and raise a ``ValueError``; traced ones cannot;
* runtime asserts, which only TensorFlow graphs have (``graph_asserts``);
* the logits behind a softmax output, which Keras attaches to the output
  (TensorFlow, PyTorch) and which a TensorFlow graph also shows as the
  producing op (``softmax_logits``, ``cast_keeping_softmax_logits``);
* float64 promotion of a few ops (``keep_f64``).

Adding a backend means adding its branch here and running
``tests/test_backend.py`` and the loss/metric tests under it.
"""

from __future__ import annotations

import keras
from keras import ops
from keras.src.backend import in_symbolic_scope

# Backends on which `keras.activations.softmax` attaches its input to its
# output as `_keras_logits` in eager and compiled code alike. Eager JAX
# arrays take the attribute too, but the tracers of `jax.jit` (every
# `model.fit` step) do not: JAX uses the clipped probabilities throughout, so
# that a model is trained with the loss it is evaluated with eagerly.
_LOGITS_ATTRIBUTE_BACKENDS = ("tensorflow", "torch")


def _attached_logits(x):
    if keras.backend.backend() not in _LOGITS_ATTRIBUTE_BACKENDS:
        return None
    return getattr(x, "_keras_logits", None)


def is_concrete(x) -> bool:
    """Whether ``x`` holds values now (eager), as opposed to a traced symbol.

    False inside Keras' shape inference (``compute_output_spec``): there the
    PyTorch and NumPy backends run functions eagerly on placeholder tensors
    (all ones), which are not data and must not be checked.

    Args:
        x: A tensor of the active backend.

    Returns:
        True where ``keras.ops.convert_to_numpy(x)`` gives the real values.

    Example:

    >>> from keras_cc import _backend
    >>> _backend.is_concrete(keras.ops.ones(3))
    True
    """
    if in_symbolic_scope():
        return False
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return isinstance(x, tf.__internal__.EagerTensor)
    if backend == "jax":
        import jax

        return not isinstance(x, jax.core.Tracer)
    if backend == "torch":
        import torch

        # Tensors on the "meta" device carry shapes only.
        return not torch.compiler.is_compiling() and x.device.type != "meta"
    if backend == "numpy":
        return True
    return False


def concrete_int(x) -> int | None:
    """``x`` as a Python int when its value is known now, else None.

    Example:

    >>> from keras_cc import _backend
    >>> _backend.concrete_int(keras.ops.convert_to_tensor(3))
    3
    """
    x = ops.convert_to_tensor(x)
    if not is_concrete(x):
        return None
    return int(ops.convert_to_numpy(x))


def graph_asserts(x, conditions):
    """``x`` with runtime checks attached, where the backend has them.

    In a TensorFlow graph (``tf.function`` without XLA) each condition
    becomes an ``Assert`` op that raises ``InvalidArgumentError`` with its
    message when the step runs. XLA drops ``Assert`` ops and JAX and PyTorch
    have none, and eager code is checked by the caller: there ``x`` is
    returned as is (keras_cc makes the failure visible as NaN rows).

    Args:
        x: The tensor the checks guard; the checks run before it is used.
        conditions: Pairs ``(condition, message)``; ``condition`` is a boolean
            tensor that must be true everywhere.

    Returns:
        ``x``, or on TensorFlow an identity of it that depends on the checks.
    """
    if keras.backend.backend() != "tensorflow":
        return x
    import tensorflow as tf

    if tf.executing_eagerly():  # e.g. placeholders in `keras.SymbolicScope`
        return x
    checks = [
        tf.debugging.Assert(tf.reduce_all(condition), [message])
        for condition, message in conditions
    ]
    with tf.control_dependencies(checks):
        return tf.identity(x)


def softmax_logits(y_pred):
    """The logits behind a softmax output, or None where they are unknown.

    ``keras.activations.softmax`` (hence ``Dense(..., activation="softmax")``)
    stores its input on its output as ``_keras_logits``; it is used on
    TensorFlow and PyTorch (not on JAX, see ``_LOGITS_ATTRIBUTE_BACKENDS``).
    In a TensorFlow graph the producing ``Softmax`` op is visible too, which
    catches ``tf.nn.softmax``. Keras' TensorFlow cross-entropy uses both.

    Args:
        y_pred: A tensor of predicted probabilities.

    Returns:
        The logits tensor, or None.
    """
    logits = _attached_logits(y_pred)
    if logits is not None or keras.backend.backend() != "tensorflow":
        return logits
    import tensorflow as tf

    if isinstance(y_pred, (tf.__internal__.EagerTensor, tf.Variable)):
        return None
    op = getattr(y_pred, "op", None)
    # A softmax output cast to the loss dtype (mixed precision) is
    # Cast(Softmax(logits)) in the graph: look through the cast.
    if op is not None and op.type == "Cast":
        op = op.inputs[0].op
    if op is not None and op.type == "Softmax" and len(op.inputs) == 1:
        return op.inputs[0]
    return None


def cast_keeping_softmax_logits(y_pred, dtype):
    """Cast ``y_pred`` to ``dtype``, keeping the logits behind a softmax.

    ``keras.losses.Loss.__call__`` casts ``y_pred`` to the loss dtype (float32
    under mixed precision), which would drop ``_keras_logits``. Casting here
    first, with the logits (and the Keras mask) carried over, keeps them.

    Args:
        y_pred: A tensor, possibly carrying ``_keras_logits``.
        dtype: The loss dtype.

    Returns:
        ``y_pred`` itself when it carries no logits (always on JAX) or has
        ``dtype`` already, else the cast tensor with ``_keras_logits`` (cast
        too) attached.
    """
    logits = _attached_logits(y_pred)
    if logits is None or keras.backend.standardize_dtype(
        y_pred.dtype
    ) == keras.backend.standardize_dtype(dtype):
        return y_pred
    cast = ops.cast(y_pred, dtype)
    try:
        cast._keras_logits = ops.cast(logits, dtype)
        mask = getattr(y_pred, "_keras_mask", None)
        if mask is not None:
            cast._keras_mask = mask
    except AttributeError:
        return y_pred
    return cast


def keep_f64(name: str, *args):
    """``keras.ops.<name>(*args)``, keeping float64 on every backend.

    Keras 3's dtype promotion maps float64 to float32 for ``sin``, ``cos`` and
    ``arctan2`` on the JAX backend, and for those and ``maximum``/``minimum``
    on PyTorch, which would silently cap a float64 computation at single
    precision; there the backend's own function is called.

    Example:

    >>> from keras_cc import _backend
    >>> x = keras.ops.convert_to_tensor(np.array([1.0]))
    >>> keras.backend.standardize_dtype(_backend.keep_f64("sin", x).dtype)
    'float64'
    """
    backend = keras.backend.backend()
    if backend in ("jax", "torch") and (
        keras.backend.standardize_dtype(args[0].dtype) == "float64"
    ):
        if backend == "jax":
            import jax.numpy as native
        else:
            import torch as native

            name = {"arctan2": "atan2"}.get(name, name)
        return getattr(native, name)(*args)
    return getattr(ops, name)(*args)


def while_loop_one_at_a_time(cond, body, loop_vars):
    """``keras.ops.while_loop`` whose iterations run one after the other.

    TensorFlow runs up to 10 iterations of a graph-mode loop concurrently;
    loops over large tensors would then hold all their temporaries at once
    (gigabytes for the CC at vocabulary-size K without XLA).
    """
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.while_loop(cond, body, loop_vars, parallel_iterations=1)
    return ops.while_loop(cond, body, loop_vars)
