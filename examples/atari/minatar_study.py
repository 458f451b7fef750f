"""The MinAtar actor-mimic study: DQN experts, then AMN vs CC-AMN students.

    # 1. experts, one game after another (skip this: they are committed)
    python -m examples.atari.minatar_study experts
    # 2. students from the committed experts: each game alone and all five
    #    together, AMN (xe) and CC-AMN (cc), T = 1, 3 seeds; then T = 0.1 for
    #    all five; then CC-AMN with the logit scale K + 1 at T = 1
    python -m examples.atari.minatar_study students
    # 3. tables (Markdown) and curves (PNG) from whatever has finished
    python -m examples.atari.minatar_study report

Every run writes into its own directory under ``--out`` (default
``examples/atari/results/minatar``, small enough to commit: CSV logs, the
Q-network or student weights and a training checkpoint of a few MB). A
command that is started again skips finished runs and resumes unfinished
ones from their checkpoint, so the study can be stopped at any time and
continued from a fresh clone. Several processes (one per core) may run
``students`` at once: each student run is locked while it trains
(``examples/_run_lock.py``). The replay buffer is saved beside the
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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from examples._run_lock import RunLock

GAMES: tuple[str, ...] = ("Breakout", "Freeway", "SpaceInvaders", "Asterix", "Seaquest")
# Agent steps (= frames) per expert, in training order; see the docstring.
EXPERT_FRAMES: dict[str, int] = {
    "Breakout": 1_000_000,
    "Freeway": 750_000,
    "SpaceInvaders": 1_250_000,
    "Asterix": 1_500_000,
    "Seaquest": 2_500_000,
}
# Frames per game for every student run (single-game or all five).
STUDENT_FRAMES = 200_000
DEFAULT_OUT = Path("examples/atari/results/minatar")
SEEDS: tuple[int, ...] = (1, 2, 3)
# The study's student losses: AMN, CC-AMN, and CC-AMN whose loss sees the
# logits times K + 1 (K the game's action count; actor_mimic.cc_logit_scale).
LOSS_FLAGS: dict[str, list[str]] = {
    "xe": ["--loss", "xe"],
    "cc": ["--loss", "cc"],
    "cc_scaled": ["--loss", "cc", "--cc-logit-scale", "K+1"],
    "cc_mean": ["--loss", "cc", "--cc-logit-scale", "mean"],
}


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
        run_dir = expert_dir(out, game)
        total = EXPERT_FRAMES[game]
        if finished(run_dir, total):
            print(f"[study] expert {game}: finished, skipped", flush=True)
            continue
        print(f"[study] expert {game}: {total} frames in {run_dir}", flush=True)
        flags = ["--game", game, "--total-steps", str(total)]
        _timed_run(dqn.main, flags, run_dir, extra)


def _timed_run(
    main: Callable[[list[str]], Any],
    flags: list[str],
    run_dir: Path,
    extra: Sequence[str],
) -> None:
    """``main`` of dqn.py or actor_mimic.py on the minatar preset with
    ``flags``, into ``run_dir``; the command line's ``extra`` flags last."""
    start = time.time()
    main(["--preset", "minatar", *flags, "--run-dir", str(run_dir), *extra])
    _note_wall_time(run_dir, time.time() - start)


def _note_wall_time(run_dir: Path, seconds: float) -> None:
    """Wall time of this invocation, appended (a resumed run has several)."""
    path = run_dir / "wall_time.json"
    times: list[float] = json.loads(path.read_text()) if path.exists() else []
    times.append(round(seconds, 1))
    path.write_text(json.dumps(times))


def expert_dir(out: Path, game: str) -> Path:
    return out / "experts" / game


def expert_ready(out: Path, game: str) -> bool:
    return finished(expert_dir(out, game), EXPERT_FRAMES[game])


def student_runs(games: Sequence[str]) -> list[dict[str, Any]]:
    """The study's student runs, in the order they are run.

    Seed by seed, so that a study cut off early has every setting at n = 1
    before any at n = 2: each game alone (AMN, CC-AMN; T = 1), then all five
    games together at T = 1 and at T = 0.1. Then the follow-up: CC-AMN with
    the per-game logit scale K + 1 (``cc_scaled``), alone and together, T = 1;
    and CC-AMN under the mean parameterisation (``cc_mean``), together, T = 1.
    """
    runs = []
    for seed in SEEDS:
        for game in games:
            for loss in ("xe", "cc"):
                runs.append(dict(games=[game], loss=loss, temperature=1.0, seed=seed))
        if len(games) > 1:
            for temperature in (1.0, 0.1):
                for loss in ("xe", "cc"):
                    runs.append(
                        dict(
                            games=list(games),
                            loss=loss,
                            temperature=temperature,
                            seed=seed,
                        )
                    )
    for seed in SEEDS:
        groups = [[game] for game in games] + ([list(games)] if len(games) > 1 else [])
        for group in groups:
            runs.append(dict(games=group, loss="cc_scaled", temperature=1.0, seed=seed))
    if len(games) > 1:
        for seed in SEEDS:
            runs.append(
                dict(games=list(games), loss="cc_mean", temperature=1.0, seed=seed)
            )
    return runs


def student_dir(out: Path, run: dict[str, Any]) -> Path:
    group = run["games"][0] if len(run["games"]) == 1 else f"all{len(run['games'])}"
    return (
        out
        / "students"
        / group
        / f"{run['loss']}_T{run['temperature']:g}"
        / (f"seed{run['seed']}")
    )


def run_student(out: Path, run: dict[str, Any], extra: Sequence[str]) -> None:
    """Train one student unless it is finished or another study process is
    training it (so two processes, one per core, can share the study)."""
    from examples.atari import actor_mimic

    run_dir = student_dir(out, run)
    total = STUDENT_FRAMES
    if finished(run_dir, total):
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    with RunLock(run_dir) as locked:
        # Re-read: another process may have finished it meanwhile.
        if not locked or finished(run_dir, total):
            return
        print(f"[study] student {run_dir}", flush=True)
        flags = ["--games", *run["games"], *LOSS_FLAGS[run["loss"]]]
        flags += ["--temperature", str(run["temperature"]), "--seed", str(run["seed"])]
        flags += ["--total-steps", str(total), "--experts-dir", str(out / "experts")]
        _timed_run(actor_mimic.main, flags, run_dir, extra)


def run_students(out: Path, games: Sequence[str], extra: Sequence[str]) -> None:
    """Every student run whose experts are trained; the rest are listed."""
    waiting = []
    for run in student_runs(games):
        if all(expert_ready(out, g) for g in run["games"]):
            run_student(out, run, extra)
        else:
            waiting.append(student_dir(out, run))
    for run_dir in waiting:
        print(f"[study] waiting for experts: {run_dir}", flush=True)


def run_all(out: Path, games: Sequence[str], extra: Sequence[str]) -> None:
    """Each expert, then its game's single-game students, then the rest.

    This order gives a finished AMN vs CC-AMN comparison on the first game
    long before the last expert is trained.
    """
    for game in games:
        run_experts(out, [game], extra)
        for run in student_runs([game]):
            run_student(out, run, extra)
    run_students(out, games, extra)


def main(argv: Sequence[str] | None = None) -> Any:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=["all", "experts", "students", "report"])
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
    if args.part == "students":
        return run_students(args.out, args.games, extra)
    if args.part == "all":
        return run_all(args.out, args.games, extra)
    from examples.atari import minatar_report

    return minatar_report.report(args.out, args.games)


if __name__ == "__main__":
    main(sys.argv[1:])
