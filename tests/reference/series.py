"""The CC log-partition and mean by the all-positive series (docs/numerics.md).

With y = z - min z >= 0,

    exp[z] = e^{min z} * sum_j h_j(y) / (j + K - 1)!,

where h_j are the complete homogeneous symmetric polynomials, built by the
per-node recurrence h_j(y_1..y_m) = h_j(y_1..y_{m-1}) + y_m h_{j-1}(y_1..y_m).
Every term is positive, so nothing cancels, and ties need no special case.
The mean adds node y_k once more: exp[y, y_k] = sum_j g_j / (j + K)!, with
g_j = y_k g_{j-1} + h_j. This shares nothing with the library's algorithm
(a contour integral) nor with the divided-difference formula of
``divided_difference.py``; ``tests/test_ops.py`` checks the two references
against each other.

``mpmath_series`` sums it in mpmath. ``longdouble_series`` evaluates the same
series vectorised in NumPy's 80-bit ``longdouble`` (64-bit significand), for
the randomised sweep and for K up to 50 000 where mpmath is too slow. There
the recurrence is a running sum of positive terms,
``h_j(y_1..y_m) = sum_{i<=m} y_i h_{j-1}(y_1..y_i)``, so every step is a
``cumsum``; with all terms positive the relative error of ``h_j`` is at most
about ``j K eps`` (eps = 5.4e-20), below 1e-12 for ``j K < 2e7``, and in
practice near ``sqrt(j K) eps``. ``tests/test_ops.py`` checks it against
``mpmath_series``.
"""

from __future__ import annotations

import functools
import math

import mpmath as mp
import numpy as np


@functools.cache
def _mpmath_series(z: tuple[float, ...], dps: int) -> tuple[float, tuple[float, ...]]:
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


def mpmath_series(z, dps: int = 30) -> tuple[float, np.ndarray]:
    """A(z) and E[x] for one row of logits (already rounded to a dtype), in
    mpmath with ``dps`` digits: exact to float64."""
    a, mean = _mpmath_series(tuple(float(v) for v in np.asarray(z, np.float64)), dps)
    return a, np.asarray(mean)


def longdouble_series(z) -> tuple[float, np.ndarray]:
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
