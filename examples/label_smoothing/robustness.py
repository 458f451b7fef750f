"""Robustness suite for soft-target losses: CC-LS variants against LS.

One command trains a grid of cells, each a (dataset, model, dropout, Adam
learning rate, smoothing mass alpha), with every method and seed, and writes
a table and curves that compare each method with label smoothing (LS, the
reference of every cell). The full grid (``--preset full``, the default):

- MNIST-1D (4 000 training and 1 000 test signals, generated locally by the
  ``mnist1d`` package) with its CNN and with an MLP (Flatten, Dense 256 ReLU
  x 2, Dense 10): dropout on/off x lr 1e-3, 1e-2 x alpha 0.1, 0.2 (16 cells);
- digit pairs (100 classes, below) with the paper's image CNN: dropout off,
  alpha 0.1, lr 1e-3 and 1e-2 (2 cells);

no BatchNorm, no weight decay, batch 128, 50 epochs, seeds 0-4, and the
methods ``ls cc cc@auto`` (``--methods`` takes the syntax of
``ablation``: ``LOSS[@SCALE][+learned]``). 18 cells x 3 methods x 5 seeds =
270 runs. ``--preset ci`` is a smoke test of the same pipeline (three cells,
one seed, two epochs, a few hundred examples: seconds of training per run,
but tracing a CC loss's graph takes 10-30 s of CPU).

Digit pairs (``--dataset digit-pairs`` of ``train``): two of scikit-learn's
8x8 digits side by side, an 8x16 image of class 10 a + b. The digit images
are split 80/20 first; training and validation pairs are made only of
training digit images and test pairs only of held-out ones, so no test digit
image is ever trained on. 10 distinct pairs per class (8 for training, 2 for
validation) and 20 test pairs per class make it a small-data problem, not a
trivially easy one. Measured with LS (alpha 0.1, dropout off, seed 0, 50
epochs, the epoch selected on the validation pairs): the CNN reaches 84.1 %
test accuracy at lr 1e-3 and 92.2 % at lr 1e-2 (which sits near chance for
its first 15 epochs), while the same CNN and loss trained on the single
digits of the same split reach 98.9 %, so that reading the two halves of a
pair independently would score 0.989^2 = 97.8 %. The pair model at lr 1e-3
reads the left digit of a test pair right 91.1 % of the time and the right
one 92.4 %: from 8 pairs per class it learns the digits less well than a
single-digit model does. (With 30 pairs per class the same CNN reaches
95-96 %, two single-digit reads; hence 10.)

Each run is a subprocess of ``examples.label_smoothing.train`` (as in
``ablation``) in ``OUT/<cell>/<method>/seed<k>/``: finished runs are skipped
and interrupted ones resume from their last epoch, so the same command can be
re-issued after any interruption. Every run holds a lock on its directory
while it trains, so several runners can share ``--out``: on a 2-core machine,
start one per core (``--threads 1``, the default) and each takes the runs the
other is not training. Each run logs to its directory's ``log.txt``.

Then ``report`` (also run at the end of every ``run``) reads the CSVs and
writes ``OUT/summary.md``, ``OUT/summary.csv`` and
``OUT/accuracy_curves.png``; see :func:`summary_markdown`.

Usage (from the repository root):

    nice -n 10 python -m examples.label_smoothing.robustness --out runs/robustness &
    nice -n 10 python -m examples.label_smoothing.robustness --out runs/robustness &
    wait
    python -m examples.label_smoothing.robustness report --out runs/robustness
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __name__ == "__main__" and not __package__:
    # Run as a file: become `python -m examples.label_smoothing.robustness`,
    # with the repository root importable for it.
    _path = (str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH"))
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in _path if p)
    _argv = ["-m", "examples.label_smoothing.robustness", *sys.argv[1:]]
    os.execv(sys.executable, [sys.executable, *_argv])

from examples._config import option, parse_config
from examples.label_smoothing import LOSSES, MODELS, ablation, train
from examples.label_smoothing.ablation import Cell, Method, Run
from examples.label_smoothing.data import DIGIT_PAIRS_PER_CLASS

DATASETS: tuple[str, ...] = ("mnist1d", "digit-pairs")
DATASET_LABELS: dict[str, str] = {"mnist1d": "MNIST-1D", "digit-pairs": "digit pairs"}
# The validation share of the training set, per dataset. MNIST-1D: train's
# default, the split of the other MNIST-1D studies. Digit pairs: 20 %, so
# that epochs are selected on 2 pairs per class (200) rather than 1.
VAL_FRACTION: dict[str, float] = {"mnist1d": 0.1, "digit-pairs": 0.2}
REFERENCE = Method("ls")
STEPS: tuple[str, ...] = ("run", "report")
_ON_OFF = {"on": True, "off": False}


@dataclasses.dataclass(frozen=True)
class GridCell:
    """One cell of the suite: dataset, network, dropout, learning rate, alpha."""

    dataset: str
    model: str
    dropout: bool
    lr: float
    alpha: float

    @property
    def name(self) -> str:
        """The cell's directory under ``--out``, e.g. mnist1d_mlp_do1_lr0.01_a0.1."""
        dropout, lr, alpha = int(self.dropout), f"{self.lr:g}", f"{self.alpha:g}"
        return "_".join(
            (self.dataset, self.model, f"do{dropout}", f"lr{lr}", f"a{alpha}")
        )

    @property
    def label(self) -> str:
        """E.g. "MNIST-1D, MLP, dropout on, lr 0.01, α 0.1"."""
        dropout = "on" if self.dropout else "off"
        parts = (DATASET_LABELS[self.dataset], self.model.upper(), f"dropout {dropout}")
        return ", ".join((*parts, f"lr {self.lr:g}", f"α {self.alpha:g}"))

    def flags(self) -> list[str]:
        """The ``train`` flags that make a run of this cell."""
        return [
            *("--dataset", self.dataset, "--model", self.model),
            "--dropout" if self.dropout else "--no-dropout",
            *("--lr", repr(self.lr), "--alpha", repr(self.alpha)),
            *("--val-fraction", repr(VAL_FRACTION[self.dataset])),
        ]


