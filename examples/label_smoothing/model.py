"""The networks, the losses, and a step-skipping optimizer wrapper.

Networks: the paper's CIFAR-10 CNN (images), the MNIST-1D CNN baseline
(signals) and a small MLP (either). Losses: xe, ls, rls (cross-entropy), cc,
rcc (the CC likelihood of the same targets, ``keras_cc``), cc-mean (the CC
likelihood parameterised by its mean) and cc-fallback (the original authors'
scheme: CC where their closed form works, cross-entropy elsewhere).

Import this module only after the Keras backend has been chosen.
"""

from __future__ import annotations

import math

import keras
from keras import layers, ops

import keras_cc
from examples.label_smoothing import MODELS

# Dropout rates of the three blocks, as in the paper.
DROPOUT_RATES: tuple[float, float, float] = (0.2, 0.3, 0.4)
FILTERS: tuple[int, int, int] = (32, 64, 128)
PENULTIMATE = "penultimate"


def build_cnn(
    input_shape: tuple[int, int, int],
    num_classes: int,
    batch_norm: bool,
    dropout: bool,
    weight_decay: float,
) -> keras.Model:
    """Three [Conv-ELU-(BN)-Conv-ELU-(BN)-MaxPool-(Dropout)] blocks, Flatten, Dense.

    The output is logits (no softmax): the losses take ``from_logits=True``,
    which the CC loss needs to reach its optimum at logit gaps near 100 (a
    clipped softmax output caps them near 16). L2 applies to the final Dense
    kernel only, as in the paper.
    """
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    for block, (filters, rate) in enumerate(
        zip(FILTERS, DROPOUT_RATES, strict=True), start=1
    ):
        for conv in (1, 2):
            x = layers.Conv2D(filters, 3, padding="same", name=f"b{block}_conv{conv}")(
                x
            )
            x = layers.ELU(name=f"b{block}_elu{conv}")(x)
            if batch_norm:
                x = layers.BatchNormalization(name=f"b{block}_bn{conv}")(x)
        x = layers.MaxPooling2D(2, name=f"b{block}_pool")(x)
        if dropout:
            x = layers.Dropout(rate, name=f"b{block}_dropout")(x)
    return keras.Model(inputs, _head(x, num_classes, weight_decay), name="paper_cnn")


def _head(features, num_classes: int, weight_decay: float):
    """Flatten (the penultimate layer) and the logits; L2 on the kernel only."""
    x = layers.Flatten(name=PENULTIMATE)(features)
    regularizer = keras.regularizers.L2(weight_decay) if weight_decay > 0 else None
    return layers.Dense(num_classes, kernel_regularizer=regularizer, name="logits")(x)


# MNIST-1D CNN baseline (Greydanus & Kobak): three ReLU convolutions of 25
# channels, kernel 5 then 3, stride 2, padding 1, then a linear layer.
MNIST1D_CHANNELS = 25
MNIST1D_KERNELS: tuple[int, int, int] = (5, 3, 3)


def build_mnist1d_cnn(
    input_shape: tuple[int, int],
    num_classes: int,
    batch_norm: bool,
    dropout: bool,
    weight_decay: float,
) -> keras.Model:
    """The MNIST-1D paper's CNN baseline (about 5 200 weights), logits out.

    The ablation axes are added the paper's way: BatchNorm after every ReLU,
    dropout (0.2/0.3/0.4) after the three convolutions, L2 on the final Dense
    kernel only.
    """
    inputs = keras.Input(shape=input_shape, name="signal")
    x = inputs
    for block, (kernel, rate) in enumerate(
        zip(MNIST1D_KERNELS, DROPOUT_RATES, strict=True), start=1
    ):
        # PyTorch's Conv1d(padding=1): one zero on each side, then "valid".
        x = layers.ZeroPadding1D(1, name=f"b{block}_pad")(x)
        x = layers.Conv1D(
            MNIST1D_CHANNELS,
            kernel,
            strides=2,
            activation="relu",
            name=f"b{block}_conv",
        )(x)
        if batch_norm:
            x = layers.BatchNormalization(name=f"b{block}_bn")(x)
        if dropout:
            x = layers.Dropout(rate, name=f"b{block}_dropout")(x)
    return keras.Model(inputs, _head(x, num_classes, weight_decay), name="mnist1d_cnn")


