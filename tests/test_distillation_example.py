"""Tests of examples/distillation on tiny MNIST-1D runs.

A run here is a teacher of one epoch and students of two epochs on 200
training signals, a few seconds each. The tests check what the example
promises: each method trains through the same ``Distiller`` and writes its
files; the loss is the documented mixture; the teacher stays frozen; a
Distiller saves and loads with its compile settings; the study resumes and
selects on validation.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import keras_cc  # noqa: E402
from examples.distillation import distiller as distiller_module  # noqa: E402
from examples.distillation import study, train  # noqa: E402
from examples.distillation.distiller import (  # noqa: E402
    Distiller,
    distillation_logit_scale,
    make_distillation_loss,
)

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


def _models(num_classes: int = 10, seed: int = 0):
    keras.utils.set_random_seed(seed)
    student = train.build_student((40, 1), num_classes)
    teacher = train.build_student((40, 1), num_classes)
    return student, teacher


@pytest.mark.parametrize(
    "method,scale", [("hard", "1"), ("hinton", "1"), ("cc", "1"), ("cc", "auto")]
)
def test_smoke_run_per_method(tmp_path, tiny_data, teacher_dir, method, scale):
    config = train.Config(
        method=method,
        temperature=2.0,
        alpha=0.5,
        logit_scale=scale,
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


@pytest.mark.parametrize("method", ["hinton", "cc"])
def test_loss_is_the_documented_mixture(method):
    student, teacher = _models()
    model = Distiller(student, teacher)
    alpha, t = 0.3, 4.0
    distillation = make_distillation_loss(method, 2.0 if method == "cc" else 1.0)
    hard = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(
        optimizer="adam",
        student_loss_fn=hard,
        distillation_loss_fn=distillation,
        alpha=alpha,
        temperature=t,
    )
    x = np.random.default_rng(0).normal(size=(16, 40, 1)).astype("float32")
    y = np.arange(16) % 10
    z = student(x)
    got = keras.ops.convert_to_numpy(model.compute_loss(x, y, z))
    targets = keras.ops.softmax(teacher(x) / t)
    want = alpha * hard(y, z) + (1 - alpha) * t**2 * distillation(targets, z / t)
    np.testing.assert_allclose(got, keras.ops.convert_to_numpy(want), rtol=1e-5)
    if method == "cc":
        # The CC-KD term is keras_cc's loss on logits s * z / T.
        direct = keras_cc.losses.continuous_categorical_crossentropy(
            targets, 2.0 * z / t, from_logits=True
        )
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(distillation(targets, z / t)),
            keras.ops.convert_to_numpy(keras.ops.mean(direct)),
            rtol=1e-5,
        )


def test_hard_method_ignores_the_teacher():
    student, teacher = _models()
    model = Distiller(student, teacher)
    model.compile(
        optimizer="adam",
        student_loss_fn=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        alpha=1.0,
    )
    x = np.ones((4, 40, 1), "float32")
    y = np.zeros(4, int)
    z = student(x)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model.compute_loss(x, y, z)),
        keras.ops.convert_to_numpy(
            keras.losses.sparse_categorical_crossentropy(y, z, from_logits=True)
        ).mean(),
        rtol=1e-6,
    )
    with pytest.raises(ValueError, match="distillation_loss_fn"):
        model.compile(student_loss_fn="mse", alpha=0.5)
    with pytest.raises(ValueError, match="alpha"):
        model.compile(student_loss_fn="mse", alpha=1.5)


def test_teacher_stays_frozen_and_student_learns():
    student, teacher = _models()
    model = Distiller(student, teacher)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        student_loss_fn=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        distillation_loss_fn=make_distillation_loss("cc"),
        alpha=0.1,
        temperature=2.0,
    )
    before_t = [w.copy() for w in teacher.get_weights()]
    before_s = [w.copy() for w in student.get_weights()]
    x = np.random.default_rng(1).normal(size=(32, 40, 1)).astype("float32")
    model.fit(x, np.arange(32) % 10, batch_size=16, epochs=2, verbose=0)
    for a, b in zip(before_t, teacher.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(
        not np.array_equal(a, b)
        for a, b in zip(before_s, student.get_weights(), strict=True)
    )


def test_distiller_config_and_save_round_trip(tmp_path):
    student, teacher = _models()
    model = Distiller(student, teacher, name="kd")
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        metrics=["accuracy"],
        student_loss_fn=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        distillation_loss_fn=make_distillation_loss("cc", 7.5),
        alpha=0.25,
        temperature=4.0,
    )
    x = np.random.default_rng(2).normal(size=(20, 40, 1)).astype("float32")
    y = np.arange(20) % 10
    model.fit(x, y, batch_size=10, epochs=1, verbose=0)

    clone = Distiller.from_config(model.get_config())
    assert clone.name == "kd"
    assert clone.student.count_params() == student.count_params()

    path = tmp_path / "distiller.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, Distiller)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(x)),
        keras.ops.convert_to_numpy(model(x)),
        rtol=1e-6,
    )
    assert loaded.alpha == 0.25 and loaded.temperature == 4.0
    loss = loaded.distillation_loss_fn
    assert isinstance(loss, keras_cc.losses.ContinuousCategoricalCrossentropy)
    assert loss.get_config()["logit_scale"] == 7.5
    assert not loaded.teacher.trainable
    assert math.isclose(
        float(keras.ops.convert_to_numpy(loaded.optimizer.learning_rate)),
        3e-3,
        rel_tol=1e-6,
    )
    # The optimizer state came back too, and training goes on.
    assert int(keras.ops.convert_to_numpy(loaded.optimizer.iterations)) == 2
    loaded.fit(x, y, batch_size=10, epochs=1, verbose=0)
    assert int(keras.ops.convert_to_numpy(loaded.optimizer.iterations)) == 4


def test_distillation_logit_scale_matches_label_smoothing():
    k, alpha = 10, 0.1
    smoothed = np.full((5, k), alpha / k)
    smoothed[np.arange(5), np.arange(5)] += 1 - alpha
    assert math.isclose(
        distillation_logit_scale(smoothed),
        keras_cc.losses.label_smoothing_logit_scale(k, alpha),
        rel_tol=1e-9,
    )
    # Softer targets need a smaller scale.
    soft = distiller_module.soft_targets(np.log(smoothed), 4.0)
    assert distillation_logit_scale(soft) < distillation_logit_scale(smoothed)


def test_mean_parameterisation_reaches_the_cc_loss():
    loss = make_distillation_loss("cc", 1.0, "mean")
    assert loss.get_config()["parameterization"] == "mean"
    config = train.parse_args(["--method", "cc", "--logit-scale", "mean"])
    assert train.resolve_logit_scale(config, np.zeros((4, 10))) == 1.0
    with pytest.raises(ValueError, match="CC-KD only"):
        make_distillation_loss("hinton", 1.0, "mean")


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
    (out / "teacher").parent.mkdir(parents=True)
    (out / "teacher").symlink_to(teacher_dir, target_is_directory=True)
    argv = [
        "--out", str(out), "--temperatures", "2", "--alphas", "0.5",
        "--cc-logit-scales", "1", "--seeds", "0", "1",
        "--epochs", "2", "--teacher-epochs", "1", "--batch-size", "60",
        "--limit-train", "200",
    ]  # fmt: skip
    assert study.main(argv) == 0
    config = study.parse_args(argv)
    settings = study.grid(config)
    assert [s.method for s in settings] == ["hard", "hinton", "cc"]
    for setting in settings:
        for seed in (0, 1):
            assert train.is_finished(setting.directory(out, seed))
    stamp = (settings[0].directory(out, 0) / "result.json").stat().st_mtime_ns
    assert study.main(argv) == 0  # nothing left to do: nothing is rerun
    assert (settings[0].directory(out, 0) / "result.json").stat().st_mtime_ns == stamp
    summary = (out / "summary.md").read_text()
    assert "Hinton KD" in summary and "CC-KD" in summary and "teacher" in summary
    assert (out / "curves.png").is_file() and (out / "grid.png").is_file()

    cells = study.collect(config)
    chosen = study.select_settings(cells)
    assert set(chosen) == {"hard", "hinton", "cc"}
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
