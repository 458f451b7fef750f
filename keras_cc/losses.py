"""Keras losses for the continuous categorical (CC) distribution.

The CC negative log-likelihood of a target ``y`` on the simplex under logits
``z`` is ``A(z) - y·z``, where ``A`` is the CC log-partition
(``keras_cc.ops.cc_log_partition``). Compare the categorical cross-entropy,
``logsumexp(z) - y·z``: the CC loss is a proper likelihood for *soft* targets
(label smoothing, distillation, vote fractions), see docs/numerics.md and
Gordon-Rodriguez et al., "Uses and abuses of the cross-entropy loss" (2020).

Everything is written with ``keras.ops`` and runs on the TensorFlow, JAX and
PyTorch backends, eagerly, under ``tf.function``/``jax.jit`` and under XLA;
what differs per backend lives in ``keras_cc._backend``.

Each loss is a function of ``(y_true, y_pred, **options)`` plus two thin
classes, a ``keras.losses.Loss`` here and a ``keras.metrics.Metric`` in
``keras_cc.metrics``, that store the options once (``_fn_kwargs``, as Keras'
own ``LossFunctionWrapper`` and ``MeanMetricWrapper`` do), pass them to the
function, expose them as read-only attributes and save them in
``get_config``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_cc import _backend, _contour
from keras_cc.ops import (
    canonical_axis,
    cc_log_partition,
    cc_natural_from_mean_logits,
)

__all__ = [
    "ContinuousCategoricalCrossentropy",
    "SparseContinuousCategoricalCrossentropy",
    "continuous_categorical_crossentropy",
    "label_smoothing_logit_scale",
    "sparse_continuous_categorical_crossentropy",
]

# Row sums of `y_true` may differ from 1 by this much (absolute, which is also
# relative since the sum should be 1), by the dtype `y_true` arrives in.
# float32 normalised targets are exact to ~6e-8 per entry, so 1e-3 only lets
# rounding through (even for K in the thousands), never a target that was not
# normalised; half-precision targets carry ~1e-3 (float16) or ~8e-3
# (bfloat16) rounding per entry.
_SUM_TOLERANCE = {"float64": 1e-6, "float16": 1e-2, "bfloat16": 5e-2}
_DEFAULT_SUM_TOLERANCE = 1e-3


def _compute_dtype(dtype) -> str:
    """float16/bfloat16 are computed in float32: the loss is a difference of
    two large nearly equal terms, and the logit gaps of a label-smoothing
    optimum (~100) are far beyond half precision's resolution there."""
    return _contour.compute_dtype(keras.backend.standardize_dtype(dtype))


