"""Backend-agnostic ops for the continuous categorical (CC) distribution.

``cc_log_partition`` is the CC log-normaliser in logit form,
``A(z) = log ∫_Δ exp(z·x) dx``; its gradient, ``cc_mean``, is the CC mean.
Both are exact to the accuracy bar of docs/numerics.md for any finite logits,
on the TensorFlow, JAX and PyTorch backends.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from keras_cc import _contour

__all__ = [
    "cc_covariance",
    "cc_log_partition",
    "cc_mean",
    "cc_mean_floor",
    "cc_natural_from_mean",
    "cc_natural_from_mean_logits",
    "cc_variance",
]


def canonical_axis(axis, rank: int, tensor_name: str) -> int:
    """``axis`` as a non-negative int, or a ValueError naming the tensor."""
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise ValueError(
            f"`axis` must be of type `int`. Received: axis={axis} of type {type(axis)}"
        )
    if not -rank <= axis < rank:
        raise ValueError(
            f"`axis`={axis} is out of range for `{tensor_name}` of rank {rank}."
        )
    return int(axis) % rank


def _prepare(logits, axis: int):
    """Validate, move the class axis last and cast to the compute dtype."""
    logits = ops.convert_to_tensor(logits)
    in_dtype = keras.backend.standardize_dtype(logits.dtype)
    if not in_dtype.startswith(("float", "bfloat")):
        raise TypeError(
            f"`logits` must be a floating-point tensor; received dtype {in_dtype}."
        )
    rank = len(logits.shape)
    if rank == 0:
        raise ValueError("`logits` must have at least one dimension (the classes).")
    axis = canonical_axis(axis, rank, "logits")
    num_classes = logits.shape[axis]
    if num_classes is not None and num_classes < 2:
        raise ValueError(
            "The continuous categorical needs at least 2 classes along "
            f"`axis`={axis}; received logits of shape {tuple(logits.shape)} "
            f"(size {num_classes} on that axis)."
        )
    if axis != rank - 1:
        logits = ops.moveaxis(logits, axis, -1)
    work_dtype = _contour.compute_dtype(in_dtype)
    return ops.cast(logits, work_dtype), in_dtype, axis


def _as_rows(z):
    """Flatten leading dimensions to one row axis; return the way back."""
    if len(z.shape) == 2:
        return z, lambda t: t
    shape = ops.shape(z)
    rows = ops.reshape(z, (-1, shape[-1]))

    def restore(t):
        return ops.reshape(t, tuple(shape[:-1]) + tuple(ops.shape(t)[1:]))

    return rows, restore


@ops.custom_gradient
def _log_partition_rows(z):
    x, z_max, finite = _contour.shift_logits(z)
    (exact, small), state = _contour.log_partition_and_state(x)
    # max z and A(x) nearly cancel for wide rows (both about log (K-1)!):
    # exact is a multiple of 2^-10, so the first sum adds no rounding.
    value = _contour.nan_unless(finite, (z_max + exact) + small)

    def grad(*args, upstream=None):
        if upstream is None:
            (upstream,) = args
        mean = _contour.nan_unless(finite, _contour.mean_from_state(state))
        return ops.expand_dims(upstream, -1) * mean

    return value, grad


def cc_log_partition(logits, axis: int = -1):
    """Log-partition ``A(z)`` of the continuous categorical, in logit form.

    ``A(z) = log ∫_Δ exp(z·x) dx = log exp[z_1, ..., z_K]``, the logarithm of
    the divided difference of ``exp`` at the logits. The CC negative
    log-likelihood of a target ``y`` on the simplex is ``A(z) - y·z``, and the
    gradient of ``A`` is the CC mean (``cc_mean``), supplied as a custom
    gradient that is computed as carefully as the value.

    Args:
        logits: Floating tensor of logits; the class axis has size ``K >= 2``.
            float16 and bfloat16 are computed in float32.
        axis: The class axis, reduced in the output.

    Returns:
        A tensor of the input dtype with the class axis removed. A row with a
        NaN or ±inf logit gives NaN (only that row).

    Example:

    >>> import numpy as np
    >>> from keras_cc.ops import cc_log_partition
    >>> float(cc_log_partition(np.zeros(3)))  # log(1/2!): the simplex's area
    -0.693147...
    """
    z, in_dtype, _ = _prepare(logits, axis)
    rows, restore = _as_rows(z)
    return ops.cast(restore(_log_partition_rows(rows)), in_dtype)


def cc_mean(logits, axis: int = -1):
    """Mean ``E[x]`` of the continuous categorical, i.e. the gradient of ``A``.

    Args:
        logits: Floating tensor of logits; the class axis has size ``K >= 2``.
        axis: The class axis.

    Returns:
        A tensor of the same shape and dtype as ``logits``, positive entries
        summing to one along ``axis``.

    Example:

    >>> import numpy as np
    >>> from keras_cc.ops import cc_mean
    >>> np.round(np.asarray(cc_mean(np.array([0.0, 0.0, 0.0]))), 6)
    array([0.333333, 0.333333, 0.333333])
    """
    return _from_quadrature(logits, axis, _contour.mean_from_state)


def cc_covariance(logits):
    """Covariance of the continuous categorical, the Hessian of ``A``.

    Computed from the same contour as ``cc_log_partition`` (second moments
    are one more weighted sum over its nodes), in O(N K^2) time and O(K^2)
    memory per row; no autodiff Jacobian.

    Args:
        logits: Floating tensor ``(..., K)`` of logits, classes last.

    Returns:
        A tensor ``(..., K, K)`` of the input dtype: symmetric, positive
        semi-definite, rows summing to zero.

    Example:

    >>> import numpy as np
    >>> from keras_cc.ops import cc_covariance
    >>> np.round(np.asarray(cc_covariance(np.zeros(2))), 6)  # Uniform(0, 1)
    array([[ 0.083333, -0.083333],
           [-0.083333,  0.083333]])
    """
    return _from_quadrature(
        logits, -1, lambda state: _contour.covariance_from_state(state, full=True)
    )


def cc_variance(logits, axis: int = -1):
    """Variances of the continuous categorical (the Hessian's diagonal).

    O(N K) per row, like the mean; the full matrix is never formed.

    Args:
        logits: Floating tensor of logits; the class axis has size ``K >= 2``.
        axis: The class axis.

    Returns:
        A tensor of the same shape and dtype as ``logits``.
    """
    return _from_quadrature(
        logits, axis, lambda state: _contour.covariance_from_state(state, full=False)
    )


def _row_wise(logits, axis: int, rows_fn):
    """``rows_fn`` on the logits as (rows, K) in the compute dtype, with the
    leading dimensions, the class axis and the input dtype put back."""
    z, in_dtype, axis_used = _prepare(logits, axis)
    rows, restore = _as_rows(z)
    out = restore(rows_fn(rows))
    if axis_used != len(z.shape) - 1:
        out = ops.moveaxis(out, -1, axis_used)
    return ops.cast(out, in_dtype)


def _from_quadrature(logits, axis: int, moment):
    """``moment(state)`` of the row-wise quadrature, with the class axis put back."""

    def rows_fn(rows):
        x, _, finite = _contour.shift_logits(rows)
        _, state = _contour.log_partition_and_state(x)
        return _contour.nan_unless(finite, moment(state))

    return _row_wise(logits, axis, rows_fn)


def cc_mean_floor(dtype: str = "float32") -> float:
    """The smallest class mean the inverse mean map resolves in ``dtype``.

    ``cc_natural_from_mean`` and ``cc_natural_from_mean_logits`` raise any
    class mean below it to it (and renormalise): its natural parameter sits
    about ``1 / floor`` below the top, and the covariance their Newton steps
    solve with holds ``mean^2``, which must stay in the dtype's normal range.
    ``2^-48`` (about 3.6e-15) in float32 (and half precision, computed in
    float32), ``2^-480`` in float64.

    Example:

    >>> from keras_cc.ops import cc_mean_floor
    >>> cc_mean_floor("float32") == 2.0**-48
    True
    """
    return _contour.mean_floor(keras.backend.standardize_dtype(dtype))


@ops.custom_gradient
def _natural_from_mean_rows(log_mean):
    finite = ops.all(ops.isfinite(log_mean), axis=-1)
    # Non-finite rows are solved as uniform rows and set to NaN after: a NaN
    # in a Newton matrix would make the solve raise (TensorFlow checks it),
    # where the convention is a NaN row.
    safe = ops.where(ops.expand_dims(finite, -1), log_mean, ops.zeros_like(log_mean))
    safe_eta, p, top = _contour.natural_from_mean_rows(safe)
    eta = _contour.nan_unless(finite, safe_eta)

    def grad(*args, upstream=None):
        if upstream is None:
            (upstream,) = args
        # Implicit function theorem: d mean = Cov d eta, so with eta_top = 0
        # the vector-Jacobian product in the other classes' means is
        # Cov_rest^-1 upstream_rest; through p = softmax(log_mean) it
        # becomes (diag p - p p^T) of that.
        _, quad = _contour.log_partition_and_state(safe_eta)
        cov = _contour.covariance_from_state(quad, full=True)
        # p * Cov_rest^-1 upstream_rest, with no 1/p^2 in between; NaN
        # upstream rows (invalid targets) stay NaN through the solve.
        p_in_p = _contour.scaled_tail_solve(cov, upstream / p, p, top)
        out = p_in_p - p * ops.sum(p_in_p, axis=-1, keepdims=True)
        return _contour.nan_unless(finite, out)

    return eta, grad


def cc_natural_from_mean_logits(mean_logits, axis: int = -1):
    """Natural parameters of the CC whose mean is ``softmax(mean_logits)``.

    The inverse of the mean map, composed with a softmax: the CC mean of the
    result equals ``softmax(mean_logits)`` (to the accuracy bar of
    docs/numerics.md). This is the mean parameterisation of the CC: a
    network's logits give the mean, and the CC's own logits (natural
    parameters) follow. ``mean_logits`` can be any logits (a common shift
    changes nothing). A class at ``mean_logits`` gap ``g`` below the top
    has a mean near ``exp(-g)`` and a natural-parameter gap near ``exp(g)``:
    a saturated softmax asks for gaps beyond any dtype. Class means below
    ``cc_mean_floor(dtype)`` (``2^-48``, about 3.6e-15, in float32; ``g``
    beyond about 33) are therefore raised to that floor and the row
    renormalised, which moves the other means by at most K times the floor.
    The result stays finite, and its gradient still points the way the
    unfloored one does.

    Computed by Newton's method on ``A(eta) - p·eta`` with the covariance of
    the same contour (``cc_covariance``): ``O(N K^2 + K^3)`` per row and
    step, a few steps. The gradient is the implicit-function one, ``Cov^-1``
    applied to the upstream gradient, with the same covariance.

    Args:
        mean_logits: Floating tensor ``(..., K)`` whose softmax along
            ``axis`` is the target mean; ``K >= 2``.
        axis: The class axis.

    Returns:
        The natural parameters ``eta``, shaped and typed like the input, in
        the gauge ``max eta = 0`` (at the class of largest mean). A row with
        a non-finite entry gives NaN.

    Example:

    >>> import numpy as np
    >>> from keras_cc.ops import cc_mean, cc_natural_from_mean_logits
    >>> eta = cc_natural_from_mean_logits(np.log([0.7, 0.2, 0.1]))
    >>> np.round(np.asarray(cc_mean(eta)), 6)
    array([0.7, 0.2, 0.1])
    """
    return _row_wise(mean_logits, axis, _natural_from_mean_rows)


def cc_natural_from_mean(mean, axis: int = -1):
    """Natural parameters (logits) of the CC with the given mean.

    The inverse of ``cc_mean``: ``cc_mean(cc_natural_from_mean(p))`` is
    ``p`` to the accuracy bar of docs/numerics.md. The CC is a regular
    exponential family, so its mean map is a bijection from logits (up to a
    common shift) onto the open simplex; this op inverts it. Near the
    uniform point ``eta ≈ K (K + 1) (p - 1/K)``; far from it a small class's
    gap below the top is about ``1 / p_k``.

    Args:
        mean: Floating tensor of means, strictly positive along ``axis`` and
            summing to 1 there (rows are divided by their sum, so only the
            direction matters, as for ``cc_natural_from_mean_logits`` on
            ``log(mean)``); ``K >= 2``.
        axis: The class axis.

    Returns:
        The natural parameters, shaped and typed like ``mean``, with
        ``max = 0`` along ``axis``. A zero entry (the boundary of the
        simplex, an infinite gap) or a non-finite one gives a NaN row.

    Example:

    >>> import numpy as np
    >>> from keras_cc.ops import cc_natural_from_mean
    >>> np.round(np.asarray(cc_natural_from_mean(np.array([0.5, 0.5]))), 6)
    array([0., 0.])
    """
    mean = ops.convert_to_tensor(mean)
    in_dtype = keras.backend.standardize_dtype(mean.dtype)
    if not in_dtype.startswith(("float", "bfloat")):
        raise TypeError(
            f"`mean` must be a floating-point tensor; received dtype {in_dtype}."
        )
    work = ops.cast(mean, _contour.compute_dtype(in_dtype))
    # log(0) = -inf and log(negative) = NaN: both rows come out NaN.
    return ops.cast(cc_natural_from_mean_logits(ops.log(work), axis=axis), in_dtype)
