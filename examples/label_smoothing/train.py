"""Train the paper's CNN once with one loss; resumable, one CSV per run.

Usage (from the repository root; ``python examples/label_smoothing/train.py``
is the same command):

    python -m examples.label_smoothing.train --dataset digits --loss cc \
        --epochs 30 --out runs/demo/cc

    python -m examples.label_smoothing.train --preset paper --loss cc \
        --no-batch-norm --no-dropout --weight-decay 0 --seed 0 --out runs/cifar/cc_s0

    python -m examples.label_smoothing.train --dataset digit-pairs --model mlp \
        --loss ls --no-dropout --no-batch-norm --out runs/pairs/ls

The run directory holds ``config.json``, ``metrics.csv`` (one row per epoch,
flushed as soon as the epoch ends), the checkpoint
(``ckpt-<epoch>.weights.h5``: weights and optimizer state, named by
``state.json``) and, when complete, ``"finished": true`` in ``state.json``.
Running the same command again resumes from the last finished epoch, or does
nothing if the run is complete.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

if __name__ == "__main__" and not __package__:
    # Run as a file: become `python -m examples.label_smoothing.train`, with
    # the repository root importable for it; nothing of the package is
    # imported in this process.
    _path = (str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH"))
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in _path if p)
    _argv = ["-m", "examples.label_smoothing.train", *sys.argv[1:]]
    os.execv(sys.executable, [sys.executable, *_argv])

from examples._config import option, parse_config
from examples._run_lock import RunLock
from examples.label_smoothing import LOSSES, MODELS
from examples.label_smoothing.data import (
    DATASETS,
    DIGIT_PAIRS_PER_CLASS,
    DIGIT_PAIRS_TEST_PER_CLASS,
)

CSV_FIELDS: tuple[str, ...] = (
    "epoch",
    "loss",
    "nll",
    "accuracy",
    "cc_rows",
    "logit_scale",
    *(
        f"{split}_{metric}"
        for split in ("val", "test")
        for metric in ("loss", "accuracy", "nll", "ece", "ccmean_nll", "ccmean_ece")
    ),
    "skipped_steps",
    "seconds",
)
# Options whose change would make a resumed run a different experiment.
_RUN_IDENTITY: tuple[str, ...] = (
    "dataset",
    "data_dir",
    "digits_size",
    "pairs_per_class",
    "val_fraction",
    "model",
    "loss",
    "alpha",
    "logit_scale",
    "learn_logit_scale",
    "weight_decay",
    "dropout",
    "batch_norm",
    "batch_size",
    "lr",
    "seed",
    "rotation",
    "shift",
    "flip",
    "limit_train",
    "limit_test",
)
# Options added to the run identity after runs had been recorded: an older
# config.json without them meant these values.
_IDENTITY_BEFORE_RECORDED: dict[str, Any] = {
    "model": "cnn",
    "pairs_per_class": DIGIT_PAIRS_PER_CLASS,
}
PRESETS: dict[str, dict[str, Any]] = {
    # The paper's CIFAR-10 protocol (Gordon-Rodriguez et al. 2020, case 1).
    "paper": {
        "dataset": "cifar10",
        "epochs": 500,
        "alpha": 0.1,
        "batch_size": 128,
        "lr": 1e-3,
    },
}
# Paper augmentation; horizontal flips are off for digits, where a mirrored
# digit is a different (or no) digit.
AUGMENT_DEFAULTS: dict[str, dict[str, Any]] = {
    "cifar10": {"rotation": 15.0, "shift": 0.1, "flip": True},
    "digits": {"rotation": 15.0, "shift": 0.1, "flip": False},
    # Signals: the image augmentations do not apply.
    "mnist1d": {"rotation": 0.0, "shift": 0.0, "flip": False},
    # None: the pairs are a fixed, finite sample (a comparison of losses on
    # it needs no augmentation axis), and a flip would swap the digits.
    "digit-pairs": {"rotation": 0.0, "shift": 0.0, "flip": False},
}
BACKENDS: tuple[str, ...] = ("tensorflow", "jax")
DESCRIPTION = (
    "Train the CNN of Gordon-Rodriguez et al. (2020, case 1) with one loss. "
    "Losses: xe = cross-entropy on one-hot labels; ls = cross-entropy on "
    "y_LS = (1-alpha)*onehot + alpha/K; cc = keras_cc continuous-categorical "
    "NLL of y_LS; cc-mean = the same NLL with the CC parameterised by its mean "
    "softmax(logits); rls/rcc = the same as ls/cc with y = (1-alpha)*onehot + "
    "alpha*u, u ~ Dirichlet(1) drawn per example and batch; cc-fallback = the "
    "original authors' CC with a cross-entropy fallback. Steps with a "
    "non-finite gradient are skipped."
)


def logit_scale_from_text(text: str) -> float | str:
    """``--logit-scale``: 'auto' or a number (its sign is checked later)."""
    if text == "auto":
        return "auto"
    try:
        return float(text)
    except ValueError:
        raise ValueError(
            f"--logit-scale must be 'auto' or a number > 0; got {text!r}"
        ) from None


# The headings of --help.
_DATA = "data"
_NETWORK = "network"
_LOSS = "loss and targets"
_REGULARISATION = "regularisation (the ablation axes)"
_AUGMENTATION = (
    "augmentation (default: the paper's; no flips on digits, none on mnist1d)"
)
_OPTIMISATION = "optimisation"
_EXECUTION = "execution"


@dataclasses.dataclass(kw_only=True)
class TrainConfig:
    """Settings of one run; every field is a command-line flag."""

    out: str = option(help="run directory (created; resumed)", metavar="DIR")
    dataset: str = option("cifar10", choices=DATASETS, group=_DATA)
    data_dir: str | None = option(
        None,
        "cifar10 only: a directory with the CIFAR-10 binary files "
        "(data_batch_*.bin, test_batch.bin), read offline, or else the "
        "tensorflow-datasets data_dir (tfds.load('cifar10'), downloaded "
        "there once); default: keras.datasets download",
        metavar="DIR",
        group=_DATA,
    )
    digits_size: int = option(
        16,
        "digits only: bilinear upsampling of the 8x8 images to this size",
        at_least=8,
        group=_DATA,
    )
    pairs_per_class: int = option(
        DIGIT_PAIRS_PER_CLASS,
        "digit-pairs only: training + validation pairs per class (the 100 "
        "classes are 10a + b, digit a left of digit b; the test set has "
        f"{DIGIT_PAIRS_TEST_PER_CLASS} pairs per class, of held-out digit images)",
        at_least=2,
        group=_DATA,
    )
    val_fraction: float = option(
        0.1,
        "stratified share of the training set held out for validation "
        "(the same split for every run); epochs are selected on it",
        above=0,
        below=1,
        group=_DATA,
    )
    limit_train: int | None = option(
        None, "use the first N training images", at_least=1, group=_DATA
    )
    limit_test: int | None = option(
        None, "use the first N test images", at_least=1, group=_DATA
    )
    model: str = option(
        "cnn",
        "cnn: the dataset's CNN (MNIST-1D's for signals, the paper's for "
        "images); mlp: Flatten, Dense 256 ReLU x 2, Dense K",
        choices=MODELS,
        group=_NETWORK,
    )
    loss: str = option(
        help="the loss (see the description above)",
        choices=LOSSES,
        group=_LOSS,
    )
    alpha: float = option(
        0.1,
        "smoothing mass (ignored by xe)",
        at_least=0,
        below=1,
        group=_LOSS,
    )
    logit_scale: float | str = option(
        1.0,
        "the loss sees logit_scale * logits (keras_cc's logit_scale for the "
        "CC; the same factor for cross-entropy); a number, or 'auto' for "
        "keras_cc.losses.label_smoothing_logit_scale(K, alpha)",
        parse=logit_scale_from_text,
        metavar="SCALE",
        group=_LOSS,
    )
    learn_logit_scale: bool = option(
        False,
        "make the scale a trainable temperature (initialised at "
        "--logit-scale) instead of a constant",
        group=_LOSS,
    )
    weight_decay: float = option(
        0.0,
        "L2 coefficient on the final Dense kernel (paper: 0 or 1e-4)",
        at_least=0,
        group=_REGULARISATION,
    )
    dropout: bool = option(
        True,
        "dropout 0.2/0.3/0.4 after the three blocks (mlp: 0.2/0.3 after its two)",
        group=_REGULARISATION,
    )
    batch_norm: bool = option(True, "BatchNorm after every ELU", group=_REGULARISATION)
    # None: the dataset's default (AUGMENT_DEFAULTS), filled in by parse_args.
    rotation: float | None = option(
        None, "max rotation in degrees", at_least=0, at_most=180, group=_AUGMENTATION
    )
    shift: float | None = option(
        None,
        "max width/height shift (fraction)",
        at_least=0,
        below=1,
        group=_AUGMENTATION,
    )
    flip: bool | None = option(None, "horizontal flips", group=_AUGMENTATION)
    augment: bool = option(
        True,
        "augmentation (--no-augment: none at all, whatever the flags above say)",
        group=_AUGMENTATION,
    )
    epochs: int = option(30, at_least=1, group=_OPTIMISATION)
    batch_size: int = option(128, "global batch", at_least=1, group=_OPTIMISATION)
    lr: float = option(1e-3, "Adam learning rate", above=0, group=_OPTIMISATION)
    seed: int = option(0, "weights, shuffling, augmentation", group=_OPTIMISATION)
    backend: str | None = option(
        None,
        "Keras backend (sets KERAS_BACKEND); default: the configured one",
        choices=BACKENDS,
        group=_EXECUTION,
    )
    distribute: bool = option(
        False,
        "data parallel over all local devices: tf.distribute.MirroredStrategy "
        "on TensorFlow, keras.distribution.DataParallel on JAX",
        group=_EXECUTION,
    )
    jit_compile: str = option(
        "auto",
        "XLA compilation of the train step (Keras' 'auto': on where the "
        "backend supports it); 'off' compiles faster, for tiny smoke runs",
        choices=("auto", "on", "off"),
        group=_EXECUTION,
    )
    run_eagerly: bool = option(
        False,
        "run the train step and the evaluation op by op, as Keras' "
        "run_eagerly=True (no tracing: for debugging and tiny smoke runs, "
        "where tracing the CC takes longer than the run)",
        group=_EXECUTION,
    )
    threads: int = option(
        0,
        "TensorFlow intra-op threads (0: all cores); 1 when running several "
        "runs side by side",
        group=_EXECUTION,
    )
    verbose: int = option(
        1,
        "Keras fit verbosity: 1 progress bar, 2 one line per epoch",
        choices=(0, 1, 2),
        group=_EXECUTION,
    )
    # For the tests: stop this invocation after N more epochs, as an
    # interruption would; the next invocation resumes.
    stop_after: int | None = option(None, at_least=1, hidden=True)


def augmentation(cfg: TrainConfig) -> dict[str, Any]:
    """Rotation, shift and flip of the run: the flags, else the dataset's."""
    if not cfg.augment:
        return {"rotation": 0.0, "shift": 0.0, "flip": False}
    given = {"rotation": cfg.rotation, "shift": cfg.shift, "flip": cfg.flip}
    defaults = AUGMENT_DEFAULTS[cfg.dataset]
    return {k: defaults[k] if v is None else v for k, v in given.items()}


