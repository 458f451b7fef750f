"""Tests of examples/distillation on tiny MNIST-1D runs.

A run here is a teacher of one epoch and students of two epochs on 200
training signals, a few seconds each. The tests check what the example
promises: each method trains and writes its files; the ``keras.distillation``
losses it builds give the loss and the training step of the hand-written
``Distiller`` the example had before (its formula is restated here as the
reference); hidden labels leave the hard-label loss; the study resumes and
selects on validation.
"""

from __future__ import annotations

import json
import math

import keras
import numpy as np
import pytest

import keras_cc
from examples.distillation import losses as kd_losses
from examples.distillation import study, train

TINY = {"limit_train": 200, "batch_size": 60, "epochs": 2, "teacher_epochs": 1}


@pytest.fixture(scope="module")
def tiny_data():
    return train.load_data(0.1, TINY["limit_train"])


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, tiny_data):
    """A one-epoch teacher shared by the tests of this module."""
    directory = tmp_path_factory.mktemp("teacher")
    config = train.Config(teacher_dir=str(directory), verbose=0, **TINY)
    train.teacher_model(config, tiny_data)
    return directory


@pytest.mark.parametrize(
    "method,scale,fraction",
    [("hard", "1", 0.3), ("hinton", "1", 1.0), ("cc", "auto", 0.3)],
)
def test_smoke_run_per_method(
    tmp_path, tiny_data, teacher_dir, method, scale, fraction
):
    config = train.Config(
        method=method,
        temperature=2.0,
        alpha=0.5,
        logit_scale=scale,
        label_fraction=fraction,
        teacher_dir=str(teacher_dir),
        out=str(tmp_path / "run"),
        verbose=0,
        **TINY,
    )
    result = train.run(config, tiny_data)
    rows = list((tmp_path / "run" / "metrics.csv").read_text().splitlines())
    assert len(rows) == 1 + TINY["epochs"]
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["config"]["method"] == method
    selected = result["selected"]
    assert 1 <= selected["epoch"] <= TINY["epochs"]
    for key in ("loss", "val_accuracy", "test_accuracy", "test_nll", "test_ece"):
        assert math.isfinite(selected[key]), key
    assert 0.0 <= selected["test_agreement"] <= 1.0
    if scale == "auto":
        assert result["resolved_logit_scale"] > 1.0
    else:
        assert result["resolved_logit_scale"] == 1.0
    # A finished run is not redone.
    assert train.run(config, tiny_data)["wall_s"] == result["wall_s"]


class _OldDistiller(keras.Model):
    """The loss of the hand-written ``Distiller`` this example used before
    ``keras.distillation``: ``alpha · CE(y, z) + (1 - alpha) · T² ·
    soft_loss(softmax(t / T), z / T)``, the teacher frozen."""

    def __init__(self, student, teacher, soft_loss, alpha, temperature):
        super().__init__()
        self.student, self.teacher = student, teacher
        self.teacher.trainable = False
        self.soft_loss, self.alpha, self.temperature = soft_loss, alpha, temperature

    def call(self, x, training=None):
        return self.student(x, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, **kw):
        t = self.temperature
        hard = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        teacher = keras.ops.stop_gradient(self.teacher(x, training=False))
        soft = self.soft_loss(keras.ops.softmax(teacher / t), y_pred / t)
        return self.alpha * hard(y, y_pred) + (1 - self.alpha) * t**2 * soft


