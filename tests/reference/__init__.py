"""Independent references for the keras_cc tests and benchmarks.

None of them uses keras_cc code. Two methods compute the CC log-partition
and mean, and ``tests/test_ops.py`` checks them against each other:

- ``divided_difference``: the explicit divided-difference formula in mpmath
  (``log_partition``, ``mean``, ``covariance``, ``nll``, ``nll_rows``, and
  ``exp_divided_difference`` itself);
- ``series``: the all-positive series, in mpmath (``mpmath_series``) and
  vectorised in ``np.longdouble`` (``longdouble_series``, for large K and
  the randomised sweep).

Besides: K = 2 as the continuous Bernoulli (``tfp_continuous_bernoulli``,
``continuous_bernoulli_mean``), Keras' loss semantics (``smooth``,
``reduce``), the tolerances (``BAR``, ``Z_MAX``, ``error_ratios``) and the
inputs of the accuracy bar (``regimes``, ``random_rows``, ``sweep_errors``).
"""

from .cases import random_rows, regimes, sweep_errors
from .continuous_bernoulli import continuous_bernoulli_mean, tfp_continuous_bernoulli
from .divided_difference import (
    covariance,
    exp_divided_difference,
    log_partition,
    mean,
    nll,
    nll_rows,
)
from .reductions import reduce, smooth
from .series import longdouble_series, mpmath_series
from .tolerances import BAR, Z_MAX, error_ratios

__all__ = [
    "BAR",
    "Z_MAX",
    "continuous_bernoulli_mean",
    "covariance",
    "error_ratios",
    "exp_divided_difference",
    "log_partition",
    "longdouble_series",
    "mean",
    "mpmath_series",
    "nll",
    "nll_rows",
    "random_rows",
    "reduce",
    "regimes",
    "smooth",
    "sweep_errors",
    "tfp_continuous_bernoulli",
]
