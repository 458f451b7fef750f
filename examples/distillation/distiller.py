"""The ``Distiller`` model and the distillation losses.

``Distiller`` follows the keras.io "Knowledge Distillation" example: a
``keras.Model`` holding a student and a frozen teacher, compiled with
``compile(optimizer, metrics, student_loss_fn, distillation_loss_fn, alpha,
temperature)``. The loss of a batch is

    alpha * student_loss_fn(y, z)
        + (1 - alpha) * T² * distillation_loss_fn(softmax(t / T), z / T)

with ``z`` the student's logits and ``t`` the teacher's. One change from
keras.io: the distillation loss receives the student's *logits* divided by
T, not their softmax, so any Keras loss built with ``from_logits=True`` slots
in unchanged: ``keras.losses.CategoricalCrossentropy(from_logits=True)`` gives
Hinton KD (cross-entropy and KL divergence differ by the teacher's entropy, a
constant), ``keras_cc.losses.ContinuousCategoricalCrossentropy(
from_logits=True)`` gives CC-KD.

Import this module only after the Keras backend has been chosen.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

import keras_cc


@keras.saving.register_keras_serializable(package="keras_cc_examples")
class Distiller(keras.Model):
    """A student trained on hard labels and on a frozen teacher's soft targets.

    Args:
        student: the model being trained; it outputs logits.
        teacher: a trained model outputting logits; it is frozen
            (``trainable = False``) and runs in inference mode.

    ``distiller(x)`` and ``distiller.predict(x)`` return the student's logits,
    and the compiled metrics compare the labels with them.
    """

    def __init__(self, student: keras.Model, teacher: keras.Model, **kwargs):
        super().__init__(**kwargs)
        self.student = student
        self.teacher = teacher
        self.teacher.trainable = False

    def compile(
        self,
        optimizer: str | keras.optimizers.Optimizer = "adam",
        metrics: list | None = None,
        student_loss_fn: str | keras.losses.Loss | None = None,
        distillation_loss_fn: str | keras.losses.Loss | None = None,
        alpha: float = 0.1,
        temperature: float = 3.0,
        **kwargs,
    ) -> None:
        """Configure the training.

        Args:
            optimizer: a Keras optimizer (or its name).
            metrics: metrics of the labels against the student's logits.
            student_loss_fn: the hard-label loss ``f(y, z)`` (logits in).
            distillation_loss_fn: the soft-target loss
                ``f(softmax(t / T), z / T)``; a loss built with
                ``from_logits=True``. May be None when ``alpha == 1``.
            alpha: the weight of the hard-label loss; ``1 - alpha`` weighs
                the distillation loss (keras.io's convention).
            temperature: T > 0, dividing both the teacher's and the student's
                logits in the distillation term.
            **kwargs: passed on to ``keras.Model.compile`` (e.g.
                ``jit_compile``).
        """
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1]; got {alpha}.")
        if not temperature > 0.0:
            raise ValueError(f"temperature must be > 0; got {temperature}.")
        if student_loss_fn is None:
            raise ValueError("student_loss_fn is required.")
        if distillation_loss_fn is None and alpha < 1.0:
            raise ValueError("distillation_loss_fn is required when alpha < 1.")
        super().compile(optimizer=optimizer, metrics=metrics, **kwargs)
        self.student_loss_fn = keras.losses.get(student_loss_fn)
        self.distillation_loss_fn = (
            None
            if distillation_loss_fn is None
            else keras.losses.get(distillation_loss_fn)
        )
        self.alpha = float(alpha)
        self.temperature = float(temperature)
        self._metrics_argument = metrics

    def call(self, x, training: bool | None = None):
        return self.student(x, training=training)

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        loss = self.student_loss_fn(y, y_pred, sample_weight)
        if self.alpha < 1.0:
            t = self.temperature
            teacher_logits = ops.stop_gradient(self.teacher(x, training=False))
            soft_targets = ops.softmax(teacher_logits / t, axis=-1)
            distillation = self.distillation_loss_fn(
                soft_targets, y_pred / t, sample_weight
            )
            loss = self.alpha * loss + (1.0 - self.alpha) * t**2 * distillation
        if self.losses:
            loss = loss + ops.sum(self.losses)
        return loss

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "trainable": self.trainable,
            "student": keras.saving.serialize_keras_object(self.student),
            "teacher": keras.saving.serialize_keras_object(self.teacher),
        }

    @classmethod
    def from_config(cls, config: dict) -> Distiller:
        config = dict(config)
        student = keras.saving.deserialize_keras_object(config.pop("student"))
        teacher = keras.saving.deserialize_keras_object(config.pop("teacher"))
        return cls(student, teacher, **config)

    def get_compile_config(self) -> dict:
        """Everything ``compile`` was given, so that ``model.save`` and
        ``keras.saving.load_model`` give back a compiled Distiller."""
        if not self.compiled:
            return {}
        return {
            "optimizer": keras.saving.serialize_keras_object(self.optimizer),
            "metrics": keras.saving.serialize_keras_object(self._metrics_argument),
            "student_loss_fn": keras.saving.serialize_keras_object(
                self.student_loss_fn
            ),
            "distillation_loss_fn": keras.saving.serialize_keras_object(
                self.distillation_loss_fn
            ),
            "alpha": self.alpha,
            "temperature": self.temperature,
        }

    def compile_from_config(self, config: dict) -> None:
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            # Create the optimizer's variables, so its saved state can load.
            self.optimizer.build(self.trainable_variables)


def soft_targets(teacher_logits: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(teacher_logits / T)`` in float64 (NumPy)."""
    z = np.asarray(teacher_logits, dtype=np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def distillation_logit_scale(targets: np.ndarray) -> float:
    """The CC-LS logit scale for soft targets as soft as ``targets``.

    A label-smoothed target with smoothing α puts ``1 - α(K - 1)/K`` on its
    top class. The teacher's soft targets are summarised the same way: α_eff
    is the α whose top mass equals the targets' mean top probability, and the
    scale is ``keras_cc.losses.label_smoothing_logit_scale(K, α_eff)``, which
    puts the CC optimum at the logit gaps of the cross-entropy optimum (see
    docs/label_smoothing.md).
    """
    targets = np.asarray(targets, dtype=np.float64)
    k = targets.shape[-1]
    alpha = k / (k - 1) * (1.0 - float(targets.max(axis=-1).mean()))
    alpha = min(max(alpha, 1e-6), 1.0 - 1e-6)
    return keras_cc.losses.label_smoothing_logit_scale(k, alpha)


def make_distillation_loss(
    method: str, logit_scale: float = 1.0, parameterization: str = "natural"
):
    """The soft-target loss of a method (logits in); None for ``hard``.

    ``parameterization="mean"`` (CC-KD only) reads the student's softmax as
    the CC's mean (``logit_scale`` must then be 1)."""
    if method == "hard":
        return None
    if method == "hinton":
        if logit_scale != 1.0 or parameterization != "natural":
            raise ValueError(
                "The logit scale and the parameterization apply to CC-KD only."
            )
        return keras.losses.CategoricalCrossentropy(from_logits=True, name="hinton_kd")
    if method == "cc":
        return keras_cc.losses.ContinuousCategoricalCrossentropy(
            from_logits=True,
            logit_scale=logit_scale,
            parameterization=parameterization,
            name="cc_kd",
        )
    raise ValueError(f"Unknown method {method!r}; choose hard, hinton or cc.")