def train_checks(cfg: TrainConfig) -> list[str]:
    """What the bounds of single fields cannot say: how the flags combine."""
    problems = logit_scale_problems(cfg.logit_scale, cfg.loss, cfg.alpha)
    if cfg.data_dir is not None and cfg.dataset != "cifar10":
        problems.append("--data-dir applies to --dataset cifar10 only")
    elif cfg.data_dir is not None and not Path(cfg.data_dir).is_dir():
        problems.append(f"--data-dir {cfg.data_dir} is not a directory")
    if cfg.run_eagerly and cfg.jit_compile == "on":
        problems.append("--run-eagerly and --jit-compile on exclude each other")
    aug = augmentation(cfg)
    if cfg.dataset == "mnist1d" and (aug["rotation"] or aug["shift"] or aug["flip"]):
        problems.append("--rotation, --shift and --flip apply to images, not mnist1d")
    if cfg.dataset == "digit-pairs" and aug["flip"]:
        problems.append(
            "--flip does not apply to digit-pairs: a mirrored pair swaps its digits"
        )
    return problems


def logit_scale_problems(scale: float | str, loss: str, alpha: float) -> list[str]:
    """'auto' needs smoothed targets; a number must be positive and finite."""
    if scale == "auto":
        if loss in ("xe", "cc-fallback", "cc-mean") or not 0.0 < alpha < 1.0:
            return [
                "--logit-scale auto needs smoothed targets (0 < --alpha < 1) and "
                "a loss other than xe, cc-fallback or cc-mean"
            ]
        return []
    if not 0 < float(scale) < float("inf"):
        return [f"--logit-scale must be 'auto' or a number > 0; got {scale}"]
    if loss == "cc-mean" and scale != 1.0:
        return [
            "--logit-scale does not apply to cc-mean: its optimum already sits "
            "at label smoothing's logit gaps"
        ]
    if loss == "cc-fallback" and scale != 1.0:
        return ["--logit-scale applies to every loss but cc-fallback"]
    return []


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    """The command line as a checked config, with the dataset's augmentation."""
    cfg = parse_config(TrainConfig, PRESETS, argv, DESCRIPTION, train_checks)
    return dataclasses.replace(cfg, **augmentation(cfg))


