"""Actor-Mimic (AMN) and CC-AMN: one student network imitates per-game DQNs.

CleanRL style: the algorithm reads top to bottom in ``train`` below, one
named function per step (set up, act, update, log, evaluate, checkpoint);
the environment families, networks, replays, compiled update, evaluation,
logging and checkpoints come from ``common.py`` next to this file.

    # experts first (one dqn.py run directory per game), then the student:
    python -m examples.atari.actor_mimic --preset paper --games Pong Breakout \\
        --experts-dir runs/experts --loss cc --run-dir runs/cc_amn_pong_breakout
    # MinAtar, from the committed experts:
    python -m examples.atari.actor_mimic --preset minatar --games Breakout \\
        Freeway --experts-dir examples/atari/results/minatar/experts --loss cc
    # no experts at hand: freshly initialised ones (plumbing tests only)
    python -m examples.atari.actor_mimic --preset smoke --games Pong Boxing \\
        --fresh-experts --loss xe

Target for a state s of game g: y = softmax(Q_g(s) / T) over g's actions. The
student's output is the union of the games' action sets, matched by meaning;
game g's loss gathers g's actions from it, divides by T, and applies either
cross-entropy (``--loss xe``, AMN) or the continuous-categorical negative
log-likelihood (``--loss cc``, CC-AMN, ``keras_cc.losses``). Step counts are
per game, in agent steps (see dqn.py). On MinAtar the games' observations
have 4 to 10 channels; the student takes the largest count and each game's
observations are padded with zero channels.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import ale_py
import keras
import numpy as np
from keras import layers, ops

import keras_cc
from examples._config import option, parse_config
from examples.atari.common import (
    FAMILIES,
    STACK,
    Family,
    Game,
    Recent,
    Run,
    ScoresFn,
    Throughput,
    compiled_train_step,
    config_checks,
    format_stat,
    linear_epsilon,
    load_q_network,
    resume,
    start_run,
)

LOSSES = ("xe", "cc")
# `--cc-logit-scale K+1`: the per-game scale that matches the CC's curvature
# at the uniform point to cross-entropy's (see `cc_logit_scale`).
PER_GAME_SCALE = "K+1"
# `--cc-logit-scale mean`: no scale; the student's softmax is the CC's mean
# (the loss's mean parameterisation).
MEAN_PARAMETERIZATION = "mean"


def parse_logit_scale(text: str) -> str:
    """`--cc-logit-scale`: "K+1", "mean" or a positive finite number, as text."""
    if text.strip().upper() == PER_GAME_SCALE:
        return PER_GAME_SCALE
    if text.strip().lower() == MEAN_PARAMETERIZATION:
        return MEAN_PARAMETERIZATION
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValueError(
            f'--cc-logit-scale must be "{PER_GAME_SCALE}", '
            f'"{MEAN_PARAMETERIZATION}" or a positive number; '
            f"got {text!r}"
        )
    return f"{value:g}"


def cc_logit_scale(spec: str, num_actions: int) -> float:
    """The scale s of the logits the CC loss sees, for a game of K actions.

    Near uniform targets (expert Q-values that differ by much less than T,
    as on most MinAtar states at T = 1) both losses are close to quadratic
    in the logits z. Their gradients agree at z = 0, but the CC's curvature
    is that of the uniform distribution on the simplex, `Cov = (I - 11ᵀ/K) /
    (K(K + 1))`, K + 1 times smaller than the softmax's `(I - 11ᵀ/K) / K`:
    the CC optimum sits at K + 1 times larger logits and, with Adam's
    steps of about the learning rate, is reached K + 1 times later. Feeding
    the CC `s·z` with s = K + 1 makes its gradient (K + 1) times
    cross-entropy's to first order, which Adam's normalisation cancels.
    """
    if spec == PER_GAME_SCALE:
        return float(num_actions + 1)
    if spec == MEAN_PARAMETERIZATION:
        return 1.0
    return float(parse_logit_scale(spec))


@dataclasses.dataclass
class AMNConfig:
    """Settings of one student run; every field is a command-line flag."""

    games: list[str] = option(["Pong"], "the games, by their CamelCase names")
    family: str = option(
        "ale", "ale (Atari 2600, ale-py) or minatar", choices=tuple(FAMILIES)
    )
    loss: str = option("xe", "xe: AMN (cross-entropy); cc: CC-AMN", choices=LOSSES)
    temperature: float = option(1.0, "T of the targets softmax(Q / T)", above=0)
    cc_logit_scale: str = option(
        "1",
        f'--loss cc only: the CC loss sees s·logits; s a positive number or "'
        f'{PER_GAME_SCALE}" (per game, K its number of actions); or '
        f'"{MEAN_PARAMETERIZATION}": softmax(logits) is the CC\'s mean',
        parse=parse_logit_scale,
        metavar="S",
    )
    experts_dir: str = "runs/experts"  # holds <Game>/checkpoint.npz from dqn.py
    fresh_experts: bool = False  # random experts: for smoke tests only
    seed: int = 1
    # The paper gives no student budget; 10M steps per game is our assumption.
    total_steps: int = 10_000_000
    num_envs: int = option(1, "environments per game", at_least=1)
    buffer_size: int = option(100_000, "replay capacity per game", at_least=STACK + 2)
    learning_starts: int = option(5_000, "agent steps before the first update")
    train_every: int = option(
        4, "one update per game per this many of its agent steps", at_least=1
    )
    batch_size: int = option(32, "transitions per update", at_least=1)
    learning_rate: float = option(
        1e-4, "Adam (assumption: the paper gives only the experts')", above=0
    )
    adam_epsilon: float = 1.5e-4
    # ε-greedy on the student's own policy; 1 → 0.1 over 1M steps (assumption).
    eps_start: float = option(1.0, at_least=0, at_most=1)
    eps_mid: float = option(0.1, at_least=0, at_most=1)
    eps_mid_step: int = 1_000_000
    eps_end: float = option(0.1, at_least=0, at_most=1)
    eps_end_step: int = 1_000_000
    max_episode_frames: int = 18_000  # emulator frames
    noop_max: int = 20  # no-op actions at most at an episode's start (Atari)
    eval_every: int = 100_000  # agent steps between evaluations
    eval_steps: int = 100_000  # agent steps per evaluation, per game
    eval_envs: int = option(8, "environments of the evaluation", at_least=1)
    eval_epsilon: float = option(0.05, "ε of the evaluation", at_least=0, at_most=1)
    log_every: int = option(10_000, "agent steps per row of train.csv", at_least=1)
    checkpoint_every: int = 100_000
    run_dir: str = option("runs/amn", "where the logs and checkpoints go")


# A few hundred agent steps per game, a tiny replay: exercises every code path.
SMOKE_BUDGET: dict[str, Any] = dict(
    total_steps=192,
    num_envs=2,
    buffer_size=256,
    learning_starts=32,
    batch_size=8,
    eps_mid_step=96,
    eps_end_step=96,
    eval_every=96,
    log_every=64,
    checkpoint_every=96,
)
AMN_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "smoke": dict(
        SMOKE_BUDGET,
        max_episode_frames=200,
        noop_max=5,
        eval_steps=128,
        eval_envs=2,
        run_dir="runs/amn_smoke",
    ),
    # MinAtar students (no published setting to follow: Parisotto et al.
    # distil Atari experts; these are sized so that the whole study fits in
    # about 8 CPU-hours). One update per game per 2 frames of that game.
    "minatar": dict(
        family="minatar",
        games=["Breakout"],
        total_steps=200_000,
        num_envs=4,
        buffer_size=100_000,
        learning_starts=5_000,
        train_every=2,
        batch_size=32,
        learning_rate=1e-4,
        adam_epsilon=1e-7,
        eps_mid_step=50_000,
        eps_end_step=50_000,
        max_episode_frames=100_000,
        noop_max=0,
        eval_every=25_000,
        eval_steps=25_000,
        eval_envs=8,
        eval_epsilon=0.05,
        log_every=5_000,
        checkpoint_every=25_000,
        run_dir="runs/minatar_amn",
    ),
    "minatar_smoke": dict(
        SMOKE_BUDGET,
        family="minatar",
        games=["Breakout"],
        train_every=2,
        max_episode_frames=60,
        noop_max=0,
        eval_steps=240,
        eval_envs=4,
        run_dir="runs/minatar_amn_smoke",
    ),
}


def amn_checks(cfg: AMNConfig) -> list[str]:
    problems = []
    if not cfg.games:
        problems.append("--games needs at least one game")
    if len(set(cfg.games)) != len(cfg.games):
        problems.append(f"--games lists a game twice: {cfg.games}")
    try:
        scale = parse_logit_scale(cfg.cc_logit_scale)
    except ValueError as error:
        problems.append(str(error))
    else:
        if cfg.loss != "cc" and scale != "1":
            problems.append(
                f"--cc-logit-scale {cfg.cc_logit_scale} applies to --loss cc only "
                f"(got --loss {cfg.loss})"
            )
    if not cfg.fresh_experts:
        missing = [
            g
            for g in cfg.games
            if not any(
                (Path(cfg.experts_dir) / g / name).exists()
                for name in ("checkpoint.npz", "expert.npz")
            )
        ]
        if missing:
            problems.append(
                f"no expert checkpoint for {missing} under --experts-dir "
                f"{cfg.experts_dir!r} (expected <dir>/<Game>/checkpoint.npz or "
                "expert.npz from dqn.py --run-dir <dir>/<Game>); pass "
                "--fresh-experts to test the plumbing with untrained experts"
            )
    return problems


def union_action_space(
    meanings: dict[str, list[str]],
) -> tuple[list[str], dict[str, np.ndarray]]:
    """The union of the games' actions, matched by meaning (e.g. 'UPFIRE').

    Ordered as in ALE's full action set, so the student's output layout does
    not depend on the order the games are listed in. Returns the union and,
    per game, the union index of each of its own actions (in its own order).
    """
    full_order = [action.name for action in ale_py.Action]
    wanted = {name for names in meanings.values() for name in names}
    unknown = wanted - set(full_order)
    if unknown:
        raise ValueError(f"action meanings not in ALE's action set: {unknown}")
    union = [name for name in full_order if name in wanted]
    index = {
        game: np.array([union.index(name) for name in names], np.int32)
        for game, names in meanings.items()
    }
    return union, index


def amn_learner(
    student: keras.Model,
    expert: keras.Model,
    actions: np.ndarray,
    temperature: float,
    loss: str,
    game: str,
    logit_scale: str = "1",
) -> keras.Model:
    """One game's view of the student, with its frozen expert alongside.

    Output: the student's logits for this game's own actions (gathered from
    the union layout) and the expert's Q-values, both divided by T. The loss
    turns the second half into the target softmax(Q / T) and fits the first
    half to it: cross-entropy (AMN) or the CC negative log-likelihood
    (CC-AMN, on `s·logits` with s from ``cc_logit_scale``), whose
    normaliser runs over exactly this game's actions. One
    compiled ``train_on_batch`` call per update on any backend; all games'
    learners share the student's layers and one optimizer.
    """
    expert.trainable = False
    idx = [int(a) for a in actions]
    obs = keras.Input(expert.input.shape[1:], dtype=expert.input.dtype, name="obs")
    student_obs = obs
    extra_channels = student.input.shape[-1] - obs.shape[-1]
    if extra_channels > 0:  # MinAtar: this game has fewer channels than another
        student_obs = layers.Lambda(
            lambda x: ops.pad(x, [[0, 0]] * (len(x.shape) - 1) + [[0, extra_channels]]),
            name="pad_channels",
        )(obs)
    logits = layers.Lambda(lambda z: ops.take(z, idx, axis=-1), name="own_actions")(
        student(student_obs)
    )
    both = layers.Concatenate()([logits, expert(obs)])
    scaled = layers.Rescaling(1.0 / temperature, name="temperature")(both)
    model = keras.Model(obs, scaled, name=f"amn_{game}")
    # The student's policy on this game (its own actions, argmax = greedy).
    model.actor = keras.Model(obs, logits, name=f"actor_{game}")
    k = len(idx)
    if loss == "cc":
        fit = keras_cc.losses.ContinuousCategoricalCrossentropy(
            from_logits=True,
            logit_scale=cc_logit_scale(logit_scale, k),
            parameterization=(
                "mean" if logit_scale == MEAN_PARAMETERIZATION else "natural"
            ),
        )
    else:
        fit = keras.losses.CategoricalCrossentropy(from_logits=True)

    def actor_mimic_loss(_, y_pred):
        target = ops.softmax(ops.stop_gradient(y_pred[:, k:]), axis=-1)
        return fit(target, y_pred[:, :k])

    model.loss_fn = actor_mimic_loss
    return model


# --------------------------------------------------------------------------
# Actor-Mimic, top to bottom.
# --------------------------------------------------------------------------
@dataclasses.dataclass
class Student:
    """The student network and, per game, its learner and compiled update."""

    net: keras.Model
    optimizer: keras.optimizers.Optimizer  # one for all games
    union: list[str]  # the student's outputs: the games' actions by meaning
    learners: dict[str, keras.Model]
    train_steps: dict[str, Callable[[Any, np.ndarray], float]]

    def policy(self, game: str) -> ScoresFn:
        """The student's logits for this game's actions (argmax = its policy)."""
        actor = self.learners[game].actor
        return lambda obs: np.asarray(actor.predict_on_batch(obs))


def build_student(cfg: AMNConfig, family: Family) -> Student:
    """The student, its experts (trained or fresh) and one learner per game."""
    games = cfg.games
    meanings = {game: family.action_meanings(game) for game in games}
    union, game_actions = union_action_space(meanings)
    student = family.student_network(games, len(union), "student")
    optimizer = keras.optimizers.Adam(cfg.learning_rate, epsilon=cfg.adam_epsilon)
    if cfg.fresh_experts:
        experts = {
            g: family.q_network(g, len(meanings[g]), f"expert_{g}") for g in games
        }
    else:
        experts = {
            g: load_q_network(Path(cfg.experts_dir) / g, g, cfg.family) for g in games
        }
    learners, train_steps = {}, {}
    for g in games:
        learners[g] = amn_learner(
            student,
            experts[g],
            game_actions[g],
            cfg.temperature,
            cfg.loss,
            g,
            cfg.cc_logit_scale,
        )
        learners[g].compile(optimizer=optimizer, loss=learners[g].loss_fn)
        # All games' steps share the student's variables and one optimizer.
        train_steps[g] = compiled_train_step(learners[g], optimizer)
    return Student(student, optimizer, union, learners, train_steps)


def initial_state(cfg: AMNConfig) -> dict[str, Any]:
    """The counters (steps per game): exactly what a resume needs."""
    state: dict[str, Any] = dict(step=0, updates=0, next_update=cfg.learning_starts)
    state.update(next_eval=cfg.eval_every, next_log=cfg.log_every)
    state.update(next_checkpoint=cfg.checkpoint_every)
    state["nonfinite_losses"] = {game: 0 for game in cfg.games}
    state["episodes"] = {game: 0 for game in cfg.games}
    return state


def act(
    run: Run,
    student: Student,
    games: dict[str, Game],
    recent: dict[str, Recent],
    epsilon: float,
) -> None:
    """One ε-greedy step on the student's own policy in every environment of
    every game: all games advance in lockstep."""
    for name, game in games.items():
        finished = game.play(student.policy(name), epsilon, run.rng)
        recent[name].returns += finished
        run.state["episodes"][name] += len(finished)
    run.state["step"] += run.cfg.num_envs


def update(
    run: Run, student: Student, games: dict[str, Game], recent: dict[str, Recent]
) -> None:
    """One update per game per `train_every` steps; games take turns."""
    cfg, state = run.cfg, run.state
    while state["step"] >= state["next_update"]:
        for name, game in games.items():
            b_obs = game.replay.sample(cfg.batch_size)[0]
            # The expert's targets are computed inside the compiled step.
            dummy = np.zeros((cfg.batch_size, 1), np.float32)
            loss = student.train_steps[name](b_obs, dummy)
            # Must stay 0: the paper's CC-AMN failed on Pong exactly here.
            state["nonfinite_losses"][name] += int(not math.isfinite(loss))
            recent[name].losses.append(loss)
        state["updates"] += 1
        state["next_update"] += cfg.train_every


def log_progress(
    run: Run,
    games: dict[str, Game],
    epsilon: float,
    recent: dict[str, Recent],
    throughput: Throughput,
) -> None:
    """A row of ``train.csv`` per game and one progress line for all."""
    state = run.state
    rates = throughput.rates(state["step"], state["updates"])
    parts = []
    for name, game in games.items():
        episodes, nonfinite = state["episodes"][name], state["nonfinite_losses"][name]
        row = run.train_row(game, epsilon, recent[name], episodes, nonfinite, rates)
        parts.append(
            f"{name} ret {format_stat(row['episode_return'], '.1f')} "
            f"loss {format_stat(row['loss'], '.4f')} "
            f"nonfinite {row['nonfinite_losses']}"
        )
        recent[name].clear()
    print(
        f"[{run.algo}] step {state['step']:>9} eps {epsilon:.3f} | "
        + " | ".join(parts)
        + f" | {rates[0]:.0f} steps/s/game {rates[1]:.0f} upd/s/game"
    )
    state["next_log"] += run.cfg.log_every


def train(cfg: AMNConfig) -> dict[str, Any]:
    run_dir, rng = start_run(cfg)
    algo = "cc-amn" if cfg.loss == "cc" else "amn"
    family = FAMILIES[cfg.family]
    student = build_student(cfg, family)
    models, optimizer = {"student": student.net}, student.optimizer
    what, state = " ".join(cfg.games), initial_state(cfg)
    run = resume(cfg, algo, what, run_dir, rng, models, optimizer, state)
    if run.finished:
        return run.state
    seed = cfg.seed + run.step
    games = {
        name: Game.open(family, name, cfg, env_seed=seed + 100 * i, replay_seed=seed)
        for i, name in enumerate(cfg.games)
    }
    mib = sum(game.replay.nbytes for game in games.values()) / 2**20
    print(
        f"[{algo}] games={cfg.games} union={len(student.union)} actions "
        f"backend={keras.backend.backend()} replay={mib:.1f} MiB"
    )
    if run.resumed:  # the replays are not checkpointed: refill them
        epsilon = linear_epsilon(run.step, cfg)
        size = min(cfg.learning_starts, cfg.buffer_size)
        for name, game in games.items():
            game.fill(student.policy(name), epsilon, rng, size)

    recent = {name: Recent() for name in cfg.games}
    throughput = Throughput(run.step, run.state["updates"])
    while run.step < cfg.total_steps:
        epsilon = linear_epsilon(run.step, cfg)
        act(run, student, games, recent, epsilon)
        update(run, student, games, recent)
        log_due, eval_due, checkpoint_due = run.due()
        if log_due:
            log_progress(run, games, epsilon, recent, throughput)
        if eval_due:
            for name, game in games.items():
                nonfinite = run.state["nonfinite_losses"][name]
                run.evaluate(game, student.policy(name), nonfinite)
            run.advance("next_eval", cfg.eval_every)
        if checkpoint_due:
            run.save_checkpoint(models, optimizer)
    run.logger.close()
    for game in games.values():
        game.close()
    return run.state


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    checks = [config_checks, amn_checks]
    cfg = parse_config(
        AMNConfig, AMN_PRESETS, argv, __doc__, checks, default_preset="smoke"
    )
    return train(cfg)


if __name__ == "__main__":
    main(sys.argv[1:])
