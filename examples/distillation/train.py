"""One distillation run on MNIST-1D: the teacher, or one student.

The teacher is the MNIST-1D CNN of ``examples.label_smoothing`` (with
BatchNorm), trained with cross-entropy on the hard labels; its weights at
the epoch of best validation accuracy are saved once in ``--teacher-dir``
and reused by every student. A student is a small MLP (MNIST-1D's own
baseline: 40 -> 100 -> 100 -> 10, ReLU) trained with one of the methods
``hard`` (on its own, on the labels), ``hinton`` or ``cc`` (by a
``keras.distillation.Distiller``, see ``examples.distillation.losses``).

With ``--label-fraction f < 1`` the student keeps the labels of a stratified
fraction f of the training signals (the same ones for every seed and
method); the others are marked -1 and left out of the hard-label loss, while
the distillation losses see the teacher's soft targets on every training
signal (the teacher itself was trained on all the labels). Hard labels then
train on the kept labels only.

Every epoch the student is evaluated on the validation and test splits:
accuracy, NLL and ECE of ``softmax(z)``, and agreement with the teacher's
argmax. A run writes ``metrics.csv`` (one row per epoch) and, last,
``result.json`` (the config, the selected epoch's row, the wall time);
a directory with ``result.json`` is a finished run and is skipped.

    python -m examples.distillation.train --method cc --temperature 2 \
        --alpha 0.5 --seed 0 --out runs/distillation/one
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from examples._config import option, parse_config
from examples.distillation import METHODS

MLP_HIDDEN = 100


@dataclass
class Config:
    """Settings of one run; every field is a command-line flag."""

    method: str = option("hinton", "hard, hinton or cc", choices=METHODS)
    temperature: float = option(2.0, "T of the soft targets", above=0)
    alpha: float = option(
        0.5,
        "weight of the hard-label loss (1 - alpha: distillation)",
        at_least=0,
        at_most=1,
    )
    logit_scale: str = option(
        "1",
        'cc only: the CC loss sees logit_scale * z / T; a number, "auto" '
        "(losses.distillation_logit_scale of the teacher's training targets) "
        'or "mean" (no scale: softmax(z / T) is the CC mean, '
        'parameterization="mean")',
        metavar="SCALE",
    )
    label_fraction: float = option(
        1.0,
        "fraction of the training labels the student sees (stratified); "
        "the distillation losses see every training signal",
        above=0,
        at_most=1,
    )
    seed: int = option(0, "student seed")
    epochs: int = option(100, "student epochs", at_least=1)
    batch_size: int = option(100, "MNIST-1D's baseline: 100", at_least=1)
    learning_rate: float = option(1e-2, "Adam", above=0)
    val_fraction: float = option(0.1, "validation split", above=0, below=1)
    limit_train: int = option(0, "use the first N training examples (0: all)")
    teacher_epochs: int = option(100, "teacher epochs", at_least=1)
    teacher_seed: int = option(0, "teacher seed")
    teacher_dir: str = option(
        "runs/distillation/teacher",
        "where the teacher is trained once and then read",
        metavar="DIR",
    )
    out: str = option("runs/distillation/one", "run directory", metavar="DIR")
    verbose: int = option(1, "0: quiet, 1: a line per 10 epochs")

    def run_settings(self) -> dict[str, Any]:
        """The fields that define the student run (not where it is written)."""
        settings = dataclasses.asdict(self)
        for name in ("out", "verbose", "teacher_dir"):
            settings.pop(name)
        return settings


def logit_scale_problems(scales: list[str], flag: str, cc_only: bool) -> list[str]:
    """Each of ``scales`` must be "auto", "mean" or a number > 0 (the words:
    CC-KD only)."""
    problems = []
    for text in scales:
        if text in ("auto", "mean"):
            if cc_only:
                problems.append(f"{flag} auto applies to --method cc only")
            continue
        try:
            ok = 0 < float(text) < math.inf
        except ValueError:
            ok = False
        if not ok:
            problems.append(f"{flag} must be a number > 0, auto or mean; got {text!r}")
    return problems


def run_checks(config: Config) -> list[str]:
    return logit_scale_problems(
        [config.logit_scale], "--logit-scale", cc_only=config.method != "cc"
    )


def parse_args(argv: list[str] | None = None) -> Config:
    """The command line as a checked :class:`Config`."""
    return parse_config(Config, None, argv, __doc__, run_checks)


def load_data(val_fraction: float, limit_train: int = 0):
    """MNIST-1D as the label-smoothing study prepares it: the same loader,
    validation split and standardisation."""
    from examples.label_smoothing.data import prepare_data

    return prepare_data("mnist1d", val_fraction=val_fraction, limit_train=limit_train)


def build_student(input_shape: tuple[int, ...], num_classes: int):
    """MNIST-1D's MLP baseline: Flatten, Dense(100) ReLU x 2, Dense(K) logits."""
    import keras

    inputs = keras.Input(shape=input_shape, name="signal")
    x = keras.layers.Flatten()(inputs)
    for i in (1, 2):
        x = keras.layers.Dense(MLP_HIDDEN, activation="relu", name=f"hidden{i}")(x)
    logits = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, logits, name="mlp_student")


