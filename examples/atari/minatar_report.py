"""Tables and curves of the MinAtar study from its run directories.

    python -m examples.atari.minatar_study report

Reads ``<out>/experts/<Game>/`` and ``<out>/students/...`` (see
``minatar_study.py``), writes ``<out>/report.md`` (Markdown tables) and
``<out>/curves_*.png``, and prints the tables. Only finished runs enter the
tables; unfinished ones are listed as pending. Student returns are the final
evaluation (ε = 0.05, mean over the episodes of the evaluation budget), as
mean ± sample standard deviation over seeds with n shown; a single seed is
shown without a ± .
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from examples.atari import minatar_study as study

# DQN in the MinAtar paper (Young & Tian, 2019; the figure "learning_curves"
# of github.com/kenjyoung/MinAtar): moving average of the last 100 training
# returns (ε = 0.1), mean of 30 seeds, full 6-action set. Read off the figure
# by eye (about ±1 for Breakout, Asterix and Seaquest, ±3 for Freeway and
# Space Invaders), at the frame counts we train and at 5M.
PUBLISHED_DQN: dict[str, dict[int, float]] = {
    "Breakout": {500_000: 8.5, 1_000_000: 9.5, 5_000_000: 10.0},
    "Freeway": {500_000: 40.0, 750_000: 47.0, 1_000_000: 49.0, 5_000_000: 50.0},
    "SpaceInvaders": {500_000: 27.0, 1_000_000: 32.0, 1_250_000: 35.0, 5_000_000: 43.0},
    "Asterix": {1_000_000: 10.0, 1_500_000: 13.0, 5_000_000: 17.0},
    "Seaquest": {1_000_000: 1.0, 2_000_000: 5.0, 2_500_000: 8.0, 5_000_000: 20.0},
}
LABELS = {
    "xe": "AMN",
    "cc": "CC-AMN",
    "cc_scaled": "CC-AMN ×(K+1)",
    "cc_mean": "CC-AMN (mean)",
}
COLORS = {
    "xe": "tab:blue",
    "cc": "tab:red",
    "cc_scaled": "tab:purple",
    "cc_mean": "tab:green",
}
# The follow-ups to the main study (AMN and CC-AMN at T = 1 and 0.1).
FOLLOW_UPS = ("cc_scaled", "cc_mean")
RANDOM_EPISODES = 100  # per game, for the random-policy baseline
TARGET_STEPS = 1_500  # steps of 8 envs per game whose expert targets are measured


def read_rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def mean_std(values: Sequence[float], digits: int = 2) -> str:
    """'m ± s (n=k)' with the sample std; one value has no ±."""
    if not values:
        return "pending"
    if len(values) == 1:
        return f"{values[0]:.{digits}f} (n=1)"
    arr = np.asarray(values, np.float64)
    return f"{arr.mean():.{digits}f} ± {arr.std(ddof=1):.{digits}f} (n={len(arr)})"


def random_returns(out: Path, games: Sequence[str]) -> dict:
    """Uniform random policy over each game's minimal actions (cached)."""
    from examples.atari.minatar_env import MinAtarVectorEnv

    path = out / "random_policy.json"
    cached = json.loads(path.read_text()) if path.exists() else {}
    rng = np.random.default_rng(0)
    episodes = RANDOM_EPISODES
    for game in games:
        if game in cached:
            continue
        env = MinAtarVectorEnv(game, 10, seed=12345)
        done_returns: list[float] = []
        running = np.zeros(10)
        while len(done_returns) < episodes:
            _, r, term, trunc, _ = env.step(rng.integers(0, env.num_actions, 10))
            running += r
            for i in np.flatnonzero(term | trunc):
                done_returns.append(float(running[i]))
                running[i] = 0.0
        arr = np.array(done_returns[:episodes])
        cached[game] = dict(mean=float(arr.mean()), std=float(arr.std()), n=episodes)
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cached, indent=1))
    return cached


