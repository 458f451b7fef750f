"""The continuous categorical distribution as a TensorFlow Probability class."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from tensorflow_probability.python.bijectors import (
    iterated_sigmoid_centered as iterated_sigmoid_centered_bijector,
)
from tensorflow_probability.python.distributions import distribution, kullback_leibler
from tensorflow_probability.python.internal import (
    assert_util,
    dtype_util,
    parameter_properties,
    reparameterization,
    samplers,
    tensor_util,
)
from tensorflow_probability.python.internal import prefer_static as ps

from keras_cc import _contour
from keras_cc import ops as cc_ops

if keras.backend.backend() != "tensorflow":
    # The class is a TFP (TensorFlow) distribution and calls keras_cc.ops,
    # which return backend tensors; mixing backends would fail deep inside TFP
    # with an unhelpful message, so fail here instead.
    raise ImportError(
        "keras_cc.distributions needs the TensorFlow Keras backend, but "
        f"keras.backend.backend() is {keras.backend.backend()!r}. Set "
        "KERAS_BACKEND=tensorflow before importing keras, or use "
        "keras_cc.ops / keras_cc.losses, which run on every backend."
    )

__all__ = ["ContinuousCategorical"]

# Newton steps for the proposal rate offset (see `_proposal_rates`). Only the
# sampler's efficiency depends on them, never its exactness.
_SADDLE_NEWTON_STEPS = 12
# Safety cap on rejection rounds. With m logits near the top and the other
# K - m far below (gaps >> K), the better proposal accepts with probability
# about max(sqrt(m/K), 1/(m-1)!) >= 0.06 for K <= 1000 (benchmarks/sampler.py
# measures 0.077 at K = 1000, m = 5, gap 1e4). A sample is still pending
# after this many rounds with probability below 0.94**10_000, i.e. never;
# such a slot would be returned as NaN rather than biased.
_MAX_REJECTION_ROUNDS = 10_000


def _shifted(logits: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """``(z - max z, finite rows)``: see `keras_cc._contour.shift_logits`."""
    z, _, finite = _contour.shift_logits(logits)
    return z, finite


def _nan_unless(finite: tf.Tensor, value: tf.Tensor) -> tf.Tensor:
    """NaN where a row's logits are not all finite (batch shapes broadcast)."""
    return tf.where(finite, value, tf.constant(np.nan, value.dtype))


def _proposal_rates(z: tf.Tensor) -> tf.Tensor:
    """Rates ``d_k = gamma - z_k`` of the exponential proposal, for max z = 0.

    ``gamma`` is the saddle point of the contour
    (`keras_cc._contour.saddle_point`), the root of
    ``sum_k 1 / (gamma - z_k) = 1``, which maximises the acceptance rate of
    the sampler (see `_sample_cc`). Newton's iterates rise monotonically from
    ``gamma = 1``, so ``gamma > 0 = max z`` and every ``d_k >= 1``.
    """
    return _contour.saddle_point(z, _SADDLE_NEWTON_STEPS) - z


