"""The continuous-categorical log-partition by a saddle-point contour integral.

This module is the numerical core of keras_cc. Everything is written with
``keras.ops`` in real arithmetic (complex numbers are carried as pairs), so it
runs unchanged on the TensorFlow, JAX and PyTorch backends, eagerly, inside
``tf.function`` and under XLA.

Math (see docs/numerics.md for the full derivation and the error table).
For logits ``z`` (K of them) the CC log-partition is

    A(z) = log exp[z_1, ..., z_K] = log (1 / 2 pi i) \\oint e^s / prod_k (s - z_k) ds,

the divided difference of ``exp`` at the logits, written as a contour integral
around all of them. We shift ``x = z - max z`` (so ``x <= 0``) and integrate
along a modified Talbot contour

    s(theta) = a + m (theta cot theta + i nu theta),   theta in (-theta_max, theta_max),

fitted to the integrand: it crosses the real axis at the saddle point
``gamma`` of ``e^s / prod (s - x_k)`` (the root of ``sum 1/(gamma - x_k) = 1``),
and ``m = 1 / sum 1/(gamma - x_k)^2`` matches the curvature there, so along the
contour the integrand is nearly real and positive (no cancellation). For
exact ties Talbot's curve *is* the path of steepest descent. The midpoint rule
in ``theta`` then converges geometrically. The contour is truncated where the
integrand is provably negligible (``Re s < gamma - L``), which also keeps it
away from far clusters of logits where the integrand would blow up.

The gradient of ``A`` is the CC mean, computed from the same quadrature nodes:

    mu_k = (1 / 2 pi i) \\oint e^s / ((s - x_k) prod_i (s - x_i)) ds / exp[x].

Every factor is formed as ``w = (s - x_k) / (gamma - x_k) = 1 + (s - gamma)/d_k``
and multiplied in the form ``1 + eps``, in chunks whose magnitudes are taken
through ``log1p``, so far logits contribute tiny, accurately computed terms
and no product can overflow.
"""

from __future__ import annotations

import math

import keras
from keras import ops

# Quadrature settings per compute dtype, tuned against an mpmath reference on
# the regimes of the accuracy bar in docs/numerics.md (see benchmarks/log_partition.py):
#   nodes: midpoint nodes on (0, theta_max) (the other half is the conjugate);
#   cut: truncate where Re s < gamma - cut (the integrand is below e^-cut);
#   width: truncate at `width` Gaussian widths of the saddle;
#   min_scale: lower bound on m, which keeps the contour clear of far poles.
_SETTINGS = {
    "float32": dict(nodes=16, cut=30.0, width=11.0, min_scale=2.0),
    "float64": dict(nodes=48, cut=50.0, width=11.0, min_scale=2.0),
}
# nu > 1 widens the contour's asymptote (Weideman's modified Talbot contour),
# giving clearance above far clusters of logits.
_NU = 1.5
_NEWTON_STEPS = 8
_THETA_NEWTON_STEPS = 6
# Factors multiplied per complex logarithm (a power of two; 16 bounded
# factors cannot overflow float32, and fewer, larger chunks are faster).
_CHUNK = 16


def keep_f64(name: str, *args):
    """``ops.<name>`` that keeps float64 on every backend.

    Keras 3's dtype promotion maps float64 to float32 for ``sin``, ``cos`` and
    ``arctan2`` on the JAX backend, and for those and ``maximum``/``minimum``
    on PyTorch, which would silently cap the float64 path at single
    precision; there we call the backend's own function.
    """
    backend = keras.backend.backend()
    if backend in ("jax", "torch") and (
        keras.backend.standardize_dtype(args[0].dtype) == "float64"
    ):
        if backend == "jax":
            import jax.numpy as native
        else:
            import torch as native

            name = {"arctan2": "atan2"}.get(name, name)
        return getattr(native, name)(*args)
    return getattr(ops, name)(*args)


def compute_dtype(dtype: str) -> str:
    """The dtype the op computes in: float64 stays, everything else is float32."""
    return "float64" if dtype == "float64" else "float32"


def _saddle_point(x):
    """Root gamma > 0 of sum_k 1/(gamma - x_k) = 1 for x <= 0 with max x = 0.

    Newton's method on 1/S(gamma) - 1, which is exact for ties and for a single
    dominant logit and converges in a few steps in between. The exact root is
    not needed (any gamma > 0 gives an exact contour); it only makes the
    contour well conditioned.
    """
    gamma = ops.ones_like(x[..., :1])
    for _ in range(_NEWTON_STEPS):
        inv_d = 1.0 / (gamma - x)
        s1 = ops.sum(inv_d, axis=-1, keepdims=True)
        s2 = ops.sum(inv_d * inv_d, axis=-1, keepdims=True)
        step = (1.0 / s1 - 1.0) * (s1 * s1) / s2
        gamma = keep_f64("maximum", gamma - step, 0.5 * gamma)
    return gamma


