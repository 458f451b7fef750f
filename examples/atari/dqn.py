"""DQN expert for one game (Keras 3; TensorFlow or JAX backend).

Two environment families share this file (``--family``): Atari through ale-py
with the Nature-DQN network (``--preset paper``), and MinAtar with the MinAtar
paper's small network and settings (``--preset minatar``, see
``minatar_env.py``). CleanRL style: the algorithm reads top to bottom in
``train`` below. The pieces above it (environments, networks, frame replay,
compiled update, evaluation, logging, checkpoints) are reused by
``actor_mimic.py``.

    python -m examples.atari.dqn --game Pong --preset smoke
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

import argparse
import csv
import dataclasses
import io
import json
import math
import os
import pickle
import re
import sys
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

gym.register_envs(ale_py)

FRAME_SHAPE = (84, 84)
STACK = 4
# Games whose play stalls until FIRE is pressed after a life is lost; the
# evaluation presses it for them (Breakout, as in the paper's evaluation).
FIRE_ON_LIFE_LOSS = frozenset({"Breakout"})


# --------------------------------------------------------------------------
# Configuration: a dataclass per script, presets, CLI overrides for each field.
# --------------------------------------------------------------------------
@dataclasses.dataclass
class DQNConfig:
    game: str = "Pong"
    family: str = "ale"  # ale (Atari 2600) or minatar
    seed: int = 1
    total_steps: int = 30_000_000
    num_envs: int = 1  # Nature DQN acts in one emulator
    buffer_size: int = 1_000_000
    learning_starts: int = 50_000
    train_every: int = 4
    batch_size: int = 32
    optimizer: str = "adam"  # adam, or rmsprop (centered, as MinAtar's DQN)
    learning_rate: float = 1e-5
    adam_epsilon: float = 1.5e-4
    rmsprop_rho: float = 0.95
    rmsprop_epsilon: float = 0.01
    gamma: float = 0.99
    target_update_every: int = 40_000  # 10k updates × 4 steps, Nature's C
    eps_start: float = 1.0
    eps_mid: float = 0.1
    eps_mid_step: int = 1_000_000
    eps_end: float = 0.01
    eps_end_step: int = 15_000_000  # then 0.1 → 0.01 by half of training
    max_episode_frames: int = 18_000  # emulator frames (5 minutes)
    noop_max: int = 20
    eval_every: int = 250_000
    eval_steps: int = 125_000
    eval_envs: int = 8
    eval_epsilon: float = 0.05
    log_every: int = 10_000
    checkpoint_every: int = 250_000
    # Also save the replay and the environments' state beside the checkpoint
    # (MinAtar only), so that a resume continues exactly where it stopped.
    save_replay: bool = False
    run_dir: str = "runs/dqn"


DQN_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},  # the dataclass defaults are the paper's settings
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
    # MinAtar's examples/dqn.py (Young & Tian, 2019): replay 100k, batch 32,
    # one update per frame, target copied every 1000 frames, centered RMSprop
    # (lr 2.5e-4, ρ 0.95, ε 0.01), ε-greedy 1 → 0.1 over 100k frames, learning
    # starts at 5k frames, γ 0.99, 5M frames. Their ε anneal starts after the
    # first 5k frames; ours starts at 0 (a 5% shift of the anneal).
    "minatar": dict(
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
    ),
    "minatar_smoke": dict(
        family="minatar",
        game="Breakout",
        total_steps=512,
        num_envs=4,
        buffer_size=1_000,
        learning_starts=64,
        train_every=1,
        batch_size=8,
        optimizer="rmsprop",
        learning_rate=2.5e-4,
        target_update_every=64,
        eps_mid=0.1,
        eps_mid_step=256,
        eps_end=0.1,
        eps_end_step=256,
        max_episode_frames=100,
        noop_max=0,
        eval_every=256,
        eval_steps=400,
        eval_envs=4,
        log_every=128,
        checkpoint_every=128,
        save_replay=True,
        run_dir="runs/minatar_dqn_smoke",
    ),
}


def parse_config(
    cls: type,
    presets: dict[str, dict[str, Any]],
    argv: Sequence[str] | None,
    doc: str,
    extra_checks: Callable[[Any], list[str]] | None = None,
) -> Any:
    """``--preset`` picks defaults; every dataclass field is a ``--flag``."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument(
        "--preset", choices=sorted(presets), default="smoke", help="default: smoke"
    )
    defaults = cls()
    for field in dataclasses.fields(cls):
        flag = "--" + field.name.replace("_", "-")
        # Show what each preset sets, since flags only override a preset.
        shown = {
            name: preset.get(field.name, getattr(defaults, field.name))
            for name, preset in presets.items()
        }
        help_text = ", ".join(f"{name}: {value}" for name, value in shown.items())
        if field.type == "list[str]":
            parser.add_argument(flag, nargs="+", metavar="str", help=help_text)
        elif field.type == "bool":
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, help=help_text
            )
        else:
            kind = {"int": int, "float": float, "str": str}[str(field.type)]
            parser.add_argument(flag, type=kind, metavar=kind.__name__, help=help_text)
    args = parser.parse_args(argv)
    values = {**presets[args.preset]}
    for field in dataclasses.fields(cls):
        given = getattr(args, field.name)
        if given is not None:
            values[field.name] = given
    cfg = cls(**values)
    problems = validate_config(cfg) + (extra_checks(cfg) if extra_checks else [])
    if problems:
        parser.error("; ".join(problems))
    return cfg


