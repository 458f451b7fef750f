"""Throughput of the MinAtar family of the actor-mimic example, one run.

    python -m benchmarks.minatar_throughput --seconds 5
    KERAS_BACKEND=jax python -m benchmarks.minatar_throughput --json out.json

Pin it to one core with one thread to get the figures of the study's runs:
``taskset -c 1`` with ``XLA_FLAGS="--xla_cpu_multi_thread_eigen=false
intra_op_parallelism_threads=1"`` (JAX) or ``TF_NUM_INTRAOP_THREADS=1``.

Reports, for --game (default Breakout):
  * environment frames/s: the vector env with 1 and --num-envs games (random
    actions; MinAtar is pure Python, one frame per agent step);
  * acting: Q-network forward passes for --num-envs observations, obs/s;
  * DQN updates/s at batch 32: replay sample plus the compiled update
    (``common.compiled_train_step``), and the same update through Keras'
    ``train_on_batch``, whose ratio is what compiling the step buys;
  * AMN updates/s with each loss (replay sample, compiled update: expert and
    student forward, gathered union head over the five games, loss, Adam);
  * replay bytes per transition.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np

from benchmarks import atari_throughput
from examples.atari import actor_mimic, common, dqn, minatar_env

# The ALE benchmark's timer, with two more warm-up calls: the MinAtar steps
# compile more variants (one per batch shape) before the clock starts.
rate = functools.partial(atari_throughput.rate, warmup=5)


def env_frames(game: str, num_envs: int, seconds: float) -> float:
    env = minatar_env.MinAtarVectorEnv(game, num_envs, seed=0)
    rng = np.random.default_rng(0)

    def step() -> int:
        env.step(rng.integers(0, env.num_actions, num_envs))
        return num_envs

    return rate(step, seconds)


def filled_replay(game: str, size: int, num_envs: int) -> common.TransitionReplay:
    env = minatar_env.MinAtarVectorEnv(game, num_envs, seed=0)
    replay = common.TransitionReplay(
        size, num_envs, env.single_observation_shape, seed=0
    )
    obs, _ = env.reset(seed=0)
    replay.start(obs)
    rng = np.random.default_rng(0)
    while len(replay) < size:
        actions = rng.integers(0, env.num_actions, num_envs)
        nxt, rewards, term, trunc, info = env.step(actions)
        replay.add(actions, rewards, term, term | trunc, nxt, info.get("final_obs"))
    return replay


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--game", default="Breakout")
    parser.add_argument("--num-envs", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--replay-size", type=int, default=10_000)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.num_envs < 1 or args.seconds <= 0 or args.batch_size < 1:
        parser.error("--num-envs, --seconds and --batch-size must be positive")
    try:
        minatar_env.check_game(args.game)
    except ValueError as err:
        parser.error(f"--game: {err}")

    game, batch = args.game, args.batch_size
    res: dict[str, float] = {}
    res["env_1_frames_per_s"] = env_frames(game, 1, args.seconds)
    res[f"env_{args.num_envs}_frames_per_s"] = env_frames(
        game, args.num_envs, args.seconds
    )
    replay = filled_replay(game, args.replay_size, args.num_envs)
    res["replay_bytes_per_transition"] = replay.bytes_per_transition
    res["replay_sample_batches_per_s"] = rate(
        lambda: (replay.sample(batch), 1)[1], args.seconds
    )

    num_actions = len(minatar_env.action_meanings(game))
    cfg = dqn.DQNConfig(optimizer="rmsprop", learning_rate=2.5e-4)

    def dqn_update_fn(compiled: bool) -> Callable[[], int]:
        q = common.FAMILIES["minatar"].q_network(game, num_actions, "q")
        target = common.FAMILIES["minatar"].q_network(game, num_actions, "target")
        learner = dqn.dqn_learner(q, target, 0.99)
        optimizer = dqn.make_optimizer(cfg)
        learner.compile(optimizer=optimizer, loss=learner.loss_fn)
        step = common.compiled_train_step(learner, optimizer) if compiled else None

        def update() -> int:
            b_obs, b_act, b_rew, b_next, b_term = replay.sample(batch)
            y = np.stack([b_act, b_rew, b_term], axis=1).astype(np.float32)
            if step is not None:
                step([b_obs, b_next], y)
            else:
                learner.train_on_batch([b_obs, b_next], y)
            return 1

        return update

    res["dqn_updates_per_s"] = rate(dqn_update_fn(True), args.seconds)
    res["dqn_train_on_batch_updates_per_s"] = rate(dqn_update_fn(False), args.seconds)
    res["compiled_over_train_on_batch"] = (
        res["dqn_updates_per_s"] / res["dqn_train_on_batch_updates_per_s"]
    )
    q_net = common.FAMILIES["minatar"].q_network(game, num_actions, "actor")
    obs = replay.sample(args.num_envs)[0]
    res[f"act_forward_{args.num_envs}_obs_per_s"] = args.num_envs * rate(
        lambda: (q_net.predict_on_batch(obs), 1)[1], args.seconds
    )

    # The student of the all-five study: 10 input channels, 6 union actions.
    meanings = {g: minatar_env.action_meanings(g) for g in minatar_env.GAMES}
    union, index = actor_mimic.union_action_space(meanings)
    expert = common.FAMILIES["minatar"].q_network(game, num_actions, "expert")
    dummy = np.zeros((batch, 1), np.float32)
    for loss in actor_mimic.LOSSES:
        student = common.FAMILIES["minatar"].student_network(
            list(minatar_env.GAMES), len(union), f"student_{loss}"
        )
        amn = actor_mimic.amn_learner(student, expert, index[game], 1.0, loss, game)
        optimizer = keras.optimizers.Adam(1e-4)
        step = common.compiled_train_step(amn, optimizer)

        def amn_update(step: Callable = step) -> int:
            step(replay.sample(batch)[0], dummy)
            return 1

        res[f"amn_{loss}_updates_per_s"] = rate(amn_update, args.seconds)

    res = {k: round(v, 2 if "over" in k else 1) for k, v in res.items()}
    meta = dict(
        game=game,
        num_envs=args.num_envs,
        batch_size=batch,
        cpu_affinity=str(sorted(os.sched_getaffinity(0))),
        load_average=" ".join(f"{x:.1f}" for x in os.getloadavg()),
    )
    return atari_throughput.report(res, meta, args.json)


if __name__ == "__main__":
    main(sys.argv[1:])