def _log_acceptance_rates(logits: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Exact log acceptance probabilities of the two proposals of `_sample_cc`."""
    log_rate_normalised, log_rate_truncated, _ = _rates_and_proposal(logits)
    return log_rate_normalised, log_rate_truncated


def _rates_and_proposal(
    logits: tf.Tensor,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Log acceptance probabilities of the two proposals, and the rates ``d``.

    With shifted logits ``z`` (max 0), gaps ``g = -z`` and ``d`` from
    `_proposal_rates` (``gamma = d_k + z_k``)::

        normalised exponentials: (K-1)! prod_k d_k e^K K^-K exp(A(z) - gamma)
        truncated exponentials:  exp(A(z)) / prod_k ((1 - e^-g_k) / g_k)

    (a factor with ``g_k = 0`` is 1). Computed in float64: the terms are
    large (~K log K) and nearly cancel. Returns both log rates and the
    float64 rates ``d``, which the sampler's first proposal reuses (the
    saddle point is solved once per sampling call).
    """
    z, _ = _shifted(tf.cast(logits, tf.float64))
    num_classes = tf.cast(tf.shape(z)[-1], tf.float64)
    log_partition = cc_ops.cc_log_partition(z)
    d = _proposal_rates(z)
    gamma = d[..., 0] + z[..., 0]
    log_rate_normalised = (
        tf.math.lgamma(num_classes)
        + tf.reduce_sum(tf.math.log(d), axis=-1)
        + num_classes * (1.0 - tf.math.log(num_classes))
        + log_partition
        - gamma
    )
    g = -z
    positive = g > 0.0
    safe_g = tf.where(positive, g, tf.ones_like(g))
    log_mass = tf.where(
        positive, tf.math.log(-tf.math.expm1(-safe_g) / safe_g), tf.zeros_like(g)
    )
    log_rate_truncated = log_partition - tf.reduce_sum(log_mass, axis=-1)
    return log_rate_normalised, log_rate_truncated, d


def _propose_normalised(d, seed, work, tiny):
    """Proposal 1: ``x = E / sum E`` with ``E_k ~ Exp(d_k)``; returns (x, accept).

    Let ``E_k ~ Exp(d_k)`` independent, ``d_k = gamma - z_k > 0``. The joint
    density of ``(s, x) = (sum E, E / sum E)`` is ``prod(d) s^(K-1) exp(-s u)``
    with ``u = sum_k d_k x_k = gamma - z·x``, so the proposal density of ``x``
    on the simplex is ``q(x) = (K-1)! prod(d) / u^K``. The target is
    ``p(x) ∝ exp(z·x) = exp(gamma - u)``, so ``p/q ∝ e^-u u^K``, whose
    maximum over ``u > 0`` is at ``u = K``: accepting with probability
    ``exp(K (log(u/K) - u/K + 1))`` gives exact CC samples for any
    ``gamma > max z``. The saddle point ``gamma`` makes the rate 1 for equal
    logits and ~``1/sqrt(K sum_k d_k^-2)`` in general.
    """
    exp_seed, accept_seed = samplers.split_seed(seed, salt="cc_normalised")
    k_float = tf.cast(tf.shape(d)[-1], work)
    # Standard exponentials -log U (U > 0); E_k = that / d_k.
    std_exp = -tf.math.log(
        samplers.uniform(
            tf.shape(d), minval=tiny, maxval=1.0, dtype=work, seed=exp_seed
        )
    )
    e = std_exp / d
    total = tf.reduce_sum(e, axis=-1, keepdims=True)
    x = e / total
    # u = sum d_k x_k = sum(-log U_k) / total: a sum of positive terms.
    v = tf.reduce_sum(std_exp, axis=-1) / (k_float * tf.squeeze(total, -1)) - 1.0
    log_ratio = k_float * (tf.math.log1p(v) - v)
    log_u = tf.math.log(
        samplers.uniform(
            tf.shape(d)[:1], minval=tiny, maxval=1.0, dtype=work, seed=accept_seed
        )
    )
    return x, log_u <= log_ratio


def _propose_truncated(g, top, seed, work):
    """Proposal 2: truncated exponentials below the top vertex; (x, accept).

    With ``j = argmax z`` and gaps ``g_k = max z - z_k >= 0``, the CC density
    in the coordinates ``k != j`` (``x_j = 1 - sum``) is
    ``∝ prod_{k != j} exp(-g_k x_k)`` on ``{x >= 0, sum_{k != j} x_k <= 1}``.
    Drawing each ``x_k`` from ``Exp(g_k)`` truncated to ``[0, 1]`` (uniform if
    ``g_k = 0``) has a density proportional to the target on that set, so
    accepting iff ``sum_{k != j} x_k <= 1`` is exact. It is efficient when the
    other classes are far below the top one (``sum_k 1/g_k`` well below 1),
    exactly where proposal 1 is weakest; for K = 2 it always accepts.
    """
    u = samplers.uniform(tf.shape(g), dtype=work, seed=seed)
    positive = g > 0.0
    safe_g = tf.where(positive, g, tf.ones_like(g))
    # Inverse CDF of Exp(g) truncated to [0, 1]: -log(1 - u (1 - e^-g)) / g.
    t = tf.where(positive, -tf.math.log1p(u * tf.math.expm1(-safe_g)) / safe_g, u)
    # Clip against rounding (the inverse CDF maps [0, 1) into [0, 1]).
    t = tf.clip_by_value(t, 0.0, 1.0)
    is_top = tf.equal(tf.range(tf.shape(g)[-1])[tf.newaxis, :], top[:, tf.newaxis])
    t = tf.where(is_top, tf.zeros_like(t), t)
    rest = tf.reduce_sum(t, axis=-1, keepdims=True)
    x = tf.where(is_top, 1.0 - rest, t)
    return x, tf.squeeze(rest, -1) <= 1.0


def _sample_cc(n, logits: tf.Tensor, seed) -> tuple[tf.Tensor, tf.Tensor]:
    """Exact rejection sampler for CC(logits).

    Returns ``(samples, num_proposals)``: samples of shape ``[n, B..., K]`` and
    the total number of proposals drawn (an int64 scalar; ``n * prod(B) /
    num_proposals`` is the empirical acceptance rate).

    Each row uses whichever of two exact proposals (`_propose_normalised`,
    `_propose_truncated`) has the higher acceptance probability, known in
    closed form (`_log_acceptance_rates`). Each round of the `tf.while_loop`
    draws new proposals only for the slots still pending (gathered, then
    scattered back), so the expected work is ``n / acceptance`` proposals,
    not ``rounds * n``. The same code runs eagerly, in `tf.function` and
    under XLA (`jit_compile=True`).
    """
    dtype = logits.dtype
    work = tf.as_dtype(_contour.compute_dtype(dtype.name))
    # Sampling is not reparameterised: no gradient flows through the samples.
    logits = tf.stop_gradient(tf.cast(logits, work))
    z, finite = _shifted(logits)
    # Rows with a NaN/inf logit get NaN samples; give them harmless logits so
    # the loop below never waits on them.
    z = tf.where(finite[..., tf.newaxis], z, tf.zeros_like(z))
    log_rate_normalised, log_rate_truncated, d = _rates_and_proposal(z)
    use_truncated = log_rate_truncated > log_rate_normalised
    d = tf.cast(d, work)
    num_classes = tf.shape(z)[-1]
    out_shape = ps.concat([[n], ps.shape(z)], axis=0)

    def flat(t, event=True):
        shape = out_shape if event else out_shape[:-1]
        return tf.reshape(
            tf.broadcast_to(t, shape), [-1, num_classes] if event else [-1]
        )

    d_flat = flat(d)
    g_flat = flat(-z)
    top_flat = flat(tf.argmax(z, axis=-1, output_type=tf.int32), event=False)
    truncated_flat = flat(use_truncated, event=False)
    finite_flat = flat(finite, event=False)
    num_slots = tf.shape(d_flat)[0]
    tiny = np.finfo(work.as_numpy_dtype).tiny

    def cond(i, seed, samples, done, proposals):
        del seed, samples, proposals
        return (i < _MAX_REJECTION_ROUNDS) & ~tf.reduce_all(done)

    def record(samples, done, idx, x, ok):
        """Write the accepted proposals ``x[ok]`` of the slots ``idx``."""
        # Every slot of `idx` is rewritten, a rejected one with its old value.
        # Selecting the accepted slots by a second `tf.where`/`boolean_mask`
        # would take a dynamic shape of a dynamically shaped tensor, which XLA
        # mishandles: it lost the slots accepted after the first round.
        idx = idx[:, tf.newaxis]
        old = tf.gather_nd(samples, idx)
        samples = tf.tensor_scatter_nd_update(
            samples, idx, tf.where(ok[:, tf.newaxis], x, old)
        )
        return samples, tf.tensor_scatter_nd_update(done, idx, ok)

    def body(i, seed, samples, done, proposals):
        seed, round_seed = samplers.split_seed(seed, salt="cc_round")
        seed_1, seed_2 = samplers.split_seed(round_seed, salt="cc_draw")
        idx_1 = tf.where(~done & ~truncated_flat)[:, 0]
        idx_2 = tf.where(~done & truncated_flat)[:, 0]
        x_1, ok_1 = _propose_normalised(tf.gather(d_flat, idx_1), seed_1, work, tiny)
        x_2, ok_2 = _propose_truncated(
            tf.gather(g_flat, idx_2), tf.gather(top_flat, idx_2), seed_2, work
        )
        samples, done = record(samples, done, idx_1, x_1, ok_1)
        samples, done = record(samples, done, idx_2, x_2, ok_2)
        proposals += tf.cast(tf.shape(idx_1)[0] + tf.shape(idx_2)[0], tf.int64)
        return i + 1, seed, samples, done, proposals

    samples0 = tf.fill(tf.stack([num_slots, num_classes]), tf.constant(np.nan, work))
    _, _, samples, _, proposals = tf.while_loop(
        cond,
        body,
        (
            tf.constant(0),
            samplers.sanitize_seed(seed),
            samples0,
            ~finite_flat,
            tf.constant(0, tf.int64),
        ),
    )
    return tf.cast(tf.reshape(samples, out_shape), dtype), proposals


class ContinuousCategorical(distribution.AutoCompositeTensorDistribution):
    """The continuous categorical (CC) distribution on the simplex.

    The CC is the exponential family on the probability simplex whose
    sufficient statistic is the point ``x`` itself (Gordon-Rodriguez et al.,
    ICML 2020): a continuous relaxation of the categorical that assigns a
    proper, normalised density to every point of the simplex, including
    smoothed one-hot targets.

    #### Mathematical details

    For logits ``z`` in ``R^K`` (``K >= 2``) and ``x`` in the simplex
    ``Δ = {x_k >= 0, sum_k x_k = 1}``, the density with respect to Lebesgue
    measure on the first ``K-1`` coordinates is

    ```none
    log p(x; z) = z·x - A(z),
    A(z)        = log ∫_Δ exp(z·x) dx = log exp[z_1, ..., z_K],
    ```

    the log of the divided difference of ``exp`` at the logits (computed by
    `keras_cc.ops.cc_log_partition`). With ``probs`` (``λ``), ``z = log λ``,
    i.e. ``p(x) ∝ prod_k λ_k^{x_k}``. Only differences of logits matter:
    ``CC(z + c) = CC(z)``. Moments follow from the exponential family:

    ```none
    mean       = ∇A(z)            (keras_cc.ops.cc_mean)
    covariance = ∇²A(z)
    entropy    = A(z) - z·mean
    KL(a || b) = A(z_b) - A(z_a) - (z_b - z_a)·mean_a
    ```

    The mode is the vertex ``e_j`` of the largest logit (the density is
    ``exp(z·x)``, linear in the exponent). If several logits tie for the
    maximum, the whole face they span is modal; `mode` returns the vertex of
    the first of them (``tf.argmax`` order).

    For ``K = 2``, ``CC(logits=[a, b])`` at ``x = (t, 1-t)`` is the continuous
    Bernoulli with logit ``a - b`` (`tfp.distributions.ContinuousBernoulli`).

    #### Sampling

    Exact rejection sampling, per row from the better of two exact
    proposals (see `_sample_cc`): independent exponentials normalised to the
    simplex, best near ties, or truncated exponentials below the top vertex,
    best when the other logits are far below the top one. The acceptance
    probability per proposal is `sampler_acceptance_rate()`: 1 for equal
    logits and for ``K = 2``, >= 0.95 for K <= 1000 and logit spreads <= 100,
    lowest (~0.08 at K = 1000) when a few tied logits sit on top of all others
    far below (benchmarks/sampler.py). Samples are not
    reparameterised (no gradient flows through them). The sampler runs
    eagerly, under `tf.function` and under XLA (`jit_compile=True`); for the
    same seed, XLA may draw other (equally exact) samples than the first two,
    which agree with each other.

    #### Zero probabilities

    Every ``probs`` entry must be strictly positive: with ``λ_k = 0`` the
    distribution lives on a face of the simplex and has no density on ``Δ``
    (its logit would be ``-inf``). A ``probs`` value known when the
    distribution is built (a constant, or any eager tensor) is checked then,
    with a ``ValueError``. A value known only later (a ``tf.Variable``, an
    input of a `tf.function`) is checked only with ``validate_args=True``;
    without it, rows with a zero probability give NaN statistics.

    #### Examples

    >>> import tensorflow as tf
    >>> from keras_cc.distributions import ContinuousCategorical
    >>> dist = ContinuousCategorical(logits=[0.0, 0.0, 0.0])
    >>> float(dist.log_prob([0.2, 0.3, 0.5]))  # uniform density 2! on Δ^3
    0.693147...
    >>> x = dist.sample(4, seed=(1, 2))
    >>> x.shape
    TensorShape([4, 3])

    #### References

    E. Gordon-Rodriguez, G. Loaiza-Ganem, G. Pleiss, J. P. Cunningham. The
    continuous categorical: a novel simplex-valued exponential family.
    ICML 2020. https://arxiv.org/abs/2002.08563
    """

    def __init__(
        self,
        logits=None,
        probs=None,
        validate_args: bool = False,
        allow_nan_stats: bool = True,
        name: str = "ContinuousCategorical",
    ) -> None:
        """Builds a batch of continuous categorical distributions.

        Args:
            logits: Floating tensor ``[B..., K]`` (``K >= 2``) of logits; only
                differences along the last axis matter.
            probs: Floating tensor ``[B..., K]`` of positive probabilities
                ``λ`` (logits ``log λ``); entries must be strictly positive
                (see "Zero probabilities" in the class docstring). Only their
                ratios matter unless ``validate_args=True``, which also
                requires them to sum to 1. Exactly one of ``logits`` and
                ``probs`` must be given.
            validate_args: If ``True``, check parameters (finite logits;
                probs in ``(0, 1]`` summing to 1) and that arguments of
                ``log_prob``/``prob`` lie in the simplex, raising
                ``tf.errors.InvalidArgumentError`` otherwise. If ``False``,
                points outside the simplex get density 0 (log-density -inf).
            allow_nan_stats: Passed to the TFP base class.
            name: Name scope for the ops created by this class.

        Raises:
            ValueError: if both or neither of ``logits`` and ``probs`` are
                given, the class axis is statically smaller than 2, or
                ``probs`` has a known value with an entry that is not
                strictly positive.
        """
        parameters = dict(locals())
        if (probs is None) == (logits is None):
            raise ValueError("Must pass exactly one of `logits` and `probs`.")
        with tf.name_scope(name) as name:
            dtype = dtype_util.common_dtype([logits, probs], tf.float32)
            self._logits = tensor_util.convert_nonref_to_tensor(
                logits, dtype=dtype, name="logits"
            )
            self._probs = tensor_util.convert_nonref_to_tensor(
                probs, dtype=dtype, name="probs"
            )
            param = self._logits if self._probs is None else self._probs
            if param.shape.rank == 0:
                raise ValueError(
                    "`logits`/`probs` must have at least one dimension (the classes)."
                )
            num_classes = tf.compat.dimension_value(param.shape[-1])
            if num_classes is not None and num_classes < 2:
                raise ValueError(
                    "The continuous categorical needs at least 2 classes; "
                    f"received a parameter of shape {param.shape}."
                )
            if self._probs is not None and not tensor_util.is_ref(self._probs):
                _check_static_probs(self._probs)
            super().__init__(
                dtype=dtype,
                reparameterization_type=reparameterization.NOT_REPARAMETERIZED,
                validate_args=validate_args,
                allow_nan_stats=allow_nan_stats,
                parameters=parameters,
                name=name,
            )

    @classmethod
    def from_mean(
        cls,
        mean,
        validate_args: bool = False,
        allow_nan_stats: bool = True,
        name: str = "ContinuousCategorical",
    ) -> ContinuousCategorical:
        """The CC whose mean is ``mean``: ``CC(logits=μ⁻¹(mean))``.

        The CC's mean map ``μ(z) = ∇A(z)`` is a bijection from logits (up
        to a common shift) onto the open simplex; its inverse is
        `keras_cc.ops.cc_natural_from_mean` (Newton's method with the CC
        covariance, an implicit-function gradient). So every point of the
        open simplex is the mean of exactly one CC, e.g. a classifier's
        softmax read as a CC. Means below `keras_cc.ops.cc_mean_floor`
        (2^-48 in float32) are raised to it (docs/numerics.md).

        Args:
            mean: Floating tensor ``[B..., K]`` (``K >= 2``), strictly
                positive entries summing to 1 along the last axis.
            validate_args: As for the constructor; also checks a ``mean``
                whose value is not known when the distribution is built (an
                input of a `tf.function`), raising ``InvalidArgumentError``.
                The logits are computed once, when the distribution is
                built: a ``tf.Variable`` mean is read then, not tracked.
            allow_nan_stats: As for the constructor.
            name: As for the constructor.

        Returns:
            A `ContinuousCategorical` with ``logits`` set (maximum 0 along
            the last axis), whose `mean()` is ``mean``.

        Raises:
            ValueError: if ``mean`` has a known value with an entry that is
                not strictly positive or a row that does not sum to 1.

        Example:

        >>> dist = ContinuousCategorical.from_mean([0.7, 0.2, 0.1])
        >>> [round(float(m), 4) for m in dist.mean()]
        [0.7, 0.2, 0.1]
        """
        with tf.name_scope(f"{name}_from_mean"):
            dtype = dtype_util.common_dtype([mean], tf.float32)
            mean = tf.convert_to_tensor(mean, dtype=dtype, name="mean")
            _check_static_mean(mean)
            if validate_args:
                with tf.control_dependencies(_open_simplex_assertions(mean, "mean")):
                    mean = tf.identity(mean)
            logits = cc_ops.cc_natural_from_mean(mean)
        return cls(
            logits=logits,
            validate_args=validate_args,
            allow_nan_stats=allow_nan_stats,
            name=name,
        )

    @classmethod
    def _parameter_properties(cls, dtype, num_classes=None):
        return dict(
            logits=parameter_properties.ParameterProperties(
                event_ndims=1,
                shape_fn=lambda sample_shape: ps.concat(
                    [sample_shape, [num_classes]], axis=0
                ),
            ),
            probs=parameter_properties.ParameterProperties(
                event_ndims=1,
                shape_fn=lambda sample_shape: ps.concat(
                    [sample_shape, [num_classes]], axis=0
                ),
                default_constraining_bijector_fn=(
                    iterated_sigmoid_centered_bijector.IteratedSigmoidCentered
                ),
                is_preferred=False,
            ),
        )

    @property
    def logits(self):
        """Input argument `logits` (``None`` if built from `probs`)."""
        return self._logits

    @property
    def probs(self):
        """Input argument `probs` (``None`` if built from `logits`)."""
        return self._probs

    def logits_parameter(self, name: str | None = None) -> tf.Tensor:
        """Logits from whichever of `logits`/`probs` was given."""
        with self._name_and_control_scope(name or "logits_parameter"):
            return self._logits_parameter_no_checks()

    def probs_parameter(self, name: str | None = None) -> tf.Tensor:
        """Normalised probabilities ``softmax(logits)`` (or the given `probs`)."""
        with self._name_and_control_scope(name or "probs_parameter"):
            if self._probs is not None:
                return tensor_util.identity_as_tensor(self._probs)
            return tf.math.softmax(self._logits)

    def _logits_parameter_no_checks(self) -> tf.Tensor:
        if self._probs is not None:
            return tf.math.log(tf.convert_to_tensor(self._probs))
        return tensor_util.identity_as_tensor(self._logits)

    def _num_classes(self):
        param = self._logits if self._probs is None else self._probs
        static = tf.compat.dimension_value(param.shape[-1])
        return static if static is not None else tf.shape(param)[-1]

    def _event_shape_tensor(self):
        return tf.reshape(tf.convert_to_tensor(self._num_classes(), tf.int32), [1])

    def _event_shape(self):
        param = self._logits if self._probs is None else self._probs
        return param.shape[-1:]

    # --- the log-normaliser and the density -------------------------------

    def log_normalizer(self, name: str | None = None) -> tf.Tensor:
        """The log-partition ``A(z) = log ∫_Δ exp(z·x) dx``, shape ``[B...]``.

        Example:

        >>> dist = ContinuousCategorical(logits=[0.0, 0.0, 0.0])
        >>> float(dist.log_normalizer())  # log(1/2!): the simplex's area
        -0.693147...
        """
        with self._name_and_control_scope(name or "log_normalizer"):
            return cc_ops.cc_log_partition(self._logits_parameter_no_checks())

    def _log_prob(self, x):
        _check_event_size(x, self._num_classes())
        z, finite = _shifted(self._logits_parameter_no_checks())
        x = tf.cast(x, self.dtype)
        # A(z - max z) and z - max z: the common offset cancels exactly, and
        # keeping it out avoids cancelling digits when sum(x) is 1 only up to
        # rounding.
        log_unnormalized = tf.reduce_sum(z * x, axis=-1)
        log_density = _nan_unless(finite, log_unnormalized - cc_ops.cc_log_partition(z))
        return tf.where(
            _in_simplex(x),
            log_density,
            tf.constant(-np.inf, dtype=log_density.dtype),
        )

    # --- moments -----------------------------------------------------------

    def _mean(self):
        return cc_ops.cc_mean(self._logits_parameter_no_checks())

    def _covariance(self):
        # From the contour's nodes (keras_cc.ops.cc_covariance), in float64 so
        # a float32 distribution's moments are exact to its own precision.
        logits = tf.cast(self._logits_parameter_no_checks(), tf.float64)
        return tf.cast(cc_ops.cc_covariance(logits), self.dtype)

    def _variance(self):
        # The diagonal alone, O(N K) per row: the matrix is never formed.
        logits = tf.cast(self._logits_parameter_no_checks(), tf.float64)
        return tf.cast(cc_ops.cc_variance(logits), self.dtype)

    def _entropy(self):
        z, finite = _shifted(self._logits_parameter_no_checks())
        mean = cc_ops.cc_mean(z)
        # H = -E[log p] = A(z) - z·mean, shift-invariant since sum(mean) = 1.
        return _nan_unless(
            finite, cc_ops.cc_log_partition(z) - tf.reduce_sum(z * mean, axis=-1)
        )

    def _mode(self):
        logits = self._logits_parameter_no_checks()
        # Ties: tf.argmax picks the first maximal logit (see the class doc).
        return tf.one_hot(
            tf.argmax(logits, axis=-1), self._num_classes(), dtype=self.dtype
        )

    # --- sampling ----------------------------------------------------------

    def _sample_n(self, n, seed=None):
        samples, _ = _sample_cc(n, self._logits_parameter_no_checks(), seed)
        return samples

    def sampler_acceptance_rate(self, name: str | None = None) -> tf.Tensor:
        """Probability that one proposal of the exact sampler is accepted.

        Exact (computed from ``A(z)`` in float64), shape ``[B...]``. The
        expected number of proposals per sample is its inverse.

        Example:

        >>> dist = ContinuousCategorical(logits=[0.0, 0.0, 0.0, 0.0])
        >>> round(float(dist.sampler_acceptance_rate()), 6)  # ties: always
        1.0
        """
        with self._name_and_control_scope(name or "sampler_acceptance_rate"):
            log_rate = tf.maximum(
                *_log_acceptance_rates(self._logits_parameter_no_checks())
            )
            # The exact value is <= 1; rounding of the ~K log K terms could
            # push an all-ties row a few ulps above it.
            return tf.cast(tf.minimum(tf.exp(log_rate), 1.0), self.dtype)

    # --- TFP plumbing ------------------------------------------------------

    def _default_event_space_bijector(self):
        # A bijection from R^(K-1) onto the open simplex. Not SoftmaxCentered,
        # Dirichlet's: in TFP 0.25 it calls np.reshape(newshape=...), which
        # NumPy 2.4 removed.
        return iterated_sigmoid_centered_bijector.IteratedSigmoidCentered(
            validate_args=self.validate_args
        )

    def _parameter_control_dependencies(self, is_init):
        if not self.validate_args:
            return []
        assertions = []
        if self._probs is not None:
            if is_init != tensor_util.is_ref(self._probs):
                probs = tf.convert_to_tensor(self._probs)
                assertions += _open_simplex_assertions(probs, "probs")
        elif is_init != tensor_util.is_ref(self._logits):
            assertions.append(
                tf.debugging.assert_all_finite(
                    tf.convert_to_tensor(self._logits), "`logits` must be finite"
                )
            )
        return assertions

    def _sample_control_dependencies(self, x):
        if not self.validate_args:
            return []
        x = tf.convert_to_tensor(x)
        # TF's asserts append their own punctuation: no final period below.
        return [
            *_event_size_assertions(x, self._num_classes()),
            assert_util.assert_non_negative(
                x, message="Sample must be in the simplex: a negative entry"
            ),
            assert_util.assert_near(
                tf.reduce_sum(x, axis=-1),
                tf.ones([], x.dtype),
                atol=_simplex_tolerance(x),
                rtol=0.0,
                message="Sample must be in the simplex: entries must sum to 1",
            ),
        ]


def _open_simplex_assertions(x: tf.Tensor, name: str) -> list[tf.Operation]:
    """Run-time checks that ``x`` (``probs`` or a mean) is in the open simplex."""
    return [
        assert_util.assert_positive(
            x,
            message=f"`{name}` must be strictly positive (a zero entry has no "
            "density on the simplex)",
        ),
        assert_util.assert_near(
            tf.reduce_sum(x, axis=-1),
            tf.ones([], x.dtype),
            rtol=_simplex_tolerance(x),
            message=f"`{name}` must sum to 1",
        ),
    ]


def _check_static_probs(probs: tf.Tensor) -> None:
    """Raises ``ValueError`` if ``probs`` has a known value that is not > 0."""
    value = tf.get_static_value(probs)
    if value is None:
        return
    bad = ~(np.asarray(value) > 0)  # also catches NaN
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            "`probs` must be strictly positive: a zero probability puts the "
            "distribution on a face of the simplex, where it has no density. "
            f"{int(bad.sum())} of {bad.size} entries are not > 0; the first is "
            f"probs[{', '.join(map(str, index))}] = {float(value[index])}. Use a "
            "small positive probability instead, or drop the class."
        )