MLP_UNITS: tuple[int, int] = (256, 256)


def build_mlp(
    input_shape: tuple[int, ...],
    num_classes: int,
    batch_norm: bool,
    dropout: bool,
    weight_decay: float,
) -> keras.Model:
    """Flatten, two Dense(256) ReLU blocks, Dense(K) logits; any input shape.

    The ablation axes are added where the CNNs have them: BatchNorm after
    every ReLU, dropout after each hidden block (the CNNs' first two rates,
    0.2 and 0.3), L2 on the final Dense kernel only. The last hidden block is
    the penultimate layer.
    """
    inputs = keras.Input(shape=input_shape, name="input")
    x = layers.Flatten(name="flatten")(inputs)
    for block, (units, rate) in enumerate(
        zip(MLP_UNITS, DROPOUT_RATES, strict=False), start=1
    ):
        x = layers.Dense(units, activation="relu", name=f"b{block}_dense")(x)
        if batch_norm:
            x = layers.BatchNormalization(name=f"b{block}_bn")(x)
        if dropout:
            x = layers.Dropout(rate, name=f"b{block}_dropout")(x)
    return keras.Model(inputs, _head(x, num_classes, weight_decay), name="mlp")


def build_model(
    input_shape: tuple[int, ...],
    num_classes: int,
    batch_norm: bool,
    dropout: bool,
    weight_decay: float,
    learned_scale: float | None = None,
    architecture: str = "cnn",
) -> keras.Model:
    """The network: ``architecture="cnn"``, the CNN for the input's rank
    (signals: MNIST-1D's; images: the paper's), or ``"mlp"`` (:func:`build_mlp`).

    With ``learned_scale``, a trainable temperature initialised there
    multiplies the logits (:class:`LearnedLogitScale`).
    """
    if architecture == "mlp":
        build = build_mlp
    elif architecture == "cnn":
        build = build_mnist1d_cnn if len(input_shape) == 2 else build_cnn
    else:
        raise ValueError(
            f"Unknown architecture {architecture!r}; choose from "
            + ", ".join(MODELS)
            + "."
        )
    model = build(input_shape, num_classes, batch_norm, dropout, weight_decay)
    if learned_scale is None:
        return model
    logits = LearnedLogitScale(learned_scale, name="learned_logit_scale")(model.output)
    return keras.Model(model.inputs, logits, name=model.name)


@keras.saving.register_keras_serializable(package="keras_cc_examples")
class LearnedLogitScale(layers.Layer):
    """Multiplies the logits by ``exp(t)``, ``t`` trainable (a temperature).

    Parameterised by its logarithm so the scale stays positive and Adam's
    steps are relative changes of it.
    """

    def __init__(self, initial_scale: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        if not initial_scale > 0:
            raise ValueError(f"initial_scale must be > 0; got {initial_scale}.")
        self.initial_scale = float(initial_scale)

    def build(self, input_shape) -> None:
        self.log_scale = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(math.log(self.initial_scale)),
            name="log_scale",
        )

    def call(self, logits):
        return logits * ops.exp(ops.cast(self.log_scale, logits.dtype))

    def get_config(self) -> dict:
        return super().get_config() | {"initial_scale": self.initial_scale}


