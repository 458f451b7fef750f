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
import numpy as np
from keras import ops

# Quadrature settings per compute dtype (benchmarks/log_partition.py tunes
# them against the mpmath-checked reference on a randomised sweep):
#   base_nodes: n0; the first pass evaluates the 2 n0 - 1 interior nodes of
#     the trapezoid rule T_{2 n0}, which split into M_{n0} and T_{n0};
#   levels: at most this many refinements, each halving the step;
#   tolerance: accept T_{2n} once |T_n - M_n| <= tolerance * |T_{2n}|;
#   cut: truncate where Re s < gamma - cut (the integrand is below e^-cut);
#   width: truncate at `width` Gaussian widths of the saddle;
#   min_scale: lower bound on m, which keeps the contour clear of far poles.
_SETTINGS = {
    "float32": dict(
        base_nodes=8, levels=2, tolerance=3e-3, cut=30.0, width=11.0, min_scale=2.0
    ),
    "float64": dict(
        base_nodes=16, levels=3, tolerance=1e-7, cut=80.0, width=16.0, min_scale=8.0
    ),
}
# nu > 1 widens the contour's asymptote (Weideman's modified Talbot contour),
# giving clearance above far clusters of logits.
_NU = 1.5
_NEWTON_STEPS = 8
_THETA_NEWTON_STEPS = 6
# Factors multiplied per complex logarithm (a power of two; 16 bounded
# factors cannot overflow float32, and fewer, larger chunks are faster).
_CHUNK = 16


# Largest number of (node, class) pairs per row in one block of the (rows, N,
# K) work tensors. For large K the products and the mean are built block by
# block along the classes, so memory grows with N * block, not N * K; below
# the bound (K <= 1000 at up to 64 nodes) there is a single block.
_BLOCK_ELEMENTS = 1 << 16


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
    """The contour fitted to shifted logits x (..., K) with max 0.

    Returns a dict of (..., 1) tensors: the saddle ``gamma``, the scale ``m``,
    the truncation ``theta_max``, the sum of ``log d``; and the inverse
    distances ``inv_d`` (..., K).
    """
    gamma = _saddle_point(x)
    d = gamma - x
    inv_d = 1.0 / d
    scale = 1.0 / ops.sum(inv_d * inv_d, axis=-1, keepdims=True)
    scale = keep_f64("maximum", scale, ops.full_like(scale, settings["min_scale"]))
    theta_cut = _theta_where_cot_is(1.0 - settings["cut"] / scale)
    theta_max = keep_f64(
        "minimum", theta_cut, settings["width"] / (_NU * ops.sqrt(scale))
    )
    return dict(
        gamma=gamma,
        inv_d=inv_d,
        sum_log_d=ops.sum(ops.log(d), axis=-1, keepdims=True),
        scale=scale,
        theta_max=theta_max,
    )