@pytest.mark.parametrize("method", ["hinton", "cc"])
def test_losses_match_the_old_distiller(method):
    """Loss and one SGD step of ``make_distiller`` equal the old Distiller's
    (Hinton KD: cross-entropy there, Keras' KL divergence here, which differ
    by the teacher's entropy, a constant)."""
    alpha, t, scale = 0.3, 4.0, 2.0 if method == "cc" else 1.0
    old_soft = (
        keras_cc.losses.ContinuousCategoricalCrossentropy(
            from_logits=True, logit_scale=scale
        )
        if method == "cc"
        else keras.losses.CategoricalCrossentropy(from_logits=True)
    )
    x = np.random.default_rng(0).normal(size=(16, 40, 1)).astype("float32")
    y = np.arange(16) % 10
    weights = []
    for build in ("new", "old"):
        keras.utils.set_random_seed(0)
        student = train.build_student((40, 1), 10)
        teacher = train.build_student((40, 1), 10)
        if build == "new":
            model = kd_losses.make_distiller(
                method, teacher, student, alpha, t, logit_scale=scale
            )
        else:
            model = _OldDistiller(student, teacher, old_soft, alpha, t)
        model.compile(
            optimizer=keras.optimizers.SGD(0.5),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            run_eagerly=True,  # no tracing: two tiny steps
        )
        z = student(x)
        loss = float(keras.ops.convert_to_numpy(model.compute_loss(x, y, z)))
        if build == "new" and method == "hinton":
            targets = kd_losses.soft_targets(keras.ops.convert_to_numpy(teacher(x)), t)
            entropy = float(np.mean(-np.sum(targets * np.log(targets), axis=-1)))
            loss += (1 - alpha) * t**2 * entropy
        teacher_before = teacher.get_weights()
        model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
        for a, b in zip(teacher_before, teacher.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)  # the teacher stays frozen
        weights.append((loss, student.get_weights()))
    (new_loss, new_weights), (old_loss, old_weights) = weights
    np.testing.assert_allclose(new_loss, old_loss, rtol=1e-5)
    assert not np.allclose(new_weights[-1], old_weights[-1] * 0)  # it trained
    for a, b in zip(new_weights, old_weights, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_hidden_labels_are_stratified_and_left_out():
    labels = np.repeat(np.arange(10), 40)
    kept = train.hide_labels(labels, 0.1)
    assert np.array_equal(kept, train.hide_labels(labels, 0.1))  # any seed
    shown = kept >= 0
    assert shown.sum() == 40 and np.array_equal(kept[shown], labels[shown])
    assert np.array_equal(np.bincount(kept[shown]), np.full(10, 4))
    assert np.array_equal(train.hide_labels(labels, 1.0), labels)
    # The student's loss averages over the labelled examples only.
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=-1)
    z = np.random.default_rng(3).normal(size=(len(labels), 10)).astype("float32")
    want = keras.losses.sparse_categorical_crossentropy(
        labels[shown], z[shown], from_logits=True
    )
    np.testing.assert_allclose(
        float(loss(kept, z)),
        float(np.mean(keras.ops.convert_to_numpy(want))),
        rtol=1e-5,
    )


def test_distillation_logit_scale_matches_label_smoothing():
    k, alpha = 10, 0.1
    smoothed = np.full((5, k), alpha / k)
    smoothed[np.arange(5), np.arange(5)] += 1 - alpha
    assert math.isclose(
        kd_losses.distillation_logit_scale(smoothed),
        keras_cc.losses.label_smoothing_logit_scale(k, alpha),
        rel_tol=1e-9,
    )
    # Softer targets need a smaller scale.
    soft = kd_losses.soft_targets(np.log(smoothed), 4.0)
    scale = kd_losses.distillation_logit_scale
    assert scale(soft) < scale(smoothed)


def test_mean_parameterisation_reaches_the_cc_loss():
    (loss,), _ = kd_losses.make_distillation_losses("cc", 2.0, 1.0, "mean")
    assert loss.get_config()["parameterization"] == "mean"
    config = train.parse_args(["--method", "cc", "--logit-scale", "mean"])
    assert train.resolve_logit_scale(config, np.zeros((4, 10))) == 1.0
    with pytest.raises(ValueError, match="CC-KD only"):
        kd_losses.make_distillation_losses("hinton", 2.0, 1.0, "mean")
    with pytest.raises(ValueError, match="choose hinton or cc"):
        kd_losses.make_distillation_losses("hard", 2.0)


