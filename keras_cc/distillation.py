"""Knowledge distillation with the continuous categorical, for `keras.distillation`.

`ContinuousCategoricalDistillation` is a `keras.distillation.DistillationLoss`:
pass it to `keras.distillation.Distiller(teacher, student,
distillation_losses=...)` where you would pass
`keras.distillation.LogitsDistillation`. Instead of the KL divergence of the
student's tempered softmax to the teacher's (Hinton et al., 2015), it fits
the teacher's tempered softmax `softmax(t / T)` by the continuous categorical
(CC) likelihood, the proper likelihood for a target that is a point on the
simplex (CC-KD). The CC loss itself, its options and its numerics are
`keras_cc.losses.ContinuousCategoricalCrossentropy`; this module only adapts
it to the interface of `keras.distillation`.

`keras.distillation` first shipped with Keras 3.12.0; on an older Keras,
importing this module raises an `ImportError` that says so (`import
keras_cc` itself works on any supported Keras).
"""

from __future__ import annotations

import math

import keras
from keras import ops

from keras_cc import losses

MIN_KERAS_VERSION = "3.12.0"
"""The first Keras release with `keras.distillation`."""

try:
    from keras import distillation as keras_distillation
except ImportError as error:  # Keras < 3.12
    raise ImportError(
        "keras_cc.distillation needs `keras.distillation`, which Keras added "
        f"in version {MIN_KERAS_VERSION}; the installed Keras is "
        f"{keras.__version__}. Upgrade it (`pip install -U "
        f'"keras>={MIN_KERAS_VERSION}"`), or use '
        "`keras_cc.losses.ContinuousCategoricalCrossentropy` in a training "
        "step of your own."
    ) from error

__all__ = ["MIN_KERAS_VERSION", "ContinuousCategoricalDistillation"]


