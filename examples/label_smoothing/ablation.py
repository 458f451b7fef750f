"""Ablation grids for the label-smoothing study: runs, summary and plots.

Grid: learning rate x weight decay x dropout x BatchNorm x method x seeds. A
method is a loss with an optional logit scale, ``LOSS[@SCALE][+learned]``:
``cc`` (CC-LS), ``cc@auto`` (CC-LS with
``keras_cc.losses.label_smoothing_logit_scale``), ``ls@22`` (label smoothing
on logits times 22), ``cc@1+learned`` (a learned temperature starting at 1).
Each run
is one call of ``examples.label_smoothing.train`` (a subprocess, so a crash
or an interrupt costs at most that run's current epoch) in
``OUT/<setting>/<method>/seed<k>/``. Finished runs are skipped, interrupted
ones resume from their last checkpoint. Then, from the CSVs on disk:

- ``OUT/summary.md`` and ``OUT/summary.csv``: per setting and method, mean
  +- std over seeds of the test accuracy at the epoch of best *validation*
  accuracy (the test set is never used to choose anything), the test accuracy
  at the last epoch, and the calibration (NLL, ECE) at the selected epoch;
- ``OUT/accuracy_curves.png``: test accuracy per epoch (mean, +-1 std band);
- ``OUT/reliability.png``: reliability diagrams at the selected epoch;
- ``OUT/penultimate.png`` (images only): penultimate-layer activations of
  three classes projected onto the plane through their class templates (the
  final Dense columns), per method, as in Mueller, Kornblith & Hinton (2019).

Example (the quick start; a few minutes on 2 CPU cores):

    python -m examples.label_smoothing.ablation --dataset mnist1d \
        --methods xe ls cc cc@auto --weight-decay 0 --dropout off \
        --batch-norm off --seeds 0 --epochs 40 --lr 1e-2 --out runs/quickstart
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

if __name__ == "__main__" and not __package__:
    # Run as a file: become `python -m examples.label_smoothing.ablation`, with
    # the repository root importable for it; nothing of the package is
    # imported in this process.
    _path = (str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH"))
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in _path if p)
    _argv = ["-m", "examples.label_smoothing.ablation", *sys.argv[1:]]
    os.execv(sys.executable, [sys.executable, *_argv])

from examples._config import option, parse_config
from examples.label_smoothing import LOSSES, train
from examples.label_smoothing.data import DATASETS

REPO_ROOT = Path(__file__).resolve().parents[2]
LOSS_LABELS: dict[str, str] = {
    "xe": "XE",
    "ls": "LS",
    "cc": "CC-LS",
    "rls": "RLS",
    "rcc": "RCC-LS",
    "cc-mean": "CC-LS (mean)",
    "cc-fallback": "CC-fallback",
}
_ON_OFF = {"on": True, "off": False}


@dataclass(frozen=True)
class Method:
    """A loss, the logit scale its loss sees, and whether that scale learns."""

    loss: str
    logit_scale: str = "1"
    learned: bool = False

    @classmethod
    def parse(cls, text: str) -> Method:
        """Parse ``LOSS[@SCALE][+learned]``: ``cc``, ``cc@auto``, ``cc@1+learned``."""
        learned = text.endswith("+learned")
        loss, _, scale = text.removesuffix("+learned").partition("@")
        if loss not in LOSSES:
            raise ValueError(
                f"method {text!r}: unknown loss {loss!r}; choose from "
                + ", ".join(LOSSES)
            )
        if learned and not scale:
            scale = "1"
        if loss == "cc-mean" and scale not in ("", "1"):
            raise ValueError(
                f"method {text!r}: cc-mean takes no logit scale (its optimum "
                "already sits at label smoothing's logit gaps)"
            )
        if scale and scale != "auto":
            try:
                ok = float(scale) > 0
            except ValueError:
                ok = False
            if not ok:
                raise ValueError(
                    f"method {text!r}: the scale after '@' must be 'auto' or > 0"
                )
        return cls(loss, scale or "1", learned)

    @property
    def name(self) -> str:
        """The method as written on the command line (also its directory)."""
        scale = "" if self.logit_scale == "1" and not self.learned else self.logit_scale
        suffix = "+learned" if self.learned else ""
        return self.loss + (f"@{scale}" if scale else "") + suffix

    @property
    def label(self) -> str:
        label = LOSS_LABELS[self.loss]
        if self.learned:
            return f"{label}, learned scale (init {self.logit_scale})"
        if self.logit_scale != "1":
            return f"{label} ×{self.logit_scale}"
        return label

    def __str__(self) -> str:
        return self.name

    def flags(self) -> list[str]:
        flags = ["--loss", self.loss, "--logit-scale", self.logit_scale]
        return flags + (["--learn-logit-scale"] if self.learned else [])


@dataclass(frozen=True)
class Setting:
    """One optimisation/regularisation setting of the grid."""

    lr: float
    weight_decay: float
    dropout: bool
    batch_norm: bool

    @property
    def name(self) -> str:
        return (
            f"lr{self.lr:g}_wd{self.weight_decay:g}"
            f"_do{int(self.dropout)}_bn{int(self.batch_norm)}"
        )

    @property
    def label(self) -> str:
        return (
            f"lr {self.lr:g}, wd {self.weight_decay:g}, "
            f"dropout {'on' if self.dropout else 'off'}, "
            f"BN {'on' if self.batch_norm else 'off'}"
        )

    def flags(self) -> list[str]:
        return [
            "--lr",
            repr(self.lr),
            "--weight-decay",
            repr(self.weight_decay),
            "--dropout" if self.dropout else "--no-dropout",
            "--batch-norm" if self.batch_norm else "--no-batch-norm",
        ]


class GridSetting(Protocol):
    """What a grid needs of a setting: a directory name, a label, train flags."""

    @property
    def name(self) -> str: ...

    @property
    def label(self) -> str: ...

    def flags(self) -> list[str]: ...


@dataclass(frozen=True)
class Run:
    """One training run: a setting of the grid, a method and a seed."""

    setting: GridSetting
    method: Method
    seed: int

    def directory(self, out: Path) -> Path:
        return out / self.setting.name / self.method.name / f"seed{self.seed}"


@dataclass(kw_only=True)
class AblationConfig:
    """Settings of the grid; every field is a command-line flag."""

    out: str = option(help="root directory of the runs", metavar="DIR")
    dataset: str = option("digits", choices=DATASETS)
    data_dir: str | None = option(
        None, "cifar10 only: local CIFAR binary directory", metavar="DIR"
    )
    preset: str | None = option(
        None,
        "passed to every run ('paper': 500 epochs, alpha 0.1, batch 128); "
        "explicit --epochs etc. still override it",
        choices=tuple(train.PRESETS),
    )
    methods: list[Method] = option(
        [Method("xe"), Method("ls"), Method("cc")],
        "LOSS[@SCALE][+learned], LOSS in " + ", ".join(LOSSES) + "; e.g. "
        "cc@auto (CC-LS with the label-smoothing logit scale), ls@22, "
        "cc@1+learned (a learned temperature)",
        parse=Method.parse,
        metavar="METHOD",
    )
    lr: list[float] = option([1e-3], "Adam learning rates", above=0)
    weight_decay: list[float] = option([0.0, 1e-4], at_least=0, metavar="WD")
    dropout: list[str] = option(["on", "off"], choices=tuple(_ON_OFF))
    batch_norm: list[str] = option(["on", "off"], choices=tuple(_ON_OFF))
    seeds: list[int] = option([0, 1, 2])
    epochs: int | None = option(
        None, "per run (default: train's, or the preset's)", at_least=1
    )
    batch_size: int | None = option(None, "per run (default: train's)", at_least=1)
    alpha: float | None = option(None, "smoothing mass (default: train's)")
    jobs: int = option(
        1,
        "runs side by side (each then uses --threads 1 and logs to its "
        "directory's log.txt); 1 shows Keras' progress output",
        at_least=1,
    )
    backend: str | None = option(
        None,
        "Keras backend of every run (default: the configured one)",
        choices=train.BACKENDS,
    )
    verbose: int = option(
        2, "Keras verbosity of each run (2: one line per epoch)", choices=(0, 1, 2)
    )
    summary_only: bool = option(False, "do not train; tabulate and plot")
    # No isolation between runs, but no interpreter and compiler start per
    # run either: the documented studies use it.
    in_process: bool = option(
        False, "train every run in this process (faster; needs --jobs 1)"
    )
    plots: bool = option(True, "write the PNGs (--no-plots: skip them)")
    picture_classes: list[int] = option(
        [0, 1, 2],
        "the three classes of the penultimate-layer picture",
        nargs=3,
        metavar="C",
    )
    picture_setting: str | None = option(
        None,
        "setting name for the picture, e.g. lr0.001_wd0_do0_bn0 (default: the "
        "least regularised setting of the grid)",
    )
    train_args: list[str] = option(
        [], "after '--': extra flags for every run (e.g. -- --digits-size 8)", rest=True
    )

    def __post_init__(self) -> None:
        # A method named twice is one method (the user's order is kept).
        self.methods = list(dict.fromkeys(self.methods))


def ablation_checks(cfg: AblationConfig) -> list[str]:
    """How the flags combine; the bounds of single values are the fields'."""
    problems = []
    if cfg.in_process and cfg.jobs != 1:
        problems.append("--in-process needs --jobs 1")
    if len(set(cfg.picture_classes)) != 3:
        problems.append("--picture-classes needs three distinct class indices")
    if cfg.data_dir and cfg.dataset != "cifar10":
        problems.append("--data-dir applies to --dataset cifar10 only")
    names = [s.name for s in grid_settings(cfg)]
    if cfg.picture_setting and cfg.picture_setting not in names:
        problems.append(
            f"--picture-setting {cfg.picture_setting} is not in the grid: "
            + ", ".join(names)
        )
    return problems


