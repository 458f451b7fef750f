"""CIFAR-10 label-smoothing study (XE vs LS vs CC-LS) with keras_cc.

Case 1 of "Uses and Abuses of the Cross-Entropy Loss" (Gordon-Rodriguez et
al., 2020): a small CNN trained with plain cross-entropy (XE), cross-entropy on
label-smoothed targets (LS) and the continuous-categorical likelihood of the
same targets (CC), plus the randomised variants RLS and RCC.

Modules:
    data: CIFAR-10 (Keras loader or a local binary directory) and scikit-learn
        digits, standardisation, and the target transforms of each loss.
    model: the paper's CNN, the losses, and an optimizer wrapper that skips
        steps with a non-finite gradient.
    train: the CLI for one run (resumable, one CSV per run).
    ablation: the CLI for the grid, the summary table and the plots.

Importing this package does not import Keras, so that the CLIs can choose the
backend (``--backend``) before Keras is loaded.
"""

LOSSES: tuple[str, ...] = ("xe", "ls", "cc", "rls", "rcc", "cc-fallback")
