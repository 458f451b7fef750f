"""The compositional regression study: fits, selection, tables and plots.

For every random split (outermost), dataset, model (GLM, MLP) and
likelihood (CC, Dirichlet, cross-entropy, logistic-normal), one model is
trained per learning rate of ``--learning-rates`` by full-batch Adam, each
stopped early on its validation loss (patience ``--patience``, the best
epoch's weights kept; see :class:`Trainer`). The learning rate with the
lowest validation loss is selected, and only that model is evaluated on the
test rows. Nothing is chosen on test data.

Each (dataset, model, likelihood, split) writes
``OUT/<dataset>/<model>/<likelihood>/split<k>.csv`` (one row per learning
rate tried; the selected one carries the test metrics) and
``split<k>.npz`` (the test rows' indices, predicted means and the model's
raw outputs, from which the plots draw predictive samples). A finished
split is never redone, so the same command resumes an interrupted study;
``--summary-only`` only tabulates and plots what is on disk:

- ``OUT/summary.md``: per dataset, mean ± sample std over splits (n) of each
  metric, coverage per part, and the commands;
- ``OUT/pred_vs_obs_<dataset>.png``, ``OUT/pit_<dataset>.png``,
  ``OUT/ternary_<dataset>.png`` (three-part data only).

    python -m examples.compositional.study --out examples/compositional/results
"""

from __future__ import annotations

import csv
import math
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from examples._config import option, parse_config
from examples._run_lock import RunLock
from examples.compositional import LABELS, LIKELIHOODS, MODELS
from examples.compositional.data import (
    DATASETS,
    Dataset,
    load_dataset,
    replace_zeros,
    split_indices,
    standardise,
)

PIT_BINS = 10
COVERAGE_LEVELS = (0.5, 0.9)
DENSITY_LIKELIHOODS = tuple(name for name in LIKELIHOODS if name != "xe")


@dataclass
class StudyConfig:
    """CC vs Dirichlet vs cross-entropy vs logistic-normal regression on
    compositional data, GLM and MLP, over random train/validation/test
    splits."""

    out: str = option(
        "examples/compositional/results",
        "study directory (per-split CSV and NPZ files, summary, plots)",
        metavar="DIR",
    )
    datasets: list[str] = option(
        ["budget_uk", "house_of_commons"], "the datasets", choices=DATASETS
    )
    models: list[str] = option(list(MODELS), "the models", choices=MODELS)
    likelihoods: list[str] = option(
        list(LIKELIHOODS), "the likelihoods", choices=LIKELIHOODS
    )
    splits: int = option(10, "random splits (seeds 0 .. N-1)", at_least=1)
    train_fraction: float = option(0.6, "training rows", above=0, below=1)
    val_fraction: float = option(0.2, "validation rows", above=0, below=1)
    learning_rates: list[float] = option(
        [0.1, 0.03],
        "Adam learning rates, one fit each; validation picks one",
        above=0,
    )
    hidden: int = option(32, "hidden units of the MLP", at_least=1)
    max_epochs: int = option(
        2000,
        "epoch limit of a fit (full batch: one Adam step an epoch)",
        at_least=1,
    )
    patience: int = option(
        100,
        "stop after this many epochs without a better validation loss",
        at_least=1,
    )
    zero_delta: float = option(
        1e-3,
        "Dirichlet and logistic-normal only: each zero share becomes this "
        "value and the row's other shares are scaled to keep the sum 1 "
        "(multiplicative replacement); must be in (0, 1/K)",
        above=0,
        below=0.5,
    )
    sum_tolerance: float = option(
        1e-3,
        "rows of shares must sum to 1 within this (published rounding)",
        above=0,
        below=0.1,
    )
    samples: int = option(
        500, "predictive samples per test row (intervals, PIT)", at_least=10
    )
    threads: int = option(1, "TensorFlow CPU threads (0: TensorFlow's default)")
    summary_only: bool = option(False, "only tabulate and plot what is on disk")


def study_checks(cfg: StudyConfig) -> list[str]:
    problems = []
    if cfg.train_fraction + cfg.val_fraction >= 1:
        problems.append(
            "--train-fraction plus --val-fraction must be < 1 (the test rows "
            f"get the rest); got {cfg.train_fraction:g} + {cfg.val_fraction:g}"
        )
    return problems


