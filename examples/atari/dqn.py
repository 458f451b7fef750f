"""DQN expert for one game (Keras 3; TensorFlow or JAX backend).

Two environment families share this file (``--family``): Atari through ale-py
with the Nature-DQN network (``--preset paper``), and MinAtar with the MinAtar
paper's small network and settings (``--preset minatar``, see
``minatar_env.py``). CleanRL style: the algorithm reads top to bottom in
``train`` below, one named function per step (set up, act, update, log,
evaluate, checkpoint). The environments, networks, replays, compiled update,
evaluation, logging and checkpoints it shares with ``actor_mimic.py`` are in
``common.py``.

    python -m examples.atari.dqn --game Pong --preset smoke
    KERAS_BACKEND=jax python -m examples.atari.dqn --game Pong --preset cpu
    KERAS_BACKEND=jax python -m examples.atari.dqn --game Breakout --preset paper
    python -m examples.atari.dqn --preset minatar --game Breakout

Units: every step count below is in *agent steps*. On Atari one step is one
action repeated over 4 emulator frames, which is what the Nature-DQN
hyperparameter table calls "frames" (replay 1M, learning starts 50k, ε
annealed over 1M, update every 4); the episode cap is in emulator frames
(18 000 = 5 minutes). On MinAtar one step is one frame.
A killed run resumes from ``<run-dir>/checkpoint.npz`` when started again with
the same ``--run-dir``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
from keras import layers, ops

from examples._config import option, parse_config
from examples.atari.common import (
    FAMILIES,
    STACK,
    Family,
    Game,
    Recent,
    Run,
    Throughput,
    compiled_train_step,
    config_checks,
    format_stat,
    linear_epsilon,
    load_local_replay,
    resume,
    save_expert,
    save_local_replay,
    start_run,
)


# --------------------------------------------------------------------------
# Configuration: the dataclass and its presets (examples/_config.py makes
# every field a flag; a preset sets defaults, the flags given override them).
# --------------------------------------------------------------------------
@dataclasses.dataclass
class DQNConfig:
    """Settings of one expert run; every field is a command-line flag."""

    game: str = option("Pong", "the game, by its CamelCase name")
    family: str = option(
        "ale", "ale (Atari 2600, ale-py) or minatar", choices=tuple(FAMILIES)
    )
    seed: int = 1
    total_steps: int = option(30_000_000, "training budget, agent steps")
    num_envs: int = option(1, "environments acting together", at_least=1)
    buffer_size: int = option(1_000_000, "replay capacity", at_least=STACK + 2)
    learning_starts: int = option(50_000, "agent steps before the first update")
    train_every: int = option(4, "agent steps per update", at_least=1)
    batch_size: int = option(32, "transitions per update", at_least=1)
    optimizer: str = option(
        "adam",
        "adam, or rmsprop (centered, as MinAtar's DQN)",
        choices=("adam", "rmsprop"),
    )
    learning_rate: float = option(1e-5, above=0)
    adam_epsilon: float = 1.5e-4
    rmsprop_rho: float = 0.95
    rmsprop_epsilon: float = 0.01
    gamma: float = option(0.99, "discount", at_least=0, at_most=1)
    target_update_every: int = 40_000  # 10k updates × 4 steps, Nature's C
    # ε-greedy: eps_start → eps_mid by eps_mid_step → eps_end by eps_end_step.
    eps_start: float = option(1.0, at_least=0, at_most=1)
    eps_mid: float = option(0.1, at_least=0, at_most=1)
    eps_mid_step: int = 1_000_000
    eps_end: float = option(0.01, at_least=0, at_most=1)
    eps_end_step: int = 15_000_000  # then 0.1 → 0.01 by half of training
    max_episode_frames: int = 18_000  # emulator frames (5 minutes)
    noop_max: int = 20  # no-op actions at most at an episode's start (Atari)
    eval_every: int = 250_000  # agent steps between evaluations
    eval_steps: int = 125_000  # agent steps per evaluation (a cap if eval_episodes)
    eval_episodes: int = option(
        0,
        "complete episodes per evaluation (0: the episodes that end within eval_steps)",
        at_least=0,
    )
    target_return: float | None = option(
        None, "stop once an evaluation's mean score reaches this"
    )
    eval_envs: int = option(8, "environments of the evaluation", at_least=1)
    eval_epsilon: float = option(0.05, "ε of the evaluation", at_least=0, at_most=1)
    log_every: int = option(10_000, "agent steps per row of train.csv", at_least=1)
    checkpoint_every: int = 250_000
    # Also save the replay and the environments' state beside the checkpoint
    # (MinAtar only), so that a resume continues exactly where it stopped.
    save_replay: bool = False
    run_dir: str = option("runs/dqn", "where the logs and checkpoints go")


# MinAtar's examples/dqn.py (Young & Tian, 2019): replay 100k, batch 32, one
# update per frame, target copied every 1000 frames, centered RMSprop (lr
# 2.5e-4, ρ 0.95, ε 0.01), ε-greedy 1 → 0.1 over 100k frames, learning starts
# at 5k frames, γ 0.99, 5M frames. Their ε anneal starts after the first 5k
# frames; ours starts at 0 (a 5% shift of the anneal).
MINATAR_PRESET: dict[str, Any] = dict(
    family="minatar",
    game="Breakout",
    total_steps=5_000_000,
    num_envs=4,  # batched acting; still one update per frame
    buffer_size=100_000,
    learning_starts=5_000,
    train_every=1,
    batch_size=32,
    optimizer="rmsprop",
    learning_rate=2.5e-4,
    target_update_every=1_000,
    eps_mid=0.1,
    eps_mid_step=100_000,
    eps_end=0.1,
    eps_end_step=100_000,
    max_episode_frames=100_000,
    noop_max=0,
    eval_every=100_000,
    eval_steps=50_000,
    eval_envs=8,
    eval_epsilon=0.05,
    log_every=10_000,
    checkpoint_every=50_000,
    save_replay=True,
    run_dir="runs/minatar_dqn",
)
# A fast-Pong DQN for a CPU: the settings of Lapan, "Deep Reinforcement
# Learning Hands-On" (Packt, 2nd ed. 2020), chapter 6, which solve Pong (a
# mean of 19 over 100 training episodes) in about 0.4-0.7M agent steps with
# one update per step: replay 10k, learning starts at 10k, Adam lr 1e-4
# (PyTorch's ε 1e-8), target copied every 1000 steps, ε 1 → 0.01 over 150k
# steps, batch 32, γ 0.99. One update per agent step makes the run cost
# about 0.5-1M updates, against 2.5M+ for the Nature settings' first points
# near +20 (e.g. CleanRL's dqn_atari at train frequency 4). Differences:
# Huber TD error (Lapan: squared error; the same for |error| < 1, which
# Pong's ±1 rewards make the usual case), 4 vector envs acting together
# (still one update per agent step), and ALE v5's 30-minute episode cap
# instead of none. Evaluations score 8 complete episodes at ε = 0.05 every
# 25k steps; training stops once one reaches +19 (Lapan's bound).
CPU_PRESET: dict[str, Any] = dict(
    family="ale",
    game="Pong",
    total_steps=2_000_000,
    num_envs=4,
    buffer_size=10_000,
    learning_starts=10_000,
    train_every=1,
    batch_size=32,
    optimizer="adam",
    learning_rate=1e-4,
    adam_epsilon=1e-8,
    target_update_every=1_000,
    eps_start=1.0,
    eps_mid=0.01,
    eps_mid_step=150_000,
    eps_end=0.01,
    eps_end_step=150_000,
    max_episode_frames=108_000,
    eval_every=25_000,
    eval_steps=200_000,
    eval_episodes=8,
    eval_envs=8,
    eval_epsilon=0.05,
    target_return=19.0,
    log_every=5_000,
    checkpoint_every=25_000,
    run_dir="runs/pong_dqn",
)
DQN_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},  # the dataclass defaults are the paper's settings
    "cpu": CPU_PRESET,
    # A few hundred agent steps, a tiny replay: exercises every code path.
    "smoke": dict(
        total_steps=256,
        num_envs=4,
        buffer_size=512,
        learning_starts=64,
        batch_size=8,
        learning_rate=1e-4,
        target_update_every=64,
        eps_mid_step=128,
        eps_end_step=256,
        max_episode_frames=200,  # 50 agent steps, so evaluations end episodes
        noop_max=5,
        eval_every=128,
        eval_steps=128,
        eval_envs=2,
        log_every=64,
        checkpoint_every=128,
        run_dir="runs/dqn_smoke",
    ),
    "minatar": MINATAR_PRESET,
    # The MinAtar settings with a budget of seconds and a tiny replay.
    "minatar_smoke": dict(
        MINATAR_PRESET,
        total_steps=512,
        buffer_size=1_000,
        learning_starts=64,
        batch_size=8,
        target_update_every=64,
        eps_mid_step=256,
        eps_end_step=256,
        max_episode_frames=100,
        eval_every=256,
        eval_steps=400,
        eval_envs=4,
        log_every=128,
        checkpoint_every=128,
        run_dir="runs/minatar_dqn_smoke",
    ),
}


# --------------------------------------------------------------------------
# The learner: online and target networks in one model, the TD loss, and
# MinAtar's optimizer.
# --------------------------------------------------------------------------
def dqn_learner(
    q_net: keras.Model, target_net: keras.Model, gamma: float
) -> keras.Model:
    """One model whose compiled ``train_on_batch`` is the whole DQN update.

    It runs the online net on s and the frozen target net on s' in a single
    call (one host round trip per update, not two); the loss below forms the
    TD target from both. Keras compiles the step on every backend, so there
    is no backend-specific training code. Checkpoints hold q_net/target_net.
    """
    target_net.trainable = False  # no gradients, no optimizer slots
    shape, dtype = q_net.input.shape[1:], q_net.input.dtype
    obs = keras.Input(shape, dtype=dtype, name="obs")
    next_obs = keras.Input(shape, dtype=dtype, name="next_obs")
    both = layers.Concatenate()([q_net(obs), target_net(next_obs)])
    model = keras.Model([obs, next_obs], both, name="dqn_learner")
    num_actions = q_net.output.shape[-1]

    def q_learning_loss(y_true, y_pred):
        """Huber TD error on the taken action; y_true = (a, r, terminated)."""
        actions = ops.cast(y_true[:, 0], "int32")
        q = y_pred[:, :num_actions]
        q_next = ops.stop_gradient(ops.max(y_pred[:, num_actions:], axis=-1))
        td_target = y_true[:, 1] + gamma * (1.0 - y_true[:, 2]) * q_next
        q_taken = ops.sum(q * ops.one_hot(actions, num_actions), axis=-1)
        error = ops.abs(td_target - q_taken)
        # Huber with δ = 1 is Nature's "clip the error term to [-1, 1]".
        return ops.where(error <= 1.0, 0.5 * ops.square(error), error - 0.5)

    model.loss_fn = q_learning_loss
    return model


class CenteredRMSprop(keras.optimizers.Optimizer):
    """Centered RMSprop with ε outside the square root, as in PyTorch.

    MinAtar's DQN uses ``torch.optim.RMSprop(centered=True, alpha=0.95,
    eps=0.01)``: θ -= lr · g / (sqrt(E[g²] − E[g]²) + ε). Keras' RMSprop puts
    ε inside the root, sqrt(E[g²] − E[g]² + ε); with ε = 0.01 and the small
    gradients of this network that makes every step about ten times smaller,
    and the agent learns much more slowly than the published curves.
    """

    def __init__(
        self,
        learning_rate: float = 2.5e-4,
        rho: float = 0.95,
        epsilon: float = 0.01,
        name: str = "centered_rmsprop",
        **kwargs: Any,
    ) -> None:
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.rho = rho
        self.epsilon = epsilon

    def build(self, var_list: list[Any]) -> None:
        if self.built:
            return
        super().build(var_list)
        self.mean_squares = [
            self.add_variable_from_reference(v, name="mean_square") for v in var_list
        ]
        self.means = [
            self.add_variable_from_reference(v, name="mean") for v in var_list
        ]

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        lr = ops.cast(learning_rate, variable.dtype)
        g = ops.cast(gradient, variable.dtype)
        i = self._get_variable_index(variable)
        mean_square, mean = self.mean_squares[i], self.means[i]
        self.assign(mean_square, self.rho * mean_square + (1 - self.rho) * g * g)
        self.assign(mean, self.rho * mean + (1 - self.rho) * g)
        scale = ops.sqrt(mean_square - ops.square(mean)) + self.epsilon
        self.assign_sub(variable, lr * g / scale)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "rho": self.rho, "epsilon": self.epsilon}


def make_optimizer(cfg: Any) -> keras.optimizers.Optimizer:
    if getattr(cfg, "optimizer", "adam") == "rmsprop":
        # MinAtar's DQN: torch's RMSprop(centered=True, alpha=0.95, eps=0.01).
        return CenteredRMSprop(
            cfg.learning_rate, rho=cfg.rmsprop_rho, epsilon=cfg.rmsprop_epsilon
        )
    return keras.optimizers.Adam(cfg.learning_rate, epsilon=cfg.adam_epsilon)


# --------------------------------------------------------------------------
# DQN, top to bottom.
# --------------------------------------------------------------------------
@dataclasses.dataclass
class DQNAgent:
    """The online and target networks and their compiled update."""

    q_net: keras.Model
    target_net: keras.Model
    optimizer: keras.optimizers.Optimizer
    train_step: Callable[[Any, np.ndarray], float]

    @property
    def models(self) -> dict[str, keras.Model]:
        """The networks as checkpoints name them."""
        return {"q": self.q_net, "target": self.target_net}

    def greedy_scores(self, obs: np.ndarray) -> np.ndarray:
        return np.asarray(self.q_net.predict_on_batch(obs))


def build_agent(cfg: DQNConfig, family: Family, num_actions: int) -> DQNAgent:
    q_net = family.q_network(cfg.game, num_actions, "q")
    target_net = family.q_network(cfg.game, num_actions, "target")
    optimizer = make_optimizer(cfg)
    learner = dqn_learner(q_net, target_net, cfg.gamma)
    learner.compile(optimizer=optimizer, loss=learner.loss_fn)
    train_step = compiled_train_step(learner, optimizer)
    target_net.set_weights(q_net.get_weights())
    return DQNAgent(q_net, target_net, optimizer, train_step)


def initial_state(cfg: DQNConfig) -> dict[str, Any]:
    """The counters, all in agent steps: exactly what a resume needs."""
    state = dict(step=0, updates=0, nonfinite_losses=0, episodes=0)
    state.update(next_update=cfg.learning_starts, next_target=0)
    state.update(next_eval=cfg.eval_every, next_log=cfg.log_every)
    state.update(next_checkpoint=cfg.checkpoint_every)
    return state


def restore_replay(run: Run, agent: DQNAgent, game: Game) -> None:
    """After a resume: the replay and environments saved at this step if there
    are any (``--save-replay``), else a replay refilled by acting with the
    current policy, counters frozen."""
    cfg, step = run.cfg, run.step
    restored = None
    if cfg.save_replay:
        # The pending file is the newer one when a kill fell between the
        # checkpoint and its rename (see `checkpoint`).
        for name in (_REPLAY, _PENDING_REPLAY):
            path = run.run_dir / name
            restored = load_local_replay(path, game.replay, game.envs, step)
            if restored is not None:
                break
    if restored is not None:
        game.obs, game.returns = restored
        print(
            f"[dqn] {cfg.game}: replay and environments restored ({len(game.replay)})"
        )
    else:
        epsilon = linear_epsilon(step, cfg)
        size = min(cfg.learning_starts, cfg.buffer_size)
        game.fill(agent.greedy_scores, epsilon, run.rng, size)


def act(run: Run, agent: DQNAgent, game: Game, recent: Recent, epsilon: float) -> None:
    """One ε-greedy step in every environment, stored in the replay."""
    finished = game.play(agent.greedy_scores, epsilon, run.rng)
    recent.returns += finished
    run.state["episodes"] += len(finished)
    run.state["step"] += run.cfg.num_envs


def update(run: Run, agent: DQNAgent, game: Game, recent: Recent) -> None:
    """The updates due by now, then the target network's copy if due."""
    cfg, state = run.cfg, run.state
    # One update per `train_every` agent steps, whatever num_envs is.
    while state["step"] >= state["next_update"] and len(game.replay) >= cfg.batch_size:
        b_obs, b_act, b_rew, b_next, b_term = game.replay.sample(cfg.batch_size)
        y = np.stack([b_act, b_rew, b_term], axis=1).astype(np.float32)
        loss = agent.train_step([b_obs, b_next], y)
        state["nonfinite_losses"] += int(not math.isfinite(loss))
        recent.losses.append(loss)
        state["updates"] += 1
        state["next_update"] += cfg.train_every
    if state["step"] >= state["next_target"]:
        agent.target_net.set_weights(agent.q_net.get_weights())
        state["next_target"] += cfg.target_update_every


