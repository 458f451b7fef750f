"""The MinAtar actor-mimic study: DQN experts, then AMN vs CC-AMN students.

    # 1. experts, one game after another (skip this: they are committed)
    python -m examples.atari.minatar_study experts
    # 2. students from the committed experts: each game alone and all five
    #    together, AMN (xe) and CC-AMN (cc), T = 1, 3 seeds; then T = 0.1 for
    #    all five
    python -m examples.atari.minatar_study students
    # 3. tables (Markdown) and curves (PNG) from whatever has finished
    python -m examples.atari.minatar_study report

Every run writes into its own directory under ``--out`` (default
``examples/atari/results/minatar``, small enough to commit: CSV logs, the
Q-network or student weights and a training checkpoint of a few MB). A
command that is started again skips finished runs and resumes unfinished
ones from their checkpoint, so the study can be stopped at any time and
continued from a fresh clone. The replay buffer is saved beside the
checkpoint (``replay.npz``, tens of MB, not committed): with it a resume
continues exactly; without it (a fresh clone) the replay is refilled by
acting with the current policy before training continues.

Frame budgets: the MinAtar paper trains 5M frames per game. On two CPU cores
we train each expert until the paper's published DQN curve is near its
plateau (Freeway, Breakout, Space Invaders, Asterix) and give Seaquest, whose
curve rises late, the largest share: 7M frames in all instead of 25M.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

GAMES: tuple[str, ...] = ("Breakout", "Freeway", "SpaceInvaders", "Asterix", "Seaquest")
# Agent steps (= frames) per expert, in training order; see the docstring.
EXPERT_FRAMES: dict[str, int] = {
    "Breakout": 1_000_000,
    "Freeway": 750_000,
    "SpaceInvaders": 1_250_000,
    "Asterix": 1_500_000,
    "Seaquest": 2_500_000,
}
DEFAULT_OUT = Path("examples/atari/results/minatar")
SEEDS: tuple[int, ...] = (1, 2, 3)


def finished(run_dir: Path, total_steps: int) -> bool:
    """A run is finished when its evaluation at the last step is logged."""
    path = run_dir / "eval.csv"
    if not path.exists():
        return False
    with path.open(newline="") as f:
        return any(int(row["step"]) >= total_steps for row in csv.DictReader(f))


def run_experts(out: Path, games: Sequence[str], extra: Sequence[str]) -> None:
    from examples.atari import dqn

    for game in games:
        run_dir = out / "experts" / game
        total = EXPERT_FRAMES[game]
        if finished(run_dir, total):
            print(f"[study] expert {game}: finished, skipped", flush=True)
            continue
        print(f"[study] expert {game}: {total} frames in {run_dir}", flush=True)
        start = time.time()
        dqn.main(
            [
                "--preset",
                "minatar",
                "--game",
                game,
                "--total-steps",
                str(total),
                "--run-dir",
                str(run_dir),
                *extra,
            ]
        )
        _note_wall_time(run_dir, time.time() - start)


def _note_wall_time(run_dir: Path, seconds: float) -> None:
    """Wall time of this invocation, appended (a resumed run has several)."""
    path = run_dir / "wall_time.json"
    times: list[float] = json.loads(path.read_text()) if path.exists() else []
    times.append(round(seconds, 1))
    path.write_text(json.dumps(times))


def main(argv: Sequence[str] | None = None) -> Any:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=["experts", "students", "report"])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument(
        "--games", nargs="+", default=list(GAMES), help=f"default: {' '.join(GAMES)}"
    )
    args, extra = parser.parse_known_args(argv)
    unknown = [g for g in args.games if g not in GAMES]
    if unknown:
        parser.error(f"--games: unknown MinAtar game(s) {unknown}; use {GAMES}")
    if args.part == "experts":
        return run_experts(args.out, args.games, extra)
    parser.error(f"{args.part}: not available yet")


if __name__ == "__main__":
    main(sys.argv[1:])