def parse_args(argv: list[str] | None = None) -> AblationConfig:
    """The command line as a checked :class:`AblationConfig`."""
    description = (
        "Run the label-smoothing ablation grid (learning rate x weight decay x "
        "dropout x BatchNorm x method x seeds), skipping finished runs and "
        "resuming interrupted ones, then write summary.md/.csv and PNG plots "
        "to --out."
    )
    return parse_config(AblationConfig, None, argv, description, ablation_checks)


def grid_settings(cfg: AblationConfig) -> list[Setting]:
    # dict.fromkeys: drop repeated values but keep the user's order.
    return [
        Setting(lr, wd, _ON_OFF[do], _ON_OFF[bn])
        for lr, wd, do, bn in itertools.product(
            dict.fromkeys(cfg.lr),
            dict.fromkeys(cfg.weight_decay),
            dict.fromkeys(cfg.dropout),
            dict.fromkeys(cfg.batch_norm),
        )
    ]


def grid_runs(cfg: AblationConfig) -> list[Run]:
    return runs_of(grid_settings(cfg), cfg.methods, cfg.seeds)


def runs_of(
    settings: Sequence[GridSetting], methods: Sequence[Method], seeds: Sequence[int]
) -> list[Run]:
    """Every (setting, method, seed), seeds outermost: a grid stopped early
    still has every cell of its table filled for its first seeds."""
    return [
        Run(setting, method, seed)
        for seed in dict.fromkeys(seeds)
        for setting in settings
        for method in methods
    ]