def log_progress(
    run: Run, game: Game, epsilon: float, recent: Recent, throughput: Throughput
) -> None:
    """A row of ``train.csv`` and a progress line."""
    state = run.state
    rates = throughput.rates(state["step"], state["updates"])
    episodes, nonfinite = state["episodes"], state["nonfinite_losses"]
    row = run.train_row(game, epsilon, recent, episodes, nonfinite, rates)
    print(
        f"[dqn] {game.name} step {row['step']:>9} eps {epsilon:.3f} "
        f"return {format_stat(row['episode_return'], '8.2f')} "
        f"loss {format_stat(row['loss'], '.4f')} "
        f"nonfinite {row['nonfinite_losses']} "
        f"{row['steps_per_s']:.0f} steps/s {row['updates_per_s']:.0f} upd/s",
        flush=True,
    )
    recent.clear()
    state["next_log"] += run.cfg.log_every


# The local replay (MinAtar, `--save-replay`) and the one being written.
_REPLAY = "replay.npz"
_PENDING_REPLAY = "replay.next.npz"


def checkpoint(run: Run, agent: DQNAgent, game: Game) -> None:
    """The training checkpoint, the expert's weights and (MinAtar) the replay."""
    save_replay = run.cfg.save_replay and hasattr(game.replay, "state_arrays")
    pending = run.run_dir / _PENDING_REPLAY
    if save_replay:
        # The new replay is written beside the old one, then the checkpoint,
        # then the rename: a kill at any point leaves a replay file whose step
        # matches the checkpoint, so the resume is exact.
        save_local_replay(pending, game.replay, game.envs, game.returns, run.step)
    run.save_checkpoint(agent.models, agent.optimizer)
    if save_replay:
        os.replace(pending, run.run_dir / _REPLAY)
    save_expert(run.run_dir, agent.q_net)


