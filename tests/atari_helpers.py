"""Helpers shared by the Atari and MinAtar tests of examples/atari.

``reference_amn_loss``: the actor-mimic loss written out in NumPy. Target
y = softmax(Q / T) from the expert's Q-values; the student's gathered logits
z (already divided by T) are fitted by cross-entropy (AMN) or by the
continuous-categorical negative log-likelihood (CC-AMN).

``kill_once_printed``: a training run killed mid-way, for the resume tests.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np


def reference_amn_loss(z: np.ndarray, q: np.ndarray, loss: str) -> float:
    """Mean loss over the batch; ``z`` and ``q`` are divided by T already."""
    from keras_cc.ops import cc_log_partition

    y = np.exp(q - q.max(1, keepdims=True))
    y /= y.sum(1, keepdims=True)
    if loss == "xe":
        log_p = z - z.max(1, keepdims=True)
        log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
        return float(-(y * log_p).sum(1).mean())
    log_a = np.asarray(cc_log_partition(z.astype(np.float32)), np.float64)
    return float((log_a - (y * z).sum(1)).mean())


def kill_once_printed(cmd: list[str], cwd: Path, marker: str, timeout: float) -> bool:
    """Run ``cmd`` and SIGKILL it as soon as a line of its output contains
    ``marker``, or after ``timeout`` seconds; whether it printed ``marker``."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    deadline = time.time() + timeout
    reached = False
    try:
        for line in proc.stdout:
            reached = marker in line
            if reached or time.time() > deadline:
                break
    finally:  # killed at once: a fast machine must not finish the run first
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    return reached