def _nodes(c, fractions):
    """Nodes at theta = theta_max * fractions (a static array), each (..., N).

    ``u = s - gamma`` and ``ds/dtheta``, as (re, im) pairs, on
    s = (gamma - m) + m (theta cot theta + i nu theta).
    """
    theta = c["theta_max"] * ops.cast(fractions, c["theta_max"].dtype)
    sin, cos = keep_f64("sin", theta), keep_f64("cos", theta)
    cot = cos / sin
    scale = c["scale"]
    return dict(
        u_re=scale * (theta * cot - 1.0),
        u_im=scale * _NU * theta,
        ds_re=scale * (cot - theta / (sin * sin)),
        ds_im=scale * _NU * ops.ones_like(theta),
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
    # A chunk product far below one (the contour passing near a cluster of
    # poles) has a ~ -1, where a (2 + a) + b^2 cancels: take |1 + a + ib|^2
    # directly there (log1p of a value <= -1 would be NaN).
    small = norm2_minus_1 < -0.5
    norm2 = ops.where(small, (1.0 + a) * (1.0 + a) + b * b, 1.0 + norm2_minus_1)
    log_norm2 = ops.where(small, ops.log(norm2), ops.log1p(norm2_minus_1))
    log_mag = 0.5 * ops.sum(log_norm2, axis=-1)
    inv_norm = ops.rsqrt(norm2)
    unit_re, unit_im = (1.0 + a) * inv_norm, b * inv_norm
    width = 1 << (chunks - 1).bit_length()
    if width > chunks:
        unit_re = _pad_last(unit_re, width, 1.0)
        unit_im = _pad_last(unit_im, width, 0.0)
    while unit_re.shape[-1] > 1:
        unit_re, unit_im = _multiply_pairs(unit_re, unit_im, one_plus=False, axis=-1)
    return log_mag, unit_re[..., 0], unit_im[..., 0]


def _factor_offsets(nodes, inv_d):
    """w_jk - 1 = u_j / d_k as (real, imaginary) parts, shape (..., N, K)."""
    a = ops.expand_dims(nodes["u_re"], -1) * ops.expand_dims(inv_d, -2)
    b = ops.expand_dims(nodes["u_im"], -1) * ops.expand_dims(inv_d, -2)
    return a, b


def _chunk_padded(inv_d):
    """1/d padded with zeros (factors of exactly one) to a multiple of _CHUNK.

    Padding the small (rows, K) tensor, not the (rows, N, K) factors: padding
    the minor axis of the large tensors is slow under XLA.
    """
    size = inv_d.shape[-1]
    if size is None or size % _CHUNK == 0:
        return inv_d
    return _pad_last(inv_d, -(-size // _CHUNK) * _CHUNK, 0.0)


def _reciprocal_factors(u_re, u_im, inv_d):
    """1 / w_jk = d_k / (s_j - x_k) as (real, imaginary) parts, (..., N, K)."""
    a, b = _factor_offsets(dict(u_re=u_re, u_im=u_im), inv_d)
    w_re = 1.0 + a
    inv_norm2 = 1.0 / (w_re * w_re + b * b)
    return w_re * inv_norm2, -b * inv_norm2


def _class_blocks(size: int | None, nodes: int) -> list[slice]:
    """Static slices of the class axis, multiples of _CHUNK except the last."""
    if size is None:
        return [slice(None)]
    block = max(_CHUNK, _BLOCK_ELEMENTS // nodes // _CHUNK * _CHUNK)
    return [slice(start, min(start + block, size)) for start in range(0, size, block)]


def _integrand(nodes, padded_inv_d):
    """Integrand e^{s - gamma} prod_k d_k / (s - x_k) * ds/dtheta, (re, im) (..., N)."""
    log_mag = unit_re = unit_im = None
    for block in _class_blocks(padded_inv_d.shape[-1], nodes["u_re"].shape[-1]):
        offsets = _factor_offsets(nodes, padded_inv_d[..., block])
        part = _log_product(*offsets)
        if log_mag is None:
            log_mag, unit_re, unit_im = part
        else:
            log_mag = log_mag + part[0]
            unit_re, unit_im = (
                unit_re * part[1] - unit_im * part[2],
                unit_re * part[2] + unit_im * part[1],
            )
    mag = ops.exp(nodes["u_re"] - log_mag)
    # e^{i u_im} / unit = e^{i u_im} * conj(unit).
    cos, sin = keep_f64("cos", nodes["u_im"]), keep_f64("sin", nodes["u_im"])
    f_re = mag * (cos * unit_re + sin * unit_im)
    f_im = mag * (sin * unit_re - cos * unit_im)
    val_re = f_re * nodes["ds_re"] - f_im * nodes["ds_im"]
    val_im = f_re * nodes["ds_im"] + f_im * nodes["ds_re"]
    return val_re, val_im


def _cond(pred, true_fn, false_fn):
    """``ops.cond``, but plain control flow when ``pred`` is concrete (eager).

    Eager JAX would otherwise trace and compile both branches on every call;
    under ``tf.function``, XLA and ``jax.jit``, ``bool`` of a symbolic value
    raises ``TypeError`` and the compiled ``cond`` is used.
    """
    try:
        concrete = bool(pred)
    except TypeError:
        return ops.cond(pred, true_fn, false_fn)
    return true_fn() if concrete else false_fn()


def _pass_fractions(settings, level: int) -> np.ndarray:
    """Where the nodes of refinement pass ``level`` lie, as fractions of theta_max.

    Pass 0 evaluates the midpoint nodes of M_{n0}, then the interior nodes of
    T_{n0}: together, the interior nodes of T_{2 n0}. Pass r >= 1 adds the
    midpoint nodes of M_n, n = n0 2^r, which turn T_n into T_{2n}.
    """
    n0 = settings["base_nodes"]
    if level == 0:
        return np.concatenate([(np.arange(n0) + 0.5) / n0, np.arange(1, n0) / n0])
    n = n0 * 2**level
    return (np.arange(n) + 0.5) / n


def _evaluate_pass(c, padded_inv_d, fractions):
    """Nodes u (re, im) and integrand values (re, im) of one pass, each (..., N)."""
    nodes = _nodes(c, fractions)
    val_re, val_im = _integrand(nodes, padded_inv_d)
    return nodes["u_re"], nodes["u_im"], val_re, val_im


def _relative_gap(trapezoid, midpoint, refined):
    """|T_n - M_n| / |T_2n|: about twice T_n's relative error, far above T_2n's.

    The trapezoid and midpoint errors of a geometrically convergent rule are
    nearly equal and opposite, so their average T_2n has a much smaller one.
    """
    return ops.abs(trapezoid - midpoint) / ops.abs(refined)


def log_partition_and_state(x):
    """A(x) - gamma + sum log d for shifted logits, with what the mean needs.

    The trapezoid rule T_n on (-theta_max, theta_max) is refined by halving
    its step: T_2n = (T_n + M_n) / 2 reuses all of T_n's nodes and adds the
    midpoint rule's M_n. The first pass computes T_{2 n0}; each further pass
    runs only if some row's |T_n - M_n| / |T_2n| still exceeds the tolerance
    (a ``cond``, so shapes stay static under XLA and ``jax.jit``), and every
    row then takes the finest rule computed.
    """
    settings = _SETTINGS[compute_dtype(keras.backend.standardize_dtype(x.dtype))]
    c = _contour(x, settings)
    padded_inv_d = _chunk_padded(c["inv_d"])
    n0 = settings["base_nodes"]
    # Conjugate symmetry: (1 / 2 pi i) times the whole contour is (1 / pi) times
    # the sum of Im over theta > 0, plus half the theta = 0 node, where s = gamma,
    # the integrand is exactly 1 and ds/dtheta = i m nu.
    origin = 0.5 * _NU * c["scale"]
    step_over_pi = c["theta_max"] / (n0 * math.pi)
    first = _evaluate_pass(c, padded_inv_d, _pass_fractions(settings, 0))
    midpoint = step_over_pi * ops.sum(first[3][..., :n0], axis=-1, keepdims=True)
    trapezoid = step_over_pi * (
        origin + ops.sum(first[3][..., n0:], axis=-1, keepdims=True)
    )
    integral = 0.5 * (trapezoid + midpoint)
    gap = _relative_gap(trapezoid, midpoint, integral)
    passes = [(None, None, first)]
    for level in range(1, settings["levels"] + 1):
        step_over_pi = 0.5 * step_over_pi  # the step of the current T_n
        fractions = _pass_fractions(settings, level)
        needed = ops.any(gap > settings["tolerance"])

        def refine(integral=integral, gap=gap, step=step_over_pi, fractions=fractions):
            new = _evaluate_pass(c, padded_inv_d, fractions)
            midpoint = step * ops.sum(new[3], axis=-1, keepdims=True)
            refined = 0.5 * (integral + midpoint)
            # Only the rows that asked for it take the finer rule, so a row's
            # value does not depend on the rest of the batch.
            active = gap > settings["tolerance"]
            new_gap = _relative_gap(integral, midpoint, refined)
            return (
                new,
                active,
                ops.where(active, refined, integral),
                ops.where(active, new_gap, ops.zeros_like(gap)),
            )

        def skip(integral=integral, gap=gap, fractions=fractions):
            zeros = ops.zeros_like(c["theta_max"] * ops.cast(fractions, gap.dtype))
            return (zeros,) * 4, ops.zeros_like(gap) > 1.0, integral, gap

        new, active, integral, gap = _cond(needed, refine, skip)
        passes.append((needed, active, new))
    log_partition = c["gamma"] - c["sum_log_d"] + ops.log(integral)
    return log_partition[..., 0], (c, origin, passes)


def mean_from_state(state):
    """E_CC[x] from the quadrature state of ``log_partition_and_state``."""
    c, origin, passes = state
    inv_d = c["inv_d"]

    def pass_sum(evaluated):
        # mu_k is proportional to sum_j Im(val_j / (s_j - x_k)) = sum_j
        # Im(val_j / w_jk) / d_k, with w of moderate size (s - x itself
        # squared would overflow for logits ~1e38 apart); 1/d_k after the sum.
        u_re, u_im, val_re, val_im = evaluated
        vr = ops.expand_dims(val_re, -1)
        vi = ops.expand_dims(val_im, -1)
        sums = []
        for block in _class_blocks(inv_d.shape[-1], u_re.shape[-1]):
            q_re, q_im = _reciprocal_factors(u_re, u_im, inv_d[..., block])
            sums.append(ops.sum(vi * q_re + vr * q_im, axis=-2))
        return sums[0] if len(sums) == 1 else ops.concatenate(sums, axis=-1)

    # Every interior node of the finest rule has the same weight; the theta = 0
    # node (w = 1, value i m nu) has half of it.
    total = origin + pass_sum(passes[0][2])
    for needed, active, evaluated in passes[1:]:
        total = total + _cond(
            needed,
            lambda active=active, evaluated=evaluated: ops.where(
                active, pass_sum(evaluated), 0.0
            ),
            lambda: ops.zeros_like(inv_d),
        )
    mean = total * inv_d
    # Dividing by the sum instead of the integral: the quadrature's error is
    # mostly common to all classes, so this removes it, and the mean sums to
    # one exactly (loss gradients then sum to zero).
    return mean / ops.sum(mean, axis=-1, keepdims=True)


def _weighted_nodes(state):
    """All computed nodes of each row as one (..., N) set, with their values.

    Values of nodes a row did not take (its finer passes that ran for other
    rows, and passes that did not run) are zeroed, so every node left has the
    same quadrature weight, and the theta = 0 node (``origin``) half of it.
    """
    _, origin, passes = state
    columns = []
    for _, active, evaluated in passes:
        u_re, u_im, val_re, val_im = evaluated
        if active is not None:
            val_re = ops.where(active, val_re, 0.0)
            val_im = ops.where(active, val_im, 0.0)
        columns.append((u_re, u_im, val_re, val_im))
    return origin, [
        ops.concatenate(parts, axis=-1) for parts in zip(*columns, strict=True)
    ]


def _first_moments(c, origin, u_re, u_im, val_re, val_im):
    """1/(s - x_k) at every node (re, im; (..., N, K)), and the mean.

    ``1/(s - x_k) = (1/d_k) / w`` with ``w = 1 + u/d`` of moderate size.
    """
    inv_d = c["inv_d"]
    q_re, q_im = _reciprocal_factors(u_re, u_im, inv_d)
    r_re, r_im = q_re * ops.expand_dims(inv_d, -2), q_im * ops.expand_dims(inv_d, -2)
    vr, vi = ops.expand_dims(val_re, -1), ops.expand_dims(val_im, -1)
    first = origin * inv_d + ops.sum(vi * r_re + vr * r_im, axis=-2)
    total = ops.sum(first, axis=-1, keepdims=True)
    return (r_re, r_im), first / total, total


def _top_class(c):
    """One-hot of the largest logit (x = 0, so the largest 1/d), (..., K)."""
    inv_d = c["inv_d"]
    return ops.one_hot(ops.argmax(inv_d, axis=-1), inv_d.shape[-1], dtype=inv_d.dtype)


def covariance_from_state(state, full: bool = True):
    """Cov_CC[x] (..., K, K), or its diagonal (..., K) with ``full=False``.

    Second moments are the same contour integral with one more factor:
    E[x_i x_j] = (1 + [i = j]) (1/2 pi i) \\oint e^s / ((s - x_i)(s - x_j)
    prod (s - x)) ds / exp[x], a weighted sum over the nodes of
    r_i r_j = 1/((s - x_i)(s - x_j)): O(N K^2) for the matrix, O(N K) for
    the diagonal. Stability: when one class t dominates, its variance
    E[x_t^2] - mu_t^2 is a difference of two numbers near 1; x_t = 1 - sum of
    the others instead gives its row and column from the other classes'
    covariances, which have no such cancellation.
    """
    c = state[0]
    origin, (u_re, u_im, val_re, val_im) = _weighted_nodes(state)
    (r_re, r_im), mean, total = _first_moments(c, origin, u_re, u_im, val_re, val_im)
    vr, vi = ops.expand_dims(val_re, -1), ops.expand_dims(val_im, -1)
    inv_d = c["inv_d"]
    top = _top_class(c)
    rest = 1.0 - top
    if not full:
        # Im(v r^2) for each class, and Im(v R^2) for R = sum of r over the
        # other classes: E[(1 - x_t)^2] = sum_{i,j != t} E[x_i x_j].
        diag = origin * inv_d * inv_d + ops.sum(
            vi * (r_re * r_re - r_im * r_im) + 2.0 * vr * r_re * r_im, axis=-2
        )
        diag = diag / total
        s_re = ops.sum(r_re * ops.expand_dims(rest, -2), axis=-1)
        s_im = ops.sum(r_im * ops.expand_dims(rest, -2), axis=-1)
        inv_d_rest = ops.sum(inv_d * rest, axis=-1)
        pair_sum = origin[..., 0] * inv_d_rest * inv_d_rest + ops.sum(
            val_im * (s_re * s_re - s_im * s_im) + 2.0 * val_re * s_re * s_im, axis=-1
        )
        rest_mean = ops.sum(mean * rest, axis=-1)
        top_var = (pair_sum / total[..., 0] + ops.sum(diag * rest, axis=-1)) - (
            rest_mean * rest_mean
        )
        var = 2.0 * diag - mean * mean
        return ops.where(top > 0, ops.expand_dims(top_var, -1), var)
    # sum_n Im(v_n r_ni r_nj) as real matrix products over the nodes.
    t_re = ops.swapaxes(vi * r_re + vr * r_im, -1, -2)
    t_im = ops.swapaxes(vr * r_re - vi * r_im, -1, -2)
    second = ops.matmul(t_re, r_re) + ops.matmul(t_im, r_im)
    second = (
        origin[..., None] * ops.expand_dims(inv_d, -1) * ops.expand_dims(inv_d, -2)
        + second
    ) / ops.expand_dims(total, -1)
    eye = ops.eye(inv_d.shape[-1], dtype=inv_d.dtype)
    direct = second * (1.0 + eye) - ops.expand_dims(mean, -1) * ops.expand_dims(
        mean, -2
    )
    # Keep the other classes' block; rebuild the top class's row, column and
    # variance from x_t = 1 - sum of the others (rows of Cov sum to zero).
    mask = ops.expand_dims(rest, -1) * ops.expand_dims(rest, -2)
    block = direct * mask
    row_sums = ops.sum(block, axis=-1)
    top_col = ops.expand_dims(top, -2)
    top_row = ops.expand_dims(top, -1)
    return (
        block
        - ops.expand_dims(row_sums, -1) * top_col
        - top_row * ops.expand_dims(row_sums, -2)
        + ops.sum(row_sums, axis=-1)[..., None, None] * top_row * top_col
    )