def train(cfg: DQNConfig) -> dict[str, Any]:
    run_dir, rng = start_run(cfg)
    family = FAMILIES[cfg.family]
    num_actions = len(family.action_meanings(cfg.game))
    agent = build_agent(cfg, family, num_actions)
    models, optimizer = agent.models, agent.optimizer
    run = resume(
        cfg, "dqn", cfg.game, run_dir, rng, models, optimizer, initial_state(cfg)
    )
    if run.finished:
        return run.state
    seed = cfg.seed + run.step
    game = Game.open(family, cfg.game, cfg, env_seed=seed, replay_seed=seed)
    print(
        f"[dqn] {cfg.game} ({family.name}) backend={keras.backend.backend()} "
        f"actions={num_actions} replay={game.replay.nbytes / 2**20:.1f} MiB "
        f"({game.replay.bytes_per_transition:.0f} B/transition)"
    )
    if run.resumed:
        restore_replay(run, agent, game)

    recent = Recent()
    throughput = Throughput(run.step, run.state["updates"])
    while run.step < cfg.total_steps:
        epsilon = linear_epsilon(run.step, cfg)
        act(run, agent, game, recent, epsilon)
        update(run, agent, game, recent)
        log_due, eval_due, checkpoint_due = run.due()
        if log_due:
            log_progress(run, game, epsilon, recent, throughput)
        if eval_due:
            score = run.evaluate(
                game, agent.greedy_scores, run.state["nonfinite_losses"]
            )
            run.advance("next_eval", cfg.eval_every)
            if cfg.target_return is not None and score >= cfg.target_return:
                run.state["target_reached"] = True
                checkpoint_due = True
        if checkpoint_due:
            checkpoint(run, agent, game)
        if run.state.get("target_reached"):
            print(f"[dqn] {cfg.game}: evaluation reached {cfg.target_return}; done")
            break
    run.logger.close()
    game.close()
    return run.state


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    cfg = parse_config(
        DQNConfig, DQN_PRESETS, argv, __doc__, config_checks, default_preset="smoke"
    )
    return train(cfg)


if __name__ == "__main__":
    main(sys.argv[1:])
