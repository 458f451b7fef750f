"""An independent high-precision reference for the CC log-partition and mean.

Uses the all-positive series of docs/numerics.md in mpmath: with
y = z - min z >= 0,

    exp[z] = e^{min z} * sum_j h_j(y) / (j + K - 1)!,

where h_j are the complete homogeneous symmetric polynomials, built by the
per-node recurrence h_j(y_1..y_m) = h_j(y_1..y_{m-1}) + y_m h_{j-1}(y_1..y_m).
Every term is positive, so nothing cancels, and ties need no special case.
The mean adds node y_k once more: exp[y, y_k] = sum_j g_j / (j + K)!, with
g_j = y_k g_{j-1} + h_j. This shares nothing with the library's algorithm.

``series_log_partition_and_mean`` evaluates the same series vectorised in
NumPy's 80-bit ``longdouble`` (64-bit significand), for the randomised sweep
and for K up to 50 000 where mpmath is too slow. The recurrence is a running
sum of positive terms, ``h_j(y_1..y_m) = sum_{i<=m} y_i h_{j-1}(y_1..y_i)``,
so every step is a ``cumsum``; with all terms positive the relative error of
``h_j`` is at most about ``j K eps`` (eps = 5.4e-20), below 1e-12 for
``j K < 2e7``, and in practice near ``sqrt(j K) eps``. ``tests/test_ops.py``
checks it against the mpmath series.
"""

from __future__ import annotations

import functools
import math

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


def series_log_partition_and_mean(z) -> tuple[float, np.ndarray]:
    """A(z) and E[x] for one row by the positive series in ``np.longdouble``.

    Scaled terms H_j = h_j(y) (K-1)! / (j+K-1)! stay in range (they are at
    most e^{max y}); log (K-1)! is added back at the end.
    """
    z = np.asarray(z, np.float64)
    k_count = z.size
    low = z.min()
    y = z.astype(np.longdouble) - np.longdouble(low)
    column = np.ones(k_count, np.longdouble)  # h_0(y_1..y_m) = 1
    total = np.longdouble(1.0)
    # G_j = g_j (K-1)! / (j+K)! for every class at once, g_j = y_k g_{j-1} + h_j.
    mean_terms = np.full(k_count, np.longdouble(1.0) / k_count)
    mean_total = mean_terms.copy()
    max_y = float(y.max())
    tol = np.longdouble(1e-24)
    j = 0
    while True:
        j += 1
        column = np.cumsum(y * column) / (j + k_count - 1)
        term = column[-1]
        total += term
        mean_terms = (y * mean_terms + term) / (j + k_count)
        mean_total += mean_terms
        if j > 2 * max_y + 10 and term < tol * total:
            if np.all(mean_terms < tol * mean_total):
                break
    log_total = float(np.log(total)) - math.lgamma(k_count)
    mean = mean_total / total
    return float(low) + log_total, np.asarray(mean, np.float64)


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


# The accuracy bar of docs/numerics.md: value |A - A*| <= a (1 + |A*|), mean
# |mu - mu*| <= mean_abs + mean_rel mu*.
BAR = {
    "float32": dict(a=1e-5, mean_abs=1e-5, mean_rel=1e-3),
    "float64": dict(a=1e-12, mean_abs=1e-12, mean_rel=1e-9),
}


def error_ratios(a, mean, a_ref, mean_ref, dtype: str) -> tuple[float, float]:
    """(A error / bar, worst mean error / bar) for one row; inf for NaN or Inf."""
    bar = BAR[dtype]
    if not (np.isfinite(a) and np.all(np.isfinite(mean))):
        return float("inf"), float("inf")
    a_ratio = abs(a - a_ref) / (1 + abs(a_ref)) / bar["a"]
    allowed = bar["mean_abs"] + bar["mean_rel"] * np.asarray(mean_ref)
    return float(a_ratio), float(np.max(np.abs(mean - mean_ref) / allowed))


FAMILIES = (
    "iid normal",
    "label smoothing",
    "clustered",
    "heavy tailed",
    "near ties",
)


def _random_logits(family: str, k: int, dtype: str, rng: np.random.Generator):
    """One row of logits of a family, with spread at most about 1000."""
    if family == "iid normal":
        return rng.normal(size=k) * 10 ** rng.uniform(-2, 2)
    if family == "label smoothing":
        # One or a few top logits a gap above a tight cluster (CC-LS optima).
        z = rng.normal(size=k) * 10 ** rng.uniform(-4, -0.5)
        top = rng.choice(k, size=min(k - 1, rng.integers(1, 4)), replace=False)
        z[top] += 10 ** rng.uniform(0, 3)
        return z
    if family == "clustered":
        centres = rng.uniform(0, 10 ** rng.uniform(0, 2.7), size=rng.integers(2, 6))
        return rng.choice(centres, size=k) + rng.normal(size=k) * 10 ** rng.uniform(
            -4, 0
        )
    if family == "heavy tailed":
        t = rng.standard_t(rng.uniform(1, 3), size=k) * 10 ** rng.uniform(-1, 1.3)
        return np.clip(t, -500, 500)
    if family == "near ties":
        # Integer multiples of a step near the dtype's resolution.
        low = -7.0 if dtype == "float32" else -12.0
        return rng.integers(-3, 4, size=k) * 10 ** rng.uniform(low, -4)
    raise ValueError(family)


def random_rows(
    rng: np.random.Generator, count: int, k_max: int = 2000, k_grid: int = 40
) -> list[tuple[str, str, np.ndarray]]:
    """Seeded random rows: (family, dtype, logits rounded to that dtype).

    K is log-uniform on a grid of ``k_grid`` integers from 2 to ``k_max`` (so
    rows can be batched by K); a third of the rows get an offset up to 1e4.
    The logits are rounded to the dtype and returned as float64, so the
    reference is exact for the inputs the op sees.
    """
    ks = np.unique(np.round(np.geomspace(2, k_max, k_grid)).astype(int))
    rows = []
    for _ in range(count):
        k = int(rng.choice(ks))
        family = str(rng.choice(FAMILIES))
        dtype = str(rng.choice(["float32", "float64"]))
        z = _random_logits(family, k, dtype, rng)
        if rng.uniform() < 1 / 3:
            z = z + rng.uniform(-1e4, 1e4)
            family += " + offset"
        rows.append((family, dtype, z.astype(dtype).astype(np.float64)))
    return rows


def sweep_errors(rows, value_and_grad) -> list[tuple[str, str, int, float, float]]:
    """(family, dtype, K, A error / bar, mean error / bar) for each row.

    ``value_and_grad(z)`` returns the per-row values and their gradient (the
    mean) for a (rows, K) array of one dtype; rows are batched by (K, dtype).
    """
    groups: dict[tuple[int, str], list[int]] = {}
    for i, (_, dtype, z) in enumerate(rows):
        groups.setdefault((z.size, dtype), []).append(i)
    out = [None] * len(rows)
    for (k, dtype), members in groups.items():
        batch = np.stack([rows[i][2] for i in members]).astype(dtype)
        values, means = value_and_grad(batch)
        for j, i in enumerate(members):
            family = rows[i][0]
            ref = series_log_partition_and_mean(rows[i][2])
            ratios = error_ratios(
                float(values[j]), np.asarray(means[j], np.float64), *ref, dtype
            )
            out[i] = (family, dtype, k, *ratios)
    return out