def _check_static_mean(mean: tf.Tensor) -> None:
    """Raises ``ValueError`` if ``mean`` has a known value off the open simplex."""
    value = tf.get_static_value(mean)
    if value is None:
        return
    value = np.asarray(value, dtype=np.float64)
    if value.ndim == 0 or value.shape[-1] < 2:
        raise ValueError(
            "`mean` must have a class axis of at least 2 entries; received "
            f"shape {value.shape}."
        )
    total = value.sum(axis=-1)
    eps = np.finfo(dtype_util.as_numpy_dtype(mean.dtype)).eps
    for bad, values, what in (
        (~(value > 0), value, "entries are not > 0 (NaN included)"),
        (
            np.abs(total - 1.0) > 4.0 * eps * value.shape[-1],
            total,
            "rows do not sum to 1",
        ),
    ):
        if bad.any():
            index = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(
                "`mean` must lie in the open simplex (strictly positive, summing "
                f"to 1 along the last axis): {int(bad.sum())} of {bad.size} "
                f"{what}; the first is at [{', '.join(map(str, index))}]: "
                f"{float(values[index]):.9g}."
            )


def _check_event_size(x: tf.Tensor, num_classes) -> bool:
    """Raises ``ValueError`` if the last axis of ``x`` is statically wrong.

    ``x`` is the event passed to ``log_prob``/``prob`` (TFP's ``value``);
    ``num_classes`` is an int, or a tensor when the class axis is dynamic.
    Without this check a mismatch fails deep inside TensorFlow with a raw
    "Incompatible shapes" error, or broadcasts silently for a size-1 axis.
    Returns whether the size was checked (both sizes known statically).
    """
    if x.shape.rank == 0:
        raise ValueError(
            "`value` must have the classes along its last axis; got a scalar."
        )
    size = tf.compat.dimension_value(x.shape[-1]) if x.shape.rank else None
    if size is None or not isinstance(num_classes, int):
        return False
    if size != num_classes:
        raise ValueError(
            f"`value` must have {num_classes} entries along its last axis (the "
            f"distribution's classes), but it has {size} (shape {x.shape})."
        )
    return True


