"""MinAtar as an environment family of the actor-mimic example.

MinAtar (Young & Tian, 2019, https://github.com/kenjyoung/MinAtar) has five
miniature Atari games on a 10×10 grid with one boolean channel per kind of
object. The ``minatar`` package is GPL-3.0 licensed: it is an optional extra
of this example (``pip install -e ".[minatar]"``), never a dependency of
``keras_cc``, and this module imports it only when an environment is made.

What this module gives the MinAtar entry of ``common.FAMILIES``:

* ``MinAtarVectorEnv``: several games stepped together, with the same
  interface as ale-py's vector env in "SameStep" autoreset mode (``reset``,
  ``step`` returning ``info["final_obs"]``), so the training loops do not
  care which family they run on;
* ``minatar_cnn``: the network of the MinAtar paper's DQN (one 3×3 conv
  layer with 16 filters, a 128-unit hidden layer);
* the games' minimal action sets, named like ALE's actions so that the
  student's union action space is matched by meaning.

Its replay, ``common.TransitionReplay``, stores whole observations (at most
10×10×10 bytes each, no frame stacks).

The dynamics are MinAtar's defaults, as in its paper: sticky actions with
probability 0.1 and difficulty ramping. One agent step is one frame.
"""

from __future__ import annotations

import pickle
from typing import Any

import keras
import numpy as np
from keras import layers

# CamelCase names (as in MinAtar's gymnasium ids) -> MinAtar's module names.
GAMES: dict[str, str] = {
    "Asterix": "asterix",
    "Breakout": "breakout",
    "Freeway": "freeway",
    "Seaquest": "seaquest",
    "SpaceInvaders": "space_invaders",
}
# MinAtar's full action set is ['n', 'l', 'u', 'r', 'd', 'f'] (by index); the
# same meanings under the names ALE uses.
ACTION_NAMES: tuple[str, ...] = ("NOOP", "LEFT", "UP", "RIGHT", "DOWN", "FIRE")
# Channels per game (state_shape()[2]); the student pads to the largest.
CHANNELS: dict[str, int] = {
    "Asterix": 4,
    "Breakout": 4,
    "Freeway": 7,
    "Seaquest": 10,
    "SpaceInvaders": 6,
}
GRID = 10


def check_game(game: str) -> str:
    """The MinAtar module name for a CamelCase game name, or a clear error."""
    if game not in GAMES:
        raise ValueError(
            f"unknown MinAtar game {game!r}; use one of {', '.join(GAMES)}"
        )
    return GAMES[game]


def _environment_class() -> Any:
    try:
        from minatar import Environment
    except ImportError as err:  # pragma: no cover - depends on the install
        raise ImportError(
            "the MinAtar family needs the GPL-licensed `minatar` package: "
            'pip install -e ".[minatar]"'
        ) from err
    return Environment


def minimal_actions(game: str) -> list[int]:
    """Indices into MinAtar's 6 actions that the game responds to."""
    env = _environment_class()(check_game(game))
    return [int(a) for a in env.minimal_action_set()]


def action_meanings(game: str) -> list[str]:
    """The game's minimal action set, by meaning (e.g. ['NOOP', 'LEFT', ...])."""
    return [ACTION_NAMES[a] for a in minimal_actions(game)]


def observation_shape(game: str) -> tuple[int, int, int]:
    return (GRID, GRID, CHANNELS[game])


class MinAtarVectorEnv:
    """``num_envs`` copies of one game, stepped together, autoreset in-step.

    Actions are indices into the game's minimal action set. Observations are
    uint8 (num_envs, 10, 10, C). An episode that reaches ``max_episode_frames``
    is truncated (0 = no cap; MinAtar's games end by themselves, Freeway
    after 2 500 frames). ``info["final_obs"]`` holds the last observation of
    episodes that ended in this step; ``obs`` already holds the next
    episode's first one, as with ale-py's ``autoreset_mode="SameStep"``.
    """

    def __init__(
        self,
        game: str,
        num_envs: int,
        max_episode_frames: int = 0,
        sticky_action_prob: float = 0.1,
        seed: int = 0,
    ) -> None:
        environment = _environment_class()
        module = check_game(game)
        self.game = game
        self.num_envs = num_envs
        self.max_episode_frames = max_episode_frames
        self.envs = [
            environment(module, sticky_action_prob=sticky_action_prob)
            for _ in range(num_envs)
        ]
        self.actions = np.array(self.envs[0].minimal_action_set(), np.int64)
        self.single_observation_shape = observation_shape(game)
        self.episode_frames = np.zeros(num_envs, np.int64)
        self.reset(seed=seed)

    @property
    def num_actions(self) -> int:
        return len(self.actions)

    def _observe(self) -> np.ndarray:
        return np.stack([env.state() for env in self.envs]).astype(np.uint8)

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        for i, env in enumerate(self.envs):
            if seed is not None:
                env.seed(seed + i)
            env.reset()
        self.episode_frames[:] = 0
        return self._observe(), {}

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        rewards = np.zeros(self.num_envs, np.float32)
        terminated = np.zeros(self.num_envs, np.bool_)
        for i, (env, a) in enumerate(zip(self.envs, actions, strict=True)):
            rewards[i], terminated[i] = env.act(int(self.actions[a]))
        self.episode_frames += 1
        cap = self.max_episode_frames
        truncated = ~terminated & (cap > 0) & (self.episode_frames >= cap)
        done = terminated | truncated
        info: dict[str, Any] = {}
        if done.any():
            info["final_obs"] = self._observe()
            for i in np.flatnonzero(done):
                self.envs[i].reset()
                self.episode_frames[i] = 0
        return self._observe(), rewards, terminated, truncated, info

    def get_state(self) -> bytes:
        """The games' full state (positions, RNGs): MinAtar is pure Python."""
        return pickle.dumps((self.envs, self.episode_frames))

    def set_state(self, blob: bytes) -> np.ndarray:
        """Restore ``get_state``; returns the current observations."""
        self.envs, self.episode_frames = pickle.loads(blob)  # noqa: S301 - own file
        return self._observe()

    def close(self) -> None:
        self.envs = []


def minatar_cnn(
    num_outputs: int, channels: int, name: str = "minatar_cnn"
) -> keras.Model:
    """The MinAtar paper's DQN network: conv 16@3×3 (valid) → 128 → outputs."""
    obs = keras.Input((GRID, GRID, channels), dtype="uint8", name="obs")
    # Observations travel as uint8 0/1; the first layer wants floats.
    x = layers.Rescaling(1.0, name="to_float")(obs)
    x = layers.Conv2D(16, 3, strides=1, activation="relu")(x)
    x = layers.Flatten()(x)
    x = layers.Dense(128, activation="relu")(x)
    outputs = layers.Dense(num_outputs, name="head")(x)
    return keras.Model(obs, outputs, name=name)
