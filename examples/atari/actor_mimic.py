"""Actor-Mimic (AMN) and CC-AMN: one student network imitates per-game DQNs.

CleanRL style: the algorithm reads top to bottom in ``train`` below; the
environment families, networks, replay, compiled update, evaluation, logging
and checkpoints come from ``dqn.py`` next to this file.

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
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ale_py
import keras
import numpy as np
from keras import layers, ops

import keras_cc
from examples.atari.dqn import (
    FAMILIES,
    RunLogger,
    already_finished,
    compiled_train_step,
    epsilon_greedy,
    evaluate,
    format_stat,
    linear_epsilon,
    load_checkpoint,
    load_q_network,
    parse_config,
    rng_state,
    save_checkpoint,
    set_rng_state,
)

LOSSES = ("xe", "cc")


@dataclasses.dataclass
class AMNConfig:
    games: list[str] = dataclasses.field(default_factory=lambda: ["Pong"])
    family: str = "ale"  # ale (Atari 2600) or minatar
    loss: str = "xe"  # xe: AMN (cross-entropy); cc: CC-AMN
    temperature: float = 1.0
    experts_dir: str = "runs/experts"  # holds <Game>/checkpoint.npz from dqn.py
    fresh_experts: bool = False  # random experts: for smoke tests only
    seed: int = 1
    # The paper gives no student budget; 10M steps per game is our assumption.
    total_steps: int = 10_000_000
    num_envs: int = 1
    buffer_size: int = 100_000  # per game
    learning_starts: int = 5_000
    train_every: int = 4  # one update per game per 4 of its agent steps
    batch_size: int = 32
    learning_rate: float = 1e-4  # assumption: the paper gives only the experts'
    adam_epsilon: float = 1.5e-4
    # ε-greedy on the student's own policy; 1 → 0.1 over 1M steps (assumption).
    eps_start: float = 1.0
    eps_mid: float = 0.1
    eps_mid_step: int = 1_000_000
    eps_end: float = 0.1
    eps_end_step: int = 1_000_000
    max_episode_frames: int = 18_000
    noop_max: int = 20
    eval_every: int = 100_000
    eval_steps: int = 100_000
    eval_envs: int = 8
    eval_epsilon: float = 0.05
    log_every: int = 10_000
    checkpoint_every: int = 100_000
    run_dir: str = "runs/amn"


AMN_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "smoke": dict(
        total_steps=192,
        num_envs=2,
        buffer_size=256,
        learning_starts=32,
        batch_size=8,
        eps_mid_step=96,
        eps_end_step=96,
        max_episode_frames=200,
        noop_max=5,
        eval_every=96,
        eval_steps=128,
        eval_envs=2,
        log_every=64,
        checkpoint_every=96,
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
        family="minatar",
        games=["Breakout"],
        total_steps=192,
        num_envs=2,
        buffer_size=256,
        learning_starts=32,
        train_every=2,
        batch_size=8,
        eps_mid_step=96,
        eps_end_step=96,
        max_episode_frames=60,
        noop_max=0,
        eval_every=96,
        eval_steps=240,
        eval_envs=4,
        log_every=64,
        checkpoint_every=96,
        run_dir="runs/minatar_amn_smoke",
    ),
}


def amn_checks(cfg: AMNConfig) -> list[str]:
    problems = []
    if not cfg.games:
        problems.append("--games needs at least one game")
    if len(set(cfg.games)) != len(cfg.games):
        problems.append(f"--games lists a game twice: {cfg.games}")
    if cfg.loss not in LOSSES:
        problems.append(f"--loss must be one of {LOSSES}, got {cfg.loss!r}")
    if not cfg.temperature > 0:
        problems.append(f"--temperature must be > 0, got {cfg.temperature}")
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
) -> keras.Model:
    """One game's view of the student, with its frozen expert alongside.

    Output: the student's logits for this game's own actions (gathered from
    the union layout) and the expert's Q-values, both divided by T. The loss
    turns the second half into the target softmax(Q / T) and fits the first
    half to it: cross-entropy (AMN) or the CC negative log-likelihood
    (CC-AMN), whose normaliser runs over exactly this game's actions. One
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
        fit = keras_cc.losses.ContinuousCategoricalCrossentropy(from_logits=True)
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
def train(cfg: AMNConfig) -> dict[str, Any]:
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=1))
    keras.utils.set_random_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    algo = "cc-amn" if cfg.loss == "cc" else "amn"

    games = cfg.games
    family = FAMILIES[cfg.family]
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
            student, experts[g], game_actions[g], cfg.temperature, cfg.loss, g
        )
        learners[g].compile(optimizer=optimizer, loss=learners[g].loss_fn)
        # All games' steps share the student's variables and one optimizer.
        train_steps[g] = compiled_train_step(learners[g], optimizer)

    state: dict[str, Any] = dict(step=0, updates=0, next_update=cfg.learning_starts)
    state.update(next_eval=cfg.eval_every, next_log=cfg.log_every)
    state.update(next_checkpoint=cfg.checkpoint_every)
    state["nonfinite_losses"] = {game: 0 for game in cfg.games}
    state["episodes"] = {game: 0 for game in cfg.games}
    ckpt = run_dir / "checkpoint.npz"
    resumed = ckpt.exists()
    if resumed:
        state = load_checkpoint(ckpt, {"student": student}, optimizer)
        set_rng_state(rng, state.pop("rng"))
        if state["step"] >= cfg.total_steps:
            what = " ".join(games)
            print(already_finished(algo, what, state["step"], cfg.total_steps, ckpt))
            return state
        print(f"[{algo}] resumed at step {state['step']} from {ckpt}")
    logger = RunLogger(run_dir, state["step"] if resumed else None)

    seed = cfg.seed + state["step"]
    envs = {
        g: family.make_env(g, cfg.num_envs, cfg, seed + 100 * i)
        for i, g in enumerate(games)
    }
    eval_envs = {
        g: family.make_env(g, cfg.eval_envs, cfg, cfg.seed + 10_000) for g in games
    }
    replays = {g: family.make_replay(cfg, g, seed) for g in games}
    obs = {}
    for i, game in enumerate(cfg.games):
        obs[game], _ = envs[game].reset(seed=seed + 100 * i)
        replays[game].start(family.replay_view(obs[game]))
    mib = sum(r.nbytes for r in replays.values()) / 2**20
    print(
        f"[{algo}] games={cfg.games} union={len(union)} actions "
        f"backend={keras.backend.backend()} replay={mib:.1f} MiB"
    )

    def scores_fn(game: str):
        """The student's logits for this game's actions (argmax = its policy)."""
        actor = learners[game].actor
        return lambda o: np.asarray(actor.predict_on_batch(o))

    returns = {g: np.zeros(cfg.num_envs) for g in games}
    recent_returns: dict[str, list[float]] = {g: [] for g in games}
    recent_losses: dict[str, list[float]] = {g: [] for g in games}

    def env_step(game: str, epsilon: float, record: bool) -> None:
        """ε-greedy on the student's own policy over this game's actions."""
        actions = epsilon_greedy(scores_fn(game)(obs[game]), epsilon, rng)
        nxt, rewards, terminated, truncated, info = envs[game].step(actions)
        done = terminated | truncated
        final = family.replay_view(info["final_obs"]) if done.any() else None
        # The reward is never a learning signal here; stored for completeness.
        view = family.replay_view(nxt)
        replays[game].add(actions, rewards, terminated, done, view, final)
        obs[game] = nxt
        if record:
            returns[game] += rewards
            for i in np.flatnonzero(done):
                recent_returns[game].append(float(returns[game][i]))
                returns[game][i] = 0.0
                state["episodes"][game] += 1

    if resumed:  # the replays are not checkpointed: refill, counters frozen
        epsilon = linear_epsilon(state["step"], cfg)
        for game in cfg.games:
            while len(replays[game]) < min(cfg.learning_starts, cfg.buffer_size):
                env_step(game, epsilon, record=False)

    t_log, step_log, updates_log = time.perf_counter(), state["step"], state["updates"]
    while state["step"] < cfg.total_steps:
        epsilon = linear_epsilon(state["step"], cfg)
        for game in cfg.games:  # all games advance in lockstep
            env_step(game, epsilon, record=True)
        state["step"] += cfg.num_envs

        # One update per game per `train_every` steps; games take turns.
        while state["step"] >= state["next_update"]:
            for game in cfg.games:
                b_obs = replays[game].sample(cfg.batch_size)[0]
                # The expert's targets are computed inside the compiled step.
                dummy = np.zeros((cfg.batch_size, 1), np.float32)
                loss = train_steps[game](b_obs, dummy)
                # Must stay 0: the paper's CC-AMN failed on Pong exactly here.
                state["nonfinite_losses"][game] += int(not math.isfinite(loss))
                recent_losses[game].append(loss)
            state["updates"] += 1
            state["next_update"] += cfg.train_every

        if state["step"] >= state["next_log"] or state["step"] >= cfg.total_steps:
            now = time.perf_counter()
            rate = (state["step"] - step_log) / (now - t_log)
            upd_rate = (state["updates"] - updates_log) / (now - t_log)
            parts = []
            for game in cfg.games:
                rets, losses = recent_returns[game], recent_losses[game]
                row = dict(
                    step=state["step"],
                    game=game,
                    algo=algo,
                    frames=family.frames_per_step * state["step"],
                    updates=state["updates"],
                    epsilon=round(epsilon, 5),
                    loss=float(np.mean(losses)) if losses else float("nan"),
                    episode_return=float(np.mean(rets)) if rets else float("nan"),
                    episodes=state["episodes"][game],
                    nonfinite_losses=state["nonfinite_losses"][game],
                    steps_per_s=rate,
                    updates_per_s=upd_rate,
                )
                logger.write("train", row)
                parts.append(
                    f"{game} ret {format_stat(row['episode_return'], '.1f')} "
                    f"loss {format_stat(row['loss'], '.4f')} "
                    f"nonfinite {row['nonfinite_losses']}"
                )
                recent_returns[game], recent_losses[game] = [], []
            print(
                f"[{algo}] step {state['step']:>9} eps {epsilon:.3f} | "
                + " | ".join(parts)
                + f" | {rate:.0f} steps/s/game {upd_rate:.0f} upd/s/game"
            )
            t_log, step_log, updates_log = now, state["step"], state["updates"]
            state["next_log"] += cfg.log_every

        evaluating = state["step"] >= state["next_eval"]
        last = state["step"] >= cfg.total_steps
        if evaluating or last:
            for game in cfg.games:
                mean, std, n = evaluate(
                    scores_fn(game),
                    eval_envs[game],
                    game in family.fire_on_life_loss,
                    cfg.eval_steps,
                    cfg.eval_epsilon,
                    rng,
                    seed=cfg.seed + 10_000 + state["step"],
                )
                row = dict(
                    step=state["step"],
                    game=game,
                    algo=algo,
                    eval_return=mean,
                    eval_return_std=std,
                    eval_episodes=n,
                    nonfinite_losses=state["nonfinite_losses"][game],
                )
                logger.write("eval", row)
                print(
                    f"[{algo}] {game} eval at {state['step']}: {mean:.2f} ± {std:.2f}"
                )
            while state["next_eval"] <= state["step"]:
                state["next_eval"] += cfg.eval_every
        if evaluating or last or state["step"] >= state["next_checkpoint"]:
            extra = {**state, "rng": rng_state(rng)}
            save_checkpoint(ckpt, {"student": student}, optimizer, extra)
            while state["next_checkpoint"] <= state["step"]:
                state["next_checkpoint"] += cfg.checkpoint_every
    logger.close()
    for env in (*envs.values(), *eval_envs.values()):
        env.close()
    return state


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    cfg = parse_config(AMNConfig, AMN_PRESETS, argv, __doc__, amn_checks)
    return train(cfg)


if __name__ == "__main__":
    main(sys.argv[1:])