def is_finished(run_dir: Path, epochs: int | None) -> bool:
    """Whether the run in ``run_dir`` finished (at least ``epochs`` epochs)."""
    state_path = run_dir / "state.json"
    if not state_path.exists():
        return False
    state = json.loads(state_path.read_text())
    return bool(state.get("finished")) and (epochs is None or state["epoch"] >= epochs)


def run_command(run: Run, out: Path, options: Sequence[str] = ()) -> list[str]:
    """``python -m examples.label_smoothing.train`` for ``run`` in ``out``.

    The run's directory, method, seed and setting, then ``options`` (the
    flags every run of the grid shares; a flag repeated there wins).
    """
    return [
        sys.executable,
        "-m",
        "examples.label_smoothing.train",
        "--out",
        str(run.directory(out)),
        *run.method.flags(),
        "--seed",
        str(run.seed),
        *run.setting.flags(),
        *options,
    ]


def train_command(cfg: AblationConfig, run: Run, out: Path) -> list[str]:
    cmd = run_command(
        run, out, ["--dataset", cfg.dataset, "--verbose", str(cfg.verbose)]
    )
    for flag, value in (
        ("--preset", cfg.preset),
        ("--data-dir", cfg.data_dir),
        ("--epochs", cfg.epochs),
        ("--batch-size", cfg.batch_size),
        ("--alpha", cfg.alpha),
        ("--backend", cfg.backend),
    ):
        if value is not None:
            cmd += [flag, str(value)]
    if cfg.jobs > 1:
        cmd += ["--threads", "1"]
    return cmd + list(cfg.train_args)