def _theta_where_cot_is(v):
    """Solve theta * cot(theta) = v for theta in (0, pi), elementwise, v < 1."""
    r = ops.sqrt(3.0 * (1.0 - v))
    theta = ops.where(v > -1.0, r / (1.0 + 0.2 * r), math.pi * (1.0 - 1.0 / (1.0 - v)))
    for _ in range(_THETA_NEWTON_STEPS):
        sin, cos = keep_f64("sin", theta), keep_f64("cos", theta)
        f = theta * cos / sin - v
        df = cos / sin - theta / (sin * sin)
        theta = ops.clip(theta - f / df, 0.5 * theta, 0.5 * (theta + math.pi))
    return theta


def _contour(x, settings):
    """Quadrature nodes for shifted logits x (..., K) with max 0.

    Returns a dict of tensors: inverse distances ``inv_d`` (..., K), the sum of
    ``log d`` (..., 1), and per node (..., N): ``u = s - gamma`` (re, im) and
    ``ds/dtheta`` (re, im), and the midpoint weight ``h / pi`` (..., 1).
    """
    dtype = x.dtype
    gamma = _saddle_point(x)
    d = gamma - x
    inv_d = 1.0 / d
    scale = 1.0 / ops.sum(inv_d * inv_d, axis=-1, keepdims=True)
    scale = keep_f64("maximum", scale, ops.full_like(scale, settings["min_scale"]))
    theta_cut = _theta_where_cot_is(1.0 - settings["cut"] / scale)
    theta_max = keep_f64(
        "minimum", theta_cut, settings["width"] / (_NU * ops.sqrt(scale))
    )
    n = settings["nodes"]
    frac = (ops.cast(ops.arange(n), dtype) + 0.5) / n
    theta = theta_max * frac  # (..., N)
    sin, cos = keep_f64("sin", theta), keep_f64("cos", theta)
    cot = cos / sin
    # s = (gamma - scale) + scale * (theta cot theta + i nu theta); u = s - gamma.
    u_re = scale * (theta * cot - 1.0)
    u_im = scale * _NU * theta
    ds_re = scale * (cot - theta / (sin * sin))
    ds_im = scale * _NU * ops.ones_like(theta)
    return dict(
        gamma=gamma,
        inv_d=inv_d,
        sum_log_d=ops.sum(ops.log(d), axis=-1, keepdims=True),
        u_re=u_re,
        u_im=u_im,
        ds_re=ds_re,
        ds_im=ds_im,
        weight=theta_max / (n * math.pi),
    )


def _multiply_pairs(a, b, one_plus: bool, axis: int):
    """Multiply the two halves of ``axis``: complex numbers ``a + i b``.

    With ``one_plus`` the numbers are ``1 + a + i b`` and the product is
    returned in the same form, ``(1 + e1)(1 + e2) = 1 + (e1 + e2 + e1 e2)``,
    which keeps factors close to one exact to their own relative precision.
    """
    half = a.shape[axis] // 2
    a1, a2 = _halves(a, half, axis)
    b1, b2 = _halves(b, half, axis)
    if one_plus:
        return a1 + a2 + (a1 * a2 - b1 * b2), b1 + b2 + (a1 * b2 + a2 * b1)
    return a1 * a2 - b1 * b2, a1 * b2 + a2 * b1


def _halves(t, half: int, axis: int):
    if axis == -1:
        # Split the minor axis as (2, half) so each half is one contiguous
        # block: strided minor-axis slices are slow under XLA on CPU.
        t = ops.reshape(t, (-1, t.shape[-2], 2, half))
        return t[..., 0, :], t[..., 1, :]
    return t[..., :half, :], t[..., half:, :]


def _pad_last(t, size: int, value: float):
    pad = [(0, 0)] * (len(t.shape) - 1) + [(0, size - t.shape[-1])]
    return ops.pad(t, pad, constant_values=value)


