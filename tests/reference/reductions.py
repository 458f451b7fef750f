"""Keras' documented loss semantics: label smoothing and loss reductions."""

from __future__ import annotations

import numpy as np


def smooth(y, alpha: float) -> np.ndarray:
    """Label-smoothed targets y (1 - alpha) + alpha / K, in float64."""
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
