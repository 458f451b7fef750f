"""Tests for examples/atari: frame replay, union actions, smoke runs, resume.

The smoke runs train for a few hundred agent steps on real ALE games, so the
whole file takes about a minute or two on two CPU cores.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ale_py")
pytest.importorskip("gymnasium")

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from examples.atari import actor_mimic, common, dqn, plot  # noqa: E402
from tests.atari_helpers import kill_once_printed, reference_amn_loss  # noqa: E402


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------- replay ----
def _frame(uid: int) -> np.ndarray:
    """A frame that names itself: two id bytes and a nonzero marker row."""
    f = np.zeros(common.FRAME_SHAPE, np.uint8)
    f[0, 0], f[0, 1], f[1, :] = uid % 256, uid // 256, 1
    return f


def _uid(f: np.ndarray) -> int:
    return int(f[0, 0]) + 256 * int(f[0, 1]) if f[1, 0] else -1


def _simulate(replay: common.FrameReplay, lanes: int, steps: int, seed: int):
    """Drive the replay like the env does; return the true transitions.

    Episodes of random length end by termination or truncation. The env's own
    stack pads with zero frames after a reset, which is what the replay must
    reproduce from single frames.
    """
    rng = np.random.default_rng(seed)
    uid = iter(range(1, 60_000))
    stacks = [
        np.zeros((common.STACK, *common.FRAME_SHAPE), np.uint8) for _ in range(lanes)
    ]
    for s in stacks:
        s[-1] = _frame(next(uid))
    replay.start(np.stack([s[-1] for s in stacks]))
    truth = {}
    for _ in range(steps):
        actions = rng.integers(0, 6, lanes)
        rewards = rng.integers(-1, 2, lanes).astype(np.float32)
        done = rng.random(lanes) < 0.15
        terminated = done & (rng.random(lanes) < 0.5)
        finals, nexts = [], []
        for i in range(lanes):
            after = np.concatenate([stacks[i][1:], _frame(next(uid))[None]])
            truth[_uid(stacks[i][-1])] = (
                stacks[i].copy(),
                actions[i],
                rewards[i],
                after.copy(),
                terminated[i],
            )
            finals.append(after[-1])
            if done[i]:  # reset: zero padding plus the first frame
                after = np.zeros_like(after)
                after[-1] = _frame(next(uid))
            stacks[i] = after
            nexts.append(after[-1])
        replay.add(
            actions, rewards, terminated, done, np.stack(nexts), np.stack(finals)
        )
    return truth


@pytest.mark.parametrize("capacity", [40, 1000])  # wrapped around, and not
def test_replay_stacks_match_env_at_episode_boundaries(capacity: int) -> None:
    lanes = 3
    replay = common.FrameReplay(capacity, lanes, seed=0)
    truth = _simulate(replay, lanes, steps=200, seed=1)
    obs, actions, rewards, nxt, terminated = replay.sample(4000)
    seen = set()
    for k in range(len(obs)):
        uid = _uid(obs[k, -1])
        assert uid in truth, "sampled a stack whose newest frame was never an s_t"
        s, a, r, s2, term = truth[uid]
        np.testing.assert_array_equal(obs[k], s)
        np.testing.assert_array_equal(nxt[k], s2)
        assert (actions[k], rewards[k], terminated[k]) == (a, r, term)
        seen.add(uid)
    # Starts of episodes (zero-padded stacks) and ends were both sampled.
    assert any(not obs[k, 0].any() for k in range(len(obs)))
    assert terminated.any() and not terminated.all()
    if capacity == 40:  # the ring wrapped: most transitions are gone
        assert len(seen) < 0.5 * len(truth)
    else:
        assert len(seen) > 0.8 * len(truth)


def test_replay_is_compact() -> None:
    replay = common.FrameReplay(10_000, 4)
    # One 84×84 uint8 frame plus a few bytes, not 2 × 4 stacked frames.
    assert 84 * 84 <= replay.bytes_per_transition < 84 * 84 + 32


# --------------------------------------------------------- union actions ----
def test_union_action_mapping_by_meaning() -> None:
    games = ["Pong", "Breakout", "Boxing"]
    meanings = {g: common.action_meanings(g) for g in games}
    union, index = actor_mimic.union_action_space(meanings)
    assert len(union) == len(set(union)) == 18  # Boxing uses the full set
    for g in games:
        assert [union[i] for i in index[g]] == meanings[g]
    # Boxing's RIGHT is Pong's RIGHT, even though their indices differ.
    pong_right = meanings["Pong"].index("RIGHT")
    boxing_right = meanings["Boxing"].index("RIGHT")
    assert pong_right != boxing_right
    assert index["Pong"][pong_right] == index["Boxing"][boxing_right]
    # The layout does not depend on the order the games are listed in.
    flipped, _ = actor_mimic.union_action_space(dict(reversed(meanings.items())))
    assert flipped == union
    small, idx = actor_mimic.union_action_space({g: meanings[g] for g in games[:2]})
    assert small == ["NOOP", "FIRE", "RIGHT", "LEFT", "RIGHTFIRE", "LEFTFIRE"]
    assert list(idx["Breakout"]) == [0, 1, 2, 3]


# ------------------------------------------------- fused learner losses ----
def _frames(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, common.STACK, *common.FRAME_SHAPE), dtype=np.uint8)


@pytest.mark.parametrize("loss", ["xe", "cc"])
def test_amn_learner_loss_matches_reference(loss: str) -> None:
    """Gathered student logits vs softmax(Q_expert / T), as the paper defines."""
    import keras

    student, expert = common.nature_cnn(6, name="s"), common.nature_cnn(4, name="e")
    own = np.array([0, 1, 3, 2])  # a game whose action order differs
    temperature = 0.5
    amn = actor_mimic.amn_learner(student, expert, own, temperature, loss, "G")
    amn.compile(optimizer=keras.optimizers.Adam(1e-3), loss=amn.loss_fn)
    x = _frames(8, 0)
    z = np.asarray(student.predict_on_batch(x), np.float64)[:, own] / temperature
    q = np.asarray(expert.predict_on_batch(x), np.float64) / temperature
    expected = reference_amn_loss(z, q, loss)
    dummy = np.zeros((8, 1), np.float32)
    got = float(np.asarray(amn.test_on_batch(x, dummy)))
    np.testing.assert_allclose(got, expected, rtol=2e-4, atol=2e-4)
    # A step moves the student and leaves the frozen expert alone.
    before_e = [np.array(w) for w in expert.get_weights()]
    before_s = [np.array(w) for w in student.get_weights()]
    amn.train_on_batch(x, dummy)
    for a, b in zip(before_e, expert.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(
        not np.array_equal(a, b)
        for a, b in zip(before_s, student.get_weights(), strict=True)
    )


def test_dqn_learner_loss_matches_reference() -> None:
    import keras

    q_net, target = common.nature_cnn(4, name="q"), common.nature_cnn(4, name="t")
    learner = dqn.dqn_learner(q_net, target, gamma=0.9)
    learner.compile(optimizer=keras.optimizers.Adam(1e-3), loss=learner.loss_fn)
    # Big enough Q-values that some TD errors fall on each side of Huber's δ.
    target.set_weights([w * 3.0 for w in q_net.get_weights()])
    x, x2 = _frames(16, 1), _frames(16, 2)
    rng = np.random.default_rng(3)
    a = rng.integers(0, 4, 16)
    r = rng.integers(-1, 2, 16).astype(np.float64)
    term = rng.random(16) < 0.5
    q = np.asarray(q_net.predict_on_batch(x), np.float64)
    q2 = np.asarray(target.predict_on_batch(x2), np.float64).max(1)
    err = np.abs(r + 0.9 * (1 - term) * q2 - q[np.arange(16), a])
    expected = np.where(err <= 1, 0.5 * err**2, err - 0.5).mean()
    y = np.stack([a, r, term], 1).astype(np.float32)
    got = float(np.asarray(learner.test_on_batch([x, x2], y)))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


# -------------------------------------------------------------- CLI input ----
@pytest.mark.parametrize(
    "argv, message",
    [
        (["--games", "Pongg", "--fresh-experts"], "unknown Atari game"),
        (["--games", "pong", "--fresh-experts"], "CamelCase"),
        (["--loss", "mse", "--fresh-experts"], "argument --loss: invalid choice"),
        (["--experts-dir", "/nonexistent"], "no expert checkpoint"),
        (["--games", "Pong", "Pong", "--fresh-experts"], "twice"),
        (["--batch-size", "0", "--fresh-experts"], "--batch-size must be >= 1"),
    ],
)
def test_bad_cli_input_is_a_clear_error(argv, message, capsys) -> None:
    with pytest.raises(SystemExit):
        actor_mimic.main(argv)
    assert message in capsys.readouterr().err


# ------------------------------------------------------------ smoke runs ----
def test_progress_values_print_n_a_instead_of_nan() -> None:
    assert common.format_stat(float("nan"), "8.2f") == "     n/a"
    assert common.format_stat(1.5, "8.2f") == "    1.50"
    assert common.format_stat(float("nan"), ".4f") == "n/a"
    assert common.format_stat(-0.25, ".1f") == "-0.2"


def test_dqn_smoke_on_pong(tmp_path: Path, capsys) -> None:
    argv = ["--preset", "smoke", "--game", "Pong", "--run-dir", str(tmp_path)]
    state = dqn.main(argv)
    progress = [
        line for line in capsys.readouterr().out.splitlines() if " step " in line
    ]
    # The first line comes before any episode has ended: no "return nan".
    assert progress and "return      n/a" in progress[0]
    assert not any("nan" in line for line in progress), progress
    assert state["step"] == 256 and state["updates"] > 0
    assert state["nonfinite_losses"] == 0
    evals = rows(tmp_path / "eval.csv")
    assert [int(r["step"]) for r in evals] == [128, 256]
    # Episodes last 50 agent steps in the smoke preset, so evaluation ends some.
    assert all(int(r["eval_episodes"]) > 0 for r in evals)
    train = rows(tmp_path / "train.csv")
    assert all(np.isfinite(float(r["loss"])) for r in train[1:])
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        assert not (tmp_path / "tb").exists()
    else:
        assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    # The expert loads back for actor-mimic with the same weights.
    expert = common.load_q_network(tmp_path, "Pong")
    assert expert.output.shape[-1] == 6
    # Rerunning the finished run says so and changes nothing.
    before = (tmp_path / "eval.csv").read_text(), (tmp_path / "train.csv").read_text()
    rerun = dqn.main(argv)
    counters = ("step", "updates", "episodes", "nonfinite_losses")
    assert {k: rerun[k] for k in counters} == {k: state[k] for k in counters}
    out = capsys.readouterr().out
    assert "already finished (256 of 256 steps" in out and "resumed" not in out
    after = (tmp_path / "eval.csv").read_text(), (tmp_path / "train.csv").read_text()
    assert after == before


@pytest.mark.parametrize("loss", ["xe", "cc"])
def test_actor_mimic_smoke_two_games(tmp_path: Path, loss: str) -> None:
    argv = ["--preset", "smoke", "--games", "Pong", "Breakout", "--fresh-experts"]
    state = actor_mimic.main([*argv, "--loss", loss, "--run-dir", str(tmp_path)])
    assert state["updates"] > 0
    assert state["nonfinite_losses"] == {"Pong": 0, "Breakout": 0}
    evals = rows(tmp_path / "eval.csv")
    assert {(r["game"], int(r["step"])) for r in evals} == {
        (g, s) for g in ("Pong", "Breakout") for s in (96, 192)
    }
    assert {r["algo"] for r in evals} == {"cc-amn" if loss == "cc" else "amn"}
    train = [r for r in rows(tmp_path / "train.csv") if r["loss"] != "nan"]
    assert train and all(np.isfinite(float(r["loss"])) for r in train)
    if loss == "xe":  # cross-entropy is >= 0; the CC NLL (a density) need not be
        assert all(float(r["loss"]) >= 0 for r in train)
    out = tmp_path / "curves.png"
    plot.main([str(tmp_path), "--out", str(out)])
    assert out.stat().st_size > 10_000


def test_actor_mimic_continues_from_checkpoint(tmp_path: Path, capsys) -> None:
    argv = ["--preset", "smoke", "--games", "Pong", "--fresh-experts"]
    argv += ["--loss", "cc", "--run-dir", str(tmp_path)]
    first = actor_mimic.main([*argv, "--total-steps", "96"])
    second = actor_mimic.main([*argv, "--total-steps", "192"])
    out = capsys.readouterr().out
    assert "resumed Pong at step 96" in out
    assert not any(" nan" in line for line in out.splitlines() if " ret " in line)
    # A third call with the same budget has nothing left to do, and says so.
    third = actor_mimic.main([*argv, "--total-steps", "192"])
    counters = ("step", "updates", "episodes", "nonfinite_losses")
    assert {k: third[k] for k in counters} == {k: second[k] for k in counters}
    assert "Pong: already finished (192 of 192 steps" in capsys.readouterr().out
    # Counters carry over rather than restarting from zero.
    assert first["step"] == 96 and second["step"] == 192
    assert second["updates"] == first["updates"] + 96 // 4
    steps = [int(r["step"]) for r in rows(tmp_path / "eval.csv")]
    assert steps == [96, 192]
    # Adam's state was restored, not rebuilt: its step count is the total.
    with np.load(tmp_path / "checkpoint.npz") as ckpt:
        assert int(ckpt["optimizer/0"]) == second["updates"]


# ------------------------------------------------------- kill and resume ----
def test_killed_dqn_run_resumes_without_losing_rows(tmp_path: Path) -> None:
    """SIGKILL a run after its first checkpoints; the rerun completes the log."""
    cmd = [sys.executable, "-m", "examples.atari.dqn", "--preset", "smoke"]
    cmd += ["--total-steps", "512", "--eval-every", "128", "--eval-steps", "64"]
    cmd += ["--run-dir", str(tmp_path)]
    # Killed right after the second evaluation (and its checkpoint).
    kill_once_printed(cmd, REPO, "eval at 256", timeout=120)
    killed_at = [int(r["step"]) for r in rows(tmp_path / "eval.csv")]
    assert killed_at and max(killed_at) < 512, "the run was not killed mid-way"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(
        cmd, cwd=REPO, env=env, capture_output=True, text=True, check=True
    )
    assert "resumed Pong at step" in done.stdout
    evals = [int(r["step"]) for r in rows(tmp_path / "eval.csv")]
    assert evals == list(range(128, 513, 128))  # each evaluation exactly once
    train = [int(r["step"]) for r in rows(tmp_path / "train.csv")]
    assert train == list(range(64, 513, 64))
    assert all(r["nonfinite_losses"] == "0" for r in rows(tmp_path / "train.csv"))


# ---------------------------------------------------------- JAX backend ----
@pytest.mark.slow
def test_both_scripts_run_on_jax_backend(tmp_path: Path) -> None:
    """One subprocess (imports are slow) runs a DQN and a CC-AMN smoke on JAX."""
    pytest.importorskip("jax")
    code = (
        "import sys; from examples.atari import dqn, actor_mimic; "
        "dqn.main(['--preset', 'smoke', '--total-steps', '128', "
        "'--run-dir', sys.argv[2] + '/dqn']); "
        "actor_mimic.main(['--preset', 'smoke', '--total-steps', '96', "
        "'--games', 'Pong', 'Breakout', '--fresh-experts', '--loss', 'cc', "
        "'--run-dir', sys.argv[2] + '/amn'])"
    )
    cmd = [sys.executable, "-c", code, "-", str(tmp_path)]
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("backend=jax") == 2
    for run in ("dqn", "amn"):
        train = rows(tmp_path / run / "train.csv")
        assert train and all(r["nonfinite_losses"] == "0" for r in train)
        assert rows(tmp_path / run / "eval.csv")
