"""Tests of keras_cc._backend, the one module with per-backend branches.

Backend-agnostic: CI runs it under TensorFlow; it also passes under
KERAS_BACKEND=jax and KERAS_BACKEND=torch (docs/api.md, "Backends"), which
is what adding a backend is checked with.
"""

from __future__ import annotations

import doctest

import keras
import numpy as np
import pytest
from keras import ops

from keras_cc import _backend
from tests.helpers import compiled
from tests.helpers import to_numpy as _np

BACKEND = keras.backend.backend()


def test_eager_tensors_are_concrete_traced_ones_are_not():
    x = ops.convert_to_tensor(np.arange(3.0, dtype=np.float32))
    assert _backend.is_concrete(x)
    assert _backend.concrete_int(ops.sum(x)) == 3
    seen = []

    def fn(t):
        seen.append((_backend.is_concrete(t), _backend.concrete_int(ops.sum(t))))
        return t * 2.0

    np.testing.assert_array_equal(_np(compiled(fn)(x)), [0.0, 2.0, 4.0])
    assert seen and all(found == (False, None) for found in seen)


def test_placeholders_of_shape_inference_are_not_concrete():
    """PyTorch infers shapes by running functions on all-ones placeholders
    inside `keras.SymbolicScope`; they must not count as data."""
    x = ops.ones((2, 3))
    with keras.SymbolicScope():
        assert not _backend.is_concrete(x)
        assert _backend.concrete_int(ops.sum(x)) is None
    assert _backend.is_concrete(x)


@pytest.mark.parametrize("xla", [False, True])
def test_graph_asserts_raise_only_in_a_tensorflow_graph(xla):
    x = ops.convert_to_tensor(np.array([1.0, -1.0], np.float32))

    def fn(t):
        return _backend.graph_asserts(t, [(t > 0, "`x` must be positive.")]) * 2.0

    # Eagerly the caller checks (with a ValueError); nothing is attached.
    np.testing.assert_array_equal(_np(fn(x)), [2.0, -2.0])
    if BACKEND == "tensorflow" and not xla:
        import tensorflow as tf

        with pytest.raises(tf.errors.InvalidArgumentError, match="must be positive"):
            compiled(fn)(x)
    else:
        # XLA drops Assert ops; JAX and PyTorch have none.
        np.testing.assert_array_equal(_np(compiled(fn, xla=xla)(x)), [2.0, -2.0])


def test_softmax_logits_where_tensors_carry_them():
    z = ops.convert_to_tensor(np.array([[40.0, 0.5, 0.0]], np.float32))
    probs = keras.activations.softmax(z)
    logits = _backend.softmax_logits(probs)
    if BACKEND in ("tensorflow", "torch"):
        np.testing.assert_array_equal(_np(logits), _np(z))
    else:  # JAX arrays take no attributes
        assert logits is None


def test_softmax_op_found_in_a_tensorflow_graph():
    z = np.array([[40.0, 0.5, 0.0]], np.float32)
    found = []

    def fn(t):
        probs = ops.softmax(t)
        found.append(_backend.softmax_logits(ops.cast(probs, "float16")))
        return probs

    compiled(fn)(ops.convert_to_tensor(z))
    # Only a TensorFlow graph exposes the producing op (through the cast).
    assert (found[0] is not None) == (BACKEND == "tensorflow")


def test_cast_keeping_softmax_logits():
    z = ops.convert_to_tensor(np.array([[40.0, 0.5, 0.0]], np.float16))
    probs = keras.activations.softmax(z)
    cast = _backend.cast_keeping_softmax_logits(probs, "float32")
    if BACKEND in ("tensorflow", "torch"):
        assert keras.backend.standardize_dtype(cast.dtype) == "float32"
        logits = _backend.softmax_logits(cast)
        assert keras.backend.standardize_dtype(logits.dtype) == "float32"
        np.testing.assert_array_equal(_np(logits), _np(z).astype(np.float32))
    else:  # no logits are used on JAX: the loss casts as usual
        assert cast is probs
    # Nothing to keep, or the dtype already right: the tensor itself.
    plain = ops.convert_to_tensor(np.ones(3, np.float16))
    assert _backend.cast_keeping_softmax_logits(plain, "float32") is plain
    assert _backend.cast_keeping_softmax_logits(probs, "float16") is probs


@pytest.mark.parametrize("name", ["sin", "cos", "arctan2", "maximum", "minimum"])
def test_keep_f64_keeps_float64(name):
    a = np.array([0.1, 2.0])
    args = (a, a + 1.0) if name in ("arctan2", "maximum", "minimum") else (a,)
    got = _backend.keep_f64(name, *(ops.convert_to_tensor(t) for t in args))
    assert keras.backend.standardize_dtype(got.dtype) == "float64"
    np.testing.assert_allclose(_np(got), getattr(np, name)(*args), rtol=1e-15)


def test_docstring_examples():
    import keras_cc

    globs = {"np": np, "keras": keras, "keras_cc": keras_cc}
    result = doctest.testmod(_backend, extraglobs=globs)
    assert result.attempted > 0 and result.failed == 0
