"""Shared test setup: float64 on JAX, and the per-test random generator.

Helpers for gradients and compiled functions are in ``tests/helpers.py``;
the independent references in ``tests/reference/``.
"""

import zlib

import keras
import numpy as np
import pytest

if keras.backend.backend() == "jax":
    import jax

    # Without this JAX silently computes float64 inputs in float32.
    jax.config.update("jax_enable_x64", True)


@pytest.fixture
def rng(request) -> np.random.Generator:
    """A generator seeded by the test's name: the same draws however
    pytest-xdist splits the tests."""
    return np.random.default_rng(zlib.crc32(request.node.name.encode()))