def parse_args(argv: list[str] | None = None) -> StudyConfig:
    """The command line as a checked :class:`StudyConfig`."""
    return parse_config(StudyConfig, None, argv, __doc__, study_checks)


# --- one split of one dataset ----------------------------------------------


@dataclass(frozen=True)
class SplitData:
    """Standardised covariates and compositions of one split's three parts."""

    dataset: Dataset
    seed: int
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    x: np.ndarray  # standardised with the training rows' mean and std

    def targets(self, likelihood: str, rows: np.ndarray, delta: float) -> np.ndarray:
        """Training/validation targets: zeros replaced where the likelihood
        has no density at them, the observed shares otherwise."""
        from examples.compositional.likelihoods import NEEDS_POSITIVE

        y = self.dataset.y[rows]
        return replace_zeros(y, delta) if likelihood in NEEDS_POSITIVE else y


def make_split(dataset: Dataset, seed: int, cfg: StudyConfig) -> SplitData:
    train, val, test = split_indices(
        len(dataset.y), seed, (cfg.train_fraction, cfg.val_fraction)
    )
    return SplitData(dataset, seed, train, val, test, standardise(dataset.x, train))


class Trainer:
    """Full-batch Adam for one (dataset, model, likelihood), early stopped on
    the validation loss.

    A plain Keras model, its Keras loss and a Keras optimizer, trained by a
    compiled step (the "training loop from scratch" of the Keras guides)
    rather than ``model.fit``: on ~1 000 rows ``fit`` spends 0.1 s per epoch
    on its own bookkeeping, 20 to 100 times the step itself. The step is
    traced once per trainer and reused for every split and learning rate
    (same shapes), with the weights and the optimizer state reset between
    fits: tracing the CC loss alone takes seconds. With full batches, an
    epoch is one step.
    """

    def __init__(
        self,
        model_name: str,
        likelihood: str,
        num_features: int,
        num_parts: int,
        hidden: int,
    ) -> None:
        import keras
        import tensorflow as tf

        from examples.compositional.likelihoods import build_model, make_loss

        self.build = lambda: build_model(
            model_name, likelihood, num_features, num_parts, hidden
        )
        self.model = self.build()
        self.loss = make_loss(likelihood)
        self.optimizer = keras.optimizers.Adam(1e-3)
        self.optimizer.build(self.model.trainable_variables)
        model, loss, optimizer = self.model, self.loss, self.optimizer

        @tf.function
        def step(x, y, x_val, y_val):
            with tf.GradientTape() as tape:
                value = tf.reduce_mean(loss(y, model(x, training=True)))
            grads = tape.gradient(value, model.trainable_variables)
            optimizer.apply_gradients(
                zip(grads, model.trainable_variables, strict=True)
            )
            return value, tf.reduce_mean(loss(y_val, model(x_val, training=False)))

        self.step = step

    def reset(self, seed: int, learning_rate: float) -> None:
        """Fresh initial weights (seeded) and a fresh Adam state."""
        import keras

        keras.utils.set_random_seed(seed)
        self.model.set_weights(self.build().get_weights())
        for variable in self.optimizer.variables:
            variable.assign(keras.ops.zeros_like(variable))
        self.optimizer.learning_rate = learning_rate

    def fit(
        self,
        arrays: tuple[np.ndarray, ...],
        seed: int,
        learning_rate: float,
        max_epochs: int,
        patience: int,
    ) -> dict[str, float]:
        """Train from scratch; keeps the weights of the best validation loss.

        Returns ``val_loss`` (best; NaN if no epoch was finite),
        ``best_epoch``, ``epochs_run``, ``nonfinite`` (1 if the training or
        validation loss became non-finite: training stops there) and
        ``wall_s``.
        """
        import tensorflow as tf

        self.reset(seed, learning_rate)
        tensors = [tf.constant(a, tf.float32) for a in arrays]
        best, best_epoch, best_weights, nonfinite = math.inf, 0, None, 0
        start = time.monotonic()
        epoch = 0
        for epoch in range(1, max_epochs + 1):
            train_loss, val_loss = (float(v) for v in self.step(*tensors))
            if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
                nonfinite = 1
                break
            if val_loss < best:
                best, best_epoch = val_loss, epoch
                best_weights = self.model.get_weights()
            elif epoch - best_epoch >= patience:
                break
        if best_weights is not None:
            self.model.set_weights(best_weights)
        return {
            "learning_rate": learning_rate,
            "val_loss": best if best_weights is not None else math.nan,
            "best_epoch": best_epoch,
            "epochs_run": epoch,
            "nonfinite": nonfinite,
            "wall_s": time.monotonic() - start,
        }


