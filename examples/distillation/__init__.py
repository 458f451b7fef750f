"""Knowledge distillation with the continuous categorical (CC-KD vs Hinton KD).

A CNN teacher (the MNIST-1D CNN of ``examples.label_smoothing``) is distilled
into a small MLP student on MNIST-1D, through ``keras.distillation.Distiller``,
in three ways:

- ``hard``: the student trained on the hard labels only;
- ``hinton``: Hinton et al. (2015): cross-entropy to ``softmax(teacher / T)``
  on the student's logits divided by T, scaled by T², mixed with the
  hard-label cross-entropy;
- ``cc``: CC-KD: the continuous-categorical negative log-likelihood of the
  same soft targets (``keras_cc.losses.ContinuousCategoricalCrossentropy``),
  with the same scaling and mixing
  (``keras_cc.distillation.ContinuousCategoricalDistillation``).

The student sees all the training labels, or (``--label-fraction``) a few of
them and the teacher's soft targets on every training signal.

Modules:
    losses: the distillation losses of each method and the ``Distiller``
        that takes them.
    train: one run (teacher or student), a dataclass config and its CLI.
    study: the grid over temperature x mixing weight x seeds, validation
        selection, the summary tables and the plots.

Importing this package does not import Keras, so the CLIs can pick the
backend before Keras is loaded.
"""

METHODS: tuple[str, ...] = ("hard", "hinton", "cc")