def logits_of(model, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """The model's logits in inference mode, float64 NumPy."""
    import keras

    parts = [
        keras.ops.convert_to_numpy(model(x[i : i + batch_size], training=False))
        for i in range(0, len(x), batch_size)
    ]
    return np.concatenate(parts).astype(np.float64)


def evaluate(
    logits: np.ndarray, labels: np.ndarray, teacher_logits: np.ndarray | None
) -> dict[str, float]:
    """Accuracy, NLL and ECE of softmax(logits), and agreement with the
    teacher's argmax (when ``teacher_logits`` is given)."""
    from examples.label_smoothing.calibration import (
        expected_calibration_error,
        negative_log_likelihood,
        softmax,
    )

    probs = softmax(logits)
    predicted = logits.argmax(axis=-1)
    scores = {
        "accuracy": float(np.mean(predicted == labels)),
        "nll": negative_log_likelihood(probs, labels),
        "ece": expected_calibration_error(probs, labels),
    }
    if teacher_logits is not None:
        agree = predicted == teacher_logits.argmax(axis=-1)
        scores["agreement"] = float(np.mean(agree))
    return scores


class EpochRecorder:
    """A Keras callback factory: evaluates the student on validation and test
    after every epoch and collects one row per epoch."""

    def __init__(
        self,
        model,
        data,
        teacher_logits: dict[str, np.ndarray] | None,
        log_every: int,
    ):
        import keras

        recorder = self

        class _Callback(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                recorder.record(epoch + 1, logs or {})

        self.callback = _Callback()
        self.model = model
        self.splits = {
            "val": (data.x_val, data.y_val),
            "test": (data.x_test, data.y_test),
        }
        self.teacher_logits = teacher_logits or {}
        self.log_every = log_every
        self.rows: list[dict[str, float]] = []
        self.start = time.monotonic()

    def record(self, epoch: int, logs: dict[str, float]) -> None:
        row: dict[str, float] = {
            "epoch": epoch,
            "loss": float(logs.get("loss", float("nan"))),
            "accuracy": float(logs.get("accuracy", float("nan"))),
        }
        for split, (x, y) in self.splits.items():
            logits = logits_of(self.model, x)
            scores = evaluate(logits, y, self.teacher_logits.get(split))
            row.update({f"{split}_{k}": v for k, v in scores.items()})
        self.rows.append(row)
        if self.log_every and epoch % self.log_every == 0:
            print(
                f"  epoch {epoch:4d}  loss {row['loss']:.4f}  "
                f"val {100 * row['val_accuracy']:.1f}%  "
                f"test {100 * row['test_accuracy']:.1f}%  "
                f"({time.monotonic() - self.start:.0f} s)",
                flush=True,
            )


def select_epoch(rows: list[dict[str, float]]) -> dict[str, float]:
    """The row of best validation accuracy (the earliest, on ties)."""
    from examples.label_smoothing.ablation import select_epoch as select

    return select(rows)


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write rows (same keys) as CSV, atomically."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def is_finished(run_dir: Path) -> bool:
    return (Path(run_dir) / "result.json").is_file()


def teacher_model(config: Config, data):
    """The trained teacher: loaded from ``teacher_dir``, or trained there once.

    The MNIST-1D CNN with BatchNorm (the best cross-entropy network of the
    label-smoothing study), Adam, hard labels; the weights of the epoch with
    the best validation accuracy are kept.
    """
    import keras

    from examples.label_smoothing.model import build_mnist1d_cnn

    directory = Path(config.teacher_dir)
    weights = directory / "teacher.weights.h5"
    model = build_mnist1d_cnn(
        data.input_shape, data.num_classes, batch_norm=True, dropout=False,
        weight_decay=0.0,
    )  # fmt: skip
    if (directory / "result.json").is_file() and weights.is_file():
        model.load_weights(weights)
        return model
    directory.mkdir(parents=True, exist_ok=True)
    if config.verbose:
        print(f"training the teacher ({config.teacher_epochs} epochs)", flush=True)
    keras.utils.set_random_seed(config.teacher_seed)
    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    recorder = EpochRecorder(model, data, None, 10 * config.verbose)
    best = {"val_accuracy": -1.0}

    class KeepBest(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            row = recorder.rows[-1]
            if row["val_accuracy"] > best["val_accuracy"]:
                best.update(row)
                model.save_weights(weights)

    start = time.monotonic()
    model.fit(
        data.x_train,
        data.y_train,
        batch_size=config.batch_size,
        epochs=config.teacher_epochs,
        callbacks=[recorder.callback, KeepBest()],
        verbose=0,
    )
    write_csv(directory / "metrics.csv", recorder.rows)
    model.load_weights(weights)
    write_json(
        directory / "result.json",
        {
            "selected": best,
            "seed": config.teacher_seed,
            "epochs": config.teacher_epochs,
            "learning_rate": config.learning_rate,
            "batch_size": config.batch_size,
            "wall_s": time.monotonic() - start,
        },
    )
    return model


def resolve_logit_scale(config: Config, teacher_train_logits: np.ndarray) -> float:
    """The number behind ``--logit-scale`` (``auto`` reads the teacher;
    ``mean`` has no scale)."""
    from examples.distillation.losses import distillation_logit_scale, soft_targets

    if config.logit_scale == "mean":
        return 1.0
    if config.logit_scale == "auto":
        if config.method != "cc":
            raise ValueError("--logit-scale auto applies to --method cc only.")
        targets = soft_targets(teacher_train_logits, config.temperature)
        return distillation_logit_scale(targets)
    scale = float(config.logit_scale)
    if not scale > 0:
        raise ValueError(f"--logit-scale must be > 0 or auto; got {scale}.")
    return scale


def hide_labels(labels: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """``labels`` with all but a stratified ``fraction`` of each class set to
    -1 (at least one per class), the kept ones drawn with ``seed``: the same
    for every student seed and method."""
    labels = np.asarray(labels)
    if fraction >= 1.0:
        return labels.copy()
    rng = np.random.default_rng(seed)
    kept = np.full_like(labels, -1)
    for k in np.unique(labels):
        members = np.flatnonzero(labels == k)
        n = max(1, round(fraction * len(members)))
        chosen = rng.choice(members, size=n, replace=False)
        kept[chosen] = k
    return kept


def run(config: Config, data=None) -> dict[str, Any]:
    """Train one student (and the teacher first, if it is not there yet).

    Returns the run's ``result.json`` payload; a finished run is not redone.
    """
    import keras

    from examples.distillation.losses import make_distiller

    out = Path(config.out)
    if is_finished(out):
        return json.loads((out / "result.json").read_text())
    out.mkdir(parents=True, exist_ok=True)
    if data is None:
        data = load_data(config.val_fraction, config.limit_train)
    teacher = teacher_model(config, data)
    teacher_logits = {
        "val": logits_of(teacher, data.x_val),
        "test": logits_of(teacher, data.x_test),
    }
    scale = resolve_logit_scale(config, logits_of(teacher, data.x_train))
    start = time.monotonic()
    labels = hide_labels(data.y_train, config.label_fraction)
    keras.utils.set_random_seed(config.seed)
    student = build_student(data.input_shape, data.num_classes)
    # Hard labels train the student itself; the others a Distiller around it
    # (the teacher is frozen by it). Labels hidden as -1 are left out of the
    # hard-label loss, averaged over the labelled examples of a batch.
    model = student
    if config.method != "hard":
        model = make_distiller(
            config.method,
            teacher,
            student,
            alpha=config.alpha,
            temperature=config.temperature,
            logit_scale=scale,
            parameterization="mean" if config.logit_scale == "mean" else "natural",
        )
    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, ignore_class=-1
        ),
        # Training accuracy would count the hidden labels as errors.
        metrics=["accuracy"] if config.label_fraction == 1.0 else None,
    )
    recorder = EpochRecorder(student, data, teacher_logits, 10 * config.verbose)
    if config.verbose:
        print(f"{out}: {config.run_settings()} (logit scale {scale:.4g})", flush=True)
    model.fit(
        data.x_train,
        labels,
        batch_size=config.batch_size,
        epochs=config.epochs,
        callbacks=[recorder.callback],
        verbose=0,
    )
    write_csv(out / "metrics.csv", recorder.rows)
    result = {
        "config": config.run_settings(),
        "resolved_logit_scale": scale,
        "selected": select_epoch(recorder.rows),
        "last": recorder.rows[-1],
        "wall_s": time.monotonic() - start,
        "backend": keras.backend.backend(),
    }
    write_json(out / "result.json", result)
    return result


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    config = parse_args(argv)
    result = run(config)
    selected = result["selected"]
    print(
        f"selected epoch {int(selected['epoch'])}: "
        f"val {100 * selected['val_accuracy']:.1f}%, "
        f"test {100 * selected['test_accuracy']:.1f}%, "
        f"agreement {100 * selected['test_agreement']:.1f}%"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