_TRAINERS: dict[tuple[str, str, int, int, int], Trainer] = {}


def trainer_for(
    model_name: str, likelihood: str, num_features: int, num_parts: int, hidden: int
) -> Trainer:
    """One :class:`Trainer` per architecture and process: its traced step
    serves every split, learning rate and later study in the process."""
    key = (model_name, likelihood, num_features, num_parts, hidden)
    if key not in _TRAINERS:
        _TRAINERS[key] = Trainer(*key)
    return _TRAINERS[key]


def evaluate(
    cfg: StudyConfig, split: SplitData, likelihood: str, outputs: np.ndarray
) -> tuple[dict[str, float], np.ndarray]:
    """Test metrics of one selected model from its test outputs; and the
    predicted means."""
    from examples.compositional import metrics
    from examples.compositional.likelihoods import (
        log_density,
        predicted_mean,
        predictive_samples,
    )

    y = split.dataset.y[split.test]
    k = split.dataset.num_parts
    mean = predicted_mean(likelihood, outputs, k, seed=split.seed)
    positive = (y > 0).all(axis=1)
    result: dict[str, float] = {
        "rmse": metrics.rmse(mean, y),
        "mae": metrics.mae(mean, y),
        "aitchison": float(np.nanmean(metrics.aitchison_distance(mean, y)))
        if positive.any()
        else math.nan,
        "test_rows": len(y),
        "test_rows_without_zeros": int(positive.sum()),
    }
    logp = log_density(likelihood, outputs, y)
    # Log-densities share a support only on rows without zeros; the CC's is
    # also defined (finite) on the rows with zeros.
    result["logp_without_zeros"] = (
        float(logp[positive].mean()) if positive.any() else math.nan
    )
    result["logp_all"] = float(logp.mean()) if likelihood == "cc" else math.nan
    samples = predictive_samples(likelihood, outputs, k, cfg.samples, split.seed)
    for level in COVERAGE_LEVELS:
        tag = f"cov{round(100 * level)}"
        per_part = (
            np.full(k, math.nan)
            if samples is None
            else metrics.coverage(samples, y, level)
        )
        result[tag] = float(per_part.mean())
        for index, value in enumerate(per_part):
            result[f"{tag}_part{index}"] = float(value)
    counts = (
        np.full(PIT_BINS, math.nan)
        if samples is None
        else metrics.pit_histogram(metrics.pit(samples, y), PIT_BINS)
    )
    for index, count in enumerate(counts):
        result[f"pit{index}"] = float(count)
    result.update(metrics.zero_summary(mean, y, samples))
    return result, mean


def run_directory(out: Path, dataset: str, model: str, likelihood: str) -> Path:
    return out / dataset / model / likelihood


def is_finished(directory: Path, seed: int) -> bool:
    return (directory / f"split{seed}.csv").is_file()


def run_split(
    cfg: StudyConfig,
    split: SplitData,
    model_name: str,
    likelihood: str,
    trainer: Trainer,
) -> dict[str, float]:
    """Fit every learning rate, select on validation, evaluate, write files.

    Returns the selected row (with test metrics; NaN metrics if every fit
    was non-finite from its first epoch).
    """
    data = split.dataset
    arrays = (
        split.x[split.train],
        split.targets(likelihood, split.train, cfg.zero_delta),
        split.x[split.val],
        split.targets(likelihood, split.val, cfg.zero_delta),
    )
    rows, best_weights, best = [], None, None
    for learning_rate in cfg.learning_rates:
        row = trainer.fit(
            arrays, split.seed, learning_rate, cfg.max_epochs, cfg.patience
        )
        rows.append(row)
        if math.isfinite(row["val_loss"]) and (
            best is None or row["val_loss"] < best["val_loss"]
        ):
            best, best_weights = row, trainer.model.get_weights()
    directory = run_directory(Path(cfg.out), data.name, model_name, likelihood)
    directory.mkdir(parents=True, exist_ok=True)
    if best is not None:
        trainer.model.set_weights(best_weights)
        x_test = split.x[split.test].astype("float32")
        outputs = trainer.model(x_test, training=False).numpy().astype(np.float64)
        metrics_row, mean = evaluate(cfg, split, likelihood, outputs)
        best.update(metrics_row)
        _atomic_savez(
            directory / f"split{split.seed}.npz",
            test=split.test,
            mean=mean,
            outputs=outputs,
        )
    for row in rows:
        row["split"] = split.seed
        row["selected"] = int(row is best)
    _atomic_write_csv(directory / f"split{split.seed}.csv", rows)
    return best or {"split": split.seed, "nonfinite": 1}