def _event_size_assertions(x: tf.Tensor, num_classes) -> list[tf.Operation]:
    """`_check_event_size`, plus a runtime assertion where sizes are dynamic."""
    if _check_event_size(x, num_classes):
        return []
    return [
        assert_util.assert_equal(
            tf.shape(x)[-1],
            tf.cast(num_classes, tf.int32),
            message="`value` must have as many entries along its last axis as "
            "the distribution has classes",
        )
    ]


def _simplex_tolerance(x: tf.Tensor) -> tf.Tensor:
    """Allowed ``|sum(x) - 1|``: a few roundings per term of the sum.

    Samples are ``E / sum(E)``, whose sum is 1 only up to ~K roundings.
    """
    eps = np.finfo(dtype_util.as_numpy_dtype(x.dtype)).eps
    num_classes = tf.cast(tf.shape(x)[-1], x.dtype)
    return 4.0 * eps * tf.maximum(num_classes, 1.0)


def _in_simplex(x: tf.Tensor) -> tf.Tensor:
    """Whether each event of ``x`` lies in the (closed) simplex, up to rounding."""
    total = tf.reduce_sum(x, axis=-1)
    return tf.reduce_all(x >= 0.0, axis=-1) & (
        tf.abs(total - 1.0) <= _simplex_tolerance(x)
    )


@kullback_leibler.RegisterKL(ContinuousCategorical, ContinuousCategorical)
def _kl_continuous_categorical(a, b, name=None):
    """KL(a || b) = A(z_b) - A(z_a) - (z_b - z_a)·mean_a, batchwise.

    Exact for exponential families: E_a[log p_a - log p_b] with
    ``log p = z·x - A(z)``. Logits are shifted by their maxima first (KL is
    shift-invariant) so no large common offset cancels.
    """
    with tf.name_scope(name or "kl_continuous_categorical"):
        ka, kb = a._num_classes(), b._num_classes()
        if isinstance(ka, int) and isinstance(kb, int) and ka != kb:
            raise ValueError(
                "KL divergence between continuous categoricals needs the same "
                f"number of classes: `distribution_a` has {ka} and "
                f"`distribution_b` has {kb}."
            )
        za, finite_a = _shifted(a._logits_parameter_no_checks())
        zb, finite_b = _shifted(b._logits_parameter_no_checks())
        mean_a = cc_ops.cc_mean(za)
        return _nan_unless(
            finite_a & finite_b,
            cc_ops.cc_log_partition(zb)
            - cc_ops.cc_log_partition(za)
            - tf.reduce_sum((zb - za) * mean_a, axis=-1),
        )
