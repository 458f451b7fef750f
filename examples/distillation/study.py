"""The distillation study: grid, validation selection, tables and plots.

Grid: method x temperature T x mixing weight alpha (x logit scale for
CC-KD) x seeds, one student run each (``examples.distillation.train``), run
one after another in this process, seeds outermost (a grid stopped early has
its first seeds complete for every setting). Each run writes its own
directory ``OUT/<method>/<setting>/seed<k>/``; finished runs are skipped, so
the same command resumes an interrupted study (an unfinished run restarts
from its first epoch: a run takes well under a minute). The teacher is
trained once, in ``OUT/teacher/``.

Selection uses the validation split only: per run, the epoch of best
validation accuracy; per method, the setting (T, alpha, scale) with the best
mean validation accuracy over seeds. The tables report the *test* numbers
of the selected settings and epochs, mean ± sample std over seeds (n seeds):

- ``OUT/summary.md``: the headline table, the whole grid, the commands;
- ``OUT/grid.csv``: one line per setting;
- ``OUT/curves.png``: validation and test accuracy per epoch of the selected
  settings (mean ± 1 std), and the teacher;
- ``OUT/grid.png``: mean validation accuracy of every setting against T.

    python -m examples.distillation.study --out runs/distillation
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

from examples._config import option, parse_config
from examples.distillation import METHODS
from examples.distillation.train import Config, is_finished, logit_scale_problems

LABELS: dict[str, str] = {"hard": "hard labels", "hinton": "Hinton KD", "cc": "CC-KD"}


@dataclass
class StudyConfig:
    """The distillation grid on MNIST-1D (teacher: CNN, student: MLP)."""

    out: str = option(
        "examples/distillation/results/mnist1d",
        "study directory (runs, teacher, tables, plots)",
        metavar="DIR",
    )
    methods: list[str] = option(list(METHODS), "the methods", choices=METHODS)
    temperatures: list[float] = option([1.0, 2.0, 4.0], "T grid", above=0)
    alphas: list[float] = option(
        [0.1, 0.5],
        "hard-label weight grid (1 - alpha: distillation)",
        at_least=0,
        at_most=1,
    )
    cc_logit_scales: list[str] = option(
        ["1", "auto"],
        "logit-scale grid of CC-KD (numbers, auto or mean)",
        metavar="SCALE",
    )
    seeds: list[int] = option([0, 1, 2, 3, 4], "student seeds")
    epochs: int = option(100, "student epochs", at_least=1)
    teacher_epochs: int = option(100, "teacher epochs", at_least=1)
    learning_rate: float = option(1e-2, "Adam", above=0)
    batch_size: int = option(100, "batch size", at_least=1)
    val_fraction: float = option(0.1, "validation split", above=0, below=1)
    limit_train: int = option(0, "first N train (0: all)")
    label_fraction: float = option(
        1.0,
        "fraction of the training labels the students see (train.Config)",
        above=0,
        at_most=1,
    )
    teacher_dir: str = option(
        "",
        "the teacher's directory (default: OUT/teacher; trained there if absent)",
        metavar="DIR",
    )
    summary_only: bool = option(False, "only tabulate and plot what is on disk")
    verbose: int = option(0, "per-run epoch lines")


def study_checks(study: StudyConfig) -> list[str]:
    return logit_scale_problems(
        study.cc_logit_scales, "--cc-logit-scales", cc_only=False
    )


def parse_args(argv: list[str] | None = None) -> StudyConfig:
    """The command line as a checked :class:`StudyConfig`."""
    return parse_config(StudyConfig, None, argv, __doc__, study_checks)


@dataclass(frozen=True)
class Setting:
    """One cell of the grid (all seeds)."""

    method: str
    temperature: float = 1.0
    alpha: float = 1.0
    logit_scale: str = "1"

    @property
    def name(self) -> str:
        if self.method == "hard":
            return "default"
        name = f"T{self.temperature:g}_a{self.alpha:g}"
        return name + (f"_s{self.logit_scale}" if self.method == "cc" else "")

    @property
    def label(self) -> str:
        if self.method == "hard":
            return LABELS["hard"]
        text = f"{LABELS[self.method]}, T={self.temperature:g}, α={self.alpha:g}"
        if self.method == "cc":
            text += f", scale {self.logit_scale}"
        return text

    def directory(self, out: Path, seed: int) -> Path:
        return out / self.method / self.name / f"seed{seed}"


def grid(study: StudyConfig) -> list[Setting]:
    """Every setting of the study, in method order."""
    settings = []
    for method in study.methods:
        if method == "hard":
            settings.append(Setting("hard"))
            continue
        scales = study.cc_logit_scales if method == "cc" else ["1"]
        for t in study.temperatures:
            for alpha in study.alphas:
                for scale in scales:
                    settings.append(Setting(method, t, alpha, scale))
    return settings


def teacher_dir(study: StudyConfig) -> Path:
    return Path(study.teacher_dir) if study.teacher_dir else Path(study.out) / "teacher"


def run_config(study: StudyConfig, setting: Setting, seed: int) -> Config:
    out = Path(study.out)
    return Config(
        method=setting.method,
        temperature=setting.temperature,
        alpha=setting.alpha,
        logit_scale=setting.logit_scale,
        seed=seed,
        epochs=study.epochs,
        batch_size=study.batch_size,
        learning_rate=study.learning_rate,
        val_fraction=study.val_fraction,
        limit_train=study.limit_train,
        label_fraction=study.label_fraction,
        teacher_epochs=study.teacher_epochs,
        teacher_dir=str(teacher_dir(study)),
        out=str(setting.directory(out, seed)),
        verbose=study.verbose,
    )


def run_grid(study: StudyConfig) -> None:
    """Train every unfinished run, seeds outermost, with progress lines."""
    from examples.distillation import train

    todo = [
        run_config(study, setting, seed)
        for seed in study.seeds
        for setting in grid(study)
    ]
    todo = [c for c in todo if not is_finished(Path(c.out))]
    print(f"{len(todo)} runs to do in {study.out}", flush=True)
    if not todo:
        return
    data = train.load_data(study.val_fraction, study.limit_train)
    start = time.monotonic()
    for index, config in enumerate(todo, start=1):
        result = train.run(config, data)
        elapsed = time.monotonic() - start
        eta = elapsed / index * (len(todo) - index)
        selected = result["selected"]
        print(
            f"[{index}/{len(todo)}] {config.out}: val "
            f"{100 * selected['val_accuracy']:.1f}% test "
            f"{100 * selected['test_accuracy']:.1f}% "
            f"({result['wall_s']:.0f} s; eta {eta / 60:.0f} min)",
            flush=True,
        )


def collect(study: StudyConfig):
    """One ``ablation.Cell`` per setting: the selected rows of its finished
    seeds, plus the resolved logit scale."""
    from examples.label_smoothing.ablation import Cell

    out = Path(study.out)
    cells = []
    for setting in grid(study):
        runs = []
        for seed in dict.fromkeys(study.seeds):
            directory = setting.directory(out, seed)
            if not is_finished(directory):
                continue
            result = json.loads((directory / "result.json").read_text())
            row = dict(result["selected"])
            row["last_test_accuracy"] = result["last"]["test_accuracy"]
            row["logit_scale"] = result["resolved_logit_scale"]
            row["seed"] = seed
            runs.append(row)
        cells.append(Cell(setting, setting.method, runs))
    return cells


def select_settings(cells) -> dict[str, object]:
    """Per method, the cell of best mean validation accuracy.

    Only cells with the most finished seeds of their method compete, so a
    setting is not chosen for having fewer (luckier) seeds.
    """
    chosen = {}
    for method in dict.fromkeys(c.method for c in cells):
        own = [c for c in cells if c.method == method and c.runs]
        if not own:
            continue
        most = max(len(c.runs) for c in own)
        chosen[method] = max(
            (c for c in own if len(c.runs) == most),
            key=lambda c: c.mean("val_accuracy"),
        )
    return chosen


def teacher_result(study: StudyConfig) -> dict | None:
    path = teacher_dir(study) / "result.json"
    return json.loads(path.read_text()) if path.is_file() else None


def headline_table(cells, study: StudyConfig) -> str:
    """The selected setting of each method, test numbers at the selected epoch."""
    lines = [
        "| method | selected on validation | n | test acc. % | val acc. % "
        "| test NLL | test ECE % | agreement with teacher % "
        "| test acc. % (last epoch) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    teacher = teacher_result(study)
    if teacher:
        sel = teacher["selected"]
        lines.append(
            f"| teacher (CNN) | epoch {int(sel['epoch'])} | 1 seed "
            f"| {100 * sel['test_accuracy']:.1f} | {100 * sel['val_accuracy']:.1f} "
            f"| {sel['test_nll']:.3f} | {100 * sel['test_ece']:.1f} | – | – |"
        )
    for method, cell in select_settings(cells).items():
        setting = cell.setting
        if method == "hard":
            chosen = "–"
        else:
            chosen = f"T={setting.temperature:g}, α={setting.alpha:g}"
            if method == "cc":
                chosen += f", scale {_scale_text(cell)}"
        lines.append(
            f"| {LABELS[method]} | {chosen} | {len(cell.runs)} "
            f"| {_pm(cell, 'test_accuracy')} | {_pm(cell, 'val_accuracy')} "
            f"| {_pm(cell, 'test_nll', 1.0, 3)} | {_pm(cell, 'test_ece')} "
            f"| {_pm(cell, 'test_agreement')} | {_pm(cell, 'last_test_accuracy')} |"
        )
    return "\n".join(lines)


def grid_table(cells) -> str:
    """Every setting: validation accuracy (the selection criterion) and test."""
    lines = [
        "| method | T | α | logit scale | n | val acc. % | test acc. % "
        "| test NLL | test ECE % | agreement % |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    chosen = {id(c) for c in select_settings(cells).values()}
    for cell in cells:
        if not cell.runs:
            continue
        s = cell.setting
        hard = s.method == "hard"
        mark = " **(selected)**" if id(cell) in chosen else ""
        lines.append(
            f"| {LABELS[s.method]}{mark} | {'–' if hard else f'{s.temperature:g}'} "
            f"| {'–' if hard else f'{s.alpha:g}'} "
            f"| {_scale_text(cell) if s.method == 'cc' else '–'} | {len(cell.runs)} "
            f"| {_pm(cell, 'val_accuracy')} | {_pm(cell, 'test_accuracy')} "
            f"| {_pm(cell, 'test_nll', 1.0, 3)} | {_pm(cell, 'test_ece')} "
            f"| {_pm(cell, 'test_agreement')} |"
        )
    return "\n".join(lines)


def _pm(cell, field: str, scale: float = 100.0, digits: int = 1) -> str:
    """``mean ± std`` (the Cell's text without its ``(n=...)``); an infinite
    value (an NLL where a true class got probability 0) is counted instead."""
    infinite = sum(not math.isfinite(v) for v in cell.values(field))
    if infinite:
        return f"∞ in {infinite} of {len(cell.runs)} runs"
    return cell.text(field, scale, digits).split(" (n=")[0]


def _scale_text(cell) -> str:
    """ "1", or "auto (×s)" with the resolved scale (the same for every seed)."""
    if cell.setting.logit_scale == "mean":
        return "mean parameterisation"
    if cell.setting.logit_scale != "auto":
        return cell.setting.logit_scale
    return f"auto (×{cell.runs[0]['logit_scale']:.1f})"


def _labels_text(study: StudyConfig) -> str:
    if study.label_fraction == 1.0:
        return ""
    return f" with {100 * study.label_fraction:g} % of the labels"


def _fraction_flag(study: StudyConfig) -> str:
    if study.label_fraction == 1.0:
        return ""
    return f" --label-fraction {study.label_fraction:g}"


def write_summary(study: StudyConfig, cells) -> str:
    out = Path(study.out)
    text = "\n\n".join(
        [
            f"# Distillation on MNIST-1D{_labels_text(study)}: summary",
            "Generated by `python -m examples.distillation.study --out "
            f"{study.out}{_fraction_flag(study)} --summary-only` (with the "
            "grid's flags). Test numbers at each run's epoch of "
            "best validation accuracy; per method, the setting of best mean "
            "validation accuracy; mean ± sample std over seeds.",
            "## Selected settings",
            headline_table(cells, study),
            "## Every setting",
            grid_table(cells),
        ]
    )
    (out / "summary.md").write_text(text + "\n")
    fields = [
        "val_accuracy",
        "test_accuracy",
        "last_test_accuracy",
        "test_nll",
        "test_ece",
        "test_agreement",
        "epoch",
    ]
    with (out / "grid.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["method", "temperature", "alpha", "logit_scale", "n"]
            + [f"{name}_{stat}" for name in fields for stat in ("mean", "std")]
        )
        for cell in cells:
            if not cell.runs:
                continue
            s = cell.setting
            row = [s.method, s.temperature, s.alpha, s.logit_scale, len(cell.runs)]
            for name in fields:
                row += [cell.mean(name), cell.std(name)]
            writer.writerow(row)
    return text


def plot_curves(study: StudyConfig, cells) -> Path:
    """Validation and test accuracy per epoch, selected settings, teacher."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from examples.label_smoothing.ablation import _save_figure, read_metrics

    out = Path(study.out)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    teacher = teacher_result(study)
    for index, cell in enumerate(select_settings(cells).values()):
        curves = [
            read_metrics(cell.setting.directory(out, int(r["seed"])) / "metrics.csv")
            for r in cell.runs
        ]
        length = min(len(c) for c in curves)
        for ax, split in zip(axes, ("val", "test"), strict=True):
            acc = 100 * np.array(
                [[row[f"{split}_accuracy"] for row in c[:length]] for c in curves]
            )
            mean, std = acc.mean(0), acc.std(0)
            epochs = np.arange(1, length + 1)
            label = f"{cell.setting.label} (n={len(curves)})"
            ax.plot(epochs, mean, color=f"C{index}", lw=1.5, label=label)
            ax.fill_between(
                epochs, mean - std, mean + std, color=f"C{index}", alpha=0.2
            )
    for ax, split in zip(axes, ("val", "test"), strict=True):
        if teacher:
            ax.axhline(
                100 * teacher["selected"][f"{split}_accuracy"],
                color="k",
                ls="--",
                lw=1,
                label="teacher (CNN)",
            )
        ax.set_title(f"{'validation' if split == 'val' else 'test'} accuracy")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy (%)")
    axes[0].set_ylim(40, 100)
    axes[1].legend(fontsize=8, loc="lower right")
    fig.suptitle(
        f"MNIST-1D, MLP student{_labels_text(study)}: mean ± 1 std over seeds",
        fontsize=11,
    )
    return _save_figure(fig, out / "curves.png")


def plot_grid(study: StudyConfig, cells) -> Path:
    """Mean validation accuracy of every setting against the temperature."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from examples.label_smoothing.ablation import _save_figure

    out = Path(study.out)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    lines: dict[tuple[str, float, str], list] = {}
    for cell in cells:
        s = cell.setting
        if not cell.runs:
            continue
        if s.method == "hard":
            ax.axhline(
                100 * cell.mean("val_accuracy"), color="k", lw=1, label="hard labels"
            )
            continue
        lines.setdefault((s.method, s.alpha, s.logit_scale), []).append(cell)
    styles = {"hinton": "-", "cc": "--"}
    for index, ((method, alpha, scale), own) in enumerate(lines.items()):
        label = f"{LABELS[method]}, α={alpha:g}"
        if method == "cc":
            label += f", scale {scale}"
        ax.errorbar(
            [c.setting.temperature for c in own],
            [100 * c.mean("val_accuracy") for c in own],
            yerr=[100 * (c.std("val_accuracy") or 0.0) for c in own],
            ls=styles[method],
            marker="o",
            capsize=3,
            color=f"C{index}",
            label=label,
        )
    ax.set_xscale("log", base=2)
    ax.set_xticks(study.temperatures, [f"{t:g}" for t in study.temperatures])
    ax.minorticks_off()
    ax.set_xlabel("temperature T")
    ax.set_ylabel("validation accuracy (%), mean ± std")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(
        f"MNIST-1D, MLP student{_labels_text(study)}: the selection grid",
        fontsize=11,
    )
    return _save_figure(fig, out / "grid.png")


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    study = parse_args(argv)
    Path(study.out).mkdir(parents=True, exist_ok=True)
    if not study.summary_only:
        run_grid(study)
    cells = collect(study)
    print(write_summary(study, cells))
    if any(c.runs for c in cells):
        print(plot_curves(study, cells), plot_grid(study, cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