def _log_product(a, b):
    """prod_k (1 + a_k + i b_k) over the last axis, as exp(log_mag) * unit.

    Returns ``log_mag`` and the unit-modulus direction ``(unit_re, unit_im)``.
    Factors are multiplied in chunks of ``_CHUNK`` (in the ``1 + eps`` form, so
    the many factors close to one, from far logits, keep their accuracy; a
    chunk of bounded factors cannot overflow), each chunk contributes one
    ``log1p`` to the magnitude, and the chunks' directions are multiplied in a
    tree. No ``atan2`` or per-factor logarithm is needed: both are slow,
    scalar library calls under XLA on CPU, and they were the cost.
    """
    size = a.shape[-1]
    if size is None:
        # K unknown while tracing: no static chunking; one log1p and atan2 per
        # factor instead (slower, equally accurate).
        log_mag = 0.5 * ops.sum(ops.log1p(a * (2.0 + a) + b * b), axis=-1)
        phase = ops.sum(keep_f64("arctan2", b, 1.0 + a), axis=-1)
        return log_mag, keep_f64("cos", phase), keep_f64("sin", phase)
    # The caller pads K to a multiple of _CHUNK (zeros: factors of one).
    chunks = size // _CHUNK
    # Chunk members are laid out along a major axis, so each halving slices
    # contiguous memory.
    shape = (-1, a.shape[-2], _CHUNK, chunks)
    a = ops.reshape(a, shape)
    b = ops.reshape(b, shape)
    while a.shape[-2] > 1:
        a, b = _multiply_pairs(a, b, one_plus=True, axis=-2)
    a, b = a[..., 0, :], b[..., 0, :]
    norm2_minus_1 = a * (2.0 + a) + b * b
    log_mag = 0.5 * ops.sum(ops.log1p(norm2_minus_1), axis=-1)
    inv_norm = ops.rsqrt(1.0 + norm2_minus_1)
    unit_re, unit_im = (1.0 + a) * inv_norm, b * inv_norm
    width = 1 << (chunks - 1).bit_length()
    if width > chunks:
        unit_re = _pad_last(unit_re, width, 1.0)
        unit_im = _pad_last(unit_im, width, 0.0)
    while unit_re.shape[-1] > 1:
        unit_re, unit_im = _multiply_pairs(unit_re, unit_im, one_plus=False, axis=-1)
    return log_mag, unit_re[..., 0], unit_im[..., 0]


def _factor_offsets(c, inv_d):
    """w_jk - 1 = u_j / d_k as (real, imaginary) parts, shape (..., N, K)."""
    a = ops.expand_dims(c["u_re"], -1) * ops.expand_dims(inv_d, -2)
    b = ops.expand_dims(c["u_im"], -1) * ops.expand_dims(inv_d, -2)
    return a, b


def _integrand(c):
    """Integrand values e^{s - gamma} prod_k d_k / (s - x_k) * ds/dtheta, (..., N)."""
    inv_d = c["inv_d"]
    size = inv_d.shape[-1]
    if size is not None and size % _CHUNK:
        # Pad the small (rows, K) tensor, not the (rows, N, K) ones: padding
        # the minor axis of the large tensors is slow under XLA. 1/d = 0 makes
        # a factor of exactly one.
        inv_d = _pad_last(inv_d, -(-size // _CHUNK) * _CHUNK, 0.0)
    log_mag, unit_re, unit_im = _log_product(*_factor_offsets(c, inv_d))
    mag = ops.exp(c["u_re"] - log_mag)
    # e^{i u_im} / unit = e^{i u_im} * conj(unit).
    cos, sin = keep_f64("cos", c["u_im"]), keep_f64("sin", c["u_im"])
    f_re = mag * (cos * unit_re + sin * unit_im)
    f_im = mag * (sin * unit_re - cos * unit_im)
    val_re = f_re * c["ds_re"] - f_im * c["ds_im"]
    val_im = f_re * c["ds_im"] + f_im * c["ds_re"]
    return val_re, val_im


def log_partition_and_state(x):
    """A(x) - gamma + sum log d for shifted logits, with what the mean needs."""
    settings = _SETTINGS[compute_dtype(keras.backend.standardize_dtype(x.dtype))]
    c = _contour(x, settings)
    val_re, val_im = _integrand(c)
    # The integral is (1/2 pi i) of the full contour = (1/pi) * sum Im over the
    # upper half, by conjugate symmetry.
    integral = c["weight"] * ops.sum(val_im, axis=-1, keepdims=True)
    log_partition = c["gamma"] - c["sum_log_d"] + ops.log(integral)
    return log_partition[..., 0], (c, val_re, val_im)


def mean_from_state(state):
    """E_CC[x] from the quadrature state of ``log_partition_and_state``."""
    c, val_re, val_im = state
    # mu_k is proportional to sum_j Im(val_j / (s_j - x_k)), and
    # s_j - x_k = d_k w_jk with w = 1 + u/d of moderate size: dividing by w
    # (not by s - x, whose square overflows for logits ~1e38 apart) and by d_k
    # after the sum over nodes.
    a, b = _factor_offsets(c, c["inv_d"])
    vr = ops.expand_dims(val_re, -1)
    vi = ops.expand_dims(val_im, -1)
    w_re = 1.0 + a
    q = (vi * w_re - vr * b) / (w_re * w_re + b * b)
    mean = ops.sum(q, axis=-2) * c["inv_d"]
    # Dividing by the sum instead of the integral: the quadrature's error is
    # mostly common to all classes, so this removes it, and the mean sums to
    # one exactly (loss gradients then sum to zero).
    return mean / ops.sum(mean, axis=-1, keepdims=True)
