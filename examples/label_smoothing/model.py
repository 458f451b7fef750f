"""The paper's CNN, the five losses, and a step-skipping optimizer wrapper.

Import this module only after the Keras backend has been chosen.
"""

from __future__ import annotations

import keras
from keras import layers, ops

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
    x = layers.Flatten(name=PENULTIMATE)(x)
    regularizer = keras.regularizers.L2(weight_decay) if weight_decay > 0 else None
    logits = layers.Dense(num_classes, kernel_regularizer=regularizer, name="logits")(x)
    return keras.Model(inputs, logits, name="paper_cnn")


def make_loss(loss: str) -> keras.losses.Loss:
    """The Keras loss of each method; targets are prepared by the data pipeline.

    xe, ls and rls are all cross-entropy (they differ in their targets); cc and
    rcc are the continuous-categorical negative log-likelihood of the same
    targets. Smoothing is done in the pipeline (``label_smoothing=0`` here), so
    the randomised variants can share the code path.
    """
    if loss in ("xe", "ls", "rls"):
        return keras.losses.CategoricalCrossentropy(
            from_logits=True, name=f"{loss}_loss"
        )
    if loss in ("cc", "rcc"):
        from keras_cc.losses import ContinuousCategoricalCrossentropy

        return ContinuousCategoricalCrossentropy(from_logits=True, name=f"{loss}_loss")
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


def skipped_steps(model: keras.Model) -> int:
    """Skipped-step count of a model compiled with :func:`make_optimizer`."""
    opt = model.optimizer
    if isinstance(opt, SkipNonFiniteOptimizer) and opt.built:
        return int(ops.convert_to_numpy(opt.skipped_steps))
    return 0