@keras.saving.register_keras_serializable(package="keras_cc_examples")
class ScaledCrossentropy(keras.losses.Loss):
    """Cross-entropy on ``logit_scale * y_pred``: LS with the scale CC-LS uses."""

    def __init__(self, logit_scale: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.logit_scale = float(logit_scale)

    def call(self, y_true, y_pred):
        return keras.losses.categorical_crossentropy(
            y_true, y_pred * self.logit_scale, from_logits=True
        )

    def get_config(self) -> dict:
        return super().get_config() | {"logit_scale": self.logit_scale}


def closed_form_usable(logits):
    """Rows on which the original authors' closed form gives the CC normaliser.

    Their formula (Gordon-Rodriguez et al. 2020, eq. 6) in float32, with
    λ = softmax(z): C(λ)^-1 = Σ_k λ_k / Π_{i≠k} (z_k − z_i). A row counts as
    usable when it is finite, positive and within 1e-3 (relative, in the log)
    of the exact value exp(A(z) − logsumexp(z)) from ``keras_cc``; elsewhere
    (near ties, many classes) it cancels catastrophically or overflows.
    """
    z = ops.cast(logits, "float32")
    num_classes = z.shape[-1]
    gaps = z[..., :, None] - z[..., None, :]  # (..., k, i): z_k - z_i
    off_diagonal = ops.cast(1.0 - ops.eye(num_classes), "bool")
    products = ops.prod(ops.where(off_diagonal, gaps, 1.0), axis=-1)
    inverse_normaliser = ops.sum(ops.softmax(z, axis=-1) / products, axis=-1)
    exact = keras_cc.ops.cc_log_partition(z) - ops.logsumexp(z, axis=-1)
    with_positive = ops.where(inverse_normaliser > 0, inverse_normaliser, 1.0)
    error = ops.abs(ops.log(with_positive) - exact)
    usable = (
        ops.isfinite(inverse_normaliser)
        & (inverse_normaliser > 0)
        & (error <= 1e-3 * (1.0 + ops.abs(exact)))
    )
    return ops.stop_gradient(usable)


def fallback_crossentropy(y_true, y_pred):
    """The authors' CC-LS as published: CC where their closed form works,
    cross-entropy on the same (smoothed) target on every other row.

    The CC rows use ``keras_cc``'s exact value and gradient (their closed form
    decides only *which* rows get the CC), so the difference from our CC-LS is
    the fallback alone.
    """
    usable = closed_form_usable(y_pred)
    cc = keras_cc.losses.continuous_categorical_crossentropy(
        y_true, y_pred, from_logits=True, validate_targets=False
    )
    ce = keras.losses.categorical_crossentropy(y_true, y_pred, from_logits=True)
    return ops.where(usable, cc, ops.cast(ce, cc.dtype))


@keras.saving.register_keras_serializable(package="keras_cc_examples")
class FallbackCrossentropy(keras.losses.Loss):
    """:func:`fallback_crossentropy` as a Keras loss (logits in)."""

    def call(self, y_true, y_pred):
        return fallback_crossentropy(y_true, y_pred)


def closed_form_usable_fraction(y_true, y_pred):
    """Per-example 1/0: whether the fallback loss used the CC on this row."""
    return ops.cast(closed_form_usable(y_pred), "float32")


CC_LOSSES: tuple[str, ...] = ("cc", "rcc", "cc-mean", "cc-fallback")
# Losses whose CC is parameterised by its mean: softmax(logits) *is* the CC
# mean, which puts the CC-LS optimum at label smoothing's logit gaps.
MEAN_PARAMETERISED: tuple[str, ...] = ("cc-mean",)


def make_loss(loss: str, logit_scale: float = 1.0) -> keras.losses.Loss:
    """The Keras loss of each method; targets are prepared by the data pipeline.

    xe, ls and rls are all cross-entropy (they differ in their targets); cc and
    rcc are the continuous-categorical negative log-likelihood of the same
    targets, cc-mean the same likelihood under the mean parameterisation (the
    CC whose mean is softmax(logits)), and cc-fallback the authors' mixture
    of CC and cross-entropy. Smoothing is done in the pipeline
    (``label_smoothing=0`` here), so the randomised variants can share the
    code path. ``logit_scale`` multiplies the logits the loss sees
    (``keras_cc``'s ``logit_scale`` for the CC; the same factor for
    cross-entropy, for a like-for-like comparison).
    """
    name = f"{loss.replace('-', '_')}_loss"
    if loss in ("xe", "ls", "rls"):
        if logit_scale == 1.0:
            return keras.losses.CategoricalCrossentropy(from_logits=True, name=name)
        return ScaledCrossentropy(logit_scale, name=name)
    if loss in ("cc", "rcc"):
        return keras_cc.losses.ContinuousCategoricalCrossentropy(
            from_logits=True, logit_scale=logit_scale, name=name
        )
    if loss == "cc-mean":
        if logit_scale != 1.0:
            raise ValueError(
                "cc-mean takes no logit scale: its optimum already sits at "
                "label smoothing's logit gaps."
            )
        return keras_cc.losses.ContinuousCategoricalCrossentropy(
            from_logits=True, parameterization="mean", name=name
        )
    if loss == "cc-fallback":
        if logit_scale != 1.0:
            raise ValueError("cc-fallback is the authors' loss: no logit scale.")
        return FallbackCrossentropy(name=name)
    raise ValueError(f"Unknown loss {loss!r}.")


@keras.saving.register_keras_serializable(package="keras_cc_examples")
class SkipNonFiniteOptimizer(keras.optimizers.LossScaleOptimizer):
    """Wraps an optimizer; a step whose gradient has a NaN/Inf is skipped.

    Skipped means: no weight update and no change to the inner optimizer's
    state (Adam moments, iteration count), as in the paper. This reuses
    ``LossScaleOptimizer``'s machinery because it already implements "check
    all gradients finite, then apply or not" on every backend (TF with
    tf.distribute, JAX stateless, torch), which a hand-written train_step would
    have to duplicate per backend. The loss is not scaled (scale fixed at 1),
    and the counter variable counts the skipped steps instead.
    """

    def __init__(
        self,
        inner_optimizer: keras.optimizers.Optimizer,
        name: str | None = None,
        **kwargs,
    ):
        # from_config passes these back; the wrapper never rescales.
        kwargs.pop("initial_scale", None)
        kwargs.pop("dynamic_growth_steps", None)
        super().__init__(
            inner_optimizer,
            initial_scale=1.0,
            dynamic_growth_steps=2**30,
            name=name,
            **kwargs,
        )

    @property
    def skipped_steps(self):
        """Number of skipped steps so far (a backend variable)."""
        return self.step_counter

    def scale_loss(self, loss):
        return loss

    def _stateful_handle_finite_grads(self, grads, trainable_variables):
        self.inner_optimizer.apply(grads, trainable_variables=trainable_variables)

    def _stateful_handle_non_finite_grads(self):
        self.step_counter.assign_add(1)

    def _stateless_handle_finite_grads(
        self, optimizer_variables, grads, trainable_variables
    ):
        mapping = list(zip(self.variables, optimizer_variables, strict=True))
        with keras.StatelessScope(state_mapping=mapping) as scope:
            own = [scope.get_current_value(v) for v in self._variables]
            new_trainable, new_inner = self.inner_optimizer.stateless_apply(
                self.inner_optimizer.variables, grads, trainable_variables
            )
        return new_trainable, own + list(new_inner)

    def _stateless_handle_non_finite_grads(
        self, optimizer_variables, trainable_variables
    ):
        mapping = list(zip(self.variables, optimizer_variables, strict=True))
        with keras.StatelessScope(state_mapping=mapping) as scope:
            self.step_counter.assign_add(1)
        return trainable_variables, [scope.get_current_value(v) for v in self.variables]

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "inner_optimizer": keras.saving.serialize_keras_object(
                self.inner_optimizer
            ),
        }


