"""Actor-mimic (case 2 of Gordon-Rodriguez et al., 2020) with keras_cc.

Per-game DQN experts, then one student network that imitates them with
cross-entropy (AMN) or the continuous-categorical likelihood (CC-AMN), on
Atari (ale-py) or MinAtar (the optional, GPL-licensed ``minatar`` package).

Modules (run each CLI with ``python -m examples.atari.<module> --help``):
    common: what the expert and the student share: the Atari family, the
        environment families, replays, compiled update, evaluation, logging,
        checkpoints.
    dqn: the DQN expert for one game.
    minatar_env: the MinAtar family (vector env, network, action sets).
    actor_mimic: the AMN / CC-AMN student, one game or several.
    minatar_study: the MinAtar study (experts, then students over seeds),
        resumable, with its tables and plots.
    plot: reward curves and non-finite loss counts from run directories.

Importing this package does not import Keras, so that the CLIs can choose the
backend (``KERAS_BACKEND``) before Keras is loaded. It quiets TensorFlow's C++
start-up log (``TF_CPP_MIN_LOG_LEVEL=2`` unless already set), which otherwise
prints CUDA-initialisation notices on machines without a GPU.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