_MNIST1D = "MNIST-1D cells"
_PAIRS = "digit-pairs cells"
_EXECUTION = "execution"


@dataclasses.dataclass(kw_only=True)
class SuiteConfig:
    """Settings of the suite; every field is a command-line flag."""

    out: str = option(help="root directory of the runs and the report", metavar="DIR")
    methods: list[Method] = option(
        [REFERENCE, Method("cc"), Method("cc", "auto")],
        "LOSS[@SCALE][+learned], LOSS in " + ", ".join(LOSSES) + "; ls, the "
        "reference of every cell, must be one of them",
        parse=Method.parse,
        metavar="METHOD",
    )
    seeds: list[int] = option([0, 1, 2, 3, 4], "training seeds of every cell")
    epochs: int = option(50, "epochs of every run", at_least=1)
    datasets: list[str] = option(
        list(DATASETS), "the datasets whose cells are in the grid", choices=DATASETS
    )
    mnist1d_models: list[str] = option(
        ["cnn", "mlp"], "networks (train's --model)", choices=MODELS, group=_MNIST1D
    )
    mnist1d_dropout: list[str] = option(
        ["on", "off"], choices=tuple(_ON_OFF), group=_MNIST1D
    )
    mnist1d_lr: list[float] = option(
        [1e-3, 1e-2], "Adam learning rates", above=0, group=_MNIST1D
    )
    mnist1d_alpha: list[float] = option(
        [0.1, 0.2], "smoothing masses", above=0, below=1, group=_MNIST1D
    )
    limit_train: int | None = option(
        None,
        "use the first N training signals (at least 100, so that the 10 % "
        "validation split has one per class)",
        at_least=100,
        group=_MNIST1D,
    )
    pairs_models: list[str] = option(
        ["cnn"], "networks (cnn: the paper's image CNN)", choices=MODELS, group=_PAIRS
    )
    pairs_dropout: list[str] = option(["off"], choices=tuple(_ON_OFF), group=_PAIRS)
    pairs_lr: list[float] = option(
        [1e-3, 1e-2], "Adam learning rates", above=0, group=_PAIRS
    )
    pairs_alpha: list[float] = option(
        [0.1], "smoothing masses", above=0, below=1, group=_PAIRS
    )
    pairs_per_class: int = option(
        DIGIT_PAIRS_PER_CLASS,
        "training + validation pairs per class (at least 5, so that the 20 % "
        "validation split has one per class)",
        at_least=5,
        group=_PAIRS,
    )
    limit_test: int | None = option(
        None, "use the first N test examples of every dataset", at_least=1
    )
    threads: int = option(
        1,
        "TensorFlow threads of each run: 1 with one runner per core",
        at_least=1,
        group=_EXECUTION,
    )
    backend: str | None = option(
        None,
        "Keras backend of every run (default: the configured one)",
        choices=train.BACKENDS,
        group=_EXECUTION,
    )
    jit_compile: str = option(
        "auto",
        "XLA compilation of the train step ('off' compiles faster, for tiny runs)",
        choices=("auto", "on", "off"),
        group=_EXECUTION,
    )
    # No isolation between runs, and the runs use this process's TensorFlow
    # threads (--threads cannot change them once TensorFlow has started).
    in_process: bool = option(
        False,
        "train every run in this process (no interpreter start per run; for "
        "quick looks and tests)",
        group=_EXECUTION,
    )
    plots: bool = option(True, "write the PNG (--no-plots: skip it)")

    def __post_init__(self) -> None:
        # A method named twice is one method (the user's order is kept).
        self.methods = list(dict.fromkeys(self.methods))