def validate_config(cfg: Any) -> list[str]:
    """Reject nonsense early, with the flag's name, instead of a deep traceback."""
    problems = []
    for field in dataclasses.fields(cfg):
        value = getattr(cfg, field.name)
        flag = "--" + field.name.replace("_", "-")
        if type(value) is int and field.name != "seed" and value < 0:
            problems.append(f"{flag} must be >= 0, got {value}")
        if isinstance(value, float) and not math.isfinite(value):
            problems.append(f"{flag} must be finite, got {value}")
    for name in ("num_envs", "batch_size", "train_every", "eval_envs", "log_every"):
        if getattr(cfg, name, 1) < 1:
            problems.append(f"--{name.replace('_', '-')} must be >= 1")
    for name in ("eps_start", "eps_mid", "eps_end", "eval_epsilon", "gamma"):
        if not 0.0 <= getattr(cfg, name, 0.0) <= 1.0:
            problems.append(f"--{name.replace('_', '-')} must lie in [0, 1]")
    if getattr(cfg, "family", "ale") not in FAMILIES:
        families = sorted(FAMILIES)
        problems.append(f"--family must be one of {families}, got {cfg.family!r}")
        return problems
    if getattr(cfg, "optimizer", "adam") not in ("adam", "rmsprop"):
        problems.append(f"--optimizer must be adam or rmsprop, got {cfg.optimizer!r}")
    if getattr(cfg, "learning_rate", 1.0) <= 0:
        problems.append("--learning-rate must be > 0")
    if getattr(cfg, "buffer_size", 0) < STACK + 2:
        problems.append(f"--buffer-size must be >= {STACK + 2}")
    if hasattr(cfg, "learning_starts") and cfg.learning_starts < cfg.batch_size:
        problems.append("--learning-starts must be >= --batch-size")
    if getattr(cfg, "eps_end_step", 1) < getattr(cfg, "eps_mid_step", 0):
        problems.append("--eps-end-step must be >= --eps-mid-step")
    games = cfg.games if hasattr(cfg, "games") else [cfg.game]
    for game in games:
        try:
            FAMILIES[cfg.family].check_game(game)
        except ValueError as err:
            problems.append(str(err))
    return problems


# --------------------------------------------------------------------------
# Environment: ale-py's vectorised C++ env does the Nature preprocessing
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


