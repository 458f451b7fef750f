"""Shared test setup: float64 on JAX, and backend-agnostic helpers
(gradients, compiled functions) for TensorFlow, JAX and PyTorch."""

import os
import sys
import zlib

import keras
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

if keras.backend.backend() == "jax":
    import jax

    # Without this JAX silently computes float64 inputs in float32.
    jax.config.update("jax_enable_x64", True)


# `jit_compile` for `model.compile` in tests of compiled training: XLA on
# TensorFlow and JAX. On PyTorch `jit_compile=True` means torch.compile with
# inductor, whose C++ code generation takes many minutes per model on a CPU;
# there `fit` runs eagerly, Keras' default, and `compiled()` below covers
# compiled PyTorch code.
JIT_COMPILE = keras.backend.backend() != "torch"


def to_numpy(t) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(t))


def value_and_grad(fn, z):
    """(sum of fn(z), d sum fn / dz) on the active Keras backend."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        z = tf.convert_to_tensor(z)
        with tf.GradientTape() as tape:
            tape.watch(z)
            value = tf.reduce_sum(fn(z))
        return to_numpy(value), to_numpy(tape.gradient(value, z))
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        value, grad = jax.value_and_grad(lambda t: jnp.sum(fn(t)))(jnp.asarray(z))
        return np.asarray(value), np.asarray(grad)
    if backend == "torch":
        import torch

        t = torch.tensor(np.asarray(z), requires_grad=True)
        value = torch.sum(fn(t))
        value.backward()
        return value.detach().numpy(), t.grad.numpy()
    raise NotImplementedError(backend)


def compiled(fn, xla: bool = False):
    """``fn`` compiled the way the active backend compiles a train step.

    TensorFlow: ``tf.function`` (a graph; ``xla=True`` adds XLA). JAX:
    ``jax.jit`` (always XLA). PyTorch: ``torch.compile`` with the
    ``aot_eager`` backend, which traces like the default one but skips its
    C++ code generation (minutes on CPU). In all but a plain TensorFlow
    graph, values are unknown while tracing and nothing can raise on them.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=xla)
    if backend == "jax":
        import jax

        return jax.jit(fn)
    if backend == "torch":
        import torch

        return torch.compile(fn, backend="aot_eager")
    raise NotImplementedError(backend)


@pytest.fixture
def rng(request) -> np.random.Generator:
    """A generator seeded by the test's name: the same draws however
    pytest-xdist splits the tests."""
    return np.random.default_rng(zlib.crc32(request.node.name.encode()))