def _atomic_savez(path: Path, **arrays: np.ndarray) -> None:
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)


def _atomic_write_csv(path: Path, rows: list[dict]) -> None:
    """Write all rows (the union of their keys) at once: the CSV marks the
    split finished, so it must never be left half written."""
    fields = list(dict.fromkeys(key for row in rows for key in row))
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, restval="nan")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def run_study(cfg: StudyConfig) -> int:
    """Every unfinished split, splits outermost; returns the number done."""
    out = Path(cfg.out)
    todo = [
        (seed, name, model, likelihood)
        for seed in range(cfg.splits)
        for name in cfg.datasets
        for model in cfg.models
        for likelihood in cfg.likelihoods
        if not is_finished(run_directory(out, name, model, likelihood), seed)
    ]
    print(
        f"{len(todo)} fits of {len(cfg.learning_rates)} learning rates to do in {out}",
        flush=True,
    )
    datasets: dict[str, Dataset] = {}
    start, done = time.monotonic(), 0
    for index, (seed, name, model, likelihood) in enumerate(todo, start=1):
        if name not in datasets:
            datasets[name] = load_dataset(name, cfg.sum_tolerance)
        directory = run_directory(out, name, model, likelihood)
        directory.mkdir(parents=True, exist_ok=True)
        with RunLock(directory) as held:
            if not held or is_finished(directory, seed):
                print(
                    f"[{index}/{len(todo)}] {directory} split {seed}: taken "
                    "by another process or done",
                    flush=True,
                )
                continue
            data = datasets[name]
            trainer = trainer_for(
                model, likelihood, data.x.shape[1], data.num_parts, cfg.hidden
            )
            split = make_split(data, seed, cfg)
            row = run_split(cfg, split, model, likelihood, trainer)
        done += 1
        elapsed = time.monotonic() - start
        eta = elapsed / done * (len(todo) - index)
        print(
            f"[{index}/{len(todo)}] {name} {model} {likelihood} split {seed}: "
            f"lr {row.get('learning_rate', math.nan):g}, epoch "
            f"{row.get('best_epoch', 0)}, val loss {row.get('val_loss', math.nan):.4g}"
            f", test RMSE {row.get('rmse', math.nan):.4f}, non-finite "
            f"{row.get('nonfinite', 0)} ({elapsed / 60:.1f} min; eta "
            f"{eta / 60:.0f} min)",
            flush=True,
        )
    return done


# --- tables ------------------------------------------------------------------


