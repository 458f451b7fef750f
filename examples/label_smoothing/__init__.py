"""Label-smoothing study (XE vs LS vs CC-LS) with keras_cc.

Case 1 of "Uses and Abuses of the Cross-Entropy Loss" (Gordon-Rodriguez et
al., 2020; settings in docs/paper_settings.md): a small CNN trained with
plain cross-entropy (XE), cross-entropy on label-smoothed targets (LS) and
the continuous-categorical likelihood of the same targets (CC; also under
its mean parameterisation, cc-mean), plus the randomised variants RLS and RCC
and the original authors' fallback, on MNIST-1D, scikit-learn digits, pairs
of digits (100 classes) or CIFAR-10.

Modules:
    data: MNIST-1D (generated locally), CIFAR-10 (Keras loader or a local
        binary directory), scikit-learn digits and pairs of them, the
        validation split, standardisation, and the target transforms of each
        loss.
    model: the CNNs (MNIST-1D's and the paper's), an MLP, the losses, and an
        optimizer wrapper that skips steps with a non-finite gradient.
    calibration: NLL, expected calibration error and reliability bins.
    train: the CLI for one run (resumable, one CSV per run).
    ablation: the CLI for the grid, the summary table and the plots.
    robustness: the suite of (dataset, model, dropout, learning rate, alpha)
        cells comparing soft-target losses with LS, its table and curves.

Importing this package does not import Keras, so that the CLIs can choose the
backend (``--backend``) before Keras is loaded. It quiets TensorFlow's C++
start-up log (``TF_CPP_MIN_LOG_LEVEL=2`` unless already set), which otherwise
prints CUDA-initialisation notices on machines without a GPU.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

LOSSES: tuple[str, ...] = ("xe", "ls", "cc", "rls", "rcc", "cc-mean", "cc-fallback")
# The networks of --model: "cnn" is the dataset's CNN (MNIST-1D's for
# signals, the paper's for images), "mlp" a two-hidden-layer MLP.
MODELS: tuple[str, ...] = ("cnn", "mlp")