PRESETS: dict[str, dict[str, Any]] = {
    # Every cell, five seeds, 50 epochs: the dataclass defaults.
    "full": {},
    # One cell per dataset and network, one seed, two epochs, a few hundred
    # examples, the train step traced without XLA (faster to compile).
    "ci": {
        "seeds": [0],
        "epochs": 2,
        "mnist1d_dropout": ["on"],
        "mnist1d_lr": [1e-2],
        "mnist1d_alpha": [0.1],
        "limit_train": 400,
        "pairs_lr": [1e-2],
        "pairs_per_class": 5,
        "limit_test": 200,
        "jit_compile": "off",
    },
}


def suite_checks(cfg: SuiteConfig) -> list[str]:
    """LS is the reference of every cell, so it must be one of the methods
    (the bounds of single values are the fields')."""
    if REFERENCE in cfg.methods:
        return []
    return ["--methods must include ls, the reference of every cell"]


DESCRIPTION = (
    "Train the robustness suite's runs (step 'run', the default), skipping "
    "finished runs and resuming interrupted ones, then write summary.md/.csv "
    "and accuracy_curves.png to --out; step 'report' only writes the report."
)


def parse_args(argv: Sequence[str] | None = None) -> SuiteConfig:
    """The command line (after the step) as a checked :class:`SuiteConfig`."""
    prog = "python -m examples.label_smoothing.robustness [run|report]"
    return parse_config(
        SuiteConfig,
        PRESETS,
        argv,
        DESCRIPTION,
        suite_checks,
        default_preset="full",
        prog=prog,
    )


def grid_cells(cfg: SuiteConfig) -> list[GridCell]:
    """The cells of the grid, dataset by dataset, in the flags' order."""
    axes = {
        "mnist1d": (
            cfg.mnist1d_models,
            cfg.mnist1d_dropout,
            cfg.mnist1d_lr,
            cfg.mnist1d_alpha,
        ),
        "digit-pairs": (
            cfg.pairs_models,
            cfg.pairs_dropout,
            cfg.pairs_lr,
            cfg.pairs_alpha,
        ),
    }
    cells = []
    for dataset in dict.fromkeys(cfg.datasets):
        models, dropouts, lrs, alphas = (dict.fromkeys(a) for a in axes[dataset])
        cells += [
            GridCell(dataset, model, _ON_OFF[dropout], lr, alpha)
            for model in models
            for dropout in dropouts
            for lr in lrs
            for alpha in alphas
        ]
    return cells


def suite_runs(cfg: SuiteConfig) -> list[Run]:
    """Every run of the suite, seeds outermost (see ``ablation.runs_of``)."""
    return ablation.runs_of(grid_cells(cfg), cfg.methods, cfg.seeds)


