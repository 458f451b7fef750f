"""The tolerances the tests judge keras_cc by, defined once.

``BAR`` is the accuracy bar of docs/numerics.md, for the exact value at the
rounded inputs: the value |A - A*| <= a (1 + |A*|), the mean
|mu - mu*| <= mean_abs + mean_rel mu*. ``Z_MAX`` is the number of standard
errors allowed in Monte-Carlo comparisons.
"""

from __future__ import annotations

import numpy as np

BAR = {
    "float32": dict(a=1e-5, mean_abs=1e-5, mean_rel=1e-3),
    "float64": dict(a=1e-12, mean_abs=1e-12, mean_rel=1e-9),
}

# With up to ~1000 coordinates compared per test, P(any |Z| > 5) < 1000 * 5.7e-7.
Z_MAX = 5.0


def error_ratios(a, mean, a_ref, mean_ref, dtype: str) -> tuple[float, float]:
    """(A error / bar, worst mean error / bar) for one row; inf for NaN or Inf."""
    bar = BAR[dtype]
    a = float(a)
    mean = np.asarray(mean, np.float64)
    if not (np.isfinite(a) and np.all(np.isfinite(mean))):
        return float("inf"), float("inf")
    a_ratio = abs(a - a_ref) / (1 + abs(a_ref)) / bar["a"]
    allowed = bar["mean_abs"] + bar["mean_rel"] * np.asarray(mean_ref)
    return float(a_ratio), float(np.max(np.abs(mean - mean_ref) / allowed))
