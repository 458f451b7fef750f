"""Inputs for the accuracy bar: fixed regimes and a seeded random sweep.

Used by ``tests/test_ops.py`` and ``benchmarks/log_partition.py``.
"""

from __future__ import annotations

import numpy as np

from .series import longdouble_series
from .tolerances import error_ratios


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
    The reference is ``longdouble_series``.
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
            ref = longdouble_series(rows[i][2])
            ratios = error_ratios(values[j], means[j], *ref, dtype)
            out[i] = (family, dtype, k, *ratios)
    return out
