"""Reward curves per game (AMN vs CC-AMN vs DQN experts) and non-finite losses.

    python -m examples.atari.plot runs/amn_pong runs/cc_amn_pong --out atari.png

Each argument is a run directory written by dqn.py or actor_mimic.py; its
``eval.csv`` gives the reward curves and ``train.csv`` the cumulative count of
non-finite losses. Runs are labelled by their ``algo`` column (dqn, amn,
cc-amn) and directory name.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on training machines
import matplotlib.pyplot as plt  # noqa: E402

COLORS = {"dqn": "tab:gray", "amn": "tab:blue", "cc-amn": "tab:red"}


def read_rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def plot(run_dirs: Sequence[Path], out: Path) -> Path:
    # curves[game][label] = (steps, values); one label per run directory.
    rewards: dict[str, dict[str, tuple[list[int], list[float]]]] = defaultdict(dict)
    nonfinite: dict[str, dict[str, tuple[list[int], list[float]]]] = defaultdict(dict)
    algos: dict[str, str] = {}
    for run in run_dirs:
        evals = read_rows(run / "eval.csv")
        if not evals:
            raise SystemExit(f"error: {run} has no eval.csv rows; is it a run dir?")
        for row in evals:
            label = f"{row.get('algo', 'dqn')} ({run.name})"
            algos[label] = row.get("algo", "dqn")
            steps, values = rewards[row["game"]].setdefault(label, ([], []))
            steps.append(int(row["step"]))
            values.append(float(row["eval_return"]))
        for row in read_rows(run / "train.csv"):
            label = f"{row.get('algo', 'dqn')} ({run.name})"
            steps, values = nonfinite[row["game"]].setdefault(label, ([], []))
            steps.append(int(row["step"]))
            values.append(float(row["nonfinite_losses"]))

    games = sorted(rewards)
    fig, axes = plt.subplots(
        2, len(games), figsize=(4.2 * len(games), 6.4), squeeze=False
    )
    for col, game in enumerate(games):
        top, bottom = axes[0][col], axes[1][col]
        for label, (steps, values) in sorted(rewards[game].items()):
            color = COLORS.get(algos[label])
            top.plot(steps, values, marker="o", ms=3, label=label, color=color)
        for label, (steps, values) in sorted(nonfinite[game].items()):
            color = COLORS.get(algos[label])
            bottom.step(steps, values, where="post", label=label, color=color)
        top.set_title(game)
        top.set_ylabel("evaluation score")
        bottom.set_ylabel("non-finite losses (cumulative)")
        bottom.set_xlabel("agent steps (×4 emulator frames)")
        top.legend(fontsize=7)
        bottom.legend(fontsize=7)
    fig.suptitle("Actor-mimic on Atari: AMN (cross-entropy) vs CC-AMN")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("atari_curves.png"))
    args = parser.parse_args(argv)
    missing = [str(d) for d in args.run_dirs if not d.is_dir()]
    if missing:
        parser.error(f"not a directory: {', '.join(missing)}")
    out = plot(args.run_dirs, args.out)
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
