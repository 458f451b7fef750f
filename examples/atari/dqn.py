"""Nature-DQN expert for one Atari game (Keras 3; TensorFlow or JAX backend).

CleanRL style: the algorithm reads top to bottom in ``train`` below. The
pieces above it (environment, network, frame replay, evaluation, logging,
checkpoints) are reused by ``actor_mimic.py``, which imports this file.

    python examples/atari/dqn.py --game Pong --preset smoke
    KERAS_BACKEND=jax python examples/atari/dqn.py --game Breakout --preset paper

Units: every step count below is in *agent steps* (one action, repeated over
4 emulator frames), which is what the Nature-DQN hyperparameter table calls
"frames" (replay 1M, learning starts 50k, ε annealed over 1M, update every 4).
The only emulator-frame count is the episode cap, 18 000 frames = 5 minutes.
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
# evaluation presses it for them (PAPER.md: "Breakout presses FIRE").
FIRE_ON_LIFE_LOSS = frozenset({"Breakout"})


# --------------------------------------------------------------------------
# Configuration: a dataclass per script, presets, CLI overrides for each field.
# --------------------------------------------------------------------------
@dataclasses.dataclass
class DQNConfig:
    game: str = "Pong"
    seed: int = 1
    total_steps: int = 30_000_000
    num_envs: int = 1  # Nature DQN acts in one emulator
    buffer_size: int = 1_000_000
    learning_starts: int = 50_000
    train_every: int = 4
    batch_size: int = 32
    learning_rate: float = 1e-5
    adam_epsilon: float = 1.5e-4
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
    run_dir: str = "runs/dqn"


DQN_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},  # the dataclass defaults are PAPER.md's settings
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
            rom_id(game)
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
    obs = keras.Input((STACK, *FRAME_SHAPE), dtype="uint8", name="obs")
    next_obs = keras.Input((STACK, *FRAME_SHAPE), dtype="uint8", name="next_obs")
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
    env: AtariVectorEnv,
    game: str,
    steps: int,
    epsilon: float,
    rng: np.random.Generator,
    seed: int,
) -> tuple[float, float, int]:
    """Mean, std and count of episode scores (raw rewards) over ``steps``.

    No-op starts come from the env; games in FIRE_ON_LIFE_LOSS get FIRE after
    each lost life. If no episode ends in time (tiny smoke runs) the partial
    returns are reported, with 0 episodes, rather than nothing.
    """
    fire = game in FIRE_ON_LIFE_LOSS
    obs, info = env.reset(seed=seed)
    lives = info["lives"].copy()
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


def load_q_network(run_dir: str | Path, game: str) -> keras.Model:
    """A trained expert: the online Q-network from a dqn.py run directory."""
    path = Path(run_dir) / "checkpoint.npz"
    if not path.exists():
        raise FileNotFoundError(f"no DQN checkpoint for {game} at {path}")
    q_net = nature_cnn(len(action_meanings(game)), name=f"expert_{game}")
    load_checkpoint(path, {"q": q_net}, None)
    return q_net


def rng_state(rng: np.random.Generator) -> dict[str, Any]:
    return rng.bit_generator.state


def set_rng_state(rng: np.random.Generator, state: dict[str, Any]) -> None:
    rng.bit_generator.state = state


# --------------------------------------------------------------------------
# DQN, top to bottom.
# --------------------------------------------------------------------------
def train(cfg: DQNConfig) -> dict[str, Any]:
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=1))
    keras.utils.set_random_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    num_actions = len(action_meanings(cfg.game))

    q_net = nature_cnn(num_actions, name="q")
    target_net = nature_cnn(num_actions, name="target")
    optimizer = keras.optimizers.Adam(cfg.learning_rate, epsilon=cfg.adam_epsilon)
    learner = dqn_learner(q_net, target_net, cfg.gamma)
    learner.compile(optimizer=optimizer, loss=learner.loss_fn)
    target_net.set_weights(q_net.get_weights())

    # Counters are all in agent steps; `state` is exactly what a resume needs.
    state = dict(step=0, updates=0, nonfinite_losses=0, episodes=0)
    state.update(next_update=cfg.learning_starts, next_target=0)
    state.update(next_eval=cfg.eval_every, next_log=cfg.log_every)
    state.update(next_checkpoint=cfg.checkpoint_every)
    ckpt = run_dir / "checkpoint.npz"
    resumed = ckpt.exists()
    if resumed:
        state = load_checkpoint(ckpt, {"q": q_net, "target": target_net}, optimizer)
        set_rng_state(rng, state.pop("rng"))
        print(f"[dqn] resumed {cfg.game} at step {state['step']} from {ckpt}")
    logger = RunLogger(run_dir, state["step"] if resumed else None)

    envs = make_env(cfg.game, cfg.num_envs, cfg, seed=cfg.seed + state["step"])
    eval_env = make_env(cfg.game, cfg.eval_envs, cfg, seed=cfg.seed + 10_000)
    replay = FrameReplay(cfg.buffer_size, cfg.num_envs, seed=cfg.seed + state["step"])
    print(
        f"[dqn] {cfg.game} backend={keras.backend.backend()} actions={num_actions} "
        f"replay={replay.nbytes / 2**20:.1f} MiB "
        f"({replay.bytes_per_transition:.0f} B/transition)"
    )

    def greedy_scores(obs: np.ndarray) -> np.ndarray:
        return np.asarray(q_net.predict_on_batch(obs))

    def act(obs: np.ndarray, epsilon: float) -> np.ndarray:
        return epsilon_greedy(greedy_scores(obs), epsilon, rng)

    obs, _ = envs.reset(seed=cfg.seed + state["step"])
    replay.start(obs[:, -1])
    if resumed:  # the replay is not checkpointed: refill it, counters frozen
        epsilon = linear_epsilon(state["step"], cfg)
        while len(replay) < min(cfg.learning_starts, cfg.buffer_size):
            actions = act(obs, epsilon)
            nxt, rewards, term, trunc, info = envs.step(actions)
            done = term | trunc
            final = info["final_obs"][:, -1] if done.any() else None
            replay.add(actions, np.sign(rewards), term, done, nxt[:, -1], final)
            obs = nxt

    returns = np.zeros(cfg.num_envs)
    recent_returns: list[float] = []
    recent_losses: list[float] = []
    t_log, step_log, updates_log = time.perf_counter(), state["step"], state["updates"]
    while state["step"] < cfg.total_steps:
        epsilon = linear_epsilon(state["step"], cfg)
        actions = act(obs, epsilon)
        nxt, rewards, terminated, truncated, info = envs.step(actions)
        done = terminated | truncated
        final = info["final_obs"][:, -1] if done.any() else None
        # Nature DQN: rewards clipped to their sign for learning only.
        replay.add(actions, np.sign(rewards), terminated, done, nxt[:, -1], final)
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
            loss = float(np.asarray(learner.train_on_batch([b_obs, b_next], y)))
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
                frames=4 * state["step"],
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
                f"return {row['episode_return']:8.2f} loss {row['loss']:.4f} "
                f"nonfinite {row['nonfinite_losses']} "
                f"{row['steps_per_s']:.0f} steps/s {row['updates_per_s']:.0f} upd/s"
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
                cfg.game,
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
            print(f"[dqn] {cfg.game} eval at {state['step']}: {mean:.2f} ± {std:.2f}")
            while state["next_eval"] <= state["step"]:
                state["next_eval"] += cfg.eval_every
        if evaluating or last or state["step"] >= state["next_checkpoint"]:
            models = {"q": q_net, "target": target_net}
            save_checkpoint(ckpt, models, optimizer, {**state, "rng": rng_state(rng)})
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