def read_rows(path: Path) -> list[dict[str, float]]:
    with path.open(newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


@dataclass
class Cell:
    """The finished splits of one (dataset, model, likelihood)."""

    dataset: str
    model: str
    likelihood: str
    selected: list[dict[str, float]]  # one row per split (the selected fit)
    fits: list[dict[str, float]]  # every fit of every split

    def values(self, field: str) -> list[float]:
        return [r[field] for r in self.selected if field in r]

    def text(self, field: str, digits: int = 3, scale: float = 1.0) -> str:
        """``mean ± std`` over splits (``–`` where the metric is undefined);
        a split whose fits all failed counts as missing, and is shown."""
        values = [scale * v for v in self.values(field) if math.isfinite(v)]
        if not values:
            return "–"
        mean = statistics.fmean(values)
        if len(values) < 2:
            return f"{mean:.{digits}f}"
        text = f"{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f}"
        missing = len(self.selected) - len(values)
        return text + (f" ({missing} missing)" if missing else "")


def collect(cfg: StudyConfig) -> list[Cell]:
    out = Path(cfg.out)
    cells = []
    for name in cfg.datasets:
        for model in cfg.models:
            for likelihood in cfg.likelihoods:
                directory = run_directory(out, name, model, likelihood)
                selected, fits = [], []
                for seed in range(cfg.splits):
                    if not is_finished(directory, seed):
                        continue
                    rows = read_rows(directory / f"split{seed}.csv")
                    fits += rows
                    chosen = [r for r in rows if r.get("selected") == 1.0]
                    selected.append(chosen[0] if chosen else {"split": seed})
                cells.append(Cell(name, model, likelihood, selected, fits))
    return cells


def metrics_table(cells: list[Cell]) -> str:
    """The headline metrics of one dataset, one line per model and likelihood."""
    lines = [
        "| model | likelihood | n | RMSE | MAE | Aitchison | log-density "
        "(rows without zeros) | log-density (all rows) | 50 % cov. | 90 % cov. "
        "| non-finite fits |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for cell in cells:
        if not cell.selected:
            continue
        failed = sum(int(r.get("nonfinite", 0)) for r in cell.fits)
        lines.append(
            f"| {LABELS[cell.model]} | {LABELS[cell.likelihood]} "
            f"| {len(cell.selected)} | {cell.text('rmse', 4)} "
            f"| {cell.text('mae', 4)} | {cell.text('aitchison', 3)} "
            f"| {cell.text('logp_without_zeros', 2)} | {cell.text('logp_all', 2)} "
            f"| {cell.text('cov50', 1, 100)} | {cell.text('cov90', 1, 100)} "
            f"| {failed} of {len(cell.fits)} |"
        )
    return "\n".join(lines)


def zeros_table(cells: list[Cell]) -> str | None:
    """What each model predicts where a share is exactly 0 (None: no zeros)."""
    if not any(
        c.values("zero_cells") and max(c.values("zero_cells")) > 0 for c in cells
    ):
        return None
    lines = [
        "| model | likelihood | zero shares per test set | mean predicted share "
        "there | P(share < 0.005) there |",
        "|---|---|---|---|---|",
    ]
    for cell in cells:
        if cell.selected:
            lines.append(
                f"| {LABELS[cell.model]} | {LABELS[cell.likelihood]} "
                f"| {cell.text('zero_cells', 0)} | {cell.text('zero_mean', 4)} "
                f"| {cell.text('zero_mass', 3)} |"
            )
    return "\n".join(lines)


def coverage_table(cells: list[Cell], parts: tuple[str, ...]) -> str:
    """Coverage of the 50 % and 90 % intervals, part by part."""
    lines = [
        "| model | likelihood | " + " | ".join(parts) + " |",
        "|---|---|" + "---|" * len(parts),
    ]
    for cell in cells:
        if not cell.selected or cell.likelihood == "xe":
            continue
        entries = [
            f"{cell.text(f'cov50_part{k}', 0, 100)} / "
            f"{cell.text(f'cov90_part{k}', 0, 100)}"
            for k in range(len(parts))
        ]
        lines.append(
            f"| {LABELS[cell.model]} | {LABELS[cell.likelihood]} | "
            + " | ".join(e.replace(" ± ", "±") for e in entries)
            + " |"
        )
    return "\n".join(lines)


def paired_table(cells: list[Cell]) -> str | None:
    """Each likelihood against the CC of the same model, split by split.

    The splits are shared, so the per-split difference removes the
    split-to-split spread that dominates the ± of :func:`metrics_table`.
    """
    fields = (("rmse", "RMSE", 4, -1), ("logp_without_zeros", "log-density", 2, 1))
    lines = [
        "| model | likelihood | "
        + " | ".join(f"{title} minus CC | CC better" for _, title, _, _ in fields)
        + " |",
        "|---|---|" + "---|---|" * len(fields),
    ]
    for cc in [c for c in cells if c.likelihood == "cc" and c.selected]:
        ours = {r["split"]: r for r in cc.selected}
        for other in cells:
            if other.model != cc.model or other.likelihood == "cc":
                continue
            entries = []
            for field, _, digits, sign in fields:
                pairs = [
                    (r[field], ours[r["split"]][field])
                    for r in other.selected
                    if r["split"] in ours
                    and math.isfinite(r.get(field, math.nan))
                    and math.isfinite(ours[r["split"]].get(field, math.nan))
                ]
                if not pairs:
                    entries += ["–", "–"]
                    continue
                diff = Cell("", "", "", [{"d": a - b} for a, b in pairs], [])
                better = sum(sign * (b - a) > 0 for a, b in pairs)
                entries += [diff.text("d", digits), f"{better} of {len(pairs)}"]
            lines.append(
                f"| {LABELS[other.model]} | {LABELS[other.likelihood]} | "
                + " | ".join(entries)
                + " |"
            )
    return "\n".join(lines) if len(lines) > 2 else None


def selection_table(cells: list[Cell]) -> str:
    """Which learning rate validation picked, and at which epoch."""
    lines = [
        "| model | likelihood | learning rate picked (splits) | best epoch "
        "(median) | epochs run (median) | training s per split (median) |",
        "|---|---|---|---|---|---|",
    ]
    for cell in cells:
        chosen = [r for r in cell.selected if "learning_rate" in r]
        if not chosen:
            continue
        picked = {}
        for row in chosen:
            key = f"{row['learning_rate']:g}"
            picked[key] = picked.get(key, 0) + 1
        lines.append(
            f"| {LABELS[cell.model]} | {LABELS[cell.likelihood]} | "
            + ", ".join(f"{k} ({v})" for k, v in sorted(picked.items()))
            + f" | {statistics.median(r['best_epoch'] for r in chosen):.0f}"
            f" | {statistics.median(r['epochs_run'] for r in chosen):.0f}"
            f" | {statistics.median(_split_seconds(cell).values()):.1f} |"
        )
    return "\n".join(lines)


def _split_seconds(cell: Cell) -> dict[float, float]:
    """Wall seconds of all the fits (every learning rate) of each split."""
    seconds: dict[float, float] = {}
    for row in cell.fits:
        seconds[row["split"]] = seconds.get(row["split"], 0.0) + row["wall_s"]
    return seconds


def write_summary(cfg: StudyConfig, cells: list[Cell]) -> str:
    from examples.compositional.data import SOURCES

    sections = [
        "# Compositional regression: summary",
        "Generated by `python -m examples.compositional.study --out "
        f"{cfg.out} --summary-only`. Test metrics of the model selected on "
        "validation loss (learning rate and epoch), mean ± sample std over "
        "splits; n = finished splits. Log-densities are per row, in nats, "
        "w.r.t. Lebesgue measure on the first K-1 shares. Coverage: share of "
        "(row, part) pairs inside the central predictive interval.",
        "Settings: "
        + ", ".join(
            f"{k}={v}"
            for k, v in asdict(cfg).items()
            if k not in ("out", "summary_only")
        ),
    ]
    for name in cfg.datasets:
        own = [c for c in cells if c.dataset == name]
        if not any(c.selected for c in own):
            continue
        parts = (
            SOURCES[name].part_labels
            if name in SOURCES
            else tuple(f"part {k + 1}" for k in range(_num_parts(own)))
        )
        sections += [f"## {name}", metrics_table(own)]
        paired = paired_table(own)
        if paired:
            sections += [
                "Against the CC of the same model, per split (mean ± std of "
                "the difference; CC better: splits where the CC has the lower "
                "RMSE or the higher log-density):",
                paired,
            ]
        zeros = zeros_table(own)
        if zeros:
            sections += ["Exact zeros (observed shares of 0):", zeros]
        sections += [
            "Coverage per part, 50 % / 90 % intervals (%):",
            coverage_table(own, parts),
            "Selection on validation:",
            selection_table(own),
        ]
    text = "\n\n".join(sections)
    (Path(cfg.out) / "summary.md").write_text(text + "\n")
    return text


def _num_parts(cells: list[Cell]) -> int:
    return max(
        int(key.removeprefix("cov50_part")) + 1
        for c in cells
        for r in c.selected
        for key in r
        if key.startswith("cov50_part")
    )


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    cfg = parse_args(argv)
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    if not cfg.summary_only:
        import tensorflow as tf

        try:
            if cfg.threads:
                tf.config.threading.set_intra_op_parallelism_threads(cfg.threads)
                tf.config.threading.set_inter_op_parallelism_threads(cfg.threads)
        except RuntimeError:
            # TensorFlow already started (main() called in-process, as the
            # tests do): its thread pools can no longer change.
            print("--threads ignored: TensorFlow is already initialised")
        run_study(cfg)
    cells = collect(cfg)
    print(write_summary(cfg, cells))
    if any(c.selected for c in cells):
        from examples.compositional import plots

        for path in plots.plot_all(cfg, cells):
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
