"""Shared test setup: float64 on JAX, and backend-agnostic gradient helpers."""

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


@pytest.fixture
def rng(request) -> np.random.Generator:
    """A generator seeded by the test's name: the same draws however
    pytest-xdist splits the tests."""
    return np.random.default_rng(zlib.crc32(request.node.name.encode()))