# --------------------------------------------------------------------------
# Network: the Nature-DQN conv net; uint8 frames in, one value per action out.
# --------------------------------------------------------------------------
def nature_cnn(num_outputs: int, name: str = "nature_cnn") -> keras.Model:
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
# Replay: each frame is stored once (uint8); stacks are rebuilt by index.
# --------------------------------------------------------------------------
class FrameReplay:
    """Ring buffers of single frames, one lane per environment.

    Slot ``j`` of a lane holds the newest frame of observation ``s_j`` and, once
    the agent has acted on it, ``(a_j, r_j, terminated_j)``; ``s_{j+1}`` is slot
    ``j+1``. At an episode's end the final frame gets its own slot (no action,
    never sampled as a start) and the reset frame the next, so truncated
    episodes still have a true next state to bootstrap from. ``ep_t`` is the
    frame's index in its episode: stack positions before the episode's start
    are zeros, exactly as the environment pads its own stack after a reset.
    """

    def __init__(self, capacity: int, num_lanes: int, seed: int = 0) -> None:
        self.lanes = num_lanes
        # A little slack per lane so that `capacity` transitions always fit.
        self.cap = -(-capacity // num_lanes) + STACK + 1
        shape = (num_lanes, self.cap)
        self.frames = np.zeros(shape + FRAME_SHAPE, np.uint8)
        self.actions = np.zeros(shape, np.uint8)  # ALE has at most 18 actions
        self.rewards = np.zeros(shape, np.float32)
        self.terminated = np.zeros(shape, np.bool_)
        self.has_action = np.zeros(shape, np.bool_)
        self.ep_t = np.zeros(shape, np.int32)
        self.cursor = np.zeros(num_lanes, np.int64)
        self.size = np.zeros(num_lanes, np.int64)
        self.last = np.zeros(num_lanes, np.int64)  # slot of each lane's s_t
        self.rng = np.random.default_rng(seed)

    @property
    def nbytes(self) -> int:
        arrays = (self.frames, self.actions, self.rewards, self.terminated)
        arrays += (self.has_action, self.ep_t)
        return sum(a.nbytes for a in arrays)

    @property
    def bytes_per_transition(self) -> float:
        return self.nbytes / (self.lanes * self.cap)

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

    def add(
        self,
        actions: np.ndarray,
        rewards: np.ndarray,
        terminated: np.ndarray,
        done: np.ndarray,
        next_frames: np.ndarray,
        final_frames: np.ndarray | None,
    ) -> None:
        """One vector step: a_t, r_t on s_t's slot, then the next frame(s)."""
        lanes = np.arange(self.lanes)
        slot = self.last
        self.actions[lanes, slot] = actions
        self.rewards[lanes, slot] = rewards
        self.terminated[lanes, slot] = terminated
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
        return (
            self._stack(lanes, slots),
            self.actions[lanes, slots].astype(np.int64),
            self.rewards[lanes, slots],
            self._stack(lanes, nxt),
            self.terminated[lanes, slots],
        )


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
    make_replay: Callable[[Any, str, int], Any]  # (cfg, game, seed)
    # The part of an observation the replay stores: ALE's newest frame of the
    # stack (the stack is rebuilt by index), MinAtar's whole observation.
    replay_view: Callable[[np.ndarray], np.ndarray]
    learning_reward: Callable[[np.ndarray], np.ndarray]
    fire_on_life_loss: frozenset[str]


def _ale_env(game: str, num_envs: int, cfg: Any, seed: int) -> AtariVectorEnv:
    return make_env(game, num_envs, cfg, seed)


def _minatar_env(game: str, num_envs: int, cfg: Any, seed: int) -> Any:
    from examples.atari import minatar_env

    return minatar_env.MinAtarVectorEnv(
        game, num_envs, max_episode_frames=cfg.max_episode_frames, seed=seed
    )


def _minatar_q_network(game: str, outputs: int, name: str) -> keras.Model:
    from examples.atari import minatar_env

    return minatar_env.minatar_cnn(outputs, minatar_env.CHANNELS[game], name=name)


def _minatar_student(games: Sequence[str], outputs: int, name: str) -> keras.Model:
    from examples.atari import minatar_env

    channels = max(minatar_env.CHANNELS[g] for g in games)
    return minatar_env.minatar_cnn(outputs, channels, name=name)


def _minatar_replay(cfg: Any, game: str, seed: int) -> Any:
    from examples.atari import minatar_env

    shape = minatar_env.observation_shape(game)
    return minatar_env.TransitionReplay(cfg.buffer_size, cfg.num_envs, shape, seed)


def _minatar_meanings(game: str) -> list[str]:
    from examples.atari import minatar_env

    return minatar_env.action_meanings(game)


def _minatar_check(game: str) -> str:
    from examples.atari import minatar_env

    return minatar_env.check_game(game)


FAMILIES: dict[str, Family] = {
    "ale": Family(
        name="ale",
        frames_per_step=4,
        check_game=rom_id,
        action_meanings=action_meanings,
        make_env=_ale_env,
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
        check_game=_minatar_check,
        action_meanings=_minatar_meanings,
        make_env=_minatar_env,
        q_network=_minatar_q_network,
        student_network=_minatar_student,
        make_replay=_minatar_replay,
        replay_view=lambda obs: obs,
        # MinAtar's rewards are small integers; its DQN does not clip them.
        learning_reward=lambda rewards: rewards,
        fire_on_life_loss=frozenset(),
    ),
}


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


def evaluate(
    scores_fn: Callable[[np.ndarray], np.ndarray],
    env: Any,
    fire: bool,
    steps: int,
    epsilon: float,
    rng: np.random.Generator,
    seed: int,
) -> tuple[float, float, int]:
    """Mean, std and count of episode scores (raw rewards) over ``steps``.

    No-op starts come from the env; with ``fire`` (Atari games in
    FIRE_ON_LIFE_LOSS) FIRE is pressed after each lost life. If no episode
    ends in time (tiny smoke runs) the partial returns are reported, with 0
    episodes, rather than nothing.
    """
    obs, info = env.reset(seed=seed)
    lives = info["lives"].copy() if fire else None
    need_fire = np.zeros(env.num_envs, np.bool_)
    running = np.zeros(env.num_envs)
    finished: list[float] = []
    for _ in range(-(-steps // env.num_envs)):
        actions = epsilon_greedy(scores_fn(obs), epsilon, rng)
        if fire:
            actions[need_fire] = 1  # FIRE is action 1 in every minimal set
        obs, rewards, terminated, truncated, info = env.step(actions)
        running += rewards
        done = terminated | truncated
        if fire:
            need_fire = (info["lives"] < lives) & ~done
            lives = info["lives"].copy()
        for i in np.flatnonzero(done):
            finished.append(float(running[i]))
            running[i] = 0.0
    scores = np.array(finished if finished else running, np.float64)
    return float(scores.mean()), float(scores.std()), len(finished)


# --------------------------------------------------------------------------
# Logging (CSV flushed per row; TensorBoard when installed) and checkpoints.
# --------------------------------------------------------------------------
def format_stat(value: float, spec: str) -> str:
    """``format(value, spec)`` for a progress line, with "n/a" in place of NaN.

    The CSV logs keep NaN for a mean over nothing (no episode has ended yet,
    no update has run yet); the console says "n/a", at the same width.
    """
    text = format(value, spec)
    return "n/a".rjust(len(text)) if math.isnan(value) else text


def already_finished(algo: str, what: str, step: int, total: int, ckpt: Path) -> str:
    """The message for rerunning a run whose checkpoint is at its last step."""
    return (
        f"[{algo}] {what}: already finished ({step} of {total} steps, {ckpt}); "
        "nothing to do. Raise --total-steps to train further."
    )


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


def save_checkpoint(
    path: Path,
    models: dict[str, keras.Model],
    optimizer: keras.optimizers.Optimizer,
    state: dict[str, Any],
) -> None:
    """Weights, optimizer slots and counters in one file, replaced atomically."""
    arrays = {}
    for name, model in models.items():
        for i, w in enumerate(model.weights):
            arrays[f"{name}/{i}"] = ops.convert_to_numpy(w)
    for i, v in enumerate(optimizer.variables):
        arrays[f"optimizer/{i}"] = ops.convert_to_numpy(v)
    arrays["state"] = np.array(json.dumps(state))
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)  # a kill mid-save leaves the previous checkpoint


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
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    return path


def rng_state(rng: np.random.Generator) -> dict[str, Any]:
    return rng.bit_generator.state


def set_rng_state(rng: np.random.Generator, state: dict[str, Any]) -> None:
    rng.bit_generator.state = state


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
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


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


# --------------------------------------------------------------------------
# DQN, top to bottom.
# --------------------------------------------------------------------------
def train(cfg: DQNConfig) -> dict[str, Any]:
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=1))
    keras.utils.set_random_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    family = FAMILIES[cfg.family]
    num_actions = len(family.action_meanings(cfg.game))

    q_net = family.q_network(cfg.game, num_actions, "q")
    target_net = family.q_network(cfg.game, num_actions, "target")
    optimizer = make_optimizer(cfg)
    learner = dqn_learner(q_net, target_net, cfg.gamma)
    learner.compile(optimizer=optimizer, loss=learner.loss_fn)
    train_step = compiled_train_step(learner, optimizer)
    target_net.set_weights(q_net.get_weights())

    # Counters are all in agent steps; `state` is exactly what a resume needs.
    state = dict(step=0, updates=0, nonfinite_losses=0, episodes=0)
    state.update(next_update=cfg.learning_starts, next_target=0)
    state.update(next_eval=cfg.eval_every, next_log=cfg.log_every)
    state.update(next_checkpoint=cfg.checkpoint_every)
    ckpt = run_dir / "checkpoint.npz"
    local_replay = run_dir / "replay.npz"
    resumed = ckpt.exists()
    if resumed:
        state = load_checkpoint(ckpt, {"q": q_net, "target": target_net}, optimizer)
        set_rng_state(rng, state.pop("rng"))
        if state["step"] >= cfg.total_steps:
            print(
                already_finished("dqn", cfg.game, state["step"], cfg.total_steps, ckpt)
            )
            return state
        print(f"[dqn] resumed {cfg.game} at step {state['step']} from {ckpt}")
    logger = RunLogger(run_dir, state["step"] if resumed else None)

    envs = family.make_env(cfg.game, cfg.num_envs, cfg, cfg.seed + state["step"])
    eval_env = family.make_env(cfg.game, cfg.eval_envs, cfg, cfg.seed + 10_000)
    replay = family.make_replay(cfg, cfg.game, cfg.seed + state["step"])
    print(
        f"[dqn] {cfg.game} ({family.name}) backend={keras.backend.backend()} "
        f"actions={num_actions} replay={replay.nbytes / 2**20:.1f} MiB "
        f"({replay.bytes_per_transition:.0f} B/transition)"
    )

    def greedy_scores(obs: np.ndarray) -> np.ndarray:
        return np.asarray(q_net.predict_on_batch(obs))

    def act(obs: np.ndarray, epsilon: float) -> np.ndarray:
        return epsilon_greedy(greedy_scores(obs), epsilon, rng)

    obs, _ = envs.reset(seed=cfg.seed + state["step"])
    replay.start(family.replay_view(obs))
    returns = np.zeros(cfg.num_envs)
    restored = None
    if resumed and cfg.save_replay:
        restored = load_local_replay(local_replay, replay, envs, state["step"])
    if restored is not None:
        obs, returns = restored
        print(f"[dqn] {cfg.game}: replay and environments restored ({len(replay)})")
    elif resumed:  # no replay saved at this step: refill it, counters frozen
        epsilon = linear_epsilon(state["step"], cfg)
        while len(replay) < min(cfg.learning_starts, cfg.buffer_size):
            actions = act(obs, epsilon)
            nxt, rewards, term, trunc, info = envs.step(actions)
            done = term | trunc
            final = family.replay_view(info["final_obs"]) if done.any() else None
            reward = family.learning_reward(rewards)
            replay.add(actions, reward, term, done, family.replay_view(nxt), final)
            obs = nxt

    recent_returns: list[float] = []
    recent_losses: list[float] = []
    t_log, step_log, updates_log = time.perf_counter(), state["step"], state["updates"]
    while state["step"] < cfg.total_steps:
        epsilon = linear_epsilon(state["step"], cfg)
        actions = act(obs, epsilon)
        nxt, rewards, terminated, truncated, info = envs.step(actions)
        done = terminated | truncated
        final = family.replay_view(info["final_obs"]) if done.any() else None
        replay.add(
            actions,
            family.learning_reward(rewards),  # sign-clipped on Atari
            terminated,
            done,
            family.replay_view(nxt),
            final,
        )
        returns += rewards
        for i in np.flatnonzero(done):
            recent_returns.append(float(returns[i]))
            returns[i] = 0.0
            state["episodes"] += 1
        obs = nxt
        state["step"] += cfg.num_envs

        # One update per `train_every` agent steps, whatever num_envs is.
        while state["step"] >= state["next_update"] and len(replay) >= cfg.batch_size:
            b_obs, b_act, b_rew, b_next, b_term = replay.sample(cfg.batch_size)
            y = np.stack([b_act, b_rew, b_term], axis=1).astype(np.float32)
            loss = train_step([b_obs, b_next], y)
            state["nonfinite_losses"] += int(not math.isfinite(loss))
            recent_losses.append(loss)
            state["updates"] += 1
            state["next_update"] += cfg.train_every
        if state["step"] >= state["next_target"]:
            target_net.set_weights(q_net.get_weights())
            state["next_target"] += cfg.target_update_every

        if state["step"] >= state["next_log"] or state["step"] >= cfg.total_steps:
            now = time.perf_counter()
            row = dict(
                step=state["step"],
                game=cfg.game,
                algo="dqn",
                frames=family.frames_per_step * state["step"],
                updates=state["updates"],
                epsilon=round(epsilon, 5),
                loss=float(np.mean(recent_losses)) if recent_losses else float("nan"),
                episode_return=(
                    float(np.mean(recent_returns)) if recent_returns else float("nan")
                ),
                episodes=state["episodes"],
                nonfinite_losses=state["nonfinite_losses"],
                steps_per_s=(state["step"] - step_log) / (now - t_log),
                updates_per_s=(state["updates"] - updates_log) / (now - t_log),
            )
            logger.write("train", row)
            print(
                f"[dqn] {cfg.game} step {row['step']:>9} eps {epsilon:.3f} "
                f"return {format_stat(row['episode_return'], '8.2f')} "
                f"loss {format_stat(row['loss'], '.4f')} "
                f"nonfinite {row['nonfinite_losses']} "
                f"{row['steps_per_s']:.0f} steps/s {row['updates_per_s']:.0f} upd/s",
                flush=True,
            )
            recent_returns, recent_losses = [], []
            t_log, step_log, updates_log = now, state["step"], state["updates"]
            state["next_log"] += cfg.log_every

        evaluating = state["step"] >= state["next_eval"]
        last = state["step"] >= cfg.total_steps
        if evaluating or last:
            mean, std, n = evaluate(
                greedy_scores,
                eval_env,
                cfg.game in family.fire_on_life_loss,
                cfg.eval_steps,
                cfg.eval_epsilon,
                rng,
                seed=cfg.seed + 10_000 + state["step"],
            )
            logger.write(
                "eval",
                dict(
                    step=state["step"],
                    game=cfg.game,
                    algo="dqn",
                    eval_return=mean,
                    eval_return_std=std,
                    eval_episodes=n,
                    nonfinite_losses=state["nonfinite_losses"],
                ),
            )
            print(
                f"[dqn] {cfg.game} eval at {state['step']}: {mean:.2f} ± {std:.2f} "
                f"({n} episodes)",
                flush=True,
            )
            while state["next_eval"] <= state["step"]:
                state["next_eval"] += cfg.eval_every
        if evaluating or last or state["step"] >= state["next_checkpoint"]:
            if cfg.save_replay and hasattr(replay, "state_arrays"):
                # First the replay, then the checkpoint that points at it: a
                # kill in between leaves a checkpoint whose step does not
                # match, and the resume refills instead of mixing the two.
                save_local_replay(local_replay, replay, envs, returns, state["step"])
            models = {"q": q_net, "target": target_net}
            save_checkpoint(ckpt, models, optimizer, {**state, "rng": rng_state(rng)})
            save_expert(run_dir, q_net)
            while state["next_checkpoint"] <= state["step"]:
                state["next_checkpoint"] += cfg.checkpoint_every
    logger.close()
    envs.close()
    eval_env.close()
    return state


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    cfg = parse_config(DQNConfig, DQN_PRESETS, argv, __doc__)
    return train(cfg)


if __name__ == "__main__":
    main(sys.argv[1:])
