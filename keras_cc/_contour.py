"""The continuous-categorical log-partition by a saddle-point contour integral.

This module is the numerical core of keras_cc. Everything is written with
``keras.ops`` in real arithmetic (complex numbers are carried as pairs), so it
runs unchanged on the TensorFlow, JAX and PyTorch backends, eagerly, inside
``tf.function`` and under XLA.

Math (see docs/numerics.md for the full derivation and the error tables).
For logits ``z`` (K of them) the CC log-partition is

    A(z) = log exp[z_1, ..., z_K] = log (1 / 2 pi i) \\oint e^s / prod_k (s - z_k) ds,

the divided difference of ``exp`` at the logits, written as a contour integral
around all of them. We shift ``x = z - max z`` (so ``x <= 0``) and integrate
along a modified Talbot contour

    s(theta) = a + m (theta cot theta + i nu theta),   theta in (-theta_max, theta_max),

fitted to the integrand: it crosses the real axis at the saddle point
``gamma`` of ``e^s / prod (s - x_k)`` (the root of ``sum 1/(gamma - x_k) = 1``),
and ``m = 1 / sum 1/(gamma - x_k)^2`` matches the curvature there, so along the
contour the integrand is nearly real and positive (no cancellation). The
trapezoid rule in ``theta`` converges geometrically; the contour is truncated
where the integrand is provably negligible (``Re s < gamma - L``).

Error control: every row first gets the trapezoid rule ``T_2n0`` (whose nodes
split into ``M_n0`` and ``T_n0``), and ``|T_n0 - M_n0| / |T_2n0|`` estimates
its error. Rows above the tolerance are gathered, in blocks of a fixed size,
and recomputed with a fine rule. The gathering is a loop over as many blocks
as there are hard rows, so a batch pays only for the rows that need it, shapes
stay static under XLA and ``jax.jit``, and no row's value depends on the rest
of its batch beyond which rule it would have taken anyway.

The gradient of ``A`` is the CC mean, computed from the same nodes:

    mu_k = (1 / 2 pi i) \\oint e^s / ((s - x_k) prod_i (s - x_i)) ds / exp[x].

Every factor is formed as ``w = (s - x_k) / (gamma - x_k) = 1 + (s - gamma)/d_k``
and multiplied in the form ``1 + eps``, in chunks of 16 whose magnitudes are
taken through ``log1p``, so far logits contribute tiny, accurately computed
terms and no product can overflow.

Layout: work tensors are class-major, ``(K, rows)``, ``(nodes, rows)`` and
``(chunks, nodes, rows)``, and the products over a chunk and the sums over the
nodes are unrolled into elementwise updates. XLA then fuses each of them into
a single loop that never materialises a ``(K, nodes, rows)`` tensor: the op
is compute-bound instead of memory-bound, and memory stays ``O(K rows)``.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import keras
import numpy as np
from keras import ops

from keras_cc._backend import (
    concrete_int,
    is_concrete,
    keep_f64,
    while_loop_one_at_a_time,
)

Tensor = Any

# Quadrature settings per compute dtype (benchmarks/log_partition.py checks
# them against the longdouble and mpmath references on a randomised sweep):
#   base_nodes: n0; every row gets the 2 n0 - 1 interior nodes of T_{2 n0};
#   fine_nodes: n_f; rows whose estimate exceeds the tolerance get T_{n_f};
#   tolerance: accept T_{2 n0} once |T_n0 - M_n0| <= tolerance * |T_{2 n0}|;
#   cut: truncate where Re s < gamma - cut (the integrand is below e^-cut);
#   width: truncate at `width` Gaussian widths of the saddle;
#   min_scale: lower bound on m, which keeps the contour clear of far poles.
_SETTINGS = {
    "float32": dict(
        base_nodes=8, fine_nodes=64, tolerance=3e-3, cut=30.0, width=11.0, min_scale=2.0
    ),
    "float64": dict(
        base_nodes=16,
        fine_nodes=256,
        tolerance=1e-7,
        cut=80.0,
        width=20.0,
        min_scale=8.0,
    ),
}
# nu > 1 widens the contour's asymptote (Weideman's modified Talbot contour),
# giving clearance above far clusters of logits.
_NU = 1.5
# Newton from gamma = 1 is within 1e-5 of the root after 5 steps on every
# regime we test (4e-3 after 4); the contour needs it only roughly.
_NEWTON_STEPS = 5
_THETA_NEWTON_STEPS = 6
# Factors multiplied per complex logarithm: 16 bounded factors cannot
# overflow float32.
_CHUNK = 16
# Rows recomputed together with the fine rule. Small enough that a batch with
# a few hard rows pays little; large enough to keep the loop short.
_FINE_BLOCK = 32
# Classes per block of the products (a multiple of _CHUNK).
_BLOCK_CLASSES = 4096
# Node sums up to this length are unrolled (fast, fused); longer ones loop.
_UNROLLED_NODES = 32


# Cody-Waite split of pi/2 for float32 (the first part has 8 significant
# bits, so k * part is exact for |k| < 2^16) and Cephes' minimax
# polynomials for sin and cos on [-pi/4, pi/4] (about 1 ulp).
_PIO2_PARTS = (1.5703125, 4.837512969970703125e-4, 7.54978995489188216e-8)
_SIN_COEFFS = (-1.6666654611e-1, 8.3321608736e-3, -1.9515295891e-4)
_COS_COEFFS = (4.166664568298827e-2, -1.388731625493765e-3, 2.443315711809948e-5)


def sin_cos(x):
    """(sin x, cos x), elementwise.

    In float32 by range reduction and polynomials written with ``ops``, so
    XLA vectorises them: its CPU ``sin``/``cos`` are scalar library calls,
    about 10 ns each, which made them a third of the op's cost at K = 10.
    Accurate to a few ulp for |x| < 1e4 (the op's angles stay below ~3e3).
    float64 uses the backend's functions.
    """
    if keras.backend.standardize_dtype(x.dtype) == "float64":
        return keep_f64("sin", x), keep_f64("cos", x)
    k = ops.round(x * (2.0 / math.pi))
    r = x
    for part in _PIO2_PARTS:
        r = r - k * part
    r2 = r * r
    c3, c5, c7 = _SIN_COEFFS
    sin_r = r + r * r2 * (c3 + r2 * (c5 + r2 * c7))
    c4, c6, c8 = _COS_COEFFS
    cos_r = 1.0 - 0.5 * r2 + r2 * r2 * (c4 + r2 * (c6 + r2 * c8))
    quadrant = k - 4.0 * ops.floor(k * 0.25)  # k mod 4, in {0, 1, 2, 3}
    swap = (quadrant == 1.0) | (quadrant == 3.0)
    sin_x = ops.where(swap, cos_r, sin_r)
    cos_x = ops.where(swap, sin_r, cos_r)
    sin_x = ops.where(quadrant >= 2.0, -sin_x, sin_x)
    cos_x = ops.where((quadrant == 1.0) | (quadrant == 2.0), -cos_x, cos_x)
    return sin_x, cos_x


def compute_dtype(dtype: str) -> str:
    """The dtype the op computes in: float64 stays, everything else is float32."""
    return "float64" if dtype == "float64" else "float32"


def shift_logits(z):
    """``(z - max z, max z, finite)`` along the last axis.

    Every CC quantity depends on logit differences only, and the shifted
    logits keep ``A`` and ``z·x`` small, so no large common offset cancels.
    ``finite`` flags the rows whose logits are all finite: the others must
    come out NaN (`nan_unless`), never as a wrong finite number.
    """
    z_max = ops.max(z, axis=-1, keepdims=True)
    finite = ops.all(ops.isfinite(z), axis=-1)
    # A spread beyond the dtype's range (e.g. 3e38 - (-3e38) in float32)
    # overflows to -inf; the largest finite value in its place changes A by
    # far less than the bar, which scales with |A| ~ 1e38 there.
    x = z - z_max
    lowest = ops.full_like(x, np.finfo(keras.backend.standardize_dtype(z.dtype)).min)
    return keep_f64("maximum", x, lowest), z_max[..., 0], finite


def nan_unless(finite, value):
    """``value`` on rows where ``finite`` holds, NaN (the whole row) elsewhere.

    Rows first: ``finite`` is ``(R,)`` and ``value`` is ``(R, ...)``.
    """
    while len(value.shape) > len(finite.shape):
        finite = ops.expand_dims(finite, -1)
    return ops.where(finite, value, ops.full_like(value, float("nan")))


class Contour(NamedTuple):
    """The integration contour of each row (rows first)."""

    inv_d: Tensor  # (R, K): 1 / (gamma - x_k)
    log_d_coarse: Tensor  # (R, 1): sum_k log(gamma - x_k) in multiples of 2^-10
    log_d_rest: Tensor  # (R, 1): the remainder of that sum
    gamma: Tensor  # (R, 1): the saddle point
    scale: Tensor  # (R, 1): m, the contour's scale
    theta_max: Tensor  # (R, 1): truncation of the contour


class Rule(NamedTuple):
    """A trapezoid rule's interior nodes on a set of rows, and the integrand there.

    All nodes have the same weight ``weight``; the theta = 0 node, where
    ``s = gamma`` and the integrand is exactly ``i m nu``, has half of it and
    enters through ``origin``.
    """

    u_re: Tensor  # (R, N): s - gamma at the nodes
    u_im: Tensor
    val_re: Tensor  # (R, N): e^{s - gamma} prod_k d_k / (s - x_k) ds/dtheta
    val_im: Tensor
    origin: Tensor  # (R, 1): half the theta = 0 node's value, m nu / 2
    weight: Tensor  # (R, 1): theta_max / (n pi)


class Quadrature(NamedTuple):
    """What the moments need: the coarse rule on every row, and which rows to refine."""

    contour: Contour
    coarse: Rule
    fine_order: Tensor  # (R + block,) int: row indices, refined rows first, padded
    fine_blocks: Tensor  # scalar int: how many blocks of fine_order are refined
    fine_values: tuple  # (R, n_f - 1) each: the fine rule's integrand (re, im)
    block: int  # rows per block
    settings: dict


def saddle_point(x, newton_steps: int = _NEWTON_STEPS):
    """Root gamma > 0 of sum_k 1/(gamma - x_k) = 1 for x (..., K) <= 0, max 0.

    Shape ``(..., 1)``. Newton's method on 1/S(gamma) - 1 (concave and
    increasing) from gamma = 1, left of the root, rises monotonically to it:
    exact for ties and for a single dominant logit, a few steps in between.
    The exact root is not needed by the contour (any gamma > 0 is exact) nor
    by the sampler's proposal (any gamma > max x is exact); it conditions the
    one and maximises the acceptance rate of the other.
    """
    gamma = ops.ones_like(x[..., :1])
    for _ in range(newton_steps):
        inv_d = 1.0 / (gamma - x)
        s1 = ops.sum(inv_d, axis=-1, keepdims=True)
        s2 = ops.sum(inv_d * inv_d, axis=-1, keepdims=True)
        step = (1.0 / s1 - 1.0) * (s1 * s1) / s2
        gamma = keep_f64("maximum", gamma - step, 0.5 * gamma)
    return gamma


def _theta_where_cot_is(v):
    """Solve theta * cot(theta) = v for theta in (0, pi), elementwise, v < 1.

    One value per row: the backend's sin and cos, not ``sin_cos``, whose
    polynomials pay off only on the nodes and would put some 400 more ops
    into every traced graph of the op (tracing and compile time).
    """
    r = ops.sqrt(3.0 * (1.0 - v))
    theta = ops.where(v > -1.0, r / (1.0 + 0.2 * r), math.pi * (1.0 - 1.0 / (1.0 - v)))
    for _ in range(_THETA_NEWTON_STEPS):
        sin, cos = keep_f64("sin", theta), keep_f64("cos", theta)
        f = theta * cos / sin - v
        df = cos / sin - theta / (sin * sin)
        theta = ops.clip(theta - f / df, 0.5 * theta, 0.5 * (theta + math.pi))
    return theta


def _pad_axis0(t, size: int, value: float):
    pad = [(0, size - t.shape[0])] + [(0, 0)] * (len(t.shape) - 1)
    return ops.pad(t, pad, constant_values=value)


def _contour(x, settings) -> Contour:
    """The contour fitted to shifted logits ``x`` (R, K), max 0 per row."""
    gamma = saddle_point(x)
    d = gamma - x
    inv_d = 1.0 / d
    scale = 1.0 / ops.sum(inv_d * inv_d, axis=-1, keepdims=True)
    scale = keep_f64("maximum", scale, ops.full_like(scale, settings["min_scale"]))
    theta_cut = _theta_where_cot_is(1.0 - settings["cut"] / scale)
    theta_max = keep_f64(
        "minimum", theta_cut, settings["width"] / (_NU * ops.sqrt(scale))
    )
    # sum log d is large (about log (K-1)! for wide rows) and cancels against
    # max z in the final value: split each term into a multiple of 2^-10,
    # whose sum is exact, and a small remainder, so the sum adds no rounding
    # beyond the result's own.
    log_d = ops.log(d)
    coarse = ops.round(log_d * 1024.0) / 1024.0
    return Contour(
        inv_d=inv_d,
        log_d_coarse=ops.sum(coarse, axis=-1, keepdims=True),
        log_d_rest=ops.sum(log_d - coarse, axis=-1, keepdims=True),
        gamma=gamma,
        scale=scale,
        theta_max=theta_max,
    )


def _multiply_halves(a, b):
    """Multiply the two halves of axis 0, complex numbers ``a + i b``."""
    half = a.shape[0] // 2
    a1, a2, b1, b2 = a[:half], a[half:], b[:half], b[half:]
    return a1 * a2 - b1 * b2, a1 * b2 + a2 * b1


def _materialized(*tensors, like):
    """``tensors`` divided by a runtime 1.0 (of the shape of ``like``).

    XLA duplicates cheap elementwise producers into each of their consumers,
    so a long fused chain (the chunk products, the mean's sum over nodes)
    read by several consumers would be recomputed by each. A division is
    "expensive" to XLA and is not duplicated; dividing by exactly 1.0 (x / x
    for a finite x, which the compiler cannot fold away) changes no bit.
    """
    one = like / like
    return tuple(t / one for t in tensors)


def _log_product(u_re, u_im, inv_d):
    """prod_k w_k = prod_k (1 + u / d_k) at every node, as exp(log_mag) * unit.

    ``u`` is (R, N) and ``inv_d`` (R, K). Returns ``log_mag`` and the
    direction ``(unit_re, unit_im)``, each (R, N). The work is class-major:
    within a chunk of 16 classes the factors are multiplied one after the
    other in the ``1 + eps`` form, unrolled, so XLA fuses the whole chunk
    product into one elementwise loop over (chunks, N, R) that reads only
    ``u`` and ``1/d``; each chunk contributes one ``log1p`` to the magnitude,
    and the chunks' directions are multiplied in a tree. No ``atan2`` or
    per-factor logarithm: both are slow scalar library calls under XLA on CPU.
    """
    size = inv_d.shape[-1]
    # (1, N, R) nodes against (K, 1, R) classes.
    u_re, u_im = ops.transpose(u_re)[None], ops.transpose(u_im)[None]
    inv_d = ops.transpose(inv_d)[:, None]
    if size is None:
        # K unknown while tracing: one log1p and atan2 per factor instead
        # (slower, equally accurate).
        a, b = u_re * inv_d, u_im * inv_d
        log_mag = 0.5 * ops.sum(ops.log1p(a * (2.0 + a) + b * b), axis=0)
        phase = ops.sum(keep_f64("arctan2", b, 1.0 + a), axis=0)
        return (
            ops.transpose(log_mag),
            ops.transpose(keep_f64("cos", phase)),
            ops.transpose(keep_f64("sin", phase)),
        )
    # Classes in blocks, so the (chunks, N, R) work tensors stay bounded at
    # vocabulary-size K (without XLA every elementwise step is stored).
    log_mag = unit_re = unit_im = None
    for start in range(0, size, _BLOCK_CLASSES):
        part = _block_log_product(u_re, u_im, inv_d[start : start + _BLOCK_CLASSES])
        if log_mag is None:
            log_mag, unit_re, unit_im = part
        else:
            log_mag = log_mag + part[0]
            unit_re, unit_im = (
                unit_re * part[1] - unit_im * part[2],
                unit_re * part[2] + unit_im * part[1],
            )
    return ops.transpose(log_mag), ops.transpose(unit_re), ops.transpose(unit_im)


def _block_log_product(u_re, u_im, inv_d):
    """``_log_product`` of one block of classes: u (1, N, R), inv_d (K, 1, R)."""
    size = inv_d.shape[0]
    # Up to 16 classes form one chunk of their own size; beyond, chunks of 16,
    # padded with zeros (factors of exactly one; padding the major axis is
    # cheap).
    chunk = min(size, _CHUNK)
    if size % chunk:
        inv_d = _pad_axis0(inv_d, -(-size // chunk) * chunk, 0.0)
    chunks = inv_d.shape[0] // chunk
    # (chunk, chunks, 1, R): member j of every chunk is one contiguous slice.
    members = ops.reshape(inv_d, (chunk, chunks, 1, -1))
    a, b = u_re * members[0], u_im * members[0]
    for j in range(1, chunk):
        # (1 + e)(1 + f) = 1 + e + f (1 + e) with f = u / d_j.
        p_re = u_re * (1.0 + a) - u_im * b
        p_im = u_im * (1.0 + a) + u_re * b
        a, b = a + members[j] * p_re, b + members[j] * p_im
    a, b = _materialized(a, b, like=u_im[..., :1, :])
    norm2_minus_1 = a * (2.0 + a) + b * b
    # A chunk product far below one (the contour passing near a cluster of
    # poles) has a ~ -1, where a (2 + a) + b^2 cancels: take |1 + a + ib|^2
    # directly there (log1p of a value <= -1 would be NaN).
    small = norm2_minus_1 < -0.5
    norm2 = ops.where(small, (1.0 + a) * (1.0 + a) + b * b, 1.0 + norm2_minus_1)
    # log1p(norm2 - 1) with one log: log(u) for the rounded u = 1 + (norm2 - 1),
    # corrected by the rounding error (norm2 - 1) - (u - 1), divided by u
    # (Goldberg's log1p; log and log1p both cost a library call under XLA).
    correction = ops.where(small, 0.0, (norm2_minus_1 - (norm2 - 1.0)) / norm2)
    log_norm2 = ops.log(norm2) + correction
    log_mag = 0.5 * ops.sum(log_norm2, axis=0)
    # sqrt and a division: rsqrt is a slow scalar call under XLA on CPU.
    norm = ops.sqrt(norm2)
    unit_re, unit_im = (1.0 + a) / norm, b / norm
    width = 1 << (chunks - 1).bit_length()
    if width > chunks:
        unit_re = _pad_axis0(unit_re, width, 1.0)
        unit_im = _pad_axis0(unit_im, width, 0.0)
    while unit_re.shape[0] > 1:
        unit_re, unit_im = _multiply_halves(unit_re, unit_im)
    return log_mag, unit_re[0], unit_im[0]


def _nodes(contour: Contour, fractions: np.ndarray):
    """Nodes at theta = theta_max * fractions: u = s - gamma and ds/dtheta.

    s = (gamma - m) + m (theta cot theta + i nu theta); each part is (R, N).
    """
    theta = contour.theta_max * ops.cast(fractions[None], contour.theta_max.dtype)
    sin, cos = sin_cos(theta)
    cot = cos / sin
    scale = contour.scale
    u_re = scale * (theta * cot - 1.0)
    u_im = scale * _NU * theta
    ds_re = scale * (cot - theta / (sin * sin))
    return u_re, u_im, ds_re, scale * _NU


def _rule(
    contour: Contour, fractions: np.ndarray, nodes_per_side: int, values=None
) -> Rule:
    """Rule with nodes at theta = theta_max * fractions, step theta_max / n.

    ``values`` (val_re, val_im), when given, are the integrand at these nodes
    computed before, and only the cheap node positions are recomputed.
    """
    u_re, u_im, ds_re, ds_im = _nodes(contour, fractions)
    if values is None:
        log_mag, unit_re, unit_im = _log_product(u_re, u_im, contour.inv_d)
        mag = ops.exp(u_re - log_mag)
        # e^{i u_im} / unit = e^{i u_im} * conj(unit).
        sin_u, cos_u = sin_cos(u_im)
        f_re = mag * (cos_u * unit_re + sin_u * unit_im)
        f_im = mag * (sin_u * unit_re - cos_u * unit_im)
        values = (f_re * ds_re - f_im * ds_im, f_re * ds_im + f_im * ds_re)
    return Rule(
        u_re=u_re,
        u_im=u_im,
        val_re=values[0],
        val_im=values[1],
        origin=0.5 * _NU * contour.scale,
        weight=contour.theta_max / (nodes_per_side * math.pi),
    )


def _integral(rule: Rule):
    """(1 / 2 pi i) times the contour integral: by conjugate symmetry, the
    weighted sum of Im over theta > 0 plus half the theta = 0 node."""
    return rule.weight * (rule.origin + ops.sum(rule.val_im, axis=-1, keepdims=True))


def _log_partition(contour: Contour, rule: Rule):
    """A(x) for the shifted logits, (R, 1), split into (exact part, small part)."""
    small = contour.gamma - contour.log_d_rest + ops.log(_integral(rule))
    return -contour.log_d_coarse, small


def _fine_rule(contour: Contour, settings, values=None) -> Rule:
    n = settings["fine_nodes"]
    return _rule(contour, np.arange(1, n) / n, n, values)


def _gather(contour: Contour, index) -> Contour:
    return Contour(*(ops.take(t, index, axis=0) for t in contour))


def _block_index(quad: Quadrature, i):
    return ops.slice(quad.fine_order, (i * quad.block,), (quad.block,))


def _fori_loop(count: int, body, state):
    """``state = body(j, state)`` for j in range(count), one at a time."""
    if isinstance(count, int) and is_concrete(state):
        for j in range(count):
            state = body(j, state)
        return state
    _, state = while_loop_one_at_a_time(
        lambda j, _: j < count,
        lambda j, state: (j + 1, body(j, state)),
        (ops.zeros((), "int32"), state),
    )
    return state


def _loop(count, body, state):
    """``state = body(i, state)`` for i < count: plain Python when ``count``
    is concrete (eager), a ``while_loop`` when traced, so shapes stay static
    under XLA and ``jax.jit`` and a batch pays only for the blocks it has."""
    blocks = concrete_int(count)
    if blocks is None:  # symbolic (tf.function, XLA, jax.jit)
        return _fori_loop(count, body, state)
    for i in range(blocks):
        state = body(i, state)
    return state


def _over_fine_blocks(quad: Quadrature, coarse_rows, fine_rows):
    """Row-major results of the coarse rule, with refined rows replaced.

    ``coarse_rows`` (R, ...) holds every row's coarse-rule result;
    ``fine_rows(contour, rule)`` gives the fine-rule result (B, ...) of a
    gathered block, from the integrand values the forward pass stored.
    """

    def body(i, result):
        index = _block_index(quad, i)
        contour = _gather(quad.contour, index)
        values = tuple(ops.take(t, index, axis=0) for t in quad.fine_values)
        update = fine_rows(contour, _fine_rule(contour, quad.settings, values))
        return ops.scatter_update(result, index[:, None], update)

    return _loop(quad.fine_blocks, body, coarse_rows)


def log_partition_and_state(x):
    """A(x) for shifted logits x (R, K) with max 0 per row, and the quadrature.

    Returns ``(exact, small)``, two (R,) tensors whose sum is A(x) (``exact``
    is a multiple of 2^-10 and can be added to ``max z`` with no extra
    rounding), and the ``Quadrature`` state for the moments.
    """
    settings = _SETTINGS[compute_dtype(keras.backend.standardize_dtype(x.dtype))]
    contour = _contour(x, settings)
    n0 = settings["base_nodes"]
    # The interior nodes of T_{2 n0}: first M_{n0}'s, then T_{n0}'s.
    fractions = np.concatenate([(np.arange(n0) + 0.5) / n0, np.arange(1, n0) / n0])
    coarse = _rule(contour, fractions, 2 * n0)
    midpoint = ops.sum(coarse.val_im[:, :n0], axis=-1)
    trapezoid = coarse.origin[:, 0] + ops.sum(coarse.val_im[:, n0:], axis=-1)
    # |T_n - M_n| / |T_2n| with T_2n = (T_n + M_n) / 2: about twice T_n's
    # relative error, and far above T_2n's (the trapezoid and midpoint errors
    # of a geometrically convergent rule are nearly equal and opposite).
    gap = 2.0 * ops.abs(trapezoid - midpoint) / ops.abs(trapezoid + midpoint)
    # NaN rows (non-finite logits, masked by the caller) never refine.
    refine = gap > settings["tolerance"]
    rows = x.shape[0]
    # Unknown (None) or symbolic (JAX shape polymorphism) batch sizes get
    # the full block; padding rows repeat row 0.
    block = max(1, min(_FINE_BLOCK, rows)) if isinstance(rows, int) else _FINE_BLOCK
    count = ops.sum(ops.cast(refine, "int32"))
    order = ops.cast(ops.argsort(ops.where(refine, 0, 1)), "int32")
    fine_order = ops.concatenate([order, ops.zeros((block,), "int32")])
    fine_blocks = (count + block - 1) // block

    def refine_block(i, state):
        # The fine rule on a block of rows; its integrand values are kept
        # for the moments, so the backward pass does not recompute them.
        parts, val_re, val_im = state
        index = ops.slice(fine_order, (i * block,), (block,))
        fine_contour = _gather(contour, index)
        rule = _fine_rule(fine_contour, settings)
        update = ops.concatenate(_log_partition(fine_contour, rule), axis=-1)
        return tuple(
            ops.scatter_update(t, index[:, None], u)
            for t, u in ((parts, update), (val_re, rule.val_re), (val_im, rule.val_im))
        )

    fine_shape = (ops.shape(x)[0], settings["fine_nodes"] - 1)
    parts, *fine_values = _loop(
        fine_blocks,
        refine_block,
        (
            ops.concatenate(_log_partition(contour, coarse), axis=-1),
            ops.zeros(fine_shape, x.dtype),
            ops.zeros(fine_shape, x.dtype),
        ),
    )
    quad = Quadrature(
        contour=contour,
        coarse=coarse,
        fine_order=fine_order,
        fine_blocks=fine_blocks,
        fine_values=tuple(fine_values),
        block=block,
        settings=settings,
    )
    return (parts[:, 0], parts[:, 1]), quad


def _mean_rows(contour: Contour, rule: Rule):
    """The CC mean (R, K).

    mu_k is proportional to (origin + sum_j Im(val_j / w_jk)) / d_k with
    w = 1 + u / d of moderate size (s - x itself squared would overflow for
    logits ~1e38 apart). Unrolled over the nodes, so XLA fuses it into one
    loop over (R, K).
    """
    inv_d = contour.inv_d
    nodes = rule.u_re.shape[-1]

    def add_node(j, total):
        u_re, u_im, val_re, val_im = (
            t[:, j : j + 1] if isinstance(j, int) else ops.take(t, j, axis=1)[:, None]
            for t in (rule.u_re, rule.u_im, rule.val_re, rule.val_im)
        )
        a, b = u_re * inv_d, u_im * inv_d
        w_re = 1.0 + a
        # Im((vr + i vi) / (w_re + i b)).
        return total + (val_im * w_re - val_re * b) / (w_re * w_re + b * b)

    total = rule.origin + ops.zeros_like(inv_d)
    if nodes <= _UNROLLED_NODES and (inv_d.shape[-1] or 0) <= _BLOCK_CLASSES:
        for j in range(nodes):
            total = add_node(j, total)
    else:
        # A loop for the fine rule (few rows: it keeps the compile time
        # down) and for vocabulary-size K, where the nodes' independent
        # (R, K) terms would otherwise all be alive at once without XLA
        # (3 GB at K = 50 000, batch 256).
        total = _fori_loop(nodes, add_node, total)
    (first,) = _materialized(total * inv_d, like=rule.origin)
    # Dividing by the sum instead of the integral: the quadrature's error is
    # mostly common to all classes, so this removes it, and the mean sums to
    # one exactly (loss gradients then sum to zero).
    return first / ops.sum(first, axis=-1, keepdims=True)


def mean_from_state(quad: Quadrature):
    """E_CC[x] (R, K) from the quadrature state."""
    return _over_fine_blocks(quad, _mean_rows(quad.contour, quad.coarse), _mean_rows)


def _covariance_rows(contour: Contour, rule: Rule, full: bool):
    """Cov_CC[x] (R, K, K), or its diagonal (R, K), row-major.

    Second moments are the same contour integral with one more factor:
    E[x_i x_j] = (1 + [i = j]) (1/2 pi i) \\oint e^s / ((s - x_i)(s - x_j)
    prod (s - x)) ds / exp[x], a weighted sum over the nodes of
    r_i r_j = 1/((s - x_i)(s - x_j)): O(N K^2) for the matrix, O(N K) for
    the diagonal. Stability: when one class t dominates, its variance
    E[x_t^2] - mu_t^2 is a difference of two numbers near 1; x_t = 1 - sum of
    the others instead gives its row and column from the other classes'
    covariances, which have no such cancellation.
    """
    inv_d, origin = contour.inv_d, rule.origin  # (R, K), (R, 1)
    u_re, u_im, val_re, val_im = rule.u_re, rule.u_im, rule.val_re, rule.val_im
    size = inv_d.shape[-1]
    a = ops.expand_dims(u_re, -1) * ops.expand_dims(inv_d, -2)
    b = ops.expand_dims(u_im, -1) * ops.expand_dims(inv_d, -2)
    w_re = 1.0 + a
    inv_norm2 = 1.0 / (w_re * w_re + b * b)
    # r = 1 / (s - x_k) = (1 / d_k) / w.
    r_re = w_re * inv_norm2 * ops.expand_dims(inv_d, -2)
    r_im = -b * inv_norm2 * ops.expand_dims(inv_d, -2)
    vr, vi = ops.expand_dims(val_re, -1), ops.expand_dims(val_im, -1)
    first = origin * inv_d + ops.sum(vi * r_re + vr * r_im, axis=-2)
    total = ops.sum(first, axis=-1, keepdims=True)
    mean = first / total
    top = ops.one_hot(ops.argmax(inv_d, axis=-1), size, dtype=inv_d.dtype)
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
    # sum_n Im(v_n r_ni r_nj) / total as one real matrix product over the
    # nodes (real and imaginary parts stacked), with the theta = 0 node
    # (v = i origin, r = 1/d) as one more column. Few (K, K) temporaries:
    # this is what bounds the memory at large K.
    inv_total = 1.0 / ops.expand_dims(total, -1)
    left = ops.concatenate(
        [
            (vi * r_re + vr * r_im) * inv_total,
            (vr * r_re - vi * r_im) * inv_total,
            ops.expand_dims(origin * inv_d, -2) * inv_total,
        ],
        axis=-2,
    )
    right = ops.concatenate([r_re, r_im, ops.expand_dims(inv_d, -2)], axis=-2)
    second = ops.matmul(ops.swapaxes(left, -1, -2), right)
    del left, right
    # E[x_i x_j] = (1 + [i = j]) times that; minus the outer product of means.
    diagonal = ops.eye(size, dtype="bool")
    direct = ops.where(diagonal, 2.0 * second, second)
    del second
    direct = direct - ops.expand_dims(mean, -1) * ops.expand_dims(mean, -2)
    # Keep the other classes' block; rebuild the top class's row, column and
    # variance from x_t = 1 - sum of the others (rows of Cov sum to zero).
    block = direct * (ops.expand_dims(rest, -1) * ops.expand_dims(rest, -2))
    del direct
    row_sums = ops.sum(block, axis=-1)
    corner = ops.sum(row_sums, axis=-1, keepdims=True)
    return (
        block
        - ops.expand_dims(row_sums, -1) * ops.expand_dims(top, -2)
        - ops.expand_dims(top, -1) * ops.expand_dims(row_sums - corner * top, -2)
    )


def covariance_from_state(quad: Quadrature, full: bool = True):
    """Cov_CC[x] (R, K, K), or its diagonal (R, K) with ``full=False``."""
    return _over_fine_blocks(
        quad,
        _covariance_rows(quad.contour, quad.coarse, full),
        lambda c, rule: _covariance_rows(c, rule, full),
    )


# --------------------------------------------------------------------------
# The inverse of the mean map: natural parameters from a mean.
# --------------------------------------------------------------------------
# Newton steps of the inverse mean map per dtype. The start (below) is within
# a few per cent of the root in both asymptotic regimes, and each step
# squares the relative error; the tests check the result against the mpmath
# mean at every regime of docs/numerics.md.
_INVERSE_STEPS = {"float32": 4, "float64": 6}
# The smallest mean a class gets in the inverse mean map. Its natural
# parameter sits about 1/p below the top, and the covariance that Newton's
# method solves with holds p^2; below these floors p^2 leaves the dtype's
# normal range (float32: 2^-48 ~ 3.6e-15, so p^2 ~ 1.3e-29).
_MEAN_FLOOR_LOG2 = {"float32": -48, "float64": -480}


def mean_floor(dtype: str) -> float:
    """The smallest class mean the inverse mean map resolves, per dtype."""
    return 2.0 ** _MEAN_FLOOR_LOG2[compute_dtype(dtype)]


def scaled_tail_solve(cov, rhs, mean, top):
    """``v`` with ``(D^-1 Cov D^-1) v = rhs`` off the top class, ``D = diag(mean)``.

    ``Cov`` is singular along the all-ones vector (a common shift of the
    logits changes nothing) and spans eigenvalues from ~mean_k^2 (a class far
    below the top is nearly an exponential variable) to O(1). Scaled by the
    means and restricted to the classes other than the top one (whose row
    and column become the identity, and ``v_top = 0``), the matrix is close
    to the identity in the tail and well conditioned near the uniform point.
    ``Cov^-1 r`` on those classes is ``v / mean`` for ``rhs = r / mean``.
    """
    rest = 1.0 - top
    inv = rest / mean  # 0 on the top class
    scaled = cov * (ops.expand_dims(inv, -1) * ops.expand_dims(inv, -2))
    scaled = scaled + ops.expand_dims(top, -1) * ops.expand_dims(top, -2)
    return ops.solve(scaled, ops.expand_dims(rhs * rest, -1))[..., 0] * rest


def natural_from_mean_rows(log_mean, steps: int | None = None):
    """Natural parameters ``eta`` (R, K) whose CC mean is ``softmax(log_mean)``.

    ``log_mean`` holds the logarithm of the target mean up to a common shift
    per row (a normalised log-mean, or any logits whose softmax is the mean).
    Classes whose mean is below ``mean_floor`` are raised to it (the row is
    renormalised), which moves the other classes' means by at most K times
    the floor. The result is in the gauge ``eta_top = 0`` at the class of
    largest mean, so ``eta <= 0`` (the CC mean is ordered like its natural
    parameters).

    Newton's method on the convex ``A(eta) - p . eta``, whose gradient is
    ``mean(eta) - p`` and Hessian the CC covariance, both from one contour.
    The start is the shared asymptote of both regimes: far below the top,
    ``mean_k ~ 1 / (gap_k + c)``; near the uniform point ``eta ~ K (K + 1)
    (p - 1/K)``, which ``-1/p`` matches to a factor (K + 1)/K. A step may
    shrink a gap by at most half (Newton's method on the hyperbola
    ``1/gap`` overshoots past 0 from a start more than twice the root), so
    every iterate is a valid set of logits. The steps run in a loop, so a
    compiled graph holds one of them.

    Returns ``(eta, p, top)``: the natural parameters, the (floored) mean
    they were solved for and the one-hot top class.
    """
    dtype = keras.backend.standardize_dtype(log_mean.dtype)
    if steps is None:
        steps = _INVERSE_STEPS[compute_dtype(dtype)]
    size = log_mean.shape[-1]
    log_p = log_mean - ops.logsumexp(log_mean, axis=-1, keepdims=True)
    floor = ops.full_like(log_p, math.log(mean_floor(dtype)))
    log_p = keep_f64("maximum", log_p, floor)
    log_p = log_p - ops.logsumexp(log_p, axis=-1, keepdims=True)
    p = ops.exp(log_p)
    top = ops.one_hot(ops.argmax(log_p, axis=-1), size, dtype=dtype)
    # -1/p in the gauge eta_top = 0: 1/p_top - 1/p_k = -(1/p_k)(1 - p_k/p_top),
    # the second form exact for near ties.
    log_top = ops.max(log_p, axis=-1, keepdims=True)
    start = -ops.exp(-log_p) * (-ops.expm1(log_p - log_top))

    def newton_step(_, eta):
        _, quad = log_partition_and_state(eta)
        mean = mean_from_state(quad)
        cov = covariance_from_state(quad, full=True)
        delta = scaled_tail_solve(cov, (p - mean) / p, p, top) / p
        return keep_f64("minimum", eta + delta, 0.5 * eta)

    return _fori_loop(steps, newton_step, start), p, top
