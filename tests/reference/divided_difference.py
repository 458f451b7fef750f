"""The CC log-partition, mean, covariance and NLL by the explicit
divided-difference formula, in mpmath.

    exp[z_1..z_K] = sum_k e^{z_k} / prod_{i != k} (z_k - z_i),
    A(z) = log exp[z]

evaluated at high precision: the cancellation of the alternating sum is
absorbed by the working precision. Nodes closer than 1e-3 (ties, and the
repeated nodes of the moments below) use the top-right entry of
expm(diag(z) + superdiagonal(1)) (McCurdy-Ng-Parlett), which defines the
divided difference by continuity.

Derivatives add nodes, d/dz_i exp[z] = exp[z, z_i], so the CC mean is
E[x_i] = exp[z, z_i] / exp[z], and the second moments are
E[x_i x_j] = exp[z, z_i, z_j] / exp[z] for i != j and
E[x_i^2] = 2 exp[z, z_i, z_i] / exp[z].
"""

from __future__ import annotations

import mpmath as mp
import numpy as np

# Digits of working precision. With the largest node shifted to 0, terms of
# the alternating sum reach 1 / min_gap^{K-1} (nodes far below the largest
# only add tiny terms): 80 digits cover the gaps (>= 1e-3 on this path) and
# the K (<= 10) the tests use, with > 40 digits to spare.
_DPS = 80
_TIE_GAP = mp.mpf("1e-3")


def _exp_divided_difference(z: list) -> mp.mpf:
    """exp[z_1..z_K] for mpf nodes, inside ``mp.workdps(_DPS)``.

    At this precision the matrix exponential's rounding, relative to its
    norm (about 1 when max z = 0), is far below the entry.
    """
    k = len(z)
    gaps = [abs(a - b) for i, a in enumerate(z) for b in z[i + 1 :]]
    if min(gaps) >= _TIE_GAP:
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


def _shifted(z) -> tuple[list, mp.mpf]:
    """The nodes as mpf, less their maximum (so that e^{z_k} <= 1), and it."""
    z = [mp.mpf(float(v)) for v in z]
    top = max(z)
    return [v - top for v in z], top


def exp_divided_difference(nodes) -> mp.mpf:
    """exp[nodes] (ties and repeats allowed), an mpf of ``_DPS`` digits."""
    with mp.workdps(_DPS):
        x, top = _shifted(nodes)
        return mp.exp(top) * _exp_divided_difference(x)


def log_partition(z) -> float:
    """A(z) for one row of logits, in float64."""
    with mp.workdps(_DPS):
        x, top = _shifted(z)
        return float(top + mp.log(_exp_divided_difference(x)))


def mean(z) -> np.ndarray:
    """E[x] = dA/dz for one row of logits, in float64."""
    with mp.workdps(_DPS):
        x, _ = _shifted(z)
        total = _exp_divided_difference(x)
        return np.array([float(_exp_divided_difference(x + [xk]) / total) for xk in x])


def covariance(z) -> np.ndarray:
    """Cov[x] (the Hessian of A) for one row of logits, in float64."""
    with mp.workdps(_DPS):
        x, _ = _shifted(z)
        k = len(x)
        total = _exp_divided_difference(x)
        first = [_exp_divided_difference(x + [x[i]]) / total for i in range(k)]
        cov = np.zeros((k, k))
        for i in range(k):
            for j in range(i, k):
                second = _exp_divided_difference(x + [x[i], x[j]]) / total
                second *= 2 if i == j else 1
                cov[i, j] = cov[j, i] = float(second - first[i] * first[j])
        return cov


def nll(y, z) -> float:
    """CC negative log-likelihood A(z) - y·z of one row, in float64."""
    with mp.workdps(_DPS):
        x, top = _shifted(z)
        dot = mp.fsum(
            mp.mpf(float(a)) * mp.mpf(float(b)) for a, b in zip(y, z, strict=True)
        )
        return float(top + mp.log(_exp_divided_difference(x)) - dot)


def nll_rows(y, z) -> np.ndarray:
    """``nll`` over the leading axes of [..., K] arrays."""
    y = np.asarray(y, dtype=np.float64)
    z = np.asarray(z, dtype=np.float64)
    flat = [
        nll(a, b)
        for a, b in zip(
            y.reshape(-1, y.shape[-1]), z.reshape(-1, z.shape[-1]), strict=True
        )
    ]
    return np.array(flat).reshape(z.shape[:-1])
