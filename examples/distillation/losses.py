"""The distillation losses of each method, for ``keras.distillation.Distiller``.

The loss of a batch is Keras' ``Distiller``'s

    α · student_loss(y, z) + (1 - α) · T² · soft_loss(softmax(t / T), z / T)

with ``z`` the student's logits, ``t`` the teacher's and α the
``student_loss_weight``:

- ``hinton`` (Hinton et al., 2015): ``keras.distillation.LogitsDistillation``
  with ``loss=keras.losses.KLDivergence()``, which softmaxes both tempered
  logits and applies T². The instance matters: its default,
  ``loss="kl_divergence"``, resolves to the loss *function*, which
  ``LogitsDistillation`` (Keras 3.12 to 3.15.1 at least) hands the tempered
  logits unchanged, without the softmax and without T². The KL divergence
  differs from the cross-entropy to the teacher's softmax by the teacher's
  entropy, a constant, except that Keras clips both softmaxes at 1e-7.
- ``cc`` (CC-KD): ``keras_cc.distillation.ContinuousCategoricalDistillation``,
  the CC negative log-likelihood of the same targets at logits
  ``logit_scale · z / T``; it applies T² itself.

Both match the hand-written ``Distiller`` this example used before
``keras.distillation`` existed, which mixed cross-entropy to the teacher's
softmax (``tests/test_distillation_example.py`` checks the losses and a
training step against it), so the committed MNIST-1D results of the
all-labels student stand for this code.

Import this module only after the Keras backend has been chosen.
"""

from __future__ import annotations

import keras
import numpy as np

import keras_cc


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


def make_distillation_losses(
    method: str,
    temperature: float,
    logit_scale: float = 1.0,
    parameterization: str = "natural",
) -> tuple[list, list[float]]:
    """``(distillation_losses, distillation_loss_weights)`` of a ``Distiller``.

    ``parameterization="mean"`` (CC-KD only) reads the student's tempered
    softmax as the CC's mean (``logit_scale`` must then be 1)."""
    if method == "hinton":
        if logit_scale != 1.0 or parameterization != "natural":
            raise ValueError(
                "The logit scale and the parameterization apply to CC-KD only."
            )
        loss = keras.distillation.LogitsDistillation(
            temperature=temperature, loss=keras.losses.KLDivergence()
        )
        return [loss], [1.0]
    if method == "cc":
        loss = keras_cc.distillation.ContinuousCategoricalDistillation(
            temperature=temperature,
            logit_scale=logit_scale,
            parameterization=parameterization,
        )
        return [loss], [1.0]
    raise ValueError(
        f"Unknown distillation method {method!r}; choose hinton or cc "
        "(hard labels need no Distiller)."
    )


def make_distiller(
    method: str,
    teacher: keras.Model,
    student: keras.Model,
    alpha: float,
    temperature: float,
    logit_scale: float = 1.0,
    parameterization: str = "natural",
) -> keras.distillation.Distiller:
    """A ``keras.distillation.Distiller`` for ``hinton`` or ``cc``, with α
    weighing the student's hard-label loss (compile it with that loss)."""
    losses, weights = make_distillation_losses(
        method, temperature, logit_scale, parameterization
    )
    return keras.distillation.Distiller(
        teacher=teacher,
        student=student,
        distillation_losses=losses,
        distillation_loss_weights=weights,
        student_loss_weight=alpha,
    )