def train_command(cfg: SuiteConfig, run: Run, out: Path) -> list[str]:
    """The ``train`` command line of one run of the suite."""
    options = [
        *("--epochs", str(cfg.epochs), "--no-batch-norm", "--weight-decay", "0"),
        *("--jit-compile", cfg.jit_compile, "--verbose", "2"),
    ]
    if not cfg.in_process:
        options += ["--threads", str(cfg.threads)]
    if run.setting.dataset == "mnist1d" and cfg.limit_train:
        options += ["--limit-train", str(cfg.limit_train)]
    if run.setting.dataset == "digit-pairs":
        options += ["--pairs-per-class", str(cfg.pairs_per_class)]
    if cfg.limit_test:
        options += ["--limit-test", str(cfg.limit_test)]
    if cfg.backend:
        options += ["--backend", cfg.backend]
    return ablation.run_command(run, out, options)


def collect(cfg: SuiteConfig, out: Path) -> list[Cell]:
    """Per cell and method, the finished runs' selected rows (with their seed)."""
    cells = []
    for cell in grid_cells(cfg):
        for method in cfg.methods:
            runs = []
            for seed in dict.fromkeys(cfg.seeds):
                run_dir = Run(cell, method, seed).directory(out)
                result = ablation.run_result(run_dir, cfg.epochs)
                if result is not None:
                    runs.append(result | {"seed": seed})
            cells.append(Cell(cell, method, runs))
    return cells


def paired_gaps(cell: Cell, reference: Cell, field: str) -> list[float]:
    """``field`` minus LS's, seed by seed, over the seeds both have finished.

    Both runs of a seed start from the same weights and see the same batches,
    so the per-seed difference is less noisy than a difference of means.
    """
    ls = {r["seed"]: r[field] for r in reference.runs}
    return [r[field] - ls[r["seed"]] for r in cell.runs if r["seed"] in ls]


def mean_sd_text(values: Sequence[float], signed: bool = False) -> str:
    """``mean ± sd`` in % (sample sd); one value: ``mean (n = 1)``; none: –."""
    if not values:
        return "–"
    sign = "+" if signed else ""
    mean = f"{100 * statistics.fmean(values):{sign}.2f}"
    if len(values) == 1:
        return f"{mean} (n = 1)"
    return f"{mean} ± {100 * statistics.stdev(values):.2f}"


def _reference_of(cells: Sequence[Cell]) -> dict[GridCell, Cell]:
    return {c.setting: c for c in cells if c.method == REFERENCE}


def summary_rows(cells: Sequence[Cell]) -> list[dict[str, Any]]:
    """One dict per (cell, method): n, the accuracies and the paired gaps.

    Accuracies and gaps are fractions; an sd is None below two values; the
    gaps of LS itself are None.
    """
    reference = _reference_of(cells)
    rows = []
    for c in cells:
        row: dict[str, Any] = {
            "cell": c.setting,
            "method": c.method,
            "n": len(c.runs),
            "seeds": [int(r["seed"]) for r in c.runs],
        }
        for key, field in (
            ("selected", "test_accuracy"),
            ("last", "last_test_accuracy"),
        ):
            row[key] = c.values(field)
            row[f"gap_{key}"] = (
                None
                if c.method == REFERENCE
                else paired_gaps(c, reference[c.setting], field)
            )
        row["epoch"] = c.values("epoch")
        rows.append(row)
    return rows


def summary_markdown(cells: Sequence[Cell], planned: int) -> str:
    """The report: a table per (cell, method) and the gaps across cells.

    Per run, the epoch of best validation accuracy is selected (the earliest
    on ties); the test accuracy at that epoch ("selected") and at the last
    epoch ("last") are given as mean ± sample sd over the finished seeds (n).
    The gap to LS is the per-seed difference from LS in the same cell, over
    the seeds both have finished, in percentage points.
    """
    rows = summary_rows(cells)
    finished = sum(r["n"] for r in rows)
    lines = [
        "Robustness suite: test accuracy (%) at the epoch of best validation "
        "accuracy (selected) and at the last epoch, mean ± sample sd over the "
        "finished seeds (n; one seed is shown as n = 1, without an sd). The "
        "gap to LS is the per-seed difference from label smoothing in the same "
        "cell (same seed: same initial weights and batches), in percentage "
        "points, over the seeds both have finished. The validation split is "
        "part of the training data; the test set selects nothing.",
        "",
        f"{finished} of {planned} runs finished.",
        "",
        "Per cell (selected epoch; gaps in points, paired by seed):",
        "",
        *cell_table_markdown(rows),
        "",
        "Per cell and method:",
        "",
        "| cell | method | n | test acc. (selected) | test acc. (last) "
        "| gap to LS (selected) | gap to LS (last) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        gaps = [
            "reference" if r[key] is None else _gap_text(r[key], r["n"])
            for key in ("gap_selected", "gap_last")
        ]
        lines.append(
            f"| {r['cell'].label} | {r['method'].label} | {r['n']} "
            f"| {mean_sd_text(r['selected'])} | {mean_sd_text(r['last'])} "
            f"| {gaps[0]} | {gaps[1]} |"
        )
    lines += ["", *across_cells_markdown(rows)]
    return "\n".join(lines) + "\n"