def resolve_logit_scale(logit_scale: float | str, num_classes: int, alpha: float):
    """The number behind ``--logit-scale`` for a dataset of ``num_classes``."""
    if logit_scale == "auto":
        import keras_cc

        return keras_cc.losses.label_smoothing_logit_scale(num_classes, alpha)
    return float(logit_scale)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and a rename, so that a
    reader sees the old or the new file, never half of one."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def run_config(cfg: TrainConfig) -> dict[str, Any]:
    """What ``config.json`` records: the run's identity and its epochs."""
    return {key: getattr(cfg, key) for key in _RUN_IDENTITY} | {"epochs": cfg.epochs}


def read_state(out: Path) -> dict[str, Any]:
    path = out / "state.json"
    return json.loads(path.read_text()) if path.exists() else {"epoch": 0}


def _read_rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _truncate_csv(path: Path, epochs_done: int) -> None:
    """Keep the header and the rows of checkpointed epochs only.

    A row is written before its checkpoint, so after a crash between the two
    the CSV may hold one epoch the checkpoint lacks; that epoch is retrained.
    """
    if not path.exists():
        return
    kept = [r for r in _read_rows(path) if int(r["epoch"]) <= epochs_done]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(kept)


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, then train the run (or resume, or skip it)."""
    return run(parse_args(argv))


def run(cfg: TrainConfig) -> int:
    """Train ``cfg.out`` unless another process has it or it is finished.

    Returns 0 (trained, or nothing to do), 2 (``cfg.out`` holds a run with
    other settings) or :data:`BUSY`.
    """
    if cfg.backend:
        os.environ["KERAS_BACKEND"] = cfg.backend
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)

    config = run_config(cfg)
    config_path = out / "config.json"
    if config_path.exists():
        old = json.loads(config_path.read_text())
        changed = {
            k
            for k in _RUN_IDENTITY
            if old.get(k, _IDENTITY_BEFORE_RECORDED.get(k)) != config.get(k)
        }
        if changed:
            print(
                f"error: {out} holds a run with different settings "
                f"({', '.join(sorted(changed))}); use another --out.",
                file=sys.stderr,
            )
            return 2
    if _already_finished(out, cfg.epochs):
        return 0
    with RunLock(out) as locked:
        if not locked:
            print(f"{out}: being trained by another process; skipped.")
            return BUSY
        # Re-read: the other process may have finished it meanwhile.
        if _already_finished(out, cfg.epochs):
            return 0
        atomic_write_text(config_path, json.dumps(config, indent=2) + "\n")
        train(cfg, out, int(read_state(out)["epoch"]))
    return 0


def _already_finished(out: Path, epochs: int) -> bool:
    """Whether the run is finished (and says so)."""
    state = read_state(out)
    done = bool(state.get("finished")) and state["epoch"] >= epochs
    if done:
        print(f"{out}: finished ({state['epoch']} epochs); nothing to do.")
    return done


# Exit status of a run that another process is training (not a failure).
BUSY = 3


def train(cfg: TrainConfig, out: Path, start_epoch: int) -> None:
    """One run, top to bottom: Keras, data, model, resume, fit (one CSV row
    and one checkpoint per epoch)."""
    import keras

    from examples.label_smoothing import data as data_lib

    backend = _configure_keras(cfg.threads)
    data = data_lib.prepare_data(
        cfg.dataset,
        cfg.data_dir,
        cfg.digits_size,
        cfg.val_fraction,
        cfg.limit_train,
        cfg.limit_test,
        cfg.pairs_per_class,
    )
    # After loading: the MNIST-1D generator reseeds NumPy's global RNG.
    keras.utils.set_random_seed(cfg.seed)
    train_ds, _, _ = data_lib.make_datasets(
        data, cfg.loss, cfg.alpha, cfg.batch_size, cfg.seed, augmentation(cfg)
    )
    _, loss_scale = _logit_scales(cfg, data.num_classes)

    with _distribution_scope(cfg, backend):
        model = _compiled_model(cfg, data)
        if start_epoch:
            steps_per_epoch = len(data.x_train) // cfg.batch_size
            _restore(model, out, start_epoch, steps_per_epoch)
            print(f"{out}: resuming after epoch {start_epoch}/{cfg.epochs}.")
    _truncate_csv(out / "metrics.csv", start_epoch)

    evaluator = Evaluator(data, cfg.loss, cfg.alpha, loss_scale)
    recorder = _epoch_recorder(out, cfg.epochs, cfg.stop_after, start_epoch, evaluator)
    model.fit(
        train_ds,
        initial_epoch=start_epoch,
        epochs=cfg.epochs,
        callbacks=[recorder],
        verbose=cfg.verbose,
    )
    done = read_state(out)
    if done.get("finished"):
        print(f"{out}: finished {done['epoch']} epochs.")


def _configure_keras(threads: int) -> str:
    """Start each run from a clean Keras state; return the backend's name."""
    import warnings

    import keras

    # Our tf.data pipelines shuffle themselves; Keras' notice is noise here.
    warnings.filterwarnings("ignore", message=".*shuffle=True.*")
    backend = keras.backend.backend()
    if backend == "tensorflow" and threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    # Several runs may share a process (ablation --in-process): start each
    # from a clean Keras state (layer names, cached graphs).
    keras.backend.clear_session()
    return backend


