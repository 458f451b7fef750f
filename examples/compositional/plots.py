"""Plots of the compositional study: predicted vs observed, PIT, ternary.

All figures read the study's files (``split<k>.npz``, ``split<k>.csv``), so
``--summary-only`` redraws them without training anything.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from examples.compositional import LABELS
from examples.compositional.study import (
    DENSITY_LIKELIHOODS,
    PIT_BINS,
    Cell,
    StudyConfig,
    is_finished,
    run_directory,
)

TERNARY_ROWS = 4  # test constituencies drawn in the ternary plot
TERNARY_SAMPLES = 300


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def _panels(own: list[Cell], width: float, height: float, **kwargs):
    """A figure with one panel per (model, likelihood) of ``own``: models in
    rows, likelihoods in columns. Returns the figure, the axes and a function
    giving a cell's panel."""
    models = list(dict.fromkeys(c.model for c in own))
    likelihoods = list(dict.fromkeys(c.likelihood for c in own))
    fig, axes = _pyplot().subplots(
        len(models),
        len(likelihoods),
        figsize=(width * len(likelihoods), height * len(models)),
        squeeze=False,
        **kwargs,
    )

    def panel(cell: Cell):
        ax = axes[models.index(cell.model), likelihoods.index(cell.likelihood)]
        ax.set_title(f"{LABELS[cell.model]}, {LABELS[cell.likelihood]}", fontsize=9)
        return ax

    return fig, axes, panel


def _predictions(cfg: StudyConfig, cell: Cell) -> Iterator[dict[str, np.ndarray]]:
    """The saved test predictions of each finished split of ``cell``."""
    directory = run_directory(Path(cfg.out), cell.dataset, cell.model, cell.likelihood)
    for seed in range(cfg.splits):
        path = directory / f"split{seed}.npz"
        if is_finished(directory, seed) and path.is_file():
            with np.load(path) as saved:
                yield {key: saved[key] for key in saved.files} | {"seed": seed}


def plot_predicted_vs_observed(
    cfg: StudyConfig,
    cells: list[Cell],
    name: str,
    y: np.ndarray,
    parts: tuple[str, ...],
) -> Path:
    """Predicted mean share against observed share, every test row of every
    split, one panel per model and likelihood, one colour per part."""
    own = [c for c in cells if c.dataset == name and c.selected]
    fig, axes, panel = _panels(own, 3.2, 3.2, sharex=True, sharey=True)
    for cell in own:
        ax = panel(cell)
        for saved in _predictions(cfg, cell):
            observed = y[saved["test"]]
            for k in range(len(parts)):
                ax.scatter(
                    observed[:, k],
                    saved["mean"][:, k],
                    s=3,
                    alpha=0.25,
                    color=f"C{k}",
                    label=parts[k] if saved["seed"] == 0 else None,
                    rasterized=True,
                )
        ax.plot([0, 1], [0, 1], color="k", lw=0.8)
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("observed share")
    for ax in axes[:, 0]:
        ax.set_ylabel("predicted mean share")
    axes[0, 0].legend(fontsize=7, markerscale=3, loc="upper left")
    fig.suptitle(f"{name}: test rows of all splits", fontsize=11)
    return _save(fig, Path(cfg.out) / f"pred_vs_obs_{name}.png")


def _with_density(cells: list[Cell], name: str) -> list[Cell]:
    """The finished cells of dataset ``name`` with a predictive density."""
    return [
        c
        for c in cells
        if c.dataset == name and c.selected and c.likelihood in DENSITY_LIKELIHOODS
    ]


def plot_pit(cfg: StudyConfig, cells: list[Cell], name: str) -> Path | None:
    """PIT histograms (all parts and splits pooled); flat = calibrated."""
    own = _with_density(cells, name)
    if not own:
        return None
    fig, axes, panel = _panels(own, 3.2, 2.6, sharey=True)
    edges = np.linspace(0, 1, PIT_BINS + 1)
    for cell in own:
        ax = panel(cell)
        counts = np.zeros(PIT_BINS)
        for row in cell.selected:
            if "pit0" in row:
                counts += [row[f"pit{b}"] for b in range(PIT_BINS)]
        if counts.sum() > 0:
            ax.stairs(counts / counts.sum() * PIT_BINS, edges, fill=True, alpha=0.6)
        ax.axhline(1.0, color="k", lw=0.8, ls="--")
        ax.set_xlabel("PIT")
    for ax in axes[:, 0]:
        ax.set_ylabel("density")
    fig.suptitle(f"{name}: PIT of test shares (uniform = calibrated)", fontsize=11)
    return _save(fig, Path(cfg.out) / f"pit_{name}.png")