def test_parser_is_derived_from_the_config(capsys):
    config = train.parse_args(["--method", "cc", "--logit-scale", "auto"])
    assert config == train.Config(method="cc", logit_scale="auto")
    grid = study.parse_args(["--temperatures", "1", "8", "--summary-only"])
    assert grid.temperatures == [1.0, 8.0] and grid.summary_only
    for parse, argv, message in [
        (train.parse_args, ["--method", "kd"], "argument --method: invalid choice"),
        (train.parse_args, ["--logit-scale", "auto"], "applies to --method cc only"),
        (
            train.parse_args,
            ["--logit-scale", "0"],
            "a number > 0, auto or mean; got '0'",
        ),
        (train.parse_args, ["--logit-scale", "mean"], "applies to --method cc only"),
        (train.parse_args, ["--alpha", "1.5"], "--alpha must be in [0, 1]"),
        (study.parse_args, ["--methods", "cc", "kd"], "invalid choice: 'kd'"),
        (study.parse_args, ["--cc-logit-scales", "x"], "--cc-logit-scales must be"),
        (study.parse_args, ["--temperatures", "0"], "--temperatures must be > 0"),
    ]:
        with pytest.raises(SystemExit) as exc:
            parse(argv)
        assert exc.value.code == 2
        assert message in capsys.readouterr().err, argv


def test_study_resumes_and_selects_on_validation(tmp_path, tiny_data, teacher_dir):
    out = tmp_path / "study"
    argv = [
        "--out", str(out), "--teacher-dir", str(teacher_dir),
        "--methods", "hard", "hinton",  # CC-KD runs in test_smoke_run_per_method
        "--temperatures", "2", "--alphas", "0.5",
        "--seeds", "0", "--label-fraction", "0.5",
        "--epochs", "2", "--teacher-epochs", "1", "--batch-size", "60",
        "--limit-train", "200",
    ]  # fmt: skip
    assert study.main(argv) == 0
    config = study.parse_args(argv)
    settings = study.grid(config)
    assert [s.method for s in settings] == ["hard", "hinton"]
    for setting in settings:
        result = json.loads((setting.directory(out, 0) / "result.json").read_text())
        assert result["config"]["label_fraction"] == 0.5
    assert not (out / "teacher").exists()  # the given teacher was used
    stamp = (settings[0].directory(out, 0) / "result.json").stat().st_mtime_ns
    assert study.main(argv) == 0  # nothing left to do: nothing is rerun
    assert (settings[0].directory(out, 0) / "result.json").stat().st_mtime_ns == stamp
    summary = (out / "summary.md").read_text()
    assert "Hinton KD" in summary and "teacher" in summary
    assert "with 50 % of the labels" in summary
    assert (out / "curves.png").is_file() and (out / "grid.png").is_file()

    cells = study.collect(config)
    chosen = study.select_settings(cells)
    assert set(chosen) == {"hard", "hinton"}
    for method, cell in chosen.items():
        own = [c for c in cells if c.method == method]
        assert cell.mean("val_accuracy") == max(c.mean("val_accuracy") for c in own)


def test_selection_uses_validation_not_test():
    from examples.label_smoothing.ablation import Cell

    good_val = Cell(
        study.Setting("hinton", 1.0, 0.5),
        "hinton",
        [{"val_accuracy": 0.9, "test_accuracy": 0.1}] * 2,
    )
    good_test = Cell(
        study.Setting("hinton", 4.0, 0.5),
        "hinton",
        [{"val_accuracy": 0.5, "test_accuracy": 0.99}] * 2,
    )
    fewer_seeds = Cell(
        study.Setting("hinton", 2.0, 0.5),
        "hinton",
        [{"val_accuracy": 1.0, "test_accuracy": 1.0}],
    )
    chosen = study.select_settings([good_val, good_test, fewer_seeds])
    assert chosen["hinton"] is good_val