def _logit_scales(cfg: TrainConfig, num_classes: int) -> tuple[float, float]:
    """The run's logit scale, and the one its loss applies.

    A learned temperature lives in the model (initialised at the scale), and
    the loss then sees the model's output as it is.
    """
    scale = resolve_logit_scale(cfg.logit_scale, num_classes, cfg.alpha)
    return scale, 1.0 if cfg.learn_logit_scale else scale


def _compiled_model(cfg: TrainConfig, data):
    """The CNN with its loss, metrics and optimizer, ready to fit."""
    import keras

    from examples.label_smoothing import model as model_lib

    scale, loss_scale = _logit_scales(cfg, data.num_classes)
    model = model_lib.build_model(
        data.input_shape,
        data.num_classes,
        batch_norm=cfg.batch_norm,
        dropout=cfg.dropout,
        weight_decay=cfg.weight_decay,
        learned_scale=scale if cfg.learn_logit_scale else None,
        architecture=cfg.model,
    )
    loss = model_lib.make_loss(cfg.loss, loss_scale)
    metrics = [
        keras.metrics.CategoricalAccuracy(name="accuracy"),
        # The data term alone: `loss` also holds the L2 penalty.
        keras.metrics.MeanMetricWrapper(loss.call, name="nll"),
    ]
    if cfg.loss == "cc-fallback":
        metrics.append(
            keras.metrics.MeanMetricWrapper(
                model_lib.closed_form_usable_fraction, name="cc_rows"
            )
        )
    model.compile(
        jit_compile={"auto": "auto", "on": True, "off": False}[cfg.jit_compile],
        run_eagerly=cfg.run_eagerly,
        optimizer=model_lib.make_optimizer(cfg.lr),
        loss=loss,
        metrics=metrics,
    )
    return model