def target_sharpness(out: Path, games: Sequence[str]) -> dict:
    """How far the students' targets softmax(Q/T) are from uniform (cached).

    States come from each expert's own play (ε = 0.05, 8 environments,
    ``TARGET_STEPS`` steps each); per game: the number of actions K, the mean
    top target probability at T = 1 and T = 0.1 (uniform is 1/K), and the
    median gap between the two best Q-values.
    """
    from examples.atari.common import load_q_network
    from examples.atari.minatar_env import MinAtarVectorEnv

    path = out / "expert_targets.json"
    cached = json.loads(path.read_text()) if path.exists() else {}
    rng = np.random.default_rng(0)
    for game in games:
        if game in cached or not study.expert_ready(out, game):
            continue
        q_net = load_q_network(study.expert_dir(out, game), game, "minatar")
        env = MinAtarVectorEnv(game, 8, seed=2024)
        obs, _ = env.reset(seed=2024)
        q_values = []
        for _ in range(TARGET_STEPS):
            q = np.asarray(q_net.predict_on_batch(obs), np.float64)
            q_values.append(q)
            actions = q.argmax(1)
            explore = rng.random(len(actions)) < 0.05
            actions[explore] = rng.integers(0, env.num_actions, explore.sum())
            obs, *_ = env.step(actions)
        q = np.concatenate(q_values)
        top_two = np.sort(q, axis=1)[:, -2:]
        entry = dict(
            actions=int(q.shape[1]),
            states=int(q.shape[0]),
            median_top_gap=float(np.median(top_two[:, 1] - top_two[:, 0])),
        )
        for t in (1.0, 0.1):
            y = np.exp((q - q.max(1, keepdims=True)) / t)
            entry[f"top_probability_T{t:g}"] = float((1 / y.sum(1)).mean())
        cached[game] = entry
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cached, indent=1))
    return cached


def target_table(out: Path, games: Sequence[str]) -> list[str]:
    sharpness = target_sharpness(out, games)
    lines = [
        "| game | actions K | uniform 1/K | mean top target probability, T = 1 "
        "| same, T = 0.1 | median gap of the two best Q-values | states |",
        "|---|---|---|---|---|---|---|",
    ]
    for game in games:
        if game not in sharpness:
            lines.append(f"| {game} | pending | | | | | |")
            continue
        e = sharpness[game]
        lines.append(
            f"| {game} | {e['actions']} | {1 / e['actions']:.3f} "
            f"| {e['top_probability_T1']:.3f} | {e['top_probability_T0.1']:.3f} "
            f"| {e['median_top_gap']:.3f} | {e['states']:,} |"
        )
    return lines


