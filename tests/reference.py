"""An independent high-precision reference for the CC log-partition and mean.

Uses the all-positive series of docs/numerics.md in mpmath: with
y = z - min z >= 0,

    exp[z] = e^{min z} * sum_j h_j(y) / (j + K - 1)!,

where h_j are the complete homogeneous symmetric polynomials, built by the
per-node recurrence h_j(y_1..y_m) = h_j(y_1..y_{m-1}) + y_m h_{j-1}(y_1..y_m).
Every term is positive, so nothing cancels, and ties need no special case.
The mean adds node y_k once more: exp[y, y_k] = sum_j g_j / (j + K)!, with
g_j = y_k g_{j-1} + h_j. This shares nothing with the library's algorithm.
"""

from __future__ import annotations

import functools

import mpmath as mp
import numpy as np


@functools.cache
def _reference(z: tuple[float, ...], dps: int) -> tuple[float, tuple[float, ...]]:
    with mp.workdps(dps):
        zs = [mp.mpf(v) for v in z]
        k_count = len(zs)
        low = min(zs)
        y = [v - low for v in zs]
        # column[m] = h_j(y_1..y_m) for the current j; start with j = 0.
        column = [mp.mpf(1)] * (k_count + 1)
        h = [mp.mpf(1)]
        factorial = mp.factorial(k_count - 1)
        total = h[0] / factorial
        tol = mp.mpf(10) ** (-dps)
        j = 0
        while True:
            j += 1
            new = [mp.mpf(0)] * (k_count + 1)
            for m in range(1, k_count + 1):
                new[m] = new[m - 1] + y[m - 1] * column[m]
            column = new
            h.append(column[k_count])
            factorial *= j + k_count - 1
            term = h[j] / factorial
            total += term
            # Terms eventually decrease geometrically; stop when negligible.
            if term < tol * total and j > 2 * max(y) + 10:
                break
        means = []
        for yk in y:
            g = mp.mpf(0)
            acc = mp.mpf(0)
            fact = mp.factorial(k_count)
            for i, hi in enumerate(h):
                g = yk * g + hi
                acc += g / fact
                fact *= i + k_count + 1
            means.append(acc / total)
        return float(low + mp.log(total)), tuple(float(v) for v in means)


def log_partition_and_mean(z, dps: int = 30) -> tuple[float, np.ndarray]:
    """Exact A(z) and E[x] for one row of logits (already rounded to a dtype)."""
    a, mean = _reference(tuple(float(v) for v in np.asarray(z, np.float64)), dps)
    return a, np.asarray(mean)


def explicit_log_partition(z, dps: int = 60) -> float:
    """Eq. 6 / residue formula in mpmath, for distinct logits (a second check)."""
    with mp.workdps(dps):
        zs = [mp.mpf(float(v)) for v in z]
        total = mp.mpf(0)
        for k, zk in enumerate(zs):
            prod = mp.mpf(1)
            for i, zi in enumerate(zs):
                if i != k:
                    prod *= zk - zi
            total += mp.exp(zk) / prod
        return float(mp.log(total))


def _f32_exact(z) -> np.ndarray:
    return np.asarray(z, np.float32).astype(np.float64)


def regimes(k: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The input regimes of the accuracy bar (docs/numerics.md) for K = k.

    Every value is exactly representable in float32, so one reference serves
    float32 and float64.
    """
    cases = {
        "ties": np.zeros(k),
        "ties at 1e4": np.full(k, 1e4),
        "near ties 1e-7": rng.integers(-1, 2, size=k) * 2.0**-23,
        "ramp 0..K-1": np.arange(k, dtype=float),
    }
    for gap in (1.0, 10.0, 100.0, 1000.0):
        cluster = rng.normal(size=k) * 1e-3
        cluster[0] = gap
        cases[f"one far logit + tight cluster, gap {gap:g}"] = cluster
    for spread in (0.1, 3.0, 30.0, 300.0, 1000.0):
        cases[f"uniform spread {spread:g}"] = rng.uniform(0, spread, size=k)
    cases["two clusters 500 apart"] = (
        np.where(np.arange(k) < k // 2, -500.0, 0.0) + rng.normal(size=k) * 1e-2
    )
    cases["offset -1e4, sd 5"] = -1e4 + rng.normal(size=k) * 5
    cases["gaussian sd 20"] = rng.normal(size=k) * 20
    return {name: _f32_exact(z) for name, z in cases.items()}