def _check_positive(value, name: str, hint: str = "") -> float:
    """`value` as a float, if it is a positive finite number (not a bool)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(
            f"`{name}` must be a positive finite number{hint}. "
            f"Received: {name}={value!r}"
        )
    return float(value)


@keras.saving.register_keras_serializable(package="keras_cc")
class ContinuousCategoricalDistillation(keras_distillation.DistillationLoss):
    """CC-KD: the CC likelihood of the teacher's tempered softmax.

    For teacher logits `t` and student logits `z` (both `[batch_size,
    num_classes]`), the loss is

        T² * mean_over_batch(CC_NLL(softmax(t / T), logit_scale * z / T))

    where `CC_NLL(y, η) = A(η) - y·η` is the loss of
    `keras_cc.losses.ContinuousCategoricalCrossentropy(from_logits=True)`.
    Both models must output logits (no softmax).

    The factor T² is Hinton et al.'s (2015, §2) and the one
    `keras.distillation.LogitsDistillation` applies to its KL divergence:
    the soft-target gradient in `z` shrinks like 1/T² as T grows, and T²
    keeps its size independent of T, so the weight of the student's
    hard-label loss (`student_loss_weight` of the `Distiller`) means the
    same at every temperature. The CC term's gradient,
    `T · s · (cc_mean(s·z/T) - softmax(t/T))`, shrinks in the same way: near
    the uniform point both means move linearly in 1/T, so with T² it tends
    to a limit independent of T, as Hinton's does.

    Args:
        temperature: T > 0, dividing the teacher's and the student's logits.
            Defaults to `3.0`, as in `LogitsDistillation`.
        logit_scale: A positive number `s`: the CC's logits are `s * z / T`.
            A teacher's tempered softmax on its own training inputs is
            nearly one-hot at small T, and the CC optimum for targets with
            small entries ε sits at logit gaps near 1/ε, which a plain head
            reaches slowly; a scale moves that optimum to smaller raw
            logits, as `logit_scale` does for CC label smoothing (see
            `keras_cc.losses.label_smoothing_logit_scale`). Read the
            student's CC then as `CC(logits=s * z / T)`. Defaults to `1.0`.
        parameterization: `"natural"` (default): `s * z / T` are the CC's
            logits. `"mean"`: `softmax(z / T)` is the CC's mean (then
            `logit_scale` must be 1); see
            `keras_cc.losses.ContinuousCategoricalCrossentropy`.

    Examples:

    Standalone usage (`compute_loss` is what the `Distiller` calls):

    >>> loss = keras_cc.distillation.ContinuousCategoricalDistillation(
    ...     temperature=2.0)
    >>> teacher_logits = np.array([[4.0, 1.0, 0.0], [0.0, 3.0, 1.0]])
    >>> student_logits = np.array([[2.0, 1.0, 0.5], [0.5, 1.0, 1.0]])
    >>> round(float(loss.compute_loss(teacher_logits, student_logits)), 4)
    -3.3607

    Usage with `keras.distillation.Distiller` (both models output logits):

    ```python
    distiller = keras.distillation.Distiller(
        teacher=teacher,
        student=student,
        distillation_losses=(
            keras_cc.distillation.ContinuousCategoricalDistillation(
                temperature=4.0
            )
        ),
        student_loss_weight=0.1,  # the hard-label loss's weight
    )
    distiller.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    distiller.fit(x_train, y_train, epochs=10)
    student = distiller.student  # trained, outputs logits
    ```
    """

    def __init__(
        self,
        temperature: float = 3.0,
        logit_scale: float = 1.0,
        parameterization: str = "natural",
    ):
        self.temperature = _check_positive(temperature, "temperature")
        # Only a number: "auto" and None are the label-smoothing rule of the
        # CC loss, which needs a smoothing weight that a teacher's targets lack.
        _check_positive(
            logit_scale,
            "logit_scale",
            " (for a teacher's targets e.g. `keras_cc.losses."
            "label_smoothing_logit_scale(K, alpha)` at the smoothing alpha they "
            'resemble; "auto" is the rule of label smoothing only)',
        )
        # The loss checks `logit_scale` and `parameterization` (and that a
        # scale goes with the natural parameterisation only). The targets are
        # a softmax, on the simplex by construction: no target checks.
        self._loss = losses.ContinuousCategoricalCrossentropy(
            from_logits=True,
            logit_scale=logit_scale,
            parameterization=parameterization,
            validate_targets=False,
            name="cc_distillation",
        )

    @property
    def logit_scale(self) -> float:
        return self._loss.logit_scale

    @property
    def parameterization(self) -> str:
        return self._loss.parameterization

    def validate_outputs(self, teacher_outputs, student_outputs):
        for role, outputs in (
            ("teacher", teacher_outputs),
            ("student", student_outputs),
        ):
            if isinstance(outputs, (list, tuple, dict)):
                raise ValueError(
                    f"{type(self).__name__} takes one logits tensor from each "
                    f"model; the {role} returned a {type(outputs).__name__}. "
                    "Distil a multi-output model with one loss per output "
                    "(e.g. a `keras.Model` on the output you distil)."
                )
        super().validate_outputs(teacher_outputs, student_outputs)

    def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
        """`T² · CC_NLL(softmax(t / T), s · z / T)`, averaged over the batch.

        Args:
            teacher_outputs: the teacher's logits `t`.
            student_outputs: the student's logits `z`, same shape.
            **kwargs: ignored (the interface of `DistillationLoss`).

        Returns:
            A scalar tensor.
        """
        t = self.temperature
        teacher = ops.convert_to_tensor(teacher_outputs)
        # Half-precision teachers: the targets are formed in the loss's
        # compute dtype (float32), as the loss computes in it.
        teacher = ops.cast(teacher, losses._compute_dtype(teacher.dtype))
        targets = ops.stop_gradient(ops.softmax(teacher / t, axis=-1))
        return (t * t) * self._loss(targets, ops.divide(student_outputs, t))

    def get_config(self) -> dict:
        return {
            "temperature": self.temperature,
            "logit_scale": self.logit_scale,
            "parameterization": self.parameterization,
        }

    @classmethod
    def from_config(cls, config: dict) -> ContinuousCategoricalDistillation:
        return cls(**config)
