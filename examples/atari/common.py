"""What the DQN expert (``dqn.py``) and the actor-mimic student
(``actor_mimic.py``) share.

* the Atari family: ale-py's vector env with the Nature-DQN preprocessing
  and the Nature-DQN network; with the MinAtar family (``minatar_env.py``)
  it makes up ``FAMILIES``, all that the training loops need to know about a
  family;
* the replays: ``FrameReplay`` (Atari frames stored once, stacks rebuilt by
  index) and ``TransitionReplay`` (MinAtar's whole observations);
* ``Game``: one game's environments, replay and running episode returns,
  stepped ε-greedily, and its evaluation;
* ``compiled_train_step``: one gradient step as one XLA program;
* the checks of a config that involve several fields (``config_checks``);
* the run directory: config, CSV/TensorBoard logs, resumable checkpoints,
  the experts' weights, and the schedule of logging, evaluation and
  checkpoints.

Units: every step count is in *agent steps* (see ``dqn.py``).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import pickle
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import ale_py
import gymnasium as gym
import keras
import numpy as np
from ale_py.vector_env import AtariVectorEnv
from keras import layers, ops

from examples.atari import minatar_env

gym.register_envs(ale_py)

FRAME_SHAPE = (84, 84)
STACK = 4
# Games whose play stalls until FIRE is pressed after a life is lost; the
# evaluation presses it for them (Breakout, as in the paper's evaluation).
FIRE_ON_LIFE_LOSS = frozenset({"Breakout"})
# A policy's scores (Q-values or logits) for a batch of observations.
ScoresFn = Callable[[np.ndarray], np.ndarray]


# --------------------------------------------------------------------------
# The Atari family: ale-py's vectorised C++ env does the Nature preprocessing
# (frameskip 4 with max-pool, 84×84 grayscale, 4-frame stack, no-op starts).
# --------------------------------------------------------------------------
def rom_id(game: str) -> str:
    """'SpaceInvaders' -> 'space_invaders', checked against the bundled ROMs."""
    snake = re.sub(r"(?<!^)(?=[A-Z])", "_", game).lower()
    if not game[:1].isupper() or snake not in ale_py.roms.get_all_rom_ids():
        raise ValueError(
            f"unknown Atari game {game!r}; use the ALE name in CamelCase, "
            "e.g. Pong, Breakout, SpaceInvaders, CrazyClimber"
        )
    return snake


def make_env(game: str, num_envs: int, cfg: Any, seed: int) -> AtariVectorEnv:
    """v4 "Deterministic" dynamics: frameskip 4, no sticky actions."""
    env = AtariVectorEnv(
        rom_id(game),
        num_envs,
        num_threads=min(num_envs, os.cpu_count() or 1),
        frameskip=4,
        repeat_action_probability=0.0,
        max_num_frames_per_episode=cfg.max_episode_frames,
        noop_max=cfg.noop_max,
        # Raw rewards come back so that logged returns are game scores; the
        # learner clips them itself.
        reward_clipping=False,
        use_fire_reset=game in FIRE_ON_LIFE_LOSS,
        # The reset observation arrives in the same step as the final one
        # (info["final_obs"]), so the replay never sees a dummy transition.
        autoreset_mode="SameStep",
    )
    env.reset(seed=seed)
    return env


def action_meanings(game: str) -> list[str]:
    """The game's minimal action set, by meaning, as gymnasium reports it."""
    env = gym.make(f"ALE/{game}-v5")
    try:
        return list(env.unwrapped.get_action_meanings())
    finally:
        env.close()


def nature_cnn(num_outputs: int, name: str = "nature_cnn") -> keras.Model:
    """The Nature-DQN conv net; uint8 frames in, one value per output."""
    frames = keras.Input((STACK, *FRAME_SHAPE), dtype="uint8", name="frames")
    # Frames travel as uint8 (4× less host-to-device traffic than float32).
    x = layers.Permute((2, 3, 1))(frames)
    x = layers.Rescaling(1.0 / 255.0)(x)
    x = layers.Conv2D(32, 8, strides=4, activation="relu")(x)
    x = layers.Conv2D(64, 4, strides=2, activation="relu")(x)
    x = layers.Conv2D(64, 3, strides=1, activation="relu")(x)
    x = layers.Flatten()(x)
    x = layers.Dense(512, activation="relu")(x)
    outputs = layers.Dense(num_outputs, name="head")(x)
    return keras.Model(frames, outputs, name=name)