def label_smoothing_logit_scale(num_classes: int, label_smoothing: float) -> float:
    """The logit scale that moves the CC-LS optimum to where the LS optimum is.

    With label-smoothed targets `y = (1 - α)·onehot + α/K`, cross-entropy is
    minimised at a logit gap (true class minus the others) of
    `g_LS = log(1 + K(1 - α)/α)`, about 4.5 for K = 10 and α = 0.1. The CC
    likelihood is minimised where the CC mean equals `y`; far from the
    uniform point the mean of a class at gap `g` below the top is about
    `1/g`, so the gap is `g_CC ≈ K/α`, about 100. Adam moves every weight by
    roughly the learning rate per step whatever the gradient's size, so a
    plain linear head reaches 100 about 20 times later than 4.5: CC-LS trains
    much more slowly than LS at the same learning rate. Feeding the loss
    `s·z` with `s = g_CC / g_LS` puts the CC-LS optimum at raw logit gaps of
    `g_LS`, where LS's optimum is, and the two train at the same pace.

    This is the value `logit_scale="auto"` uses in
    `ContinuousCategoricalCrossentropy`; call it directly when the targets
    are smoothed before they reach the loss.

    Args:
        num_classes: K, an integer >= 2.
        label_smoothing: α, strictly between 0 and 1.

    Returns:
        `(K/α) / log(1 + K(1 - α)/α)`, a Python float.

    Example:

    >>> round(keras_cc.losses.label_smoothing_logit_scale(10, 0.1), 2)
    22.17
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise ValueError(
            f"`num_classes` must be an integer >= 2. Received: {num_classes!r}"
        )
    if num_classes < 2:
        raise ValueError(f"`num_classes` must be >= 2. Received: {num_classes}")
    alpha = float(label_smoothing)
    if not 0.0 < alpha < 1.0:
        raise ValueError(
            "The label-smoothing logit scale needs `label_smoothing` strictly "
            f"between 0 and 1 (at 0 the CC optimum is at infinite gaps, at 1 "
            f"both optima are at gap 0). Received: {label_smoothing}"
        )
    cc_gap = num_classes / alpha
    ls_gap = float(np.log1p(num_classes * (1.0 - alpha) / alpha))
    return cc_gap / ls_gap


PARAMETERIZATIONS = ("natural", "mean")


def _check_options(
    label_smoothing: float, logit_scale, parameterization: str = "natural"
) -> None:
    """Validate the options every CC loss takes (at construction and call)."""
    if parameterization not in PARAMETERIZATIONS:
        raise ValueError(
            '`parameterization` must be "natural" (the model\'s logits are the '
            "CC's logits) or \"mean\" (their softmax is the CC's mean). "
            f"Received: {parameterization!r}"
        )
    if not 0.0 <= float(label_smoothing) <= 1.0:
        raise ValueError(
            f"`label_smoothing` must be in [0, 1]. Received: {label_smoothing}"
        )
    if logit_scale is None:  # the default, see `_resolve_logit_scale`
        return
    if parameterization == "mean" and (
        isinstance(logit_scale, (str, bool)) or logit_scale != 1
    ):
        raise ValueError(
            '`logit_scale` applies to `parameterization="natural"`; the mean '
            "parameterisation puts every optimum where cross-entropy's is and "
            f"needs no scale. Received: logit_scale={logit_scale!r} with "
            'parameterization="mean".'
        )
    if isinstance(logit_scale, str):
        if logit_scale != "auto":
            raise ValueError(
                '`logit_scale` must be a positive number or "auto". '
                f"Received: {logit_scale!r}"
            )
        if not 0.0 < float(label_smoothing) < 1.0:
            raise ValueError(
                '`logit_scale="auto"` derives the scale from `label_smoothing`, '
                "which must then be strictly between 0 and 1. Received: "
                f"label_smoothing={label_smoothing}. With targets smoothed "
                "elsewhere, pass `logit_scale=label_smoothing_logit_scale(K, "
                "alpha)`."
            )
        return
    if (
        isinstance(logit_scale, bool)
        or not isinstance(logit_scale, (int, float, np.integer, np.floating))
        or not np.isfinite(logit_scale)
        or logit_scale <= 0
    ):
        raise ValueError(
            '`logit_scale` must be a positive finite number or "auto". '
            f"Received: {logit_scale!r}"
        )


def _resolve_logit_scale(
    logit_scale, label_smoothing: float, num_classes, parameterization: str
) -> float:
    """The numeric scale; "auto" needs the number of classes statically.

    The default (None) is "auto" for label smoothing under the natural
    parameterisation, where it is measured to train far better than 1
    (docs/label_smoothing.md), and 1 otherwise."""
    if logit_scale is None:
        smoothing = 0.0 < float(label_smoothing) < 1.0
        logit_scale = "auto" if smoothing and parameterization == "natural" else 1.0
    if logit_scale != "auto":
        return float(logit_scale)
    if num_classes is None:
        raise ValueError(
            '`logit_scale="auto"` (the default with label smoothing) needs a '
            "static number of classes; received `y_pred` with an unknown size "
            "along `axis`. Pass `logit_scale=label_smoothing_logit_scale(K, "
            "alpha)` (or 1.0 for plain CC-LS) instead."
        )
    return label_smoothing_logit_scale(int(num_classes), label_smoothing)


def _check_targets(y_true, axis: int, source_dtype: str):
    """Check that `y_true` lies on the simplex along `axis`.

    Checked on the target as given, before label smoothing: smoothing mixes it
    with the uniform vector, so the smoothed target is on the simplex too.

    Returns `(y_true, valid)`. Eagerly a bad target raises a `ValueError` and
    `valid` is None. Traced, `valid` is a boolean per row, for the caller to
    turn failed rows into NaN; in a TensorFlow graph `y_true` also carries
    runtime asserts (which XLA drops).
    """
    tol = _SUM_TOLERANCE.get(source_dtype, _DEFAULT_SUM_TOLERANCE)
    if _backend.is_concrete(y_true):
        values = np.asarray(ops.convert_to_numpy(y_true), dtype=np.float64)
        if not np.all(np.isfinite(values)):
            raise ValueError(
                "`y_true` must be finite; it contains NaN or infinite entries."
            )
        if np.any(values < 0):
            raise ValueError(
                "`y_true` must lie on the simplex, but it has negative entries "
                f"(min {values.min():.6g}). Targets are probability vectors "
                "along `axis`."
            )
        sums = values.sum(axis=axis)
        worst = float(np.max(np.abs(sums - 1.0))) if sums.size else 0.0
        if worst > tol:
            raise ValueError(
                "`y_true` must lie on the simplex, but its rows do not sum to 1 "
                f"along axis {axis}: the largest deviation is {worst:.6g} "
                f"(tolerance {tol:g} for {source_dtype}). Nothing is "
                "renormalised silently: normalise the targets yourself."
            )
        return y_true, None
    finite = ops.all(ops.isfinite(y_true), axis=axis)
    non_negative = ops.all(y_true >= 0, axis=axis)
    sums_to_one = ops.abs(ops.sum(y_true, axis=axis) - 1.0) <= tol
    y_true = _backend.graph_asserts(
        y_true,
        [
            (finite, "`y_true` must be finite."),
            (non_negative, "`y_true` must lie on the simplex (entries >= 0)."),
            (
                sums_to_one,
                f"`y_true` rows must sum to 1 along axis {axis} (tolerance {tol:g}).",
            ),
        ],
    )
    return y_true, ops.logical_and(ops.logical_and(finite, non_negative), sums_to_one)


def _check_labels(labels, num_classes: int):
    """Check that integer `labels` lie in `[0, num_classes)`.

    Returns `(labels, valid)` as `_check_targets` does: eagerly a bad label
    raises a `ValueError`; traced, `valid` marks the rows in range.
    """
    if _backend.is_concrete(labels):
        values = np.asarray(ops.convert_to_numpy(labels))
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(
                f"`y_true` must hold class labels in [0, {num_classes}); "
                f"received labels in [{values.min()}, {values.max()}]."
            )
        return labels, None
    valid = ops.logical_and(labels >= 0, labels < num_classes)
    message = f"`y_true` labels must lie in [0, {num_classes})."
    return _backend.graph_asserts(labels, [(valid, message)]), valid


def _check_shapes(y_true, y_pred):
    if len(y_true.shape) != len(y_pred.shape):
        raise ValueError(
            "`y_true` and `y_pred` must have the same rank; received "
            f"y_true.shape={tuple(y_true.shape)}, y_pred.shape={tuple(y_pred.shape)}."
        )
    for a, b in zip(y_true.shape, y_pred.shape, strict=True):
        if a is not None and b is not None and a != b:
            raise ValueError(
                "`y_true` and `y_pred` must have the same shape; received "
                f"y_true.shape={tuple(y_true.shape)}, "
                f"y_pred.shape={tuple(y_pred.shape)}."
            )


def _check_probabilities(y_pred, axis: int):
    """Check that `y_pred` read as probabilities (`from_logits=False`) has no
    negative entries: logits passed by mistake would otherwise be clipped to
    `epsilon` and give a finite, wrong loss.

    Returns `(y_pred, valid)` as `_check_targets` does: eagerly a negative
    entry raises a `ValueError`; traced, `valid` marks the rows without one
    (and a TensorFlow graph asserts).
    """
    message = (
        "`y_pred` must hold probabilities when `from_logits=False`, but it has "
        "negative entries{detail}. If the model outputs logits (no softmax), "
        "pass `from_logits=True`."
    )
    if _backend.is_concrete(y_pred):
        values = np.asarray(ops.convert_to_numpy(y_pred), dtype=np.float64)
        if np.any(values < 0):
            raise ValueError(message.format(detail=f" (min {values.min():.6g})"))
        return y_pred, None
    valid = ops.all(ops.logical_not(y_pred < 0), axis=axis)
    return _backend.graph_asserts(y_pred, [(valid, message.format(detail=""))]), valid


def _logits_from_pred(y_pred, from_logits: bool, fn_name: str, axis: int):
    """The logits to use, in the compute dtype (float32 for half inputs), and
    a per-row validity mask for probabilities (None if nothing to check)."""
    recovered = _backend.softmax_logits(y_pred)
    if recovered is not None:
        if from_logits:
            warnings.warn(
                f"`{fn_name}` received `from_logits=True`, but the `y_pred` "
                "argument was produced by a softmax activation and thus does "
                "not represent logits. Was this intended?",
                stacklevel=4,
            )
        y_pred = recovered
        from_logits = True
    y_pred = ops.convert_to_tensor(y_pred)
    dtype = _compute_dtype(y_pred.dtype)
    y_pred = ops.cast(y_pred, dtype)
    if from_logits:
        return y_pred, None
    y_pred, valid = _check_probabilities(y_pred, axis)
    # Probabilities: z = log p, clipped like Keras' cross-entropy. p need not
    # be normalised: a common factor shifts every logit alike, and the CC
    # loss is invariant to such shifts (A(z + c) = A(z) + c, sum(y) = 1).
    eps = keras.backend.epsilon()
    return ops.log(ops.clip(y_pred, eps, 1.0 - eps)), valid


def _cc_nll(y_true, logits, axis: int):
    """A(z) - y·z, computed on logits shifted so their max is 0.

    With c = max z: A(z) - y·z = A(z - c) - y·(z - c) + c·(1 - sum(y)). The
    shifted terms stay small when the logits carry a large common offset,
    where A(z) and y·z would otherwise cancel; the last term is ~0 for
    targets on the simplex but keeps the value exactly A(z) - y·z for any
    target (e.g. float32 targets, whose sums are 1 only to ~1e-7, at large
    offsets). The shift is a constant for the gradient, which stays exactly
    mean(z) - y.
    """
    shift = ops.stop_gradient(ops.max(logits, axis=axis, keepdims=True))
    shifted = logits - shift
    value = cc_log_partition(shifted, axis=axis) - ops.sum(y_true * shifted, axis=axis)
    return value + ops.squeeze(shift, axis) * (1.0 - ops.sum(y_true, axis=axis))


def _crossentropy(
    y_true,
    y_pred,
    valid,
    *,
    from_logits: bool,
    label_smoothing: float,
    axis: int,
    logit_scale,
    parameterization: str,
    fn_name: str,
):
    """The CC NLL of targets `y_true` under `y_pred` (arguments checked).

    `valid` is None, or a boolean per row from a traced check: rows that
    failed get NaN logits, so their loss and their gradient rows are NaN.
    That is the convention of Keras' sparse cross-entropy on GPU for labels
    out of range: where no error can be raised (XLA, `jax.jit`,
    `torch.compile`), `keras.callbacks.TerminateOnNaN` and non-finite
    counters still see the bad target instead of a finite wrong loss.
    """
    scale = _resolve_logit_scale(
        logit_scale, label_smoothing, y_pred.shape[axis], parameterization
    )
    logits, probabilities_valid = _logits_from_pred(y_pred, from_logits, fn_name, axis)
    if probabilities_valid is not None:
        valid = (
            probabilities_valid
            if valid is None
            else ops.logical_and(valid, probabilities_valid)
        )
    if scale != 1.0:
        logits = logits * ops.cast(scale, logits.dtype)
    if parameterization == "mean":
        # softmax(logits) is the CC mean; the CC's own logits follow from it.
        logits = cc_natural_from_mean_logits(logits, axis=axis)
    y_true = ops.cast(y_true, logits.dtype)
    if label_smoothing:
        num_classes = ops.cast(ops.shape(y_true)[axis], y_true.dtype)
        y_true = y_true * (1.0 - label_smoothing) + label_smoothing / num_classes
    if valid is not None:
        # Added, not selected with `where`: the gradient of a `where` is zero
        # on the rows it replaces, and those rows must get NaN gradients.
        logits = logits + ops.where(
            ops.expand_dims(valid, axis),
            ops.zeros_like(logits),
            ops.full_like(logits, float("nan")),
        )
    return _cc_nll(y_true, logits, axis)


def _as_tensor(y_pred):
    """`y_pred` as a tensor; a tensor is kept as it is, with its attributes
    (`_keras_logits`, see `_backend.softmax_logits`)."""
    return y_pred if hasattr(y_pred, "shape") else ops.convert_to_tensor(y_pred)


@keras.saving.register_keras_serializable(package="keras_cc")
def continuous_categorical_crossentropy(
    y_true,
    y_pred,
    from_logits: bool = False,
    label_smoothing: float = 0.0,
    axis: int = -1,
    validate_targets: bool = True,
    logit_scale: float | str | None = None,
    parameterization: str = "natural",
):
    """Computes the continuous categorical (CC) negative log-likelihood.

    `loss = A(z) - sum(y_true * z, axis)`, where `A` is the CC log-partition
    (`keras_cc.ops.cc_log_partition`) and `z` the logits. Unlike categorical
    cross-entropy this is the exact log-density of a target on the simplex,
    so it is the right likelihood for soft targets (label smoothing,
    distillation, vote fractions). Its gradient in `z` is `cc_mean(z) - y`.

    `from_logits=True` is recommended: a CC label-smoothing optimum sits at
    logit gaps near 100, but probabilities clipped to `[eps, 1 - eps]` (as
    Keras clips them, `eps = keras.backend.epsilon()`) cap the gap near 16.
    With `from_logits=False` on the TensorFlow and PyTorch backends, the
    logits behind a Keras softmax output are recovered (as Keras' TensorFlow
    cross-entropy does), so a `Dense(..., activation="softmax")` head also
    works; on JAX the clipped probabilities are used.

    Args:
        y_true: Targets on the simplex along `axis` (e.g. one-hot), same shape
            as `y_pred`.
        y_pred: Predicted logits (`from_logits=True`) or probabilities.
        from_logits: Whether `y_pred` is a logits tensor. By default, we
            assume that `y_pred` encodes a probability distribution; a
            negative entry then raises (eagerly) or gives a NaN row
            (compiled), since it means logits were passed by mistake.
        label_smoothing: Float in [0, 1]. When > 0, the target becomes
            `y_true * (1 - label_smoothing) + label_smoothing / num_classes`.
        axis: The class axis. Defaults to `-1`.
        validate_targets: If `True` (default), check that `y_true` is finite,
            non-negative and sums to 1 along `axis` (within 1e-3 for float32
            targets, 1e-6 for float64, 1e-2 for float16, 5e-2 for bfloat16),
            before smoothing. Eagerly a `ValueError` is raised; in a
            TensorFlow graph, runtime asserts raise `InvalidArgumentError`.
            Where no error can be raised (XLA, `jax.jit`, `torch.compile`)
            the loss of each invalid row is NaN, and so is its gradient row.
            Nothing is clipped or renormalised.
        logit_scale: The CC's logits are `logit_scale * z`. A positive
            number; `"auto"`, which needs `label_smoothing` in (0, 1) and
            means `label_smoothing_logit_scale(K, label_smoothing)` (about 22
            for K = 10 and α = 0.1, with which CC-LS trains about as fast as
            label smoothing); or `None` (default): `"auto"` when
            `label_smoothing` is in (0, 1) and `parameterization="natural"`,
            else `1.0`, the plain likelihood. See
            `ContinuousCategoricalCrossentropy`.
        parameterization: `"natural"` (default): `z` (times `logit_scale`)
            are the CC's logits. `"mean"`: `softmax(z)` is the CC's mean and
            the CC's logits are `keras_cc.ops.cc_natural_from_mean_logits(z)`;
            the loss is then minimised exactly where cross-entropy's is
            (`softmax(z) = y`) and needs no logit scale; see
            `ContinuousCategoricalCrossentropy`.

    Returns:
        The loss per example: `y_pred`'s shape without `axis`, in float32
        for float16/bfloat16 inputs (which are computed in float32) and in
        `y_pred`'s dtype otherwise.

    Example:

    >>> y_true = np.array([[0.0, 1.0, 0.0], [0.2, 0.3, 0.5]], "float32")
    >>> logits = np.array([[0.0, 3.0, -1.0], [0.0, 0.0, 0.0]], "float32")
    >>> loss = keras_cc.losses.continuous_categorical_crossentropy(
    ...     y_true, logits, from_logits=True)
    >>> np.round(np.asarray(loss), 4)
    array([-2.6406, -0.6931], dtype=float32)
    """
    _check_options(label_smoothing, logit_scale, parameterization)
    y_pred = _as_tensor(y_pred)
    axis = canonical_axis(axis, len(y_pred.shape), "y_pred")
    y_true = ops.convert_to_tensor(y_true)
    _check_shapes(y_true, y_pred)
    valid = None
    if validate_targets:
        source_dtype = keras.backend.standardize_dtype(y_true.dtype)
        # Summed in float32 at least: half-precision sums over many classes
        # would round by more than the tolerance.
        y_true = ops.cast(y_true, _compute_dtype(source_dtype))
        y_true, valid = _check_targets(y_true, axis, source_dtype)
    return _crossentropy(
        y_true,
        y_pred,
        valid,
        from_logits=from_logits,
        label_smoothing=label_smoothing,
        axis=axis,
        logit_scale=logit_scale,
        parameterization=parameterization,
        fn_name="continuous_categorical_crossentropy",
    )


@keras.saving.register_keras_serializable(package="keras_cc")
def sparse_continuous_categorical_crossentropy(
    y_true,
    y_pred,
    from_logits: bool = False,
    label_smoothing: float = 0.0,
    axis: int = -1,
    validate_targets: bool = True,
    logit_scale: float | str | None = None,
    parameterization: str = "natural",
):
    """CC negative log-likelihood with integer class labels.

    Equivalent to `continuous_categorical_crossentropy` on
    `one_hot(y_true, num_classes)`; with `label_smoothing=0` the target is a
    vertex of the simplex, and with `label_smoothing > 0` it is
    `one_hot * (1 - label_smoothing) + label_smoothing / num_classes`.

    Args:
        y_true: Integer labels in `[0, num_classes)`, with `y_pred`'s shape
            without `axis` (or with size 1 at `axis`).
        y_pred: Predicted logits (`from_logits=True`, recommended) or
            probabilities.
        from_logits: Whether `y_pred` is a logits tensor.
        label_smoothing: Float in [0, 1].
        axis: The class axis of `y_pred`. Defaults to `-1`.
        validate_targets: If `True` (default), labels outside
            `[0, num_classes)` raise a `ValueError` eagerly (runtime asserts in
            a TensorFlow graph); under XLA, `jax.jit` or `torch.compile` the
            loss and gradient rows of such labels are NaN.
        logit_scale: The CC's logits are `logit_scale * z`; a positive
            number, `"auto"` or `None` (default), as in
            `continuous_categorical_crossentropy`.
        parameterization: `"natural"` (default) or `"mean"`, as in
            `continuous_categorical_crossentropy`.

    Returns:
        The loss per example, shaped like `y_true` without the size-1 axis.

    Example:

    >>> logits = np.array([[0.0, 3.0, -1.0], [0.0, 0.0, 0.0]], "float32")
    >>> loss = keras_cc.losses.sparse_continuous_categorical_crossentropy(
    ...     np.array([1, 2]), logits, from_logits=True)
    >>> np.round(np.asarray(loss), 4)
    array([-2.6406, -0.6931], dtype=float32)
    """
    _check_options(label_smoothing, logit_scale, parameterization)
    y_pred = _as_tensor(y_pred)
    rank = len(y_pred.shape)
    axis = canonical_axis(axis, rank, "y_pred")
    num_classes = y_pred.shape[axis]
    if num_classes is None:
        raise ValueError(
            "`y_pred` must have a static number of classes along `axis` for "
            f"sparse labels; received y_pred.shape={tuple(y_pred.shape)}."
        )
    y_true = ops.convert_to_tensor(y_true)
    if len(y_true.shape) == rank and y_true.shape[axis] == 1:
        y_true = ops.squeeze(y_true, axis=axis)
    expected = tuple(d for i, d in enumerate(y_pred.shape) if i != axis)
    if len(y_true.shape) != len(expected) or any(
        a is not None and b is not None and a != b
        for a, b in zip(y_true.shape, expected, strict=True)
    ):
        raise ValueError(
            "`y_true` must hold one integer label per example: expected shape "
            f"{expected} for y_pred.shape={tuple(y_pred.shape)} and axis={axis}; "
            f"received y_true.shape={tuple(y_true.shape)}."
        )
    y_true = ops.cast(y_true, "int32")
    valid = None
    if validate_targets:
        y_true, valid = _check_labels(y_true, num_classes)
    if valid is not None:
        # A label out of range is one-hot encoded as zeros (TensorFlow, JAX)
        # or an error (PyTorch); its row becomes NaN below in any case.
        y_true = ops.where(valid, y_true, ops.zeros_like(y_true))
    return _crossentropy(
        ops.one_hot(y_true, num_classes, axis=axis),
        y_pred,
        valid,
        from_logits=from_logits,
        label_smoothing=label_smoothing,
        axis=axis,
        logit_scale=logit_scale,
        parameterization=parameterization,
        fn_name="sparse_continuous_categorical_crossentropy",
    )


def _options(
    from_logits: bool,
    label_smoothing: float,
    axis: int,
    validate_targets: bool,
    logit_scale: float | str | None,
    parameterization: str,
) -> dict[str, Any]:
    """The keyword options of the CC loss functions, checked once, when a loss
    or metric is created rather than at its first use."""
    _check_options(label_smoothing, logit_scale, parameterization)
    return dict(
        from_logits=from_logits,
        label_smoothing=label_smoothing,
        axis=axis,
        validate_targets=validate_targets,
        logit_scale=logit_scale,
        parameterization=parameterization,
    )


class _StoredOptions:
    """The options of a loss function, stored once in `_fn_kwargs`.

    Keras' `LossFunctionWrapper` and `MeanMetricWrapper` keep the keyword
    arguments they pass to their function in `_fn_kwargs`; this mixin reads
    them as attributes (`loss.from_logits`) and saves them in `get_config`.
    The function itself is fixed by the class (`_function`), so it is not
    saved: the config holds the constructor's arguments, as in keras_cc 0.1.
    A new variant is one loss function and two short classes that name it.
    """

    _function: Callable[..., Any]  # set by each public class
    _default_name: str

    def __getattr__(self, name):
        # Only called when normal lookup fails: options are not attributes.
        options = self.__dict__.get("_fn_kwargs", {})
        if name in options:
            return options[name]
        raise AttributeError(
            f"'{type(self).__name__}' object has no attribute '{name}'"
        )

    def __setattr__(self, name, value):
        if name in self.__dict__.get("_fn_kwargs", {}):
            raise AttributeError(
                f"`{name}` is fixed when the {type(self).__name__} is created; "
                "create a new one with the option you want."
            )
        super().__setattr__(name, value)

    def get_config(self):
        config = super().get_config()
        config.pop("fn", None)
        return config | self._fn_kwargs

    @classmethod
    def from_config(cls, config):
        # Saved before `parameterization` existed: those models were trained
        # with the natural parameterisation, whatever today's default is.
        return super().from_config({"parameterization": "natural", **config})


class _LossFunctionWrapper(_StoredOptions, keras.losses.Loss):
    """`keras.losses.Loss` around the class's CC loss function and options.

    Mirrors Keras' (private) `LossFunctionWrapper`; the rank matching it does
    is left out on purpose: the dense loss needs equal shapes (a mismatch is
    an error, raised at trace time) and the sparse one squeezes a trailing
    size-1 label axis itself. The arguments are documented on each class.
    """

    def __init__(
        self,
        from_logits: bool = False,
        label_smoothing: float = 0.0,
        axis: int = -1,
        reduction: str | None = "sum_over_batch_size",
        name: str | None = None,
        dtype=None,
        validate_targets: bool = True,
        logit_scale: float | str | None = None,
        parameterization: str = "natural",
    ):
        options = _options(
            from_logits,
            label_smoothing,
            axis,
            validate_targets,
            logit_scale,
            parameterization,
        )
        super().__init__(
            name=name or self._default_name, reduction=reduction, dtype=dtype
        )
        self.fn = type(self)._function
        self._fn_kwargs = options

    def __call__(self, y_true, y_pred, sample_weight=None):
        # `Loss.__call__` casts `y_pred` to the loss dtype, which would drop
        # the logits behind a softmax output.
        y_pred = keras.tree.map_structure(
            lambda x: _backend.cast_keeping_softmax_logits(x, self.dtype), y_pred
        )
        return super().__call__(y_true, y_pred, sample_weight=sample_weight)

    def call(self, y_true, y_pred):
        return self.fn(y_true, y_pred, **self._fn_kwargs)


@keras.saving.register_keras_serializable(package="keras_cc")
class ContinuousCategoricalCrossentropy(_LossFunctionWrapper):
    """Continuous categorical (CC) negative log-likelihood loss.

    Use it where you would use `keras.losses.CategoricalCrossentropy` with
    soft targets: targets on the simplex (one-hot, label-smoothed, mixed-up,
    distilled or vote-fraction), shape `[batch_size, num_classes]` like
    `y_pred`. The value per example is `A(z) - sum(y_true * z)`, the exact
    CC log-density of the target, with `A` the CC log-partition
    (`keras_cc.ops.cc_log_partition`). With `label_smoothing=α` it is the
    CC-LS loss of Gordon-Rodriguez et al. (2020).

    Prefer `from_logits=True` (a linear last layer): the CC-LS optimum sits
    at logit gaps near 100, while probabilities clipped like Keras clips them
    (`[eps, 1 - eps]`, `eps = keras.backend.epsilon()`) cap the gap near 16.
    With `from_logits=False` on the TensorFlow and PyTorch backends the
    logits behind a Keras softmax output are recovered, as Keras' TensorFlow
    cross-entropy does (also under mixed precision); on JAX the clipped
    probabilities are used.

    The loss is computed in float32 for float16/bfloat16 inputs.

    Args:
        from_logits: Whether `y_pred` is expected to be a logits tensor. By
            default, we assume that `y_pred` encodes a probability
            distribution.
        label_smoothing: Float in [0, 1]. When > 0, label values are
            smoothed: `y_true * (1 - label_smoothing) + label_smoothing /
            num_classes`. For example, if `0.1`, use `0.1 / num_classes` for
            non-target labels and `0.9 + 0.1 / num_classes` for target labels.
        axis: The class axis. Defaults to `-1`.
        reduction: Type of reduction to apply to the loss. In almost all cases
            this should be `"sum_over_batch_size"`. Supported options are
            `"sum"`, `"sum_over_batch_size"`, `"mean"`,
            `"mean_with_sample_weight"` or `None`, with the meanings of
            `keras.losses.Loss`. Defaults to `"sum_over_batch_size"`.
        name: Optional name for the loss instance.
        dtype: The dtype of the loss's computations. Defaults to `None`, which
            means using `keras.backend.floatx()`. If a `keras.DTypePolicy` is
            provided, then the `compute_dtype` will be utilized (half
            precision is still computed in float32).
        validate_targets: If `True` (default), `y_true` must be finite,
            non-negative and sum to 1 along `axis` within 1e-3 (the loss
            casts `y_true` to its dtype first: float32 by default; 1e-6 for
            float64), checked before smoothing. Eagerly a `ValueError` is
            raised; in a TensorFlow graph, runtime asserts raise
            `InvalidArgumentError`; where no error can be raised (XLA,
            `jax.jit`, `torch.compile`) the loss of each invalid row is NaN,
            so `keras.callbacks.TerminateOnNaN` stops the run. Set `False` to
            skip the check.
        logit_scale: A positive number `s`, `"auto"` or `None`: the loss is
            the CC negative log-likelihood under logits `s * z`. `"auto"`
            (for CC-LS, `label_smoothing=α` here) and
            `label_smoothing_logit_scale(K, α)` (when the targets are
            smoothed before the loss) both give `(K/α) / log(1 + K(1-α)/α)`,
            about 22 for K = 10, α = 0.1. The default, `None`, is `"auto"`
            when `label_smoothing` is in (0, 1) (and the parameterization is
            natural) and `1.0` (the plain likelihood) otherwise, so the
            headline `ContinuousCategoricalCrossentropy(label_smoothing=0.1)`
            is CC-LS with the scale; pass `logit_scale=1.0` for plain CC-LS
            (keras_cc 0.1's default; models saved with it keep it). Why:
            the CC-LS optimum sits at logit gaps near `K/α` (100), label
            smoothing's near `log(1 + K(1-α)/α)` (4.5), and with Adam's
            roughly constant step a linear head takes many times longer to
            reach 100; with the scale, CC-LS trains at about LS's pace (see
            `docs/label_smoothing.md` for the measurements, and the one
            setting measured where the scale hurts: 100 classes at Adam lr
            1e-2, where it also acts as a much larger step and one seed in
            two never trained; there pass `logit_scale=1.0`). The model's
            predicted CC is then `CC(logits=s * z)`: read probabilities as
            `softmax(s * z)` or `keras_cc.ops.cc_mean(s * z)`.
        parameterization: `"natural"` (default) or `"mean"`. With `"mean"`
            the model's softmax is the CC's mean: the loss is the exact CC
            negative log-likelihood at the logits
            `keras_cc.ops.cc_natural_from_mean_logits(z)`, so it is minimised
            exactly where cross-entropy's is (`softmax(z) = y`) for every
            target shape, needs no `logit_scale`, and predictions are read
            as `softmax(z)`, as for cross-entropy. Its gradient in
            `softmax(z)` is `Cov_CC^-1 (softmax(z) - y)`, the CC's Fisher
            weighting of cross-entropy's residual. It costs a few Newton
            steps with the CC covariance per row (`O(K^3)`): meant for
            tens to hundreds of classes.

    Examples:

    Standalone usage:

    >>> y_true = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    >>> logits = np.array([[-1.0, 4.0, 0.0], [0.5, 1.0, 2.0]])
    >>> loss = keras_cc.losses.ContinuousCategoricalCrossentropy(
    ...     from_logits=True)
    >>> round(float(loss(y_true, logits)), 4)
    -2.2696

    >>> # Calling with 'sample_weight'.
    >>> round(float(loss(y_true, logits, sample_weight=np.array([0.3, 0.7]))), 4)
    -0.9762

    >>> # Plain CC-LS (no logit scale), no reduction.
    >>> loss = keras_cc.losses.ContinuousCategoricalCrossentropy(
    ...     from_logits=True, label_smoothing=0.1, logit_scale=1.0,
    ...     reduction=None)
    >>> np.round(np.asarray(loss(y_true, logits)), 4)
    array([-2.7625, -1.3933], dtype=float32)

    >>> # CC-LS as it is by default: the label-smoothing logit scale
    >>> # ("auto", 9.0 for K = 3), the same as the plain loss at 9.0 * z.
    >>> loss = keras_cc.losses.ContinuousCategoricalCrossentropy(
    ...     from_logits=True, label_smoothing=0.1)
    >>> round(float(loss(y_true, logits / 10.0)), 4)
    -1.9701

    Usage with the `compile()` API (CC-LS, with the label-smoothing logit
    scale by default):

    ```python
    model.compile(
        optimizer="adam",
        loss=keras_cc.losses.ContinuousCategoricalCrossentropy(
            from_logits=True, label_smoothing=0.1
        ),
    )
    ```
    """

    _function = staticmethod(continuous_categorical_crossentropy)
    _default_name = "continuous_categorical_crossentropy"


@keras.saving.register_keras_serializable(package="keras_cc")
class SparseContinuousCategoricalCrossentropy(_LossFunctionWrapper):
    """Continuous categorical (CC) negative log-likelihood, integer labels.

    Like `ContinuousCategoricalCrossentropy` with `one_hot(y_true)` targets:
    `y_true` holds one integer class per example (shape `[batch_size]` or
    `[batch_size, 1]`), `y_pred` has shape `[batch_size, num_classes]`.
    Without label smoothing the target is a vertex of the simplex; use
    `label_smoothing > 0` for CC-LS. Prefer `from_logits=True` (see
    `ContinuousCategoricalCrossentropy`).

    Args:
        from_logits: Whether `y_pred` is expected to be a logits tensor.
        label_smoothing: Float in [0, 1]; the target is `one_hot * (1 -
            label_smoothing) + label_smoothing / num_classes`.
        axis: The class axis of `y_pred`. Defaults to `-1`.
        reduction: As for `keras.losses.Loss`. Defaults to
            `"sum_over_batch_size"`.
        name: Optional name for the loss instance.
        dtype: The dtype of the loss's computations (half precision is
            computed in float32).
        validate_targets: If `True` (default), labels outside
            `[0, num_classes)` raise a `ValueError` eagerly (runtime asserts in
            a TensorFlow graph); under XLA, `jax.jit` or `torch.compile` their
            rows' loss is NaN.
        logit_scale: A positive number, `"auto"` or `None` (default:
            `"auto"` with label smoothing, else 1): the CC's logits are
            `logit_scale * z`; see `ContinuousCategoricalCrossentropy`.
        parameterization: `"natural"` (default) or `"mean"` (the model's
            softmax is the CC's mean); see `ContinuousCategoricalCrossentropy`.

    Examples:

    >>> # CC-LS (the label-smoothing logit scale by default, 9.0 for K = 3).
    >>> loss = keras_cc.losses.SparseContinuousCategoricalCrossentropy(
    ...     from_logits=True, label_smoothing=0.1)
    >>> logits = np.array([[-1.0, 4.0, 0.0], [0.5, 1.0, 2.0]])
    >>> round(float(loss(np.array([1, 2]), logits / 10.0)), 4)
    -1.9701

    Usage with the `compile()` API:

    ```python
    model.compile(
        optimizer="adam",
        loss=keras_cc.losses.SparseContinuousCategoricalCrossentropy(
            from_logits=True, label_smoothing=0.1
        ),
    )
    ```
    """

    _function = staticmethod(sparse_continuous_categorical_crossentropy)
    _default_name = "sparse_continuous_categorical_crossentropy"
