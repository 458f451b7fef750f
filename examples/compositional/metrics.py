"""Metrics of compositional predictions (NumPy only).

- :func:`rmse`, :func:`mae`: of the predicted mean, over all shares.
- :func:`aitchison_distance`: the distance of the simplex's own geometry,
  ``||clr(p) - clr(y)||``, defined only where every share of ``y`` is > 0.
- :func:`coverage`: how often the central predictive interval of each part
  (from samples) holds the observed share.
- :func:`pit`: the probability integral transform ``P(X_k <= y_k)`` per
  share; uniform on [0, 1] for a calibrated model.
- :func:`zero_summary`: at the shares observed to be exactly 0, the
  predicted mean and the predictive probability of a share below a small
  threshold.

    >>> import numpy as np
    >>> y = np.array([[0.2, 0.3, 0.5]])
    >>> float(aitchison_distance(y, y)[0])
    0.0
"""

from __future__ import annotations

import numpy as np


def rmse(mean: np.ndarray, y: np.ndarray) -> float:
    """Root mean squared error over every share of every row."""
    return float(np.sqrt(np.mean((mean - y) ** 2)))


def mae(mean: np.ndarray, y: np.ndarray) -> float:
    """Mean absolute error over every share of every row."""
    return float(np.mean(np.abs(mean - y)))


def clr(x: np.ndarray) -> np.ndarray:
    """Centred log-ratio ``log x - mean(log x)`` (``x`` > 0)."""
    log_x = np.log(x)
    return log_x - log_x.mean(axis=-1, keepdims=True)


def aitchison_distance(mean: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-row Aitchison distance; NaN where ``y`` or ``mean`` has a zero.

    >>> d = aitchison_distance(np.array([[0.5, 0.5]]), np.array([[0.8, 0.2]]))
    >>> round(float(d[0]), 4)  # |log 4| / sqrt(2)
    0.9803
    """
    positive = (y > 0).all(axis=-1) & (mean > 0).all(axis=-1)
    safe_y = np.where(positive[:, None], y, 1.0)
    safe_mean = np.where(positive[:, None], mean, 1.0)
    distance = np.linalg.norm(clr(safe_mean) - clr(safe_y), axis=-1)
    return np.where(positive, distance, np.nan)


def coverage(samples: np.ndarray, y: np.ndarray, level: float) -> np.ndarray:
    """Per part, the fraction of rows whose share lies in the central
    ``level`` interval of the samples ``[S, B, K]`` (bounds included).

    >>> s = np.linspace(0, 1, 101)[:, None, None] * np.ones((1, 2, 1))
    >>> coverage(s, np.array([[0.5], [0.99]]), 0.9).tolist()
    [0.5]
    """
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(samples, [tail, 1.0 - tail], axis=0)
    return ((y >= low) & (y <= high)).mean(axis=0)


def pit(samples: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``P(X <= y)`` per share ``[B, K]``, estimated from samples ``[S, B, K]``."""
    return (samples <= y[None]).mean(axis=0)


def pit_histogram(values: np.ndarray, bins: int = 10) -> np.ndarray:
    """Counts of PIT values in ``bins`` equal bins of [0, 1] (1 in the last)."""
    counts, _ = np.histogram(np.ravel(values), bins=bins, range=(0.0, 1.0))
    return counts


def zero_summary(
    mean: np.ndarray,
    y: np.ndarray,
    samples: np.ndarray | None,
    threshold: float = 0.005,
) -> dict[str, float]:
    """What a model says where a share is exactly 0.

    ``zero_mean``: the average predicted mean share there (0 is perfect);
    ``zero_mass``: the average predictive probability of a share below
    ``threshold`` there (NaN without samples); ``zero_cells``: how many
    shares are 0. All NaN where there is no zero.
    """
    zeros = y == 0
    count = int(zeros.sum())
    if count == 0:
        return {"zero_cells": 0, "zero_mean": float("nan"), "zero_mass": float("nan")}
    mass = float("nan")
    if samples is not None:
        mass = float((samples < threshold).mean(axis=0)[zeros].mean())
    return {
        "zero_cells": count,
        "zero_mean": float(mean[zeros].mean()),
        "zero_mass": mass,
    }