def run_grid(cfg: AblationConfig, out: Path) -> list[Run]:
    """Train every unfinished run; return the runs that failed."""
    return train_runs(
        grid_runs(cfg),
        out,
        lambda run: train_command(cfg, run, out),
        epochs=cfg.epochs,
        jobs=cfg.jobs,
        in_process=cfg.in_process,
    )


def train_runs(
    runs: Sequence[Run],
    out: Path,
    command: Callable[[Run], list[str]],
    *,
    epochs: int | None,
    jobs: int = 1,
    in_process: bool = False,
    log_to_file: bool = False,
) -> list[Run]:
    """Train the unfinished ``runs`` (``command(run)``); return those that failed.

    Each run is a subprocess of ``train`` (``in_process``: a call of
    ``train.main`` in this process instead), ``jobs`` at a time. A run that
    another process is training (its ``RunLock`` is held) is skipped, so
    several runners may share one list of runs. With ``jobs > 1`` or
    ``log_to_file``, each run logs to its directory's ``log.txt`` and one line
    per finished run is printed.
    """
    todo = [r for r in runs if not is_finished(r.directory(out), epochs)]
    print(
        f"{len(runs)} runs in the grid, {len(runs) - len(todo)} already finished, "
        f"{len(todo)} to train ({jobs} at a time).",
        flush=True,
    )
    log_to_file = log_to_file or jobs > 1
    env = dict(os.environ)
    # The runs import examples.* from the repository root, wherever we are.
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p
    )
    failed: list[Run] = []
    lock = threading.Lock()
    counter = itertools.count(1)
    t_start = time.perf_counter()

    def train_one(run: Run) -> None:
        run_dir = run.directory(out)
        run_dir.mkdir(parents=True, exist_ok=True)
        cmd = command(run)
        t0 = time.perf_counter()
        if not log_to_file:
            print(
                f"\n=== {run.setting.name} / {run.method.name} / seed {run.seed}",
                flush=True,
            )
        if in_process:
            try:
                rc = train.main(cmd[3:])  # the flags after "python -m module"
            except Exception as err:  # report and go on, like a failed subprocess
                print(f"error: {err!r}", file=sys.stderr)
                rc = 1
        elif not log_to_file:
            rc = subprocess.call(cmd, env=env, cwd=REPO_ROOT)
        else:
            # Side-by-side runs would interleave their progress bars: each
            # logs to its own file, and we print one line per finished run.
            with (run_dir / "log.txt").open("a") as log:
                rc = subprocess.call(
                    cmd, env=env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT
                )
        with lock:
            i = next(counter)
            if rc == train.BUSY:
                status = "skipped (another runner is training it)"
            elif rc == 0:
                status = "ok"
            else:
                where = f"; see {run_dir / 'log.txt'}" if log_to_file else ""
                status = f"FAILED (exit {rc}{where})"
                failed.append(run)
            selected = select_epoch(read_metrics(run_dir / "metrics.csv"))
            result = (
                f"selected epoch {int(selected['epoch'])}, val acc "
                f"{selected['val_accuracy']:.4f}, test acc "
                f"{selected['test_accuracy']:.4f}"
                if selected
                else "no epoch finished"
            )
            elapsed = time.perf_counter() - t_start
            print(
                f"[{i}/{len(todo)}] {run.setting.name} {run.method.name} "
                f"seed{run.seed}: {status}, {result}, "
                f"{time.perf_counter() - t0:.0f} s (total {elapsed / 60:.1f} min)",
                flush=True,
            )

    if jobs == 1:
        for run in todo:
            train_one(run)
    else:
        with ThreadPoolExecutor(jobs) as pool:
            list(pool.map(train_one, todo))
    return failed


