"""Calibration of predicted class probabilities: NLL, ECE, reliability.

NumPy only, so the numbers are the same under every Keras backend. A
"prediction" is an (N, K) array of probability vectors; for a network trained
with logits z (and a loss-side ``logit_scale`` s) it is ``softmax(s z)``, or,
for the CC losses, the CC mean ``keras_cc.ops.cc_mean(s z)``.
"""

from __future__ import annotations

import numpy as np

ECE_BINS = 15


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (shifted by the row max: no overflow)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _check(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    if probs.ndim != 2 or labels.shape != probs.shape[:1]:
        raise ValueError(
            "probs must be (N, K) and labels (N,); received "
            f"probs.shape={probs.shape}, labels.shape={labels.shape}."
        )
    if labels.size and (labels.min() < 0 or labels.max() >= probs.shape[1]):
        raise ValueError(f"labels must lie in [0, {probs.shape[1]}).")
    if np.any(~np.isfinite(probs)) or np.any(probs < 0):
        raise ValueError("probs must be finite and non-negative.")
    return probs, labels


def negative_log_likelihood(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean of -log p[label]; infinite if a true class got probability 0."""
    probs, labels = _check(probs, labels)
    with np.errstate(divide="ignore"):
        return float(-np.mean(np.log(probs[np.arange(len(labels)), labels])))


def reliability_bins(
    probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width confidence bin: (mean confidence, accuracy, count).

    Confidence is the top probability; bin b holds confidences in
    (b/bins, (b+1)/bins] (the first bin also holds 0). Empty bins give NaN.
    """
    probs, labels = _check(probs, labels)
    if bins < 1:
        raise ValueError(f"bins must be >= 1; got {bins}.")
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    index = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(index, confidence, bins) / counts
        accuracy = np.bincount(index, correct.astype(float), bins) / counts
    return mean_confidence, accuracy, counts


def expected_calibration_error(
    probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS
) -> float:
    """ECE (Guo et al. 2017): sum over bins of (n_b / N) |accuracy - confidence|."""
    confidence, accuracy, counts = reliability_bins(probs, labels, bins)
    used = counts > 0
    weights = counts[used] / counts.sum()
    return float(np.sum(weights * np.abs(accuracy[used] - confidence[used])))
