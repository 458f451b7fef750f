"""Throughput of the Atari actor-mimic example, all measured in one run.

    python -m benchmarks.atari_throughput --game Pong --num-envs 8 --seconds 5
    KERAS_BACKEND=jax python -m benchmarks.atari_throughput --json out.json

(MinAtar: ``benchmarks/minatar_throughput.py``.)

Reports:
  * environment throughput, in agent steps/s and emulator frames/s (×4):
    one gymnasium env with AtariPreprocessing + FrameStackObservation (NaN
    when opencv-python is missing), one raw gymnasium env (ALE frameskip 4,
    grayscale, no resize/stack), the ale-py vector env with one env, and the
    vector env with --num-envs envs (random actions: only the emulator and
    preprocessing are timed);
  * acting: student forward passes for --num-envs observations per second;
  * learner updates/s at batch 32: the DQN update (replay sample, then one
    compiled step: online and target forward, TD loss, Adam) and the AMN
    update with each loss (replay sample, then one compiled step: expert and
    student forward, gathered union head, loss, Adam);
  * replay bytes per transition (frames stored once, uint8).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import keras
import numpy as np

from examples.atari import actor_mimic, common, dqn


def rate(fn: Callable[[], int], seconds: float, warmup: int = 3) -> float:
    """Items per second of ``fn`` (which returns how many items it did)."""
    for _ in range(warmup):  # compile / trace before the clock starts
        fn()
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        done += fn()
    return done / (time.perf_counter() - start)


def single_env_steps(game: str, seconds: float, preprocess: bool) -> float:
    """One gymnasium env; with ``preprocess`` the Nature wrappers (need cv2)."""
    if preprocess:
        env = gym.make(f"ALE/{game}-v5", frameskip=1, repeat_action_probability=0.0)
        try:
            env = gym.wrappers.AtariPreprocessing(env, frame_skip=4, noop_max=30)
        except gym.error.DependencyNotInstalled:
            env.close()
            return float("nan")  # opencv-python missing
        env = gym.wrappers.FrameStackObservation(env, 4)
    else:  # ALE's own frameskip and grayscale, no resize or stacking
        env = gym.make(
            f"ALE/{game}-v5",
            frameskip=4,
            repeat_action_probability=0.0,
            obs_type="grayscale",
        )
    env.reset(seed=0)
    n = env.action_space.n
    rng = np.random.default_rng(0)

    def step() -> int:
        _, _, term, trunc, _ = env.step(int(rng.integers(n)))
        if term or trunc:
            env.reset()
        return 1

    try:
        return rate(step, seconds)
    finally:
        env.close()


def vector_env_steps(game: str, num_envs: int, seconds: float) -> float:
    cfg = dqn.DQNConfig(game=game)
    env = common.make_env(game, num_envs, cfg, seed=0)
    n = env.single_action_space.n
    rng = np.random.default_rng(0)

    def step() -> int:
        env.step(rng.integers(0, n, num_envs))
        return num_envs

    try:
        return rate(step, seconds)
    finally:
        env.close()


def filled_replay(game: str, size: int, num_envs: int) -> common.FrameReplay:
    cfg = dqn.DQNConfig(game=game)
    env = common.make_env(game, num_envs, cfg, seed=0)
    replay = common.FrameReplay(size, num_envs)
    obs, _ = env.reset(seed=0)
    replay.start(obs[:, -1])
    n = env.single_action_space.n
    rng = np.random.default_rng(0)
    while len(replay) < size:
        actions = rng.integers(0, n, num_envs)
        nxt, rewards, term, trunc, info = env.step(actions)
        done = term | trunc
        final = info["final_obs"][:, -1] if done.any() else None
        replay.add(actions, np.sign(rewards), term, done, nxt[:, -1], final)
    env.close()
    return replay


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--game", default="Pong")
    parser.add_argument("--games", nargs="+", default=["Pong", "Breakout"])
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--replay-size", type=int, default=4096)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.num_envs < 1 or args.seconds <= 0 or args.batch_size < 1:
        parser.error("--num-envs, --seconds and --batch-size must be positive")
    for game in {args.game, *args.games}:
        try:
            common.rom_id(game)
        except ValueError as err:
            parser.error(str(err))

    res: dict[str, float] = {}
    res["env_single_gymnasium_wrapped_steps_per_s"] = single_env_steps(
        args.game, args.seconds, preprocess=True
    )
    res["env_single_gymnasium_raw_steps_per_s"] = single_env_steps(
        args.game, args.seconds, preprocess=False
    )
    res["env_vector_1_steps_per_s"] = vector_env_steps(args.game, 1, args.seconds)
    res[f"env_vector_{args.num_envs}_steps_per_s"] = vector_env_steps(
        args.game, args.num_envs, args.seconds
    )
    for key in list(res):
        res[key.replace("steps_per_s", "frames_per_s")] = 4 * res[key]

    replay = filled_replay(args.game, args.replay_size, args.num_envs)
    res["replay_bytes_per_transition"] = replay.bytes_per_transition
    res["replay_sample_batches_per_s"] = rate(
        lambda: (replay.sample(args.batch_size), 1)[1], args.seconds
    )

    # DQN learner: the exact update of dqn.train, minus acting.
    num_actions = len(common.action_meanings(args.game))
    q_net = common.nature_cnn(num_actions, name="q")
    learner = dqn.dqn_learner(
        q_net, common.nature_cnn(num_actions, name="target"), 0.99
    )
    learner.compile(optimizer=keras.optimizers.Adam(1e-5), loss=learner.loss_fn)

    def dqn_update() -> int:
        b_obs, b_act, b_rew, b_next, b_term = replay.sample(args.batch_size)
        y = np.stack([b_act, b_rew, b_term], axis=1).astype(np.float32)
        learner.train_on_batch([b_obs, b_next], y)
        return 1

    res["dqn_updates_per_s"] = rate(dqn_update, args.seconds)
    obs = replay.sample(args.num_envs)[0]
    res[f"act_forward_{args.num_envs}_obs_per_s"] = args.num_envs * rate(
        lambda: (q_net.predict_on_batch(obs), 1)[1], args.seconds
    )

    # AMN learner, for the union head over --games (as in actor_mimic.train).
    meanings = {g: common.action_meanings(g) for g in args.games}
    union, index = actor_mimic.union_action_space(meanings)
    game = args.games[0]
    expert = common.nature_cnn(len(meanings[game]), name="expert")
    dummy = np.zeros((args.batch_size, 1), np.float32)
    for loss in actor_mimic.LOSSES:
        student = common.nature_cnn(len(union), name=f"student_{loss}")
        amn = actor_mimic.amn_learner(student, expert, index[game], 1.0, loss, game)
        amn.compile(optimizer=keras.optimizers.Adam(1e-4), loss=amn.loss_fn)

        def amn_update(amn: keras.Model = amn) -> int:
            amn.train_on_batch(replay.sample(args.batch_size)[0], dummy)
            return 1

        res[f"amn_{loss}_updates_per_s"] = rate(amn_update, args.seconds)

    res = {k: round(v, 1) for k, v in res.items()}
    meta = dict(game=args.game, amn_games=" ".join(args.games))
    meta.update(num_envs=args.num_envs, batch_size=args.batch_size)
    return report(res, meta, args.json)


def report(
    res: dict[str, float], meta: dict[str, Any], json_path: Path | None
) -> dict[str, float]:
    """Print the run's settings and figures; also as JSON with --json."""
    meta = dict(
        backend=keras.backend.backend(),
        devices=str(keras.distribution.list_devices()),
        **meta,
    )
    for key, value in {**meta, **res}.items():
        print(f"{key:>36}: {value}")
    if json_path:
        json_path.write_text(json.dumps({**meta, **res}, indent=1))
    return res


if __name__ == "__main__":
    main(sys.argv[1:])
