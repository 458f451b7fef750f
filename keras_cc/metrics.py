"""Keras metrics for the continuous categorical (CC) distribution.

The metrics average the per-example CC negative log-likelihood of
`keras_cc.losses` over everything seen since the last reset, like
`keras.metrics.CategoricalCrossentropy` does for cross-entropy.
"""

from __future__ import annotations

import keras

from keras_cc.losses import (
    _options,
    _StoredOptions,
    continuous_categorical_crossentropy,
    sparse_continuous_categorical_crossentropy,
)

__all__ = [
    "ContinuousCategoricalCrossentropy",
    "SparseContinuousCategoricalCrossentropy",
]


class _MeanMetricWrapper(_StoredOptions, keras.metrics.MeanMetricWrapper):
    """`keras.metrics.MeanMetricWrapper` around the class's CC loss function
    and its options (stored once, see `keras_cc.losses._StoredOptions`).
    The arguments are documented on each class."""

    def __init__(
        self,
        name: str | None = None,
        dtype=None,
        from_logits: bool = False,
        label_smoothing: float = 0.0,
        axis: int = -1,
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
            type(self)._function,
            name=name or self._default_name,
            dtype=dtype,
            **options,
        )
        # A negative log-likelihood: lower is better (e.g. for callbacks that
        # monitor it with mode="auto").
        self._direction = "down"


# Registered under a name distinct from the loss class of the same name: the
# registry is keyed by "package>name", and a second "keras_cc>Continuous
# CategoricalCrossentropy" would replace the loss on deserialization.
@keras.saving.register_keras_serializable(
    package="keras_cc", name="ContinuousCategoricalCrossentropyMetric"
)
class ContinuousCategoricalCrossentropy(_MeanMetricWrapper):
    """Mean continuous categorical (CC) negative log-likelihood.

    The metric form of `keras_cc.losses.ContinuousCategoricalCrossentropy`:
    the weighted mean, over all examples seen, of `A(z) - sum(y_true * z)`.
    `from_logits=True` is recommended (see the loss).

    Args:
        name: (Optional) string name of the metric instance.
        dtype: (Optional) data type of the metric result.
        from_logits: Whether `y_pred` is expected to be a logits tensor. By
            default, we assume that `y_pred` encodes a probability
            distribution (on the TensorFlow and PyTorch backends the logits
            behind a Keras softmax output are recovered).
        label_smoothing: Float in [0, 1]. When > 0, the target is
            `y_true * (1 - label_smoothing) + label_smoothing / num_classes`.
        axis: The class axis. Defaults to `-1`.
        validate_targets: If `True` (default), `y_true` must lie on the
            simplex (see the loss for the tolerance and when it is checked).
        logit_scale: A positive number, `"auto"` or `None` (default:
            `"auto"` with label smoothing, else 1): the CC's logits are
            `logit_scale * z`, as in the loss (use the loss's value).
        parameterization: `"natural"` (default) or `"mean"`, as in the loss.

    Examples:

    >>> m = keras_cc.metrics.ContinuousCategoricalCrossentropy(from_logits=True)
    >>> m.update_state([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
    ...                [[-1.0, 4.0, 0.0], [0.5, 1.0, 2.0]])
    >>> round(float(m.result()), 4)
    -2.2696

    >>> m.reset_state()
    >>> m.update_state([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
    ...                [[-1.0, 4.0, 0.0], [0.5, 1.0, 2.0]],
    ...                sample_weight=[0.3, 0.7])
    >>> round(float(m.result()), 4)
    -1.9524

    Usage with `compile()` API:

    ```python
    model.compile(
        optimizer="adam",
        loss=keras_cc.losses.ContinuousCategoricalCrossentropy(from_logits=True),
        metrics=[keras_cc.metrics.ContinuousCategoricalCrossentropy(
            from_logits=True)],
    )
    ```
    """

    _function = staticmethod(continuous_categorical_crossentropy)
    _default_name = "continuous_categorical_crossentropy"


@keras.saving.register_keras_serializable(
    package="keras_cc", name="SparseContinuousCategoricalCrossentropyMetric"
)
class SparseContinuousCategoricalCrossentropy(_MeanMetricWrapper):
    """Mean continuous categorical (CC) negative log-likelihood, int labels.

    The metric form of `keras_cc.losses.SparseContinuousCategoricalCrossentropy`:
    `y_true` holds one integer class per example.

    Args:
        name: (Optional) string name of the metric instance.
        dtype: (Optional) data type of the metric result.
        from_logits: Whether `y_pred` is expected to be a logits tensor.
        label_smoothing: Float in [0, 1]; the target is `one_hot * (1 -
            label_smoothing) + label_smoothing / num_classes`.
        axis: The class axis of `y_pred`. Defaults to `-1`.
        validate_targets: If `True` (default), labels must lie in
            `[0, num_classes)` (see the loss for when it is checked).
        logit_scale: A positive number, `"auto"` or `None` (default), as in
            the loss.
        parameterization: `"natural"` (default) or `"mean"`, as in the loss.

    Examples:

    >>> m = keras_cc.metrics.SparseContinuousCategoricalCrossentropy(
    ...     from_logits=True)
    >>> m.update_state([1, 2], [[-1.0, 4.0, 0.0], [0.5, 1.0, 2.0]])
    >>> round(float(m.result()), 4)
    -2.2696
    """

    _function = staticmethod(sparse_continuous_categorical_crossentropy)
    _default_name = "sparse_continuous_categorical_crossentropy"
