"""Independent references for the keras_cc tests (no keras_cc code is used).

The CC log-partition by the explicit divided-difference formula

    A(z) = log sum_k e^{z_k} / prod_{i != k} (z_k - z_i)

evaluated in mpmath at high precision (valid for distinct logits; the
cancellation of the alternating sum is absorbed by the working precision),
its gradient (the CC mean) from the same formula differentiated by hand, and
Keras' documented loss reductions.
"""

from __future__ import annotations

import os
import subprocess
import sys

import mpmath as mp
import numpy as np

# Digits of working precision: terms of the alternating sum reach
# e^{spread} / min_gap^{K-1}, so 80 digits cover the spreads (< 60), gaps
# (> 1e-3) and K (<= 8) the tests use, with >30 digits to spare.
_DPS = 80


def _divided_difference(z):
    """exp[z_1..z_K] in mpmath (z already mpf, shifted so max z = 0).

    Distinct nodes: the explicit alternating sum. Nodes closer than 1e-3
    (ties from clipping, masked steps, ...): the top-right entry of
    expm(diag(z) + superdiagonal(1)) (McCurdy-Ng-Parlett), which defines the
    divided difference by continuity; at this precision its rounding relative
    to the matrix norm is far below the entry.
    """
    k = len(z)
    gaps = [abs(a - b) for i, a in enumerate(z) for b in z[i + 1 :]]
    if min(gaps) >= mp.mpf("1e-3"):
        return mp.fsum(
            mp.exp(zk) / mp.fprod(zk - zi for i, zi in enumerate(z) if i != j)
            for j, zk in enumerate(z)
        )
    matrix = mp.zeros(k, k)
    for i in range(k):
        matrix[i, i] = z[i]
        if i + 1 < k:
            matrix[i, i + 1] = 1
    return mp.expm(matrix)[0, k - 1]


def _shifted(z):
    z = [mp.mpf(float(v)) for v in z]
    top = max(z)
    return [v - top for v in z], top


def log_partition(z) -> float:
    """A(z) for one row of logits, in float64."""
    with mp.workdps(_DPS):
        x, top = _shifted(z)
        return float(top + mp.log(_divided_difference(x)))


def mean(z) -> np.ndarray:
    """dA/dz for one row of logits, in float64.

    d/dz_k exp[z] = exp[z, z_k] (the node z_k doubled), so the CC mean is
    mu_k = exp[z_1..z_K, z_k] / exp[z_1..z_K].
    """
    with mp.workdps(_DPS):
        x, _ = _shifted(z)
        total = _divided_difference(x)
        return np.array([float(_divided_difference(x + [xk]) / total) for xk in x])


def nll(y, z) -> float:
    """CC negative log-likelihood A(z) - y·z of one row, float64."""
    with mp.workdps(_DPS):
        x, top = _shifted(z)
        dot = mp.fsum(
            mp.mpf(float(a)) * mp.mpf(float(b)) for a, b in zip(y, z, strict=True)
        )
        return float(top + mp.log(_divided_difference(x)) - dot)


def nll_rows(y, z) -> np.ndarray:
    """nll over the leading axes of [..., K] arrays."""
    y = np.asarray(y, dtype=np.float64)
    z = np.asarray(z, dtype=np.float64)
    flat = [
        nll(a, b)
        for a, b in zip(
            y.reshape(-1, y.shape[-1]), z.reshape(-1, z.shape[-1]), strict=True
        )
    ]
    return np.array(flat).reshape(z.shape[:-1])


def smooth(y, alpha: float) -> np.ndarray:
    y = np.asarray(y, dtype=np.float64)
    return y * (1.0 - alpha) + alpha / y.shape[-1]


def reduce(values, sample_weight=None, mask=None, reduction="sum_over_batch_size"):
    """Keras' documented reductions (keras.losses.Loss), in float64.

    "sum": sum(w·v); "sum_over_batch_size"/"mean": sum(w·v) / #elements, with
    a mask counting only the valid elements; "mean_with_sample_weight":
    sum(w·v) / sum(w); None/"none": w·v.
    """
    v = np.asarray(values, dtype=np.float64)
    w = (
        np.ones_like(v)
        if sample_weight is None
        else np.asarray(sample_weight, np.float64)
    )
    w = np.broadcast_to(w.reshape(w.shape + (1,) * (v.ndim - w.ndim)), v.shape)
    if mask is not None:
        m = np.asarray(mask, dtype=np.float64)
        if reduction in ("sum_over_batch_size", "mean"):
            m = m * (m.size / m.sum())
        w = w * m
    weighted = w * v
    if reduction in (None, "none"):
        return weighted
    if reduction == "sum":
        return weighted.sum()
    # Keras merges the mask into the weights first, so a mask alone counts
    # as a weight here.
    weighted_by_something = sample_weight is not None or mask is not None
    if reduction == "mean_with_sample_weight" and weighted_by_something:
        return weighted.sum() / w.sum()
    return weighted.sum() / v.size


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