# The batch of the validation and test passes (see Evaluator).
EVAL_BATCH = 256


class Evaluator:
    """Validation and test metrics of a model, from its predicted logits.

    Accuracy, the loss's data term on the split's targets, and the
    calibration of the predicted class probabilities (NLL of the true label
    and 15-bin ECE): ``softmax(s z)`` for every loss and, for the CC losses,
    also the model's CC mean (``cc_mean(s z)``; ``softmax(z)`` under the mean
    parameterisation), where ``s`` is the loss's logit scale. All of it
    comes from one compiled pass (``predict`` of a readout model), so
    evaluating every epoch costs about as much as a fraction of an epoch of
    training. Each split is fed in whole batches of :data:`EVAL_BATCH` (the
    last one filled up with repeats of the first rows, whose outputs are
    dropped): with one batch shape, Keras traces (or compiles) the pass once
    per run rather than once per split and remainder size, and a trace of
    the CC costs seconds.
    """

    def __init__(self, data, loss_name: str, alpha: float, logit_scale: float):
        from examples.label_smoothing import data as data_lib
        from examples.label_smoothing import model as model_lib

        k = data.num_classes
        if loss_name == "xe":
            targets = np.eye(k, dtype=np.float32)
            self.splits = {
                "val": (data.x_val, data.y_val, targets[data.y_val]),
                "test": (data.x_test, data.y_test, targets[data.y_test]),
            }
        else:
            self.splits = {
                split: (x, y, data_lib.smoothed_targets(y, k, alpha))
                for split, x, y in (
                    ("val", data.x_val, data.y_val),
                    ("test", data.x_test, data.y_test),
                )
            }
        self.num_classes = k
        self.logit_scale = logit_scale
        self.with_cc_mean = loss_name in model_lib.CC_LOSSES
        # The model's CC mean as a function of its scaled logits.
        self.cc_mean = model_lib.cc_mean_readout(loss_name)
        self._readout = None

    def _readout_model(self, model):
        """(inputs, targets) -> the logits times the scale, the loss's data
        term per example (the ``nll`` metric of training) and, for the CC,
        the CC mean."""
        import keras

        if self._readout is None or self._readout[0] is not model:
            targets = keras.Input(shape=(self.num_classes,), name="targets")
            scaled = keras.layers.Rescaling(self.logit_scale)(model.output)
            data_term = keras.layers.Lambda(lambda pair: model.loss.call(*pair))(
                [targets, model.output]
            )
            outputs = [scaled, data_term]
            if self.with_cc_mean:
                outputs.append(keras.layers.Lambda(self.cc_mean)(scaled))
            readout = keras.Model([*model.inputs, targets], outputs)
            readout.run_eagerly = model.run_eagerly
            self._readout = (model, readout)
        return self._readout[1]

    def __call__(self, model) -> dict[str, float]:
        from examples.label_smoothing import calibration

        readout = self._readout_model(model)
        row: dict[str, float] = {}
        self.test_predictions: dict[str, np.ndarray] = {}
        for split, (x, labels, targets) in self.splits.items():
            n = len(x)
            rows = np.arange(-(-n // EVAL_BATCH) * EVAL_BATCH) % n
            outputs = readout.predict(
                [x[rows], targets[rows]], batch_size=EVAL_BATCH, verbose=0
            )
            scaled, data_term, *mean = (o[:n] for o in outputs)
            row[f"{split}_loss"] = float(np.mean(data_term, dtype=np.float64))
            probs = calibration.softmax(scaled)
            row[f"{split}_accuracy"] = float(np.mean(probs.argmax(1) == labels))
            row[f"{split}_nll"] = calibration.negative_log_likelihood(probs, labels)
            row[f"{split}_ece"] = calibration.expected_calibration_error(probs, labels)
            if split == "test":
                self.test_predictions = {
                    "probs": probs.astype(np.float32),
                    "labels": labels,
                }
            if mean:
                (mean,) = mean
                if split == "test":
                    self.test_predictions["ccmean"] = mean
                row[f"{split}_ccmean_nll"] = calibration.negative_log_likelihood(
                    mean, labels
                )
                row[f"{split}_ccmean_ece"] = calibration.expected_calibration_error(
                    mean, labels
                )
        return row


def _distribution_scope(cfg: TrainConfig, backend: str):
    """A context in which to build the model: data parallel if --distribute."""
    import contextlib

    if not cfg.distribute:
        return contextlib.nullcontext()
    if backend == "tensorflow":
        import tensorflow as tf

        strategy = tf.distribute.MirroredStrategy()
        replicas = strategy.num_replicas_in_sync
        scope = strategy.scope()
    elif backend == "jax":
        import keras

        distribution = keras.distribution.DataParallel()
        replicas = len(distribution.device_mesh.devices.reshape(-1))
        keras.distribution.set_distribution(distribution)
        scope = contextlib.nullcontext()
    else:
        raise SystemExit(
            f"error: --distribute supports tensorflow and jax, not {backend}."
        )
    if cfg.batch_size % replicas:
        raise SystemExit(
            f"error: --batch-size {cfg.batch_size} is not divisible by the "
            f"{replicas} replicas of --distribute."
        )
    print(f"data parallel over {replicas} device(s) ({backend}).")
    return scope


def _checkpoint_path(out: Path, epoch: int) -> Path:
    """Model weights + optimizer variables saved after ``epoch`` epochs."""
    return out / f"ckpt-{epoch}.weights.h5"


def _load_checkpoint(model, out: Path, epoch: int) -> None:
    """Weights and optimizer variables; the optimizer is built first so that
    Keras restores its variables too."""
    model.optimizer.build(model.trainable_variables)
    model.load_weights(_checkpoint_path(out, epoch))


def load_run_model(run_dir: Path, data):
    """A run's model at its last checkpoint, built and compiled as the run did."""
    config = json.loads((run_dir / "config.json").read_text())
    model = _compiled_model(TrainConfig(out=str(run_dir), **config), data)
    _load_checkpoint(model, run_dir, int(read_state(run_dir)["epoch"]))
    return model


def _restore(model, out: Path, epoch: int, steps_per_epoch: int) -> None:
    """Load the weights and the optimizer state (Adam moments, step counts).

    Keras' ``save_weights`` stores the compiled optimizer's variables with the
    model's, and ``load_weights`` restores them if the optimizer is built
    first. The step count is then checked, so a silently fresh optimizer
    (which would re-run Adam's bias-correction warm-up) cannot pass unnoticed.
    """
    import keras

    from examples.label_smoothing import model as model_lib

    _load_checkpoint(model, out, epoch)
    steps = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
    steps += model_lib.skipped_steps(model)
    if steps != epoch * steps_per_epoch:
        raise RuntimeError(
            f"{out}: the checkpoint of epoch {epoch} holds {steps} optimizer "
            f"steps, expected {epoch * steps_per_epoch}; it does not match "
            "this run (remove the directory to start over)."
        )


def _epoch_recorder(
    out: Path, epochs: int, stop_after: int | None, start: int, evaluator: Evaluator
):
    """Build the callback (a factory, so Keras is imported only after the
    backend is chosen)."""
    import keras

    class EpochRecorder(keras.callbacks.Callback):
        """After each epoch: append the CSV row (flushed), then checkpoint.

        Order matters for resuming: the row first, so no finished epoch's numbers
        are ever lost; the checkpoint files are written to temporaries and renamed,
        and ``state.json`` (the epoch count) is renamed last, so a crash at any
        point leaves a consistent checkpoint of some finished epoch.
        """

        def __init__(self, out: Path, epochs: int, stop_after: int | None, start: int):
            super().__init__()
            self.out = out
            self.epochs = epochs
            self.stop_at = start + stop_after if stop_after else None
            self.csv_path = out / "metrics.csv"
            self.t0 = time.perf_counter()
            # The test predictions of the best validation epoch so far are
            # kept (selected_test.npz) for the reliability diagrams.
            self.best_val = max(
                (float(r["val_accuracy"]) for r in _read_rows(self.csv_path)),
                default=-1.0,
            )

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:

            from examples.label_smoothing import model as model_lib

            logs = logs or {}
            done = epoch + 1
            row = {
                "epoch": done,
                "loss": logs.get("loss"),
                "nll": logs.get("nll"),
                "accuracy": logs.get("accuracy"),
                "cc_rows": logs.get("cc_rows"),
                "logit_scale": model_lib.logit_scale(self.model, evaluator.logit_scale),
                **evaluator(self.model),
                "skipped_steps": model_lib.skipped_steps(self.model),
                "seconds": round(time.perf_counter() - self.t0, 3),
            }
            new_file = not self.csv_path.exists()
            with self.csv_path.open("a", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
                if new_file:
                    writer.writeheader()
                writer.writerow(row)
                f.flush()
                os.fsync(f.fileno())

            if row["val_accuracy"] > self.best_val:
                self.best_val = row["val_accuracy"]
                tmp = self.out / "selected_test.tmp.npz"
                np.savez_compressed(tmp, epoch=done, **evaluator.test_predictions)
                os.replace(tmp, self.out / "selected_test.npz")

            # An epoch-numbered file, written before state.json names it, so
            # a crash leaves the previous checkpoint intact and referenced.
            # save_weights includes the optimizer's variables (Adam state).
            self.model.save_weights(_checkpoint_path(self.out, done))
            state = {"epoch": done, "finished": done >= self.epochs}
            atomic_write_text(self.out / "state.json", json.dumps(state) + "\n")
            _checkpoint_path(self.out, done - 1).unlink(missing_ok=True)
            if self.stop_at is not None and done >= self.stop_at and done < self.epochs:
                print(f"{self.out}: stopping after epoch {done} (--stop-after).")
                self.model.stop_training = True

    return EpochRecorder(out, epochs, stop_after, start)


if __name__ == "__main__":
    raise SystemExit(main())