def read_metrics(path: Path) -> list[dict[str, float]]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return [
            {k: float(v) if v not in ("", None) else float("nan") for k, v in r.items()}
            for r in csv.DictReader(f)
        ]


def select_epoch(rows: list[dict[str, float]]) -> dict[str, float] | None:
    """The epoch of best validation accuracy (the earliest, on ties).

    Model selection looks at the validation split only; the returned row
    carries the test numbers of that epoch.
    """
    if not rows:
        return None
    return max(rows, key=lambda r: (r["val_accuracy"], -r["epoch"]))


# The per-run numbers the summary reports, from the selected epoch's row
# (and "last_test_accuracy" from the last epoch's).
SUMMARY_FIELDS: tuple[str, ...] = (
    "test_accuracy",
    "last_test_accuracy",
    "val_accuracy",
    "epoch",
    "test_nll",
    "test_ece",
    "test_ccmean_nll",
    "test_ccmean_ece",
)


@dataclass
class Cell:
    """The selected-epoch numbers of one (setting, method) over its seeds."""

    setting: Setting
    method: Method
    runs: list[dict[str, float]]

    def values(self, field: str) -> list[float]:
        return [r[field] for r in self.runs]

    def mean(self, field: str) -> float:
        values = self.values(field)
        if not values or not all(math.isfinite(v) for v in values):
            return float("nan")
        return statistics.fmean(values)

    def std(self, field: str) -> float | None:
        """Sample std (ddof=1) over seeds; None for fewer than two seeds."""
        values = self.values(field)
        if len(values) < 2:
            return None
        if not all(math.isfinite(v) for v in values):
            return float("nan")
        return statistics.stdev(values)

    def text(self, field: str, scale: float = 100.0, digits: int = 1) -> str:
        """``mean ± std (n=...)``; a single seed shows no ± at all."""
        if not self.runs:
            return "–"
        mean, std = scale * self.mean(field), self.std(field)
        if std is None:
            return f"{mean:.{digits}f} (n=1)"
        return f"{mean:.{digits}f} ± {scale * std:.{digits}f} (n={len(self.runs)})"


def run_result(run_dir: Path, epochs: int | None) -> dict[str, float] | None:
    """A finished run's selected-epoch row, with ``last_test_accuracy``.

    None for an unfinished run: only finished runs count, as a half-trained
    seed would bias the mean down.
    """
    if not is_finished(run_dir, epochs):
        return None
    rows = read_metrics(run_dir / "metrics.csv")
    selected = select_epoch(rows)
    if selected is None:
        return None
    return dict(selected) | {"last_test_accuracy": rows[-1]["test_accuracy"]}


def collect(cfg: AblationConfig, out: Path) -> list[Cell]:
    cells = []
    for setting in grid_settings(cfg):
        for method in cfg.methods:
            results = (
                run_result(Run(setting, method, seed).directory(out), cfg.epochs)
                for seed in dict.fromkeys(cfg.seeds)
            )
            cells.append(Cell(setting, method, [r for r in results if r]))
    return cells


