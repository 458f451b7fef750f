"""Backend-agnostic helpers for the tests: gradients, compiled functions and
fresh interpreters on TensorFlow, JAX and PyTorch."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

import keras
import numpy as np

# `jit_compile` for `model.compile` in tests of compiled training: XLA on
# TensorFlow and JAX. On PyTorch `jit_compile=True` means torch.compile with
# inductor, whose C++ code generation takes many minutes per model on a CPU;
# there `fit` runs eagerly, Keras' default, and `compiled()` below covers
# compiled PyTorch code.
JIT_COMPILE = keras.backend.backend() != "torch"


def to_numpy(t) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(t))


def value_and_grad(fn: Callable, z) -> tuple[np.ndarray, np.ndarray]:
    """(fn(z), d sum(fn(z)) / dz) on the active Keras backend.

    For a function of rows, the gradient of the sum is each row's gradient.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        z = tf.convert_to_tensor(z)
        with tf.GradientTape() as tape:
            tape.watch(z)
            value = fn(z)
            total = tf.reduce_sum(value)
        return to_numpy(value), to_numpy(tape.gradient(total, z))
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        value, pullback = jax.vjp(fn, jnp.asarray(z))
        (grad,) = pullback(jnp.ones_like(value))
        return np.asarray(value), np.asarray(grad)
    if backend == "torch":
        import torch

        t = torch.tensor(np.asarray(z), requires_grad=True)
        value = fn(t)
        torch.sum(value).backward()
        return value.detach().numpy(), t.grad.numpy()
    raise NotImplementedError(backend)


def compiled(fn: Callable, xla: bool = False) -> Callable:
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


def for_sweeps(fn: Callable) -> Callable:
    """``fn`` as a test that sweeps many input shapes should call it.

    Under JAX, ``jax.jit``: eager JAX compiles every primitive again for each
    new shape, which makes a sweep over a dozen shapes minutes slower than
    one compiled program per shape. Elsewhere ``fn`` unchanged (eager
    TensorFlow is fast and a ``tf.function`` would retrace per shape). That
    the eager and compiled paths agree is tested on its own
    (``test_compiled_refinement_matches_eager_row_by_row`` in test_ops.py).
    """
    if keras.backend.backend() == "jax":
        import jax

        return jax.jit(fn)
    return fn


def run_python(code: str, env: dict | None = None, timeout: int = 240) -> str:
    """Run `code` in a fresh interpreter (fresh TF/Keras state); return stdout."""
    full_env = dict(os.environ)
    full_env.update({"TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})})
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"subprocess failed ({proc.returncode}):\n{proc.stdout}\n"
            f"{proc.stderr[-4000:]}"
        )
    return proc.stdout