def cell_table_markdown(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The compact table: one line per cell, one column per method.

    Each entry is the selected-epoch test accuracy (%, mean ± sd, n seeds);
    every method but LS adds its mean gap to LS at the selected and at the
    last epoch, in points, paired by seed as in the long table.
    """
    methods = list(dict.fromkeys(r["method"] for r in rows))
    by_cell: dict[GridCell, dict[Method, dict[str, Any]]] = {}
    for r in rows:
        by_cell.setdefault(r["cell"], {})[r["method"]] = r
    header = ["cell"] + [
        m.label if m == REFERENCE else f"{m.label} (gap to LS: selected / last)"
        for m in methods
    ]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for cell, entries in by_cell.items():
        texts = [cell.label]
        for method in methods:
            r = entries.get(method)
            if r is None or not r["n"]:
                texts.append("–")
                continue
            text = _short_mean_sd(r["selected"]) + f", n = {r['n']}"
            if r["gap_selected"]:
                gaps = (r["gap_selected"], r["gap_last"])
                selected, last = (f"{100 * statistics.fmean(g):+.1f}" for g in gaps)
                # The typographic minus, as in the rest of the docs' tables.
                text += f" ({selected} / {last})".replace("-", "−")
            texts.append(text)
        lines.append("| " + " | ".join(texts) + " |")
    return lines


def _short_mean_sd(values: Sequence[float]) -> str:
    """``mean ± sd`` in % with one decimal; the sd only from two values."""
    text = f"{100 * statistics.fmean(values):.1f}"
    if len(values) > 1:
        text += f" ± {100 * statistics.stdev(values):.1f}"
    return text


def _gap_text(gaps: list[float], n: int) -> str:
    """The gap's mean ± sd, with its n where fewer seeds are paired than run."""
    text = mean_sd_text(gaps, signed=True)
    if 1 < len(gaps) < n:
        text += f" (n = {len(gaps)})"
    return text


def across_cells(rows: Sequence[dict[str, Any]]) -> dict[Method, list[float]]:
    """Per method but LS: the mean selected gap of every cell that has one."""
    gaps: dict[Method, list[float]] = {}
    for r in rows:
        if r["gap_selected"]:
            gaps.setdefault(r["method"], []).append(statistics.fmean(r["gap_selected"]))
    return gaps


def across_cells_markdown(rows: Sequence[dict[str, Any]]) -> list[str]:
    """How each method fares against LS over the cells (selected epoch)."""
    gaps = across_cells(rows)
    if not gaps:
        return []
    lines = [
        "Across cells (mean gap to LS per cell, selected epoch, percentage points):",
        "",
        "| method | cells | mean | worst | best | cells at or above LS |",
        "|---|---|---|---|---|---|",
    ]
    for method, values in gaps.items():
        lines.append(
            f"| {method.label} | {len(values)} "
            f"| {100 * statistics.fmean(values):+.2f} | {100 * min(values):+.2f} "
            f"| {100 * max(values):+.2f} | {sum(v >= 0 for v in values)} |"
        )
    return lines


SUMMARY_CSV_FIELDS: tuple[str, ...] = (
    "cell",
    "dataset",
    "model",
    "dropout",
    "lr",
    "alpha",
    "method",
    "n",
    "seeds",
    "test_acc_selected_mean",
    "test_acc_selected_sd",
    "test_acc_last_mean",
    "test_acc_last_sd",
    "gap_n",
    "gap_selected_mean",
    "gap_selected_sd",
    "gap_last_mean",
    "gap_last_sd",
    "selected_epoch_mean",
)


def summary_csv(cells: Sequence[Cell]) -> str:
    """The table as CSV: fractions (not %); an sd is empty below two values,
    the gaps are empty for LS."""

    def mean(values: list[float] | None) -> str:
        return f"{statistics.fmean(values):.6f}" if values else ""

    def sd(values: list[float] | None) -> str:
        return f"{statistics.stdev(values):.6f}" if values and len(values) > 1 else ""

    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=SUMMARY_CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for r in summary_rows(cells):
        cell = r["cell"]
        writer.writerow(
            {
                "cell": cell.name,
                "dataset": cell.dataset,
                "model": cell.model,
                "dropout": int(cell.dropout),
                "lr": cell.lr,
                "alpha": cell.alpha,
                "method": r["method"].name,
                "n": r["n"],
                "seeds": " ".join(map(str, r["seeds"])),
                "test_acc_selected_mean": mean(r["selected"]),
                "test_acc_selected_sd": sd(r["selected"]),
                "test_acc_last_mean": mean(r["last"]),
                "test_acc_last_sd": sd(r["last"]),
                "gap_n": "" if r["gap_selected"] is None else len(r["gap_selected"]),
                "gap_selected_mean": mean(r["gap_selected"]),
                "gap_selected_sd": sd(r["gap_selected"]),
                "gap_last_mean": mean(r["gap_last"]),
                "gap_last_sd": sd(r["gap_last"]),
                "selected_epoch_mean": mean(r["epoch"]),
            }
        )
    return text.getvalue()


def plot_curves(cfg: SuiteConfig, cells: Sequence[Cell], out: Path) -> Path:
    """Test accuracy per epoch, one panel per cell, one line per method (the
    mean over the finished seeds, with a +-1 sd band)."""
    panels: dict[GridCell, dict[Method, list[list[float]]]] = {}
    for c in cells:
        run_dirs = (
            Run(c.setting, c.method, int(r["seed"])).directory(out) for r in c.runs
        )
        panels.setdefault(c.setting, {})[c.method] = ablation.accuracy_curves(run_dirs)
    return ablation.plot_accuracy_panels(
        [(cell.label, curves) for cell, curves in panels.items()],
        cfg.methods,
        "Robustness suite: test accuracy (mean ± 1 sd over the finished seeds)",
        out / "accuracy_curves.png",
        share_y=False,
    )


def report(cfg: SuiteConfig, out: Path) -> str:
    """Write ``summary.md``, ``summary.csv`` (and the curves); return the md."""
    cells = collect(cfg, out)
    table = summary_markdown(cells, planned=len(suite_runs(cfg)))
    # Atomic: a second runner may be reading or writing the report too.
    train.atomic_write_text(out / "summary.md", table)
    train.atomic_write_text(out / "summary.csv", summary_csv(cells))
    if cfg.plots and any(c.runs for c in cells):
        plot_curves(cfg, cells, out)
    return table


def main(argv: Sequence[str] | None = None) -> int:
    """``[run|report] FLAGS``: train the suite (or not), then write the report."""
    argv = list(sys.argv[1:] if argv is None else argv)
    step = argv.pop(0) if argv and argv[0] in STEPS else "run"
    cfg = parse_args(argv)
    out = Path(cfg.out)
    if step == "report" and not out.is_dir():
        print(f"error: --out {out} is not a directory of runs.", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    failed: list[Run] = []
    if step == "run":
        failed = ablation.train_runs(
            suite_runs(cfg),
            out,
            lambda run: train_command(cfg, run, out),
            epochs=cfg.epochs,
            in_process=cfg.in_process,
            log_to_file=True,
        )
    print("\n" + report(cfg, out))
    written = ["summary.md", "summary.csv"]
    if (out / "accuracy_curves.png").exists() and cfg.plots:
        written.append("accuracy_curves.png")
    print("written: " + ", ".join(str(out / name) for name in written))
    return ablation.exit_status(failed)


if __name__ == "__main__":
    raise SystemExit(main())