def expert_table(out: Path, games: Sequence[str]) -> tuple[list[str], dict]:
    rand = random_returns(out, games)
    lines = [
        "| game | frames (share of 5M) | expert: final evaluation | expert: "
        "training return, last 10% of frames | published DQN at those frames "
        "(at 5M) | ratio to published | random policy | wall time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    finals: dict[str, float] = {}
    for game in games:
        run_dir = study.expert_dir(out, game)
        total = study.EXPERT_FRAMES[game]
        evals = read_rows(run_dir / "eval.csv")
        train = read_rows(run_dir / "train.csv")
        published = PUBLISHED_DQN[game]
        ref = published.get(total)
        ref_text = f"≈{ref:g} ({published[5_000_000]:g})" if ref else "–"
        r = rand[game]
        rand_text = f"{r['mean']:.2f}"
        if not study.finished(run_dir, total):
            done = int(train[-1]["step"]) if train else 0
            lines.append(
                f"| {game} | {total / 1e6:g}M ({total / 5e6:.0%}) | pending "
                f"({done:,} frames done) | | {ref_text} | | {rand_text} | |"
            )
            continue
        last = evals[-1]
        finals[game] = float(last["eval_return"])
        tail = [
            float(row["episode_return"])
            for row in train
            if int(row["step"]) > 0.9 * total and row["episode_return"] != "nan"
        ]
        train_ret = float(np.mean(tail)) if tail else float("nan")
        ratio = f"{train_ret / ref:.2f}" if ref else "–"
        wall = _minutes(wall_seconds(run_dir))
        lines.append(
            f"| {game} | {total / 1e6:g}M ({total / 5e6:.0%}) | "
            f"{finals[game]:.2f} (sd {float(last['eval_return_std']):.2f} over "
            f"{last['eval_episodes']} episodes) | {train_ret:.2f} | {ref_text} | "
            f"{ratio} | {rand_text} | {wall} |"
        )
    return lines, finals


def wall_seconds(run_dir: Path) -> float:
    """Training time summed over the logged intervals of ``train.csv``.

    Each row's rate covers the frames since the previous row (evaluations
    and checkpoints included), so the sum survives kills and resumes; it
    leaves out start-up, compilation and the replay refill after a resume.
    A multi-game student logs one row per game at the same step, with the
    per-game rate, so one game's rows cover the run.
    """
    rows = read_rows(run_dir / "train.csv")
    seconds, previous = 0.0, 0
    for row in rows:
        if row["game"] != rows[0]["game"]:
            continue
        step, rate = int(row["step"]), float(row["steps_per_s"])
        if rate > 0:
            seconds += (step - previous) / rate
        previous = step
    return seconds


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds else "–"


def student_finals(out: Path, run: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per game: final eval return and non-finite count, if the run finished."""
    run_dir = study.student_dir(out, run)
    if not study.finished(run_dir, study.STUDENT_FRAMES):
        return {}
    result = {}
    for row in read_rows(run_dir / "eval.csv"):
        if int(row["step"]) >= study.STUDENT_FRAMES:
            result[row["game"]] = dict(
                ret=float(row["eval_return"]),
                nonfinite=int(row["nonfinite_losses"]),
            )
    return result


def collect(out: Path, games: Sequence[str]) -> dict:
    """results[(group, loss, T)][game] = list of (seed, return, nonfinite)."""
    results: dict[tuple[str, str, float], dict[str, list]] = {}
    for run in study.student_runs(games):
        group = run["games"][0] if len(run["games"]) == 1 else "all"
        key = (group, run["loss"], run["temperature"])
        per_game = results.setdefault(key, {})
        for game, res in student_finals(out, run).items():
            per_game.setdefault(game, []).append(
                (run["seed"], res["ret"], res["nonfinite"])
            )
    return results


def student_table(
    results: dict,
    finals: dict[str, float],
    games: Sequence[str],
    group: str,
    t: float,
    losses: Sequence[str] = ("xe", "cc"),
) -> list[str]:
    """One row per game: expert, each loss's final return (mean ± sd, n),
    each as a fraction of the expert's, and the non-finite loss counts."""
    names = [LABELS[loss] for loss in losses]
    lines = [
        f"| game | expert | {' | '.join(names)} | "
        + " | ".join(f"{name} / expert" for name in names)
        + f" | non-finite losses ({', '.join(names)}) |",
        "|---|---|" + "---|" * (2 * len(losses) + 1),
    ]
    for game in games:
        cells = []
        fractions = []
        nonfinite = []
        for loss in losses:
            key = (game if group == "single" else "all", loss, t)
            runs = results.get(key, {}).get(game, [])
            values = [r for _, r, _ in runs]
            cells.append(mean_std(values))
            expert = finals.get(game)
            if values and expert:
                fractions.append(f"{np.mean(values) / expert:.2f}")
            else:
                fractions.append("–")
            nonfinite.append(str(sum(n for _, _, n in runs)) if runs else "–")
        expert_text = f"{finals[game]:.2f}" if game in finals else "pending"
        lines.append(
            f"| {game} | {expert_text} | {' | '.join(cells)} | {' | '.join(fractions)} "
            f"| {', '.join(nonfinite)} |"
        )
    return lines


def plot_curves(out: Path, games: Sequence[str]) -> list[Path]:
    """Evaluation return vs frames: expert, AMN and CC-AMN (mean ± sd bands)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    # Experts: evaluation and training returns against the published curve.
    fig, axes = plt.subplots(1, len(games), figsize=(3.6 * len(games), 3.2))
    axes = np.atleast_1d(axes)
    anything = False
    for ax, game in zip(axes, games, strict=True):
        run_dir = study.expert_dir(out, game)
        evals = read_rows(run_dir / "eval.csv")
        train = [
            r for r in read_rows(run_dir / "train.csv") if r["episode_return"] != "nan"
        ]
        if evals:
            anything = True
            ax.errorbar(
                [int(r["step"]) for r in evals],
                [float(r["eval_return"]) for r in evals],
                fmt="o-",
                ms=3,
                color="black",
                label="evaluation (ε 0.05)",
            )
        if train:
            ax.plot(
                [int(r["step"]) for r in train],
                [float(r["episode_return"]) for r in train],
                color="tab:gray",
                lw=0.8,
                label="training episodes (ε 0.1)",
            )
        published = {
            k: v
            for k, v in PUBLISHED_DQN[game].items()
            if k <= study.EXPERT_FRAMES[game]
        }
        ax.plot(
            list(published),
            list(published.values()),
            "x",
            color="tab:green",
            ms=8,
            label="MinAtar paper DQN (training, read off its figure)",
        )
        ax.set_title(game)
        ax.set_xlabel("frames")
        ax.set_xlim(0, study.EXPERT_FRAMES[game])
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=6)
    axes[0].set_ylabel("return")
    fig.suptitle("MinAtar DQN experts (one seed each)")
    fig.tight_layout()
    if anything:
        path = out / "curves_experts.png"
        fig.savefig(path, dpi=90)
        written.append(path)
    plt.close(fig)
    for group, temps in (("single", (1.0,)), ("all", (1.0, 0.1))):
        fig, axes = plt.subplots(1, len(games), figsize=(3.6 * len(games), 3.2))
        axes = np.atleast_1d(axes)
        anything = False
        for ax, game in zip(axes, games, strict=True):
            expert = read_rows(study.expert_dir(out, game) / "eval.csv")
            if expert:
                ax.axhline(
                    float(expert[-1]["eval_return"]),
                    color="gray",
                    ls="--",
                    label="expert (final)",
                )
            for t in temps:
                for loss in LABELS:
                    curves = []
                    for seed in study.SEEDS:
                        games_run = [game] if group == "single" else list(games)
                        run = dict(games=games_run, loss=loss, temperature=t, seed=seed)
                        rows = [
                            r
                            for r in read_rows(study.student_dir(out, run) / "eval.csv")
                            if r["game"] == game
                        ]
                        if rows:
                            curves.append(
                                {int(r["step"]): float(r["eval_return"]) for r in rows}
                            )
                    if not curves:
                        continue
                    anything = True
                    steps = sorted(set.intersection(*(set(c) for c in curves)))
                    values = np.array([[c[s] for s in steps] for c in curves])
                    mean = values.mean(0)
                    style = "-" if t == 1.0 else ":"
                    label = f"{LABELS[loss]} T={t:g} (n={len(curves)})"
                    ax.plot(steps, mean, style, color=COLORS[loss], label=label)
                    if len(curves) > 1:
                        sd = values.std(0, ddof=1)
                        ax.fill_between(
                            steps, mean - sd, mean + sd, color=COLORS[loss], alpha=0.15
                        )
            ax.set_title(game)
            ax.set_xlabel("frames of this game")
            ax.legend(fontsize=6)
        axes[0].set_ylabel("evaluation return")
        title = (
            "each game alone" if group == "single" else "all five games, one student"
        )
        fig.suptitle(f"MinAtar actor-mimic: {title}")
        fig.tight_layout()
        if anything:
            path = out / f"curves_{group}.png"
            fig.savefig(path, dpi=90)
            written.append(path)
        plt.close(fig)
    return written


def wall_table(out: Path, games: Sequence[str]) -> list[str]:
    """Minutes per finished student run, by setting, and the study's total
    (one core each, two runs at a time on the two-core machine)."""
    lines = [
        "| students | loss | T | finished runs | minutes per run | total |",
        "|---|---|---|---|---|---|",
    ]
    per_setting: dict[tuple[str, str, float], list[float]] = {}
    for run in study.student_runs(games):
        group = run["games"][0] if len(run["games"]) == 1 else "all five"
        key = (group, run["loss"], run["temperature"])
        runs = per_setting.setdefault(key, [])
        if student_finals(out, run):
            runs.append(wall_seconds(study.student_dir(out, run)))
    for (group, loss, t), seconds in per_setting.items():
        each = mean_std([s / 60 for s in seconds], digits=0)
        lines.append(
            f"| {group} | {LABELS[loss]} | {t:g} | {len(seconds)} | {each} "
            f"| {_minutes(sum(seconds))} |"
        )
    for part, in_part in (
        ("main study", lambda loss: loss not in FOLLOW_UPS),
        ("follow-ups (×(K+1), mean)", lambda loss: loss in FOLLOW_UPS),
    ):
        seconds = [
            s for (_, loss, _), v in per_setting.items() if in_part(loss) for s in v
        ]
        lines.append(
            f"| {part} | | | {len(seconds)} | | {sum(seconds) / 3600:.1f} CPU-hours |"
        )
    return lines


def report(out: Path, games: Sequence[str]) -> str:
    lines, finals = expert_table(out, games)
    results = collect(out, games)
    text = ["## Experts (DQN, one seed each)", "", *lines, ""]
    text += ["## The students' targets softmax(Q/T) on the experts' states", ""]
    text += target_table(out, games) + [""]
    # The follow-ups run at T = 1 only; the mean parameterisation with all
    # five games together only.
    text += ["## Each game alone (T = 1)", ""]
    alone = tuple(loss for loss in LABELS if loss != "cc_mean")
    text += student_table(results, finals, games, "single", 1.0, alone)
    for t, losses in ((1.0, tuple(LABELS)), (0.1, ("xe", "cc"))):
        text += ["", f"## All five games, one student (T = {t:g})", ""]
        text += student_table(results, finals, games, "all", t, losses)
    text += [""]
    text += ["## Wall time of the student runs", ""]
    text += wall_table(out, games) + [""]
    pending = [
        str(study.student_dir(out, run))
        for run in study.student_runs(games)
        if not student_finals(out, run)
    ]
    text += [f"Pending student runs: {len(pending)}", ""]
    text += [f"- `{p}`" for p in pending] + [""]
    figures = plot_curves(out, games)
    text += [f"Curves: {', '.join(p.name for p in figures) or 'none yet'}", ""]
    body = "\n".join(text)
    (out / "report.md").write_text(body)
    print(body)
    return body