def summary_markdown(cells: list[Cell]) -> str:
    """One row per (setting, method): accuracy and calibration, in %."""
    lines = [
        "| setting | method | test acc. (selected epoch) | test acc. (last epoch) "
        "| selected epoch | NLL | ECE | NLL, CC mean | ECE, CC mean |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cells:
        has_cc_mean = c.runs and math.isfinite(c.mean("test_ccmean_ece"))
        lines.append(
            f"| {c.setting.label} | {c.method.label} | {c.text('test_accuracy')} "
            f"| {c.text('last_test_accuracy')} "
            f"| {c.text('epoch', scale=1.0, digits=0)} "
            f"| {c.text('test_nll', scale=1.0, digits=3)} | {c.text('test_ece')} "
            + (
                f"| {c.text('test_ccmean_nll', scale=1.0, digits=3)} "
                f"| {c.text('test_ccmean_ece')} |"
                if has_cc_mean
                else "| – | – |"
            )
        )
    return "\n".join(lines) + "\n"


def write_summary(cells: list[Cell], out: Path) -> str:
    table = summary_markdown(cells)
    (out / "summary.md").write_text(
        "Per run, the epoch of best validation accuracy is selected; the table "
        "gives the test numbers at that epoch (and the test accuracy at the "
        "last epoch): mean ± sample std over seeds (n = finished seeds). "
        "Accuracy and ECE (15 bins) in %, NLL of the true label in nats; "
        "probabilities are softmax(s·z) (s the loss's logit scale) and, for "
        "the CC losses, also the CC mean.\n\n" + table
    )
    with (out / "summary.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        header = ["setting", "lr", "weight_decay", "dropout", "batch_norm", "method"]
        header += ["n", *(f"mean_{x}" for x in SUMMARY_FIELDS)]
        header += [*(f"std_{x}" for x in SUMMARY_FIELDS), "test_accuracy_per_seed"]
        writer.writerow(header)
        for c in cells:
            stds = [c.std(x) for x in SUMMARY_FIELDS]
            writer.writerow(
                [
                    c.setting.name,
                    c.setting.lr,
                    c.setting.weight_decay,
                    int(c.setting.dropout),
                    int(c.setting.batch_norm),
                    c.method.name,
                    len(c.runs),
                    *(f"{c.mean(x):.6f}" for x in SUMMARY_FIELDS),
                    *("" if v is None else f"{v:.6f}" for v in stds),
                    " ".join(f"{v:.6f}" for v in c.values("test_accuracy")),
                ]
            )
    return table


def plot_curves(cfg: AblationConfig, out: Path) -> Path:
    """Test accuracy vs epoch; one panel per setting, mean and +-1 std band."""
    seeds = list(dict.fromkeys(cfg.seeds))
    panels = [
        (
            setting.label,
            {
                method: accuracy_curves(
                    Run(setting, method, seed).directory(out) for seed in seeds
                )
                for method in cfg.methods
            },
        )
        for setting in grid_settings(cfg)
    ]
    return plot_accuracy_panels(
        panels,
        cfg.methods,
        f"{cfg.dataset}: test accuracy (mean ± 1 std over seeds)",
        out / "accuracy_curves.png",
    )


def accuracy_curves(run_dirs: Iterable[Path]) -> list[list[float]]:
    """The test accuracy per epoch of each run that has finished an epoch."""
    curves = [
        [row["test_accuracy"] for row in read_metrics(run_dir / "metrics.csv")]
        for run_dir in run_dirs
    ]
    return [c for c in curves if c]


def plot_accuracy_panels(
    panels: Sequence[tuple[str, Mapping[Method, list[list[float]]]]],
    methods: Sequence[Method],
    title: str,
    path: Path,
    *,
    share_y: bool = True,
) -> Path:
    """Accuracy curves, one panel per ``(title, {method: curves})``.

    Each method's curves (fractions per epoch, one list per seed) are drawn
    as their mean over seeds with a +-1 std band, in the method's colour
    (its place in ``methods``) in every panel; curves of different lengths
    are cut to the shortest. ``share_y=False`` gives each panel its own
    y range, for panels whose accuracies differ widely.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.ticker import MaxNLocator

    ncols = min(4, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(4.2 * ncols, 3.4 * nrows),
        squeeze=False,
        sharex=True,
        sharey=share_y,
    )
    top = 100.5
    lows = []
    legend: dict[str, object] = {}
    for ax, (panel_title, curves_of) in zip(axes.flat, panels, strict=False):
        panel_lows = []
        for index, method in enumerate(methods):
            colour = f"C{index % 10}"
            curves = curves_of.get(method, [])
            if not curves:
                continue
            length = min(len(c) for c in curves)
            acc = 100 * np.array([c[:length] for c in curves])
            mean, std = acc.mean(0), acc.std(0)
            epochs = np.arange(1, length + 1)
            (line,) = ax.plot(epochs, mean, color=colour, label=method.label, lw=1.5)
            legend.setdefault(method.label, line)
            ax.fill_between(epochs, mean - std, mean + std, color=colour, alpha=0.2)
            # Ignore the first fifth of training when choosing the y range,
            # so the (interesting) end of the curves is not squashed.
            panel_lows.append(np.min(mean[length // 5 :]))
        if panel_lows and not share_y:
            ax.set_ylim(max(0.0, min(panel_lows) - 2), top)
        lows += panel_lows
        ax.set_title(panel_title, fontsize=10)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    if lows and share_y:
        axes[0, 0].set_ylim(max(0.0, min(lows) - 2), top)
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    for ax in axes[:, 0]:
        ax.set_ylabel("test accuracy (%)")
    for ax in axes.flat:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(title, fontsize=12)
    # The legend goes under the panels, where it cannot cover a curve or
    # the title.
    labels = list(legend)
    legend_rows = -(-len(labels) // 4)
    fig.tight_layout(rect=(0, 0.06 * legend_rows / nrows, 1, 1))
    fig.legend(
        list(legend.values()),
        labels,
        loc="lower center",
        ncol=max(1, min(len(labels), 4)),
        frameon=False,
        bbox_to_anchor=(0.5, 0.0),
    )
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_penultimate(cfg: AblationConfig, out: Path) -> Path | None:
    """Penultimate activations of three classes on their templates' plane.

    For each loss (one seed, one setting) the final Dense kernel's columns
    w_a, w_b, w_c are the class templates; an orthonormal basis of the plane
    through them (Gram-Schmidt on w_b - w_a, w_c - w_a) gives 2-D coordinates
    for every example's penultimate activation h: (u1 . (h - w_a),
    u2 . (h - w_a)). Tight, well separated clusters are what label smoothing
    is known to produce (Mueller et al., 2019).
    """
    if cfg.backend:
        os.environ["KERAS_BACKEND"] = cfg.backend
    import keras
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from examples.label_smoothing import data as data_lib
    from examples.label_smoothing import model as model_lib

    settings = grid_settings(cfg)
    setting = next(
        (s for s in settings if s.name == cfg.picture_setting),
        min(settings, key=lambda s: (s.batch_norm, s.dropout, s.weight_decay)),
    )
    seed = cfg.seeds[0]
    losses = [
        m
        for m in cfg.methods
        if not m.learned
        and is_finished(Run(setting, m, seed).directory(out), cfg.epochs)
    ]
    if not losses:
        print(f"penultimate picture: no finished runs for {setting.name} seed {seed}.")
        return None
    config = json.loads(
        (Run(setting, losses[0], seed).directory(out) / "config.json").read_text()
    )
    # The runs' split and standardisation, on all of the data.
    data = data_lib.prepare_data(
        config["dataset"],
        config.get("data_dir"),
        config["digits_size"],
        config["val_fraction"],
        pairs_per_class=config.get("pairs_per_class", data_lib.DIGIT_PAIRS_PER_CLASS),
    )
    classes = list(cfg.picture_classes)
    if max(classes) >= data.num_classes:
        raise SystemExit(f"error: --picture-classes must be < {data.num_classes}.")
    colours = ["tab:blue", "tab:orange", "tab:green"]
    fig, axes = plt.subplots(
        2, len(losses), figsize=(3.6 * len(losses), 7.0), squeeze=False
    )
    rng = np.random.default_rng(0)
    for col, loss in enumerate(losses):
        run_dir = Run(setting, loss, seed).directory(out)
        model = train.load_run_model(run_dir, data)
        features = model_lib.penultimate_model(model)
        kernel = keras.ops.convert_to_numpy(model.get_layer("logits").kernel)
        templates = kernel[:, classes].T.astype(np.float64)  # (3, D)
        u1 = templates[1] - templates[0]
        u1 /= np.linalg.norm(u1)
        u2 = templates[2] - templates[0]
        u2 -= (u2 @ u1) * u1
        u2 /= np.linalg.norm(u2)
        basis = np.stack([u1, u2], axis=1)  # (D, 2)
        for row, (split, x, y) in enumerate(
            (("train", data.x_train, data.y_train), ("test", data.x_test, data.y_test))
        ):
            ax = axes[row, col]
            for colour, k in zip(colours, classes, strict=True):
                xs = x[y == k]
                if len(xs) > 300:  # keep the scatter readable
                    xs = xs[rng.choice(len(xs), 300, replace=False)]
                h = features.predict(xs, verbose=0).astype(np.float64)
                xy = (h - templates[0]) @ basis
                ax.scatter(
                    xy[:, 0], xy[:, 1], s=6, alpha=0.6, color=colour, label=f"class {k}"
                )
            ax.set_title(f"{loss.label} ({split})", fontsize=10)
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].legend(loc="best", fontsize=8, markerscale=2)
    fig.suptitle(
        f"Penultimate layer, classes {classes}, projected onto the plane of their "
        f"templates\n{cfg.dataset}, {setting.label}, seed {seed}",
        fontsize=11,
    )
    return _save_figure(fig, out / "penultimate.png")


def plot_reliability(cfg: AblationConfig, out: Path) -> Path | None:
    """Reliability diagrams at the selected epoch, one panel per method.

    Accuracy against confidence in 15 equal bins, pooled over the seeds of the
    first setting; softmax(s z) in solid lines, the CC mean (CC losses) dashed.
    The diagonal is perfect calibration: below it is over-confident.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from examples.label_smoothing import calibration

    setting = grid_settings(cfg)[0]
    panels = []
    for method in cfg.methods:
        pooled: dict[str, list[np.ndarray]] = {"probs": [], "ccmean": [], "labels": []}
        for seed in dict.fromkeys(cfg.seeds):
            path = Run(setting, method, seed).directory(out) / "selected_test.npz"
            if path.exists():
                with np.load(path) as saved:
                    for key in pooled:
                        if key in saved:
                            pooled[key].append(saved[key])
        if pooled["labels"]:
            panels.append(
                (method, {k: np.concatenate(v) for k, v in pooled.items() if v})
            )
    if not panels:
        return None
    fig, axes = plt.subplots(
        1, len(panels), figsize=(3.0 * len(panels), 3.3), squeeze=False, sharey=True
    )
    for ax, (method, saved) in zip(axes[0], panels, strict=True):
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8)
        for key, style in (("probs", "-"), ("ccmean", "--")):
            if key not in saved:
                continue
            conf, acc, counts = calibration.reliability_bins(
                saved[key], saved["labels"]
            )
            used = counts > 0
            ece = calibration.expected_calibration_error(saved[key], saved["labels"])
            name = "softmax" if key == "probs" else "CC mean"
            ax.plot(
                conf[used],
                acc[used],
                style,
                marker="o",
                ms=3,
                label=f"{name} (ECE {100 * ece:.1f}%)",
            )
        ax.set_title(method.label, fontsize=9)
        ax.set_xlabel("confidence")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7, loc="upper left")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("accuracy")
    fig.suptitle(
        f"{cfg.dataset}, {setting.label}: reliability at the selected epoch "
        "(test set, seeds pooled)",
        fontsize=10,
    )
    return _save_figure(fig, out / "reliability.png")


def _save_figure(fig, path: Path) -> Path:
    """Lay out, write as PNG and free the figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    failed: list[Run] = []
    if not cfg.summary_only:
        failed = run_grid(cfg, out)
    cells = collect(cfg, out)
    table = write_summary(cells, out)
    print(
        f"\n{cfg.dataset}: test accuracy (%) at the epoch of best validation "
        "accuracy, mean ± std over seeds; NLL and ECE at that epoch:\n"
    )
    print(table)
    print(f"written: {out / 'summary.md'}, {out / 'summary.csv'}")
    if cfg.plots:
        print(f"written: {plot_curves(cfg, out)}")
        for plot in (plot_reliability, plot_penultimate):
            picture = plot(cfg, out)
            if picture:
                print(f"written: {picture}")
    return exit_status(failed)


def exit_status(failed: Sequence[Run]) -> int:
    """1 after naming the failed runs on stderr, 0 if there are none."""
    if not failed:
        return 0
    print(
        f"{len(failed)} run(s) failed: "
        + ", ".join(f"{r.setting.name}/{r.method.name}/seed{r.seed}" for r in failed),
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