# --------------------------------------------------------------------------
# Replays: one lane per environment, uint8 observations.
# --------------------------------------------------------------------------
class LaneReplay:
    """What both replays share: ring buffers with one lane per environment.

    ``(a_t, r_t, terminated_t)`` is stored on the slot of the observation
    ``s_t`` the agent acted on; how observations are stored is the
    subclass's (``_acting_slots``, ``_observe``, ``_arrays``, ``sample``).
    """

    def __init__(self, num_lanes: int, cap: int, seed: int) -> None:
        self.lanes = num_lanes
        self.cap = cap
        shape = (num_lanes, cap)
        self.actions = np.zeros(shape, np.uint8)  # ALE has at most 18 actions
        self.rewards = np.zeros(shape, np.float32)
        self.terminated = np.zeros(shape, np.bool_)
        self.rng = np.random.default_rng(seed)

    def _arrays(self) -> tuple[np.ndarray, ...]:
        return (self.actions, self.rewards, self.terminated)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self._arrays())

    @property
    def bytes_per_transition(self) -> float:
        return self.nbytes / (self.lanes * self.cap)

    def _acting_slots(self) -> tuple[Any, Any]:
        """(lanes, slots) index of each lane's current observation s_t."""
        raise NotImplementedError

    def _observe(
        self, done: np.ndarray, next_obs: np.ndarray, final_obs: np.ndarray | None
    ) -> None:
        """Store what each lane observed after acting on s_t."""
        raise NotImplementedError

    def add(
        self,
        actions: np.ndarray,
        rewards: np.ndarray,
        terminated: np.ndarray,
        done: np.ndarray,
        next_obs: np.ndarray,
        final_obs: np.ndarray | None,
    ) -> None:
        """One vector step: a_t, r_t on s_t's slot, then the next observation.

        ``final_obs`` holds the true last observation of the lanes whose
        episode ended (``done``); ``next_obs`` there is the next episode's
        first, so truncated episodes still have a state to bootstrap from.
        """
        lanes, slots = self._acting_slots()
        self.actions[lanes, slots] = actions
        self.rewards[lanes, slots] = rewards
        self.terminated[lanes, slots] = terminated
        self._observe(done, next_obs, final_obs)

    def _batch(
        self, lanes: np.ndarray, slots: np.ndarray, obs: np.ndarray, next_obs: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(s, a, r, s', terminated) of the sampled slots."""
        return (
            obs,
            self.actions[lanes, slots].astype(np.int64),
            self.rewards[lanes, slots],
            next_obs,
            self.terminated[lanes, slots],
        )


class FrameReplay(LaneReplay):
    """Atari: each frame is stored once (uint8); stacks are rebuilt by index.

    Slot ``j`` of a lane holds the newest frame of observation ``s_j`` and, once
    the agent has acted on it, ``(a_j, r_j, terminated_j)``; ``s_{j+1}`` is slot
    ``j+1``. At an episode's end the final frame gets its own slot (no action,
    never sampled as a start) and the reset frame the next, so truncated
    episodes still have a true next state to bootstrap from. ``ep_t`` is the
    frame's index in its episode: stack positions before the episode's start
    are zeros, exactly as the environment pads its own stack after a reset.
    """

    def __init__(self, capacity: int, num_lanes: int, seed: int = 0) -> None:
        # A little slack per lane so that `capacity` transitions always fit.
        super().__init__(num_lanes, -(-capacity // num_lanes) + STACK + 1, seed)
        shape = (num_lanes, self.cap)
        self.frames = np.zeros(shape + FRAME_SHAPE, np.uint8)
        self.has_action = np.zeros(shape, np.bool_)
        self.ep_t = np.zeros(shape, np.int32)
        self.cursor = np.zeros(num_lanes, np.int64)
        self.size = np.zeros(num_lanes, np.int64)
        self.last = np.zeros(num_lanes, np.int64)  # slot of each lane's s_t

    def _arrays(self) -> tuple[np.ndarray, ...]:
        return (self.frames, *super()._arrays(), self.has_action, self.ep_t)

    def __len__(self) -> int:
        return int(self.size.sum())

    def _write(self, lanes: np.ndarray, frames: np.ndarray, ep_t: np.ndarray) -> None:
        slot = self.cursor[lanes]
        self.frames[lanes, slot] = frames
        self.has_action[lanes, slot] = False
        self.ep_t[lanes, slot] = ep_t
        self.last[lanes] = slot
        self.cursor[lanes] = (slot + 1) % self.cap
        self.size[lanes] = np.minimum(self.size[lanes] + 1, self.cap)

    def start(self, first_frames: np.ndarray) -> None:
        """Begin (or, after a resume, restart) every lane's episode."""
        lanes = np.arange(self.lanes)
        self._write(lanes, first_frames, np.zeros(self.lanes, np.int32))

    def _acting_slots(self) -> tuple[np.ndarray, np.ndarray]:
        return np.arange(self.lanes), self.last

    def _observe(
        self,
        done: np.ndarray,
        next_frames: np.ndarray,
        final_frames: np.ndarray | None,
    ) -> None:
        lanes, slot = self._acting_slots()
        self.has_action[lanes, slot] = True
        next_t = self.ep_t[lanes, slot] + 1
        ended = np.flatnonzero(done)
        going = np.flatnonzero(~done)
        if len(going):
            self._write(going, next_frames[going], next_t[going])
        if len(ended):
            assert final_frames is not None, "done without final frames"
            self._write(ended, final_frames[ended], next_t[ended])
            self._write(ended, next_frames[ended], np.zeros(len(ended), np.int32))

    def _stack(self, lanes: np.ndarray, slots: np.ndarray) -> np.ndarray:
        offsets = np.arange(STACK - 1, -1, -1)  # oldest frame first
        src = (slots[:, None] - offsets[None, :]) % self.cap
        stacked = self.frames[lanes[:, None], src]
        before_start = offsets[None, :] > self.ep_t[lanes, slots][:, None]
        stacked[before_start] = 0
        return stacked

    def _sampleable(self, lanes: np.ndarray, slots: np.ndarray) -> np.ndarray:
        # Writes since this slot (0 = newest); its stack reaches back
        # min(3, ep_t) slots, which must not have been overwritten yet.
        age = (self.cursor[lanes] - 1 - slots) % self.cap
        reach = np.minimum(STACK - 1, self.ep_t[lanes, slots])
        in_ring = age + reach <= self.size[lanes] - 1
        return self.has_action[lanes, slots] & in_ring

    def sample(self, batch_size: int) -> tuple[np.ndarray, ...]:
        lanes = self.rng.integers(0, self.lanes, batch_size)
        slots = self.rng.integers(0, np.maximum(self.size[lanes], 1))
        for _ in range(1000):  # rejection: only a few slots per lane are invalid
            bad = np.flatnonzero(~self._sampleable(lanes, slots))
            if not len(bad):
                break
            lanes[bad] = self.rng.integers(0, self.lanes, len(bad))
            slots[bad] = self.rng.integers(0, np.maximum(self.size[lanes[bad]], 1))
        else:
            raise RuntimeError("replay holds no sampleable transition yet")
        nxt = (slots + 1) % self.cap
        return self._batch(
            lanes, slots, self._stack(lanes, slots), self._stack(lanes, nxt)
        )


class TransitionReplay(LaneReplay):
    """MinAtar: whole transitions (s, a, r, s', terminated), no frame stacks.

    A MinAtar observation is the full state (at most 10×10×10 bytes). The
    next observation of an episode's last step is its true final observation
    (``final_obs``), so a truncated episode still bootstraps from it. The
    lanes advance together: one slot per vector step.
    """

    def __init__(
        self,
        capacity: int,
        num_lanes: int,
        obs_shape: tuple[int, ...],
        seed: int = 0,
    ) -> None:
        super().__init__(num_lanes, -(-capacity // num_lanes), seed)
        shape = (num_lanes, self.cap)
        self.obs = np.zeros(shape + tuple(obs_shape), np.uint8)
        self.next_obs = np.zeros(shape + tuple(obs_shape), np.uint8)
        self.cursor = 0
        self.size = 0
        self.current = np.zeros((num_lanes, *obs_shape), np.uint8)

    def _arrays(self) -> tuple[np.ndarray, ...]:
        return (self.obs, self.next_obs, *super()._arrays())

    def __len__(self) -> int:
        return self.size * self.lanes

    def start(self, first_obs: np.ndarray) -> None:
        self.current = first_obs.copy()

    def _acting_slots(self) -> tuple[slice, int]:
        return slice(None), self.cursor

    def _observe(
        self, done: np.ndarray, next_obs: np.ndarray, final_obs: np.ndarray | None
    ) -> None:
        slot = self.cursor
        self.obs[:, slot] = self.current
        landed = next_obs.copy()
        if done.any():
            assert final_obs is not None, "done without final observations"
            landed[done] = final_obs[done]
        self.next_obs[:, slot] = landed
        self.current = next_obs.copy()
        self.cursor = (slot + 1) % self.cap
        self.size = min(self.size + 1, self.cap)

    def sample(
        self, batch_size: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        lanes = self.rng.integers(0, self.lanes, batch_size)
        slots = self.rng.integers(0, self.size, batch_size)
        obs, next_obs = self.obs[lanes, slots], self.next_obs[lanes, slots]
        return self._batch(lanes, slots, obs, next_obs)

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Everything needed to rebuild the buffer exactly (for local resume)."""
        return dict(
            obs=self.obs[:, : self.size],
            next_obs=self.next_obs[:, : self.size],
            actions=self.actions[:, : self.size],
            rewards=self.rewards[:, : self.size],
            terminated=self.terminated[:, : self.size],
            current=self.current,
            counters=np.array([self.cursor, self.size]),
        )

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        cursor, size = (int(v) for v in arrays["counters"])
        if arrays["obs"].shape[0] != self.lanes or size > self.cap:
            raise ValueError("replay file does not match --num-envs/--buffer-size")
        for name in ("obs", "next_obs", "actions", "rewards", "terminated"):
            getattr(self, name)[:, :size] = arrays[name]
        self.current = arrays["current"].copy()
        self.cursor, self.size = cursor, size


# --------------------------------------------------------------------------
# Environment families: what differs between Atari and MinAtar, in one place.
# --------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Family:
    """Everything the training loops need to know about an env family."""

    name: str
    frames_per_step: int  # emulator frames per agent step (for the logs)
    check_game: Callable[[str], Any]  # raises ValueError naming the games
    action_meanings: Callable[[str], list[str]]  # minimal set, ALE names
    make_env: Callable[[str, int, Any, int], Any]  # (game, n, cfg, seed)
    q_network: Callable[[str, int, str], keras.Model]  # (game, outputs, name)
    student_network: Callable[[Sequence[str], int, str], keras.Model]
    make_replay: Callable[[Any, str, int], LaneReplay]  # (cfg, game, seed)
    # The part of an observation the replay stores: ALE's newest frame of the
    # stack (the stack is rebuilt by index), MinAtar's whole observation.
    replay_view: Callable[[np.ndarray], np.ndarray]
    learning_reward: Callable[[np.ndarray], np.ndarray]
    fire_on_life_loss: frozenset[str]


def _minatar_env(game: str, num_envs: int, cfg: Any, seed: int) -> Any:
    return minatar_env.MinAtarVectorEnv(
        game, num_envs, max_episode_frames=cfg.max_episode_frames, seed=seed
    )


def _minatar_student(games: Sequence[str], outputs: int, name: str) -> keras.Model:
    channels = max(minatar_env.CHANNELS[g] for g in games)
    return minatar_env.minatar_cnn(outputs, channels, name=name)


FAMILIES: dict[str, Family] = {
    "ale": Family(
        name="ale",
        frames_per_step=4,
        check_game=rom_id,
        action_meanings=action_meanings,
        make_env=make_env,
        q_network=lambda game, outputs, name: nature_cnn(outputs, name=name),
        student_network=lambda games, outputs, name: nature_cnn(outputs, name=name),
        make_replay=lambda cfg, game, seed: FrameReplay(
            cfg.buffer_size, cfg.num_envs, seed=seed
        ),
        replay_view=lambda obs: obs[:, -1],
        # Nature DQN: rewards clipped to their sign for learning only.
        learning_reward=np.sign,
        fire_on_life_loss=FIRE_ON_LIFE_LOSS,
    ),
    "minatar": Family(
        name="minatar",
        frames_per_step=1,
        check_game=minatar_env.check_game,
        action_meanings=minatar_env.action_meanings,
        make_env=_minatar_env,
        q_network=lambda game, outputs, name: minatar_env.minatar_cnn(
            outputs, minatar_env.CHANNELS[game], name=name
        ),
        student_network=_minatar_student,
        make_replay=lambda cfg, game, seed: TransitionReplay(
            cfg.buffer_size, cfg.num_envs, minatar_env.observation_shape(game), seed
        ),
        replay_view=lambda obs: obs,
        # MinAtar's rewards are small integers; its DQN does not clip them.
        learning_reward=lambda rewards: rewards,
        fire_on_life_loss=frozenset(),
    ),
}


def config_checks(cfg: Any) -> list[str]:
    """The checks of a DQN or actor-mimic config that involve several fields
    (``examples/_config.py`` checks each field's own bounds)."""
    problems = []
    if cfg.learning_starts < cfg.batch_size:
        problems.append("--learning-starts must be >= --batch-size")
    if cfg.eps_end_step < cfg.eps_mid_step:
        problems.append("--eps-end-step must be >= --eps-mid-step")
    games = cfg.games if hasattr(cfg, "games") else [cfg.game]
    for game in games:
        try:
            FAMILIES[cfg.family].check_game(game)
        except ValueError as err:
            problems.append(str(err))
    return problems


# --------------------------------------------------------------------------
# The compiled update.
# --------------------------------------------------------------------------
def compiled_train_step(
    model: keras.Model, optimizer: keras.optimizers.Optimizer
) -> Callable[[Any, np.ndarray], float]:
    """``step(inputs, y) -> loss``: one gradient step on ``model.loss_fn``.

    The whole update (forward, loss, gradient, optimizer) is one XLA program:
    ``jax.jit`` of Keras' stateless API under JAX, ``tf.function(jit_compile=
    True)`` under TensorFlow. It does what ``train_on_batch`` does (mean of
    the per-sample loss, then the optimizer) without Keras' per-call
    bookkeeping, which costs as much as the update itself for MinAtar's
    small network (``benchmarks/atari_throughput.py --family minatar``).
    Other backends fall back to ``train_on_batch`` (the model must then be
    compiled with its loss).
    """
    loss_fn = model.loss_fn
    if not optimizer.built:
        optimizer.build(model.trainable_variables)
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        def mean_loss(trainable, non_trainable, inputs, y):
            pred, _ = model.stateless_call(trainable, non_trainable, inputs)
            return ops.mean(loss_fn(y, pred))

        @jax.jit
        def jax_step(trainable, non_trainable, opt_vars, inputs, y):
            loss, grads = jax.value_and_grad(mean_loss)(
                trainable, non_trainable, inputs, y
            )
            trainable, opt_vars = optimizer.stateless_apply(opt_vars, grads, trainable)
            return loss, trainable, opt_vars

        # The lists are fixed; listing them anew (Keras walks the layers) on
        # every call would cost a third of an update.
        trainable_vars = list(model.trainable_variables)
        frozen_vars = list(model.non_trainable_variables)
        opt_vars_list = list(optimizer.variables)

        def step(inputs: Any, y: np.ndarray) -> float:
            # Read the values each call: the target network's copies and other
            # learners sharing this optimizer change them between steps.
            trainable = [v.value for v in trainable_vars]
            frozen = [v.value for v in frozen_vars]
            opt_vars = [v.value for v in opt_vars_list]
            loss, trainable, opt_vars = jax_step(trainable, frozen, opt_vars, inputs, y)
            for var, value in zip(trainable_vars, trainable, strict=True):
                var.assign(value)
            for var, value in zip(opt_vars_list, opt_vars, strict=True):
                var.assign(value)
            return float(loss)

        return step
    if backend == "tensorflow":
        import tensorflow as tf

        @tf.function(jit_compile=True)
        def tf_step(inputs, y):
            with tf.GradientTape() as tape:
                loss = ops.mean(loss_fn(y, model(inputs, training=True)))
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply(grads, model.trainable_variables)
            return loss

        return lambda inputs, y: float(tf_step(inputs, y))
    return lambda inputs, y: float(np.asarray(model.train_on_batch(inputs, y)))


# --------------------------------------------------------------------------
# Acting and evaluation.
# --------------------------------------------------------------------------
def linear_epsilon(step: int, cfg: Any) -> float:
    """1 → 0.1 over the first 1M steps, then → 0.01 by eps_end_step."""
    if step < cfg.eps_mid_step:
        frac = step / max(cfg.eps_mid_step, 1)
        return cfg.eps_start + frac * (cfg.eps_mid - cfg.eps_start)
    if step < cfg.eps_end_step:
        frac = (step - cfg.eps_mid_step) / max(cfg.eps_end_step - cfg.eps_mid_step, 1)
        return cfg.eps_mid + frac * (cfg.eps_end - cfg.eps_mid)
    return cfg.eps_end


def epsilon_greedy(
    scores: np.ndarray, epsilon: float, rng: np.random.Generator
) -> np.ndarray:
    greedy = scores.argmax(axis=1)
    explore = rng.random(len(scores)) < epsilon
    return np.where(explore, rng.integers(0, scores.shape[1], len(scores)), greedy)


def finish_episodes(
    returns: np.ndarray, rewards: np.ndarray, done: np.ndarray
) -> list[float]:
    """Add a vector step's rewards to the running ``returns``; the returns of
    the episodes that ended (reset to 0 for the next episode)."""
    returns += rewards
    finished = []
    for i in np.flatnonzero(done):
        finished.append(float(returns[i]))
        returns[i] = 0.0
    return finished


def evaluate(
    scores_fn: ScoresFn,
    env: Any,
    fire: bool,
    steps: int,
    epsilon: float,
    rng: np.random.Generator,
    seed: int,
    episodes: int = 0,
) -> tuple[float, float, int]:
    """Mean, std and count of episode scores (raw rewards).

    With ``episodes`` > 0, every environment plays until it has finished its
    share (``ceil(episodes / num_envs)`` complete episodes; the scores of
    later episodes are ignored), so long episodes count as much as short
    ones: a budget of steps would drop the unfinished episodes, which are the
    longer ones, and bias the mean. ``steps`` then only caps the vector
    steps as a guard against a policy that never ends an episode (the
    episode cap of the env ends every episode first). With ``episodes`` = 0,
    the older protocol: the episodes that end within ``steps`` agent steps.

    The env is reset (and reseeded with ``seed``) at the start of every
    evaluation. No-op starts come from the env; with ``fire`` (Atari games in
    FIRE_ON_LIFE_LOSS) FIRE is pressed after each lost life. If no episode
    ends in time (tiny smoke runs) the partial returns are reported, with 0
    episodes, rather than nothing.
    """
    obs, info = env.reset(seed=seed)
    lives = info["lives"].copy() if fire else None
    need_fire = np.zeros(env.num_envs, np.bool_)
    running = np.zeros(env.num_envs)
    quota = -(-episodes // env.num_envs) if episodes > 0 else None
    done_per_env = np.zeros(env.num_envs, np.int64)
    finished: list[float] = []
    for _ in range(-(-steps // env.num_envs)):
        actions = epsilon_greedy(scores_fn(obs), epsilon, rng)
        if fire:
            actions[need_fire] = 1  # FIRE is action 1 in every minimal set
        obs, rewards, terminated, truncated, info = env.step(actions)
        done = terminated | truncated
        ended = finish_episodes(running, rewards, done)
        if quota is None:
            finished += ended
        else:
            # Each env's first `quota` episodes count; later ones do not.
            for i, score in zip(np.flatnonzero(done), ended, strict=True):
                if done_per_env[i] < quota:
                    finished.append(score)
            done_per_env += done
        if fire:
            need_fire = (info["lives"] < lives) & ~done
            lives = info["lives"].copy()
        if quota is not None and (done_per_env >= quota).all():
            break
    scores = np.array(finished if finished else running, np.float64)
    return float(scores.mean()), float(scores.std()), len(finished)


@dataclasses.dataclass
class Game:
    """One game of a run: its training and evaluation environments, its
    replay, the current observations and the running episode returns."""

    name: str
    family: Family
    envs: Any
    eval_env: Any
    replay: LaneReplay
    obs: np.ndarray
    returns: np.ndarray  # raw rewards of each lane's episode so far

    @classmethod
    def open(
        cls, family: Family, name: str, cfg: Any, env_seed: int, replay_seed: int
    ) -> Game:
        envs = family.make_env(name, cfg.num_envs, cfg, env_seed)
        eval_env = family.make_env(name, cfg.eval_envs, cfg, cfg.seed + 10_000)
        replay = family.make_replay(cfg, name, replay_seed)
        obs, _ = envs.reset(seed=env_seed)
        replay.start(family.replay_view(obs))
        returns = np.zeros(cfg.num_envs)
        return cls(name, family, envs, eval_env, replay, obs, returns)

    def act(
        self, scores_fn: ScoresFn, epsilon: float, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """One ε-greedy vector step, stored in the replay: (rewards, done),
        the raw rewards."""
        actions = epsilon_greedy(scores_fn(self.obs), epsilon, rng)
        nxt, rewards, terminated, truncated, info = self.envs.step(actions)
        done = terminated | truncated
        view = self.family.replay_view
        final = view(info["final_obs"]) if done.any() else None
        learning_reward = self.family.learning_reward(rewards)  # sign on Atari
        self.replay.add(actions, learning_reward, terminated, done, view(nxt), final)
        self.obs = nxt
        return rewards, done

    def play(
        self, scores_fn: ScoresFn, epsilon: float, rng: np.random.Generator
    ) -> list[float]:
        """``act``, with the rewards added to the running returns: the
        returns of the episodes that ended."""
        rewards, done = self.act(scores_fn, epsilon, rng)
        return finish_episodes(self.returns, rewards, done)

    def fill(
        self, scores_fn: ScoresFn, epsilon: float, rng: np.random.Generator, size: int
    ) -> None:
        """Act until the replay holds ``size`` transitions (the running
        returns are left alone)."""
        while len(self.replay) < size:
            self.act(scores_fn, epsilon, rng)

    def evaluate(
        self, scores_fn: ScoresFn, cfg: Any, rng: np.random.Generator, step: int
    ) -> tuple[float, float, int]:
        """``evaluate`` on this game's evaluation envs, reseeded at ``step``."""
        return evaluate(
            scores_fn,
            self.eval_env,
            self.name in self.family.fire_on_life_loss,
            cfg.eval_steps,
            cfg.eval_epsilon,
            rng,
            seed=cfg.seed + 10_000 + step,
            episodes=getattr(cfg, "eval_episodes", 0),
        )

    def close(self) -> None:
        self.envs.close()
        self.eval_env.close()


# --------------------------------------------------------------------------
# Logging (CSV flushed per row; TensorBoard when installed).
# --------------------------------------------------------------------------
def format_stat(value: float, spec: str) -> str:
    """``format(value, spec)`` for a progress line, with "n/a" in place of NaN.

    The CSV logs keep NaN for a mean over nothing (no episode has ended yet,
    no update has run yet); the console says "n/a", at the same width.
    """
    text = format(value, spec)
    return "n/a".rjust(len(text)) if math.isnan(value) else text


class RunLogger:
    """Append-only CSV tables; on resume, rows past the checkpoint are dropped.

    Those rows came from training that the checkpoint does not contain; the
    resumed run produces them again, so every step is logged exactly once.
    Evaluations are checkpointed right after they are logged, so a finished
    evaluation is never lost.
    """

    def __init__(self, run_dir: Path, resume_step: int | None) -> None:
        self.run_dir = run_dir
        self.files: dict[str, io.TextIOWrapper] = {}
        self.writers: dict[str, csv.DictWriter] = {}
        self.resume_step = resume_step
        self.tb = _tensorboard_writer(run_dir / "tb")

    def _open(self, table: str, fields: list[str]) -> csv.DictWriter:
        path = self.run_dir / f"{table}.csv"
        kept: list[dict[str, str]] = []
        if path.exists() and self.resume_step is not None:
            with path.open(newline="") as f:
                kept = [
                    r for r in csv.DictReader(f) if int(r["step"]) <= self.resume_step
                ]
        f = path.open("w", newline="")
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(kept)
        f.flush()
        self.files[table], self.writers[table] = f, writer
        return writer

    def write(self, table: str, row: dict[str, Any]) -> None:
        writer = self.writers.get(table) or self._open(table, list(row))
        writer.writerow(row)
        self.files[table].flush()
        if self.tb is not None:
            tf, writer_tb = self.tb
            prefix = f"{table}/{row['game']}/" if "game" in row else f"{table}/"
            with writer_tb.as_default(step=int(row["step"])):
                for key, value in row.items():
                    if isinstance(value, (int, float)) and key != "step":
                        tf.summary.scalar(prefix + key, value)
            writer_tb.flush()

    def close(self) -> None:
        for f in self.files.values():
            f.close()


def _tensorboard_writer(logdir: Path) -> tuple[Any, Any] | None:
    """tf.summary writer if TensorBoard is installed, else None (CSV only)."""
    try:
        import tensorboard  # noqa: F401
        import tensorflow as tf
    except ImportError:
        return None
    if keras.backend.backend() != "tensorflow":
        # Summaries are host-side; keep TF off the accelerator JAX is using.
        try:
            tf.config.set_visible_devices([], "GPU")
        except RuntimeError:  # TF already initialised its devices elsewhere
            pass
    return tf, tf.summary.create_file_writer(str(logdir))


@dataclasses.dataclass
class Recent:
    """One game's episode returns and losses since the last progress line."""

    returns: list[float] = dataclasses.field(default_factory=list)
    losses: list[float] = dataclasses.field(default_factory=list)

    def clear(self) -> None:
        self.returns, self.losses = [], []


class Throughput:
    """Agent steps and updates per second between two progress lines."""

    def __init__(self, step: int, updates: int) -> None:
        self.time, self.step, self.updates = time.perf_counter(), step, updates

    def rates(self, step: int, updates: int) -> tuple[float, float]:
        """(steps/s, updates/s) since the previous call; restarts the clock."""
        now = time.perf_counter()
        elapsed = now - self.time
        rates = (step - self.step) / elapsed, (updates - self.updates) / elapsed
        self.time, self.step, self.updates = now, step, updates
        return rates


def _mean_or_nan(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


@dataclasses.dataclass
class Run:
    """What every step of a training loop reads and writes: the config, the
    counters (``state``, exactly what a resume needs), the run's generator
    (ε-greedy actions and evaluations) and the logs."""

    cfg: Any
    algo: str  # dqn, amn or cc-amn: the logs' "algo" column
    run_dir: Path
    rng: np.random.Generator
    state: dict[str, Any]
    resumed: bool
    # Opened unless the run is finished (a rerun must leave its logs alone).
    logger: RunLogger = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        if not self.finished:
            self.logger = RunLogger(self.run_dir, self.step if self.resumed else None)

    @property
    def step(self) -> int:
        return self.state["step"]

    @property
    def finished(self) -> bool:
        """A resumed run already at ``--total-steps`` or at its target
        score: nothing to train."""
        done = self.step >= self.cfg.total_steps or self.state.get("target_reached")
        return self.resumed and bool(done)

    def train_row(
        self,
        game: Game,
        epsilon: float,
        recent: Recent,
        episodes: int,
        nonfinite_losses: int,
        rates: tuple[float, float],
    ) -> dict[str, Any]:
        """A row of ``train.csv`` (logged): one game's progress since the
        last row."""
        row = dict(
            step=self.step,
            game=game.name,
            algo=self.algo,
            frames=game.family.frames_per_step * self.step,
            updates=self.state["updates"],
            epsilon=round(epsilon, 5),
            loss=_mean_or_nan(recent.losses),
            episode_return=_mean_or_nan(recent.returns),
            episodes=episodes,
            nonfinite_losses=nonfinite_losses,
            steps_per_s=rates[0],
            updates_per_s=rates[1],
        )
        self.logger.write("train", row)
        return row

    def evaluate(self, game: Game, scores_fn: ScoresFn, nonfinite_losses: int) -> float:
        """Evaluate one game's policy; a row of ``eval.csv`` and a line; the
        mean score."""
        mean, std, n = game.evaluate(scores_fn, self.cfg, self.rng, self.step)
        row = dict(
            step=self.step,
            game=game.name,
            algo=self.algo,
            eval_return=mean,
            eval_return_std=std,
            eval_episodes=n,
            nonfinite_losses=nonfinite_losses,
        )
        self.logger.write("eval", row)
        print(
            f"[{self.algo}] {game.name} eval at {self.step}: {mean:.2f} ± "
            f"{std:.2f} ({n} episodes)",
            flush=True,
        )
        return mean

    def due(self) -> tuple[bool, bool, bool]:
        """(log, evaluate, checkpoint): what is due after a training step.

        The last step does all three; an evaluation is always checkpointed
        right after it is logged (``RunLogger`` drops rows past the
        checkpoint on resume).
        """
        state, last = self.state, self.step >= self.cfg.total_steps
        log = self.step >= state["next_log"] or last
        evaluate = self.step >= state["next_eval"] or last
        checkpoint = evaluate or self.step >= state["next_checkpoint"]
        return log, evaluate, checkpoint

    def advance(self, key: str, every: int) -> None:
        """Move the step ``state[key]`` to the first multiple past the current."""
        while self.state[key] <= self.step:
            self.state[key] += every

    def save_checkpoint(
        self, models: dict[str, keras.Model], optimizer: keras.optimizers.Optimizer
    ) -> None:
        """``checkpoint.npz``: weights, optimizer slots, counters, generator."""
        ckpt = self.run_dir / "checkpoint.npz"
        save_checkpoint(ckpt, models, optimizer, self.state, self.rng)
        self.advance("next_checkpoint", self.cfg.checkpoint_every)


# --------------------------------------------------------------------------
# The run directory: start, resume, schedule, checkpoints.
# --------------------------------------------------------------------------
def start_run(cfg: Any) -> tuple[Path, np.random.Generator]:
    """The run directory with ``config.json``; seeds set; the run's generator
    (ε-greedy actions and evaluations draw from it)."""
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=1))
    keras.utils.set_random_seed(cfg.seed)
    return run_dir, np.random.default_rng(cfg.seed)


def resume(
    cfg: Any,
    algo: str,
    what: str,
    run_dir: Path,
    rng: np.random.Generator,
    models: dict[str, keras.Model],
    optimizer: keras.optimizers.Optimizer,
    initial_state: dict[str, Any],
) -> Run:
    """The run, resumed from ``<run_dir>/checkpoint.npz`` if there is one.

    A resume restores the weights, the optimizer's slots, ``rng`` and the
    counters, and says so (``what`` names the run's game or games); a run
    already at ``--total-steps`` says that instead (``Run.finished``).
    """
    ckpt = run_dir / "checkpoint.npz"
    if not ckpt.exists():
        return Run(cfg, algo, run_dir, rng, initial_state, resumed=False)
    state = load_checkpoint(ckpt, models, optimizer)
    rng.bit_generator.state = state.pop("rng")
    run = Run(cfg, algo, run_dir, rng, state, resumed=True)
    if run.finished and state.get("target_reached"):
        print(
            f"[{algo}] {what}: already finished, its evaluation reached the "
            f"target score at step {run.step} ({ckpt}); nothing to do."
        )
    elif run.finished:
        print(
            f"[{algo}] {what}: already finished ({run.step} of {cfg.total_steps} "
            f"steps, {ckpt}); nothing to do. Raise --total-steps to train further."
        )
    else:
        print(f"[{algo}] resumed {what} at step {run.step} from {ckpt}")
    return run


def save_checkpoint(
    path: Path,
    models: dict[str, keras.Model],
    optimizer: keras.optimizers.Optimizer,
    state: dict[str, Any],
    rng: np.random.Generator | None = None,
) -> None:
    """Weights, optimizer slots, counters and ``rng``'s state in one file,
    replaced atomically."""
    arrays = {}
    for name, model in models.items():
        for i, w in enumerate(model.weights):
            arrays[f"{name}/{i}"] = ops.convert_to_numpy(w)
    for i, v in enumerate(optimizer.variables):
        arrays[f"optimizer/{i}"] = ops.convert_to_numpy(v)
    if rng is not None:
        state = {**state, "rng": rng.bit_generator.state}
    arrays["state"] = np.array(json.dumps(state))
    _save_atomically(path, arrays)


def _save_atomically(path: Path, arrays: dict[str, np.ndarray]) -> None:
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)  # a kill mid-save leaves the previous file


def load_checkpoint(
    path: Path,
    models: dict[str, keras.Model],
    optimizer: keras.optimizers.Optimizer | None,
) -> dict[str, Any]:
    with np.load(path) as data:
        for name, model in models.items():
            for i, w in enumerate(model.weights):
                w.assign(data[f"{name}/{i}"])
        if optimizer is not None:
            optimizer.build(next(iter(models.values())).trainable_variables)
            for i, v in enumerate(optimizer.variables):
                v.assign(data[f"optimizer/{i}"])
        return json.loads(str(data["state"]))


def load_q_network(run_dir: str | Path, game: str, family: str = "ale") -> keras.Model:
    """A trained expert: the online Q-network from a dqn.py run directory.

    Reads ``checkpoint.npz`` (a full training checkpoint) or, failing that,
    ``expert.npz`` (the Q-network's weights alone, as committed for MinAtar).
    """
    fam = FAMILIES[family]
    q_net = fam.q_network(game, len(fam.action_meanings(game)), f"expert_{game}")
    for name in ("checkpoint.npz", "expert.npz"):
        path = Path(run_dir) / name
        if path.exists():
            load_checkpoint(path, {"q": q_net}, None)
            return q_net
    raise FileNotFoundError(
        f"no DQN checkpoint for {game} in {run_dir} (checkpoint.npz or expert.npz)"
    )


def save_expert(run_dir: str | Path, q_net: keras.Model) -> Path:
    """The Q-network alone (no target, no optimizer): what a student needs."""
    path = Path(run_dir) / "expert.npz"
    arrays = {f"q/{i}": ops.convert_to_numpy(w) for i, w in enumerate(q_net.weights)}
    arrays["state"] = np.array(json.dumps({}))
    _save_atomically(path, arrays)
    return path


def save_local_replay(
    path: Path, replay: Any, envs: Any, returns: np.ndarray, step: int
) -> None:
    """Replay, environments and running returns at ``step`` (not committed).

    Only for replays and environments that can hand out their state (MinAtar
    is pure Python); with it, a resume continues the same episodes from the
    same replay instead of refilling the replay with the current policy.
    """
    arrays = {f"replay/{k}": v for k, v in replay.state_arrays().items()}
    arrays["envs"] = np.frombuffer(envs.get_state(), np.uint8)
    arrays["returns"] = returns
    rng_blob = pickle.dumps(replay.rng.bit_generator.state)
    arrays["rng"] = np.frombuffer(rng_blob, np.uint8)
    arrays["step"] = np.array(step)
    _save_atomically(path, arrays)


def load_local_replay(
    path: Path, replay: Any, envs: Any, step: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """(observations, running returns) if ``path`` was saved at ``step``."""
    if not path.exists():
        return None
    with np.load(path) as data:
        if int(data["step"]) != step:  # saved after or before the checkpoint
            return None
        replay.load_state_arrays(
            {k.split("/", 1)[1]: data[k] for k in data.files if k.startswith("replay/")}
        )
        replay.rng.bit_generator.state = pickle.loads(data["rng"].tobytes())
        obs = envs.set_state(data["envs"].tobytes())
        return obs, data["returns"].copy()