def ternary_xy(shares: np.ndarray) -> np.ndarray:
    """Cartesian coordinates of three-part shares in an equilateral
    triangle: part 1 at (0, 0), part 2 at (1, 0), part 3 at the top.

    >>> ternary_xy(np.eye(3)).round(3).tolist()
    [[0.0, 0.0], [1.0, 0.0], [0.5, 0.866]]
    """
    shares = np.asarray(shares)
    return np.stack(
        [shares[..., 1] + shares[..., 2] / 2, shares[..., 2] * np.sqrt(3) / 2],
        axis=-1,
    )


def plot_ternary(
    cfg: StudyConfig,
    cells: list[Cell],
    name: str,
    y: np.ndarray,
    parts: tuple[str, ...],
) -> Path | None:
    """Predictive samples of a few test rows of split 0 in the triangle, per
    model and density likelihood, with the observed point and the mean."""
    from examples.compositional.likelihoods import predictive_samples

    own = _with_density(cells, name)
    if y.shape[1] != 3 or not own:
        return None
    fig, axes, panel = _panels(own, 3.6, 3.4)
    corners = ternary_xy(np.eye(3))
    for cell in own:
        ax = panel(cell)
        ax.plot(*np.vstack([corners, corners[:1]]).T, color="k", lw=0.8)
        saved = next(_predictions(cfg, cell), None)
        if saved is None:
            continue
        observed = y[saved["test"]]
        # Rows spread over the first part's range, the same for every panel.
        order = np.argsort(observed[:, 0])
        rows = order[np.linspace(0, len(order) - 1, TERNARY_ROWS).round().astype(int)]
        draws = predictive_samples(
            cell.likelihood, saved["outputs"][rows], 3, TERNARY_SAMPLES, seed=0
        )
        for index, row in enumerate(rows):
            color = f"C{index}"
            ax.scatter(
                *ternary_xy(draws[:, index]).T,
                s=2,
                alpha=0.3,
                color=color,
                rasterized=True,
            )
            for point, marker, size, edge in (
                (observed[row], "*", 120, "k"),  # the observed shares
                (saved["mean"][row], "X", 60, "w"),  # the predicted mean
            ):
                ax.scatter(
                    *ternary_xy(point),
                    marker=marker,
                    s=size,
                    color=color,
                    edgecolor=edge,
                    zorder=3,
                )
    for ax in axes.ravel():
        ax.set_aspect("equal")
        ax.axis("off")
        # Labels just outside their corners, clear of the samples there.
        for corner, label, offset in zip(
            corners, parts, ((-4, -12), (4, -12), (0, 6)), strict=True
        ):
            ax.annotate(
                label,
                corner,
                xytext=offset,
                textcoords="offset points",
                ha="center",
                fontsize=8,
            )
    fig.suptitle(
        f"{name}, split 0: predictive samples of {TERNARY_ROWS} test rows "
        "(star: observed, cross: predicted mean)",
        fontsize=10,
    )
    return _save(fig, Path(cfg.out) / f"ternary_{name}.png")


def plot_all(cfg: StudyConfig, cells: list[Cell]) -> list[Path]:
    """Every figure of every dataset with finished splits."""
    from examples.compositional.data import load_dataset

    paths: list[Path | None] = []
    for name in cfg.datasets:
        if not any(c.selected for c in cells if c.dataset == name):
            continue
        data = load_dataset(name, cfg.sum_tolerance)
        paths.append(
            plot_predicted_vs_observed(cfg, cells, name, data.y, data.part_names)
        )
        paths.append(plot_pit(cfg, cells, name))
        paths.append(plot_ternary(cfg, cells, name, data.y, data.part_names))
    return [p for p in paths if p is not None]
