"""Tests of the robustness suite (examples/label_smoothing/robustness.py).

The 100-class digit pairs (classes, labels, no leak of a test digit image),
the MLP, the suite end to end on its ``ci`` preset (in-process, so that
TensorFlow starts once), resumption, the lock shared by two runners, and the
report's numbers against a computation of their own from fake run CSVs.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from examples.label_smoothing import ablation, data, robustness, train  # noqa: E402


def _digit_lookup() -> dict[bytes, tuple[int, int]]:
    """scikit-learn's digit images (as the loader's float32 bytes) -> (label,
    index); the 1 797 images are all distinct."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images.astype(np.float32)
    lookup = {
        img.tobytes(): (int(y), i)
        for i, (img, y) in enumerate(zip(images, bunch.target, strict=True))
    }
    assert len(lookup) == len(images)
    return lookup


def _halves(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The left and right 8x8 digit images of (N, 8, 16, 1) pairs."""
    return np.ascontiguousarray(x[:, :, :8, 0]), np.ascontiguousarray(x[:, :, 8:, 0])


def test_digit_pairs_are_two_digits_without_a_test_image_in_training() -> None:
    pairs = data.load_data("digit-pairs", pairs_per_class=12)
    assert pairs.num_classes == 100 and pairs.name == "digit-pairs"
    assert pairs.x_train.shape == (1200, 8, 16, 1)
    assert pairs.x_test.shape == (100 * data.DIGIT_PAIRS_TEST_PER_CLASS, 8, 16, 1)
    assert pairs.x_train.dtype == np.float32 and pairs.y_train.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(pairs.y_train, minlength=100), 12)
    np.testing.assert_array_equal(
        np.bincount(pairs.y_test, minlength=100), data.DIGIT_PAIRS_TEST_PER_CLASS
    )
    # Shuffled: the first examples are not the first classes.
    assert len(np.unique(pairs.y_train[:200])) > 50

    lookup = _digit_lookup()
    used = {}
    for split, x, y in (
        ("train", pairs.x_train, pairs.y_train),
        ("test", pairs.x_test, pairs.y_test),
    ):
        left, right = _halves(x)
        a = [lookup[img.tobytes()] for img in left]  # KeyError: not a digit
        b = [lookup[img.tobytes()] for img in right]
        np.testing.assert_array_equal(
            y, [10 * la + lb for (la, _), (lb, _) in zip(a, b, strict=True)]
        )
        used[split] = {i for _, i in a} | {i for _, i in b}
        # The pairs of a class are distinct.
        assert len({row.tobytes() for row in x}) == len(x)
    assert not used["train"] & used["test"]
    # The held-out digits are the digits dataset's test images.
    digits = data.load_digits(size=8)
    held_out = {img.tobytes() for img in digits.x_test[..., 0]}
    test_images = {key for key, (_, i) in lookup.items() if i in used["test"]}
    assert test_images <= held_out

    # Fixed by the data seed, whatever else happens in between.
    again = data.load_digit_pairs(pairs_per_class=12)
    np.testing.assert_array_equal(again.x_train, pairs.x_train)
    np.testing.assert_array_equal(again.y_test, pairs.y_test)
    # The validation pairs come out of the training pairs.
    split = data.split_validation(pairs, 0.2)
    assert len(split.y_val) == 240 and set(split.y_val) == set(range(100))
    train_rows = {row.tobytes() for row in pairs.x_train}
    assert all(row.tobytes() in train_rows for row in split.x_val)
    with pytest.raises(ValueError, match="distinct pairs"):
        data.load_digit_pairs(test_pairs_per_class=10_000)


def test_mlp_builds_and_trains_a_step() -> None:
    import keras

    from examples.label_smoothing import model as model_lib

    # Signals in, no BatchNorm, dropout on, no L2.
    net = model_lib.build_model((40, 1), 10, False, True, 0.0, architecture="mlp")
    dropouts = [
        layer.rate for layer in net.layers if isinstance(layer, keras.layers.Dropout)
    ]
    assert dropouts == [0.2, 0.3]
    assert [
        layer.units for layer in net.layers if isinstance(layer, keras.layers.Dense)
    ] == [256, 256, 10]
    assert model_lib.penultimate_model(net).output.shape == (None, 256)
    plain = model_lib.build_model(
        (8, 16, 1), 100, False, False, 0.0, architecture="mlp"
    )
    assert plain.output.shape == (None, 100)
    assert not any(isinstance(layer, keras.layers.Dropout) for layer in plain.layers)
    with pytest.raises(ValueError, match="Unknown architecture 'rnn'"):
        model_lib.build_model((40, 1), 10, False, False, 0.0, architecture="rnn")

    # Cross-entropy: a CC loss would add seconds of tracing, and the MLP's
    # outputs are logits either way.
    net.compile(
        optimizer=model_lib.make_optimizer(1e-2), loss=model_lib.make_loss("ls")
    )
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 40, 1)).astype(np.float32)
    y = data.smoothed_targets(rng.integers(0, 10, 32), 10, 0.1)
    before = [w.copy() for w in net.get_weights()]
    loss = net.train_on_batch(x, y)
    assert np.isfinite(loss)
    assert all(
        not np.array_equal(a, b) for a, b in zip(before, net.get_weights(), strict=True)
    )


@pytest.mark.parametrize(
    ("module", "argv", "message"),
    [
        ("train", ["--model", "rnn"], "invalid choice: 'rnn'"),
        ("train", ["--dataset", "digit-pairs", "--flip"], "swaps its digits"),
        (
            "train",
            ["--dataset", "digit-pairs", "--pairs-per-class", "1"],
            "--pairs-per-class must be >= 2",
        ),
        ("robustness", ["--methods", "cc", "cc@auto"], "--methods must include ls"),
        ("robustness", ["--mnist1d-alpha", "1"], "--mnist1d-alpha must be in (0, 1)"),
        ("robustness", ["--pairs-per-class", "4"], "--pairs-per-class must be >= 5"),
        ("robustness", ["--limit-train", "99"], "--limit-train must be >= 100"),
    ],
)
def test_bad_flags_are_clear_errors(
    module: str, argv: list[str], message: str, capsys
) -> None:
    parse = {"train": train.parse_args, "robustness": robustness.parse_args}[module]
    with pytest.raises(SystemExit) as exc:
        parse(["--out", "x", *(["--loss", "ls"] if module == "train" else []), *argv])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_suite_grid_and_commands() -> None:
    full = robustness.parse_args(["--out", "o"])
    assert [m.name for m in full.methods] == ["ls", "cc", "cc@auto"]
    cells = robustness.grid_cells(full)
    assert len(cells) == 18 and len({c.name for c in cells}) == 18
    pairs = [c for c in cells if c.dataset == "digit-pairs"]
    assert {(c.lr, c.alpha, c.dropout) for c in pairs} == {
        (1e-3, 0.1, False),
        (1e-2, 0.1, False),
    }
    assert len(robustness.suite_runs(full)) == 18 * 3 * 5 and full.epochs == 50
    ci = robustness.parse_args(
        ["--preset", "ci", "--out", "o", "--methods", "ls", "cc"]
    )
    assert len(robustness.grid_cells(ci)) == 3 and ci.seeds == [0]
    # A run's command: its cell, method, seed, and the suite's own flags.
    run = ablation.Run(robustness.grid_cells(ci)[-1], ablation.Method("cc"), 0)
    cfg = train.parse_args(robustness.train_command(ci, run, Path("o"))[3:])
    assert (cfg.dataset, cfg.model, cfg.loss, cfg.pairs_per_class) == (
        "digit-pairs",
        "cnn",
        "cc",
        5,
    )
    assert (cfg.val_fraction, cfg.batch_norm, cfg.threads, cfg.epochs) == (
        0.2,
        False,
        1,
        2,
    )
    assert robustness.main(["report", "--out", "/nonexistent/suite"]) == 2


def _summary(out: Path) -> dict[tuple[str, str], dict[str, str]]:
    with (out / "summary.csv").open(newline="") as f:
        return {(r["cell"], r["method"]): r for r in csv.DictReader(f)}


def test_ci_preset_end_to_end_then_resume(tmp_path: Path, capsys) -> None:
    """The ci preset, methods ls and cc@auto, on its MNIST-1D MLP cell.

    One cell only: tracing the CC's graph costs 10-20 s of CPU per run, so
    the preset's three cells would take minutes. The CNN cells' commands
    are checked in test_suite_grid_and_commands, and a digit-pairs run in
    test_digit_pairs_run_through_the_suite_command.
    """
    out = tmp_path / "ci"
    argv = [
        *("--preset", "ci", "--methods", "ls", "cc@auto", "--out", str(out)),
        *("--datasets", "mnist1d", "--mnist1d-models", "mlp", "--in-process"),
    ]
    cfg = robustness.parse_args(argv)
    # One run interrupted after its first epoch, as a killed runner leaves it.
    first = robustness.suite_runs(cfg)[0]
    command = robustness.train_command(cfg, first, out)[3:]
    assert train.main([*command, "--stop-after", "1"]) == 0
    capsys.readouterr()

    assert robustness.main(argv) == 0
    printed = capsys.readouterr().out
    assert "2 runs in the grid, 0 already finished, 2 to train" in printed
    assert "resuming after epoch 1/2" in printed
    summary = _summary(out)
    cell = robustness.GridCell("mnist1d", "mlp", True, 1e-2, 0.1).name
    assert set(summary) == {(cell, "ls"), (cell, "cc@auto")}
    ls, cc = summary[(cell, "ls")], summary[(cell, "cc@auto")]
    for row in (ls, cc):
        assert row["n"] == "1" and row["seeds"] == "0"
        assert row["test_acc_selected_sd"] == ""  # no sd of one seed
    assert ls["gap_selected_mean"] == ls["gap_n"] == ""
    assert cc["gap_n"] == "1"
    for key in ("selected", "last"):
        want = float(cc[f"test_acc_{key}_mean"]) - float(ls[f"test_acc_{key}_mean"])
        assert float(cc[f"gap_{key}_mean"]) == pytest.approx(want, abs=2e-6)
    table = (out / "summary.md").read_text()
    assert "| gap to LS (selected) | gap to LS (last) |" in table
    rows = [line for line in table.splitlines() if line.startswith("| MNIST-1D")]
    # The compact table's line for the cell, then one line per method.
    compact, *per_method = rows
    assert compact.count(", n = 1") == 2 and "±" not in compact
    assert len(per_method) == 2
    assert all("(n = 1)" in r and "±" not in r for r in per_method)
    assert (out / "accuracy_curves.png").stat().st_size > 0
    rows = ablation.read_metrics(first.directory(out) / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2]

    # Finished: the same command trains nothing and rewrites no CSV.
    csvs = {p: p.stat().st_mtime_ns for p in out.rglob("metrics.csv")}
    assert len(csvs) == 2
    assert robustness.main(argv) == 0
    printed = capsys.readouterr().out
    assert "2 runs in the grid, 2 already finished, 0 to train" in printed
    assert {p: p.stat().st_mtime_ns for p in out.rglob("metrics.csv")} == csvs


def test_digit_pairs_run_through_the_suite_command(tmp_path: Path) -> None:
    cfg = robustness.parse_args(
        ["--preset", "ci", "--methods", "ls", "--out", str(tmp_path), "--in-process"]
    )
    (run,) = [r for r in robustness.suite_runs(cfg) if r.setting.dataset != "mnist1d"]
    command = robustness.train_command(cfg, run, tmp_path)[3:]
    assert train.main([*command, "--epochs", "1"]) == 0
    run_dir = run.directory(tmp_path)
    (row,) = ablation.read_metrics(run_dir / "metrics.csv")
    assert 0.0 <= row["test_accuracy"] <= 1.0 and np.isfinite(row["val_loss"])
    with np.load(run_dir / "selected_test.npz") as saved:
        assert saved["probs"].shape == (200, 100)  # --limit-test 200
        assert set(saved["labels"]) <= set(range(100))
    config = json.loads((run_dir / "config.json").read_text())
    assert config["dataset"] == "digit-pairs" and config["pairs_per_class"] == 5
    assert config["model"] == "cnn" and config["val_fraction"] == 0.2


def test_a_run_another_runner_holds_is_skipped(tmp_path: Path, capsys) -> None:
    cfg = robustness.parse_args(
        ["--preset", "ci", "--methods", "ls", "--out", str(tmp_path), "--in-process"]
    )
    run = robustness.suite_runs(cfg)[0]
    run_dir = run.directory(tmp_path)
    run_dir.mkdir(parents=True)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run_dir / "lock").write_text(str(other.pid))
        failed = ablation.train_runs(
            [run],
            tmp_path,
            lambda r: robustness.train_command(cfg, r, tmp_path),
            epochs=cfg.epochs,
            in_process=True,
        )
    finally:
        other.kill()
        other.wait()
    assert failed == []
    assert "skipped (another runner is training it)" in capsys.readouterr().out
    assert not (run_dir / "metrics.csv").exists()


def _fake_run(
    run_dir: Path, val: list[float], test: list[float], finished: bool = True
) -> None:
    """A run directory as train.py leaves it, with the given accuracies."""
    run_dir.mkdir(parents=True)
    with (run_dir / "metrics.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=train.CSV_FIELDS)
        writer.writeheader()
        for epoch, (v, t) in enumerate(zip(val, test, strict=True), start=1):
            writer.writerow({"epoch": epoch, "val_accuracy": v, "test_accuracy": t})
    state = {"epoch": len(val), "finished": finished}
    (run_dir / "state.json").write_text(json.dumps(state))


def _expected(run_dirs: list[Path]) -> dict[int, tuple[float, float]]:
    """seed -> (test accuracy at the best validation epoch, the earliest on
    ties; last test accuracy), from the finished runs' CSVs."""
    result = {}
    for run_dir in run_dirs:
        if not json.loads((run_dir / "state.json").read_text())["finished"]:
            continue
        with (run_dir / "metrics.csv").open(newline="") as f:
            rows = list(csv.DictReader(f))
        val = np.array([float(r["val_accuracy"]) for r in rows])
        test = np.array([float(r["test_accuracy"]) for r in rows])
        result[int(run_dir.name.removeprefix("seed"))] = (
            test[np.argmax(val)],
            test[-1],
        )
    return result


def test_report_numbers_match_the_csvs(tmp_path: Path) -> None:
    cfg = robustness.parse_args(
        [
            "--preset",
            "ci",
            "--methods",
            "ls",
            "cc@auto",
            "--seeds",
            "0",
            "1",
            "2",
            "--out",
            str(tmp_path),
            "--no-plots",
        ]
    )
    cells = robustness.grid_cells(cfg)
    rng = np.random.default_rng(0)
    layout = {
        # cell index -> method -> seeds with a run (seed 2 of cc@auto in cell
        # 0 is unfinished and must not count)
        0: {"ls": [0, 1, 2], "cc@auto": [0, 1, 2]},
        1: {"ls": [0, 2], "cc@auto": [0, 1, 2]},
        2: {"ls": [1], "cc@auto": [1]},
    }
    for index, methods in layout.items():
        for method, seeds in methods.items():
            for seed in seeds:
                val = list(rng.choice([0.5, 0.6, 0.7], size=2))  # ties happen
                test = list(rng.uniform(0.3, 0.9, size=2).round(4))
                run_dir = tmp_path / cells[index].name / method / f"seed{seed}"
                finished = not (index == 0 and method == "cc@auto" and seed == 2)
                _fake_run(run_dir, val, test, finished)
    table = robustness.report(cfg, tmp_path)
    summary = _summary(tmp_path)
    expected: dict[tuple[int, str], dict[int, tuple[float, float]]] = {}
    assert len(summary) == 6
    for index, methods in layout.items():
        cell = cells[index].name
        runs = {
            m: _expected([tmp_path / cell / m / f"seed{s}" for s in seeds])
            for m, seeds in methods.items()
        }
        expected |= {(index, m): by_seed for m, by_seed in runs.items()}
        for method, by_seed in runs.items():
            row = summary[(cell, method)]
            assert int(row["n"]) == len(by_seed)
            assert row["seeds"] == " ".join(map(str, sorted(by_seed)))
            for k, key in enumerate(("selected", "last")):
                values = np.array([v[k] for v in by_seed.values()])
                assert float(row[f"test_acc_{key}_mean"]) == pytest.approx(
                    values.mean(), abs=1e-6
                )
                if len(values) > 1:
                    assert float(row[f"test_acc_{key}_sd"]) == pytest.approx(
                        values.std(ddof=1), abs=1e-6
                    )
                else:
                    assert row[f"test_acc_{key}_sd"] == ""
                if method == "ls":
                    continue
                ls = runs["ls"]
                gaps = np.array(
                    [v[k] - ls[s][k] for s, v in by_seed.items() if s in ls]
                )
                assert int(row["gap_n"]) == len(gaps)
                assert float(row[f"gap_{key}_mean"]) == pytest.approx(
                    gaps.mean(), abs=1e-6
                )
                if len(gaps) > 1:
                    assert float(row[f"gap_{key}_sd"]) == pytest.approx(
                        gaps.std(ddof=1), abs=1e-6
                    )
    assert summary[(cells[0].name, "cc@auto")]["n"] == "2"  # the unfinished seed
    assert summary[(cells[1].name, "cc@auto")]["gap_n"] == "2"  # LS has 2 seeds
    # The table shows the same numbers in %, n, and no sd for one seed.
    lines = {
        (line.split(" | ")[0].lstrip("| "), line.split(" | ")[1]): line
        for line in table.splitlines()
        if line.startswith("| MNIST-1D") or line.startswith("| digit")
    }
    one_seed = lines[(cells[2].label, "CC-LS ×auto")]
    assert "±" not in one_seed and "(n = 1)" in one_seed
    # Cell 1, CC-LS: three seeds, two of them paired with LS.
    parts = [p.strip() for p in lines[(cells[1].label, "CC-LS ×auto")].split("|")]
    assert parts[3] == "3"
    numbers = [[float(v) for v in re.findall(r"[+-]?\d+\.\d+", p)] for p in parts[4:8]]
    by_seed = expected[(1, "cc@auto")]
    ls = expected[(1, "ls")]
    for k in (0, 1):
        values = np.array([v[k] for v in by_seed.values()])
        gaps = np.array([v[k] - ls[s][k] for s, v in by_seed.items() if s in ls])
        want = [[values.mean(), values.std(ddof=1)], [gaps.mean(), gaps.std(ddof=1)]]
        np.testing.assert_allclose(numbers[k], 100 * np.array(want[0]), atol=0.0051)
        np.testing.assert_allclose(numbers[k + 2], 100 * np.array(want[1]), atol=0.0051)
        assert parts[6 + k].endswith("(n = 2)")
    assert "12 of 18 runs finished." in table
    # The compact table: one line per cell, the same numbers rounded.
    compact = next(
        line for line in table.splitlines() if line.startswith(f"| {cells[1].label} | ")
    )
    ls_entry, cc_entry = (p.strip() for p in compact.split(" | ")[1:3])
    ls_values = np.array([v[0] for v in ls.values()])
    assert ls_entry == (
        f"{100 * ls_values.mean():.1f} ± {100 * ls_values.std(ddof=1):.1f}, n = 2"
    )
    selected_gap, last_gap = (
        100 * np.mean([v[k] - ls[s][k] for s, v in by_seed.items() if s in ls])
        for k in (0, 1)
    )
    numbers = re.fullmatch(
        r"[\d.]+ ± [\d.]+, n = 3 \(([+−][\d.]+) / ([+−][\d.]+)\) \|", cc_entry
    )
    assert numbers is not None, cc_entry
    shown = [float(g.replace("−", "-")) for g in numbers.groups()]
    np.testing.assert_allclose(shown, [selected_gap, last_gap], atol=0.051)


def test_suite_runs_as_a_module(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "examples.label_smoothing.robustness", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert res.returncode == 0, res.stderr
    assert "[run|report]" in res.stdout and "--preset {ci,full}" in res.stdout
    assert (
        "sys.path" not in (REPO / "examples/label_smoothing/robustness.py").read_text()
    )