def make_optimizer(learning_rate: float = 1e-3) -> SkipNonFiniteOptimizer:
    """Adam (the paper's 1e-3) behind the non-finite-gradient guard."""
    return SkipNonFiniteOptimizer(keras.optimizers.Adam(learning_rate))


def penultimate_model(model: keras.Model) -> keras.Model:
    """The sub-network from the input to the Flatten output (the features)."""
    return keras.Model(model.inputs, model.get_layer(PENULTIMATE).output)


def cc_mean_readout(loss: str):
    """The map from a CC loss's (scaled) logits to the model's CC mean.

    ``keras_cc.ops.cc_mean`` under the natural parameterisation; for a
    mean-parameterised loss the softmax of the logits is the mean itself.
    """
    if loss in MEAN_PARAMETERISED:
        return ops.softmax
    return keras_cc.ops.cc_mean


def skipped_steps(model: keras.Model) -> int:
    """Skipped-step count of a model compiled with :func:`make_optimizer`."""
    opt = model.optimizer
    if isinstance(opt, SkipNonFiniteOptimizer) and opt.built:
        return int(ops.convert_to_numpy(opt.skipped_steps))
    return 0


def logit_scale(model: keras.Model, loss_scale: float) -> float:
    """The factor between the model's raw logits and the loss's: the loss's
    constant times a learned temperature, if the model has one."""
    for layer in model.layers:
        if isinstance(layer, LearnedLogitScale):
            return loss_scale * math.exp(float(ops.convert_to_numpy(layer.log_scale)))
    return loss_scale
