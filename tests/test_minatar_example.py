"""Tests for the MinAtar family of examples/atari: env, replay, union actions,
the compiled update, smoke runs of the expert and both student losses, and
kill-and-resume. Each smoke run takes seconds on two CPU cores.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("minatar")
pytest.importorskip("ale_py")  # common.py imports it for the Atari family

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from examples.atari import (  # noqa: E402
    actor_mimic,
    common,
    dqn,
    minatar_env,
    minatar_study,
)
from tests.atari_helpers import kill_once_printed, reference_amn_loss  # noqa: E402

GAMES = list(minatar_env.GAMES)


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


# --------------------------------------------------------- union actions ----
def test_union_of_the_five_minimal_action_sets() -> None:
    # MinAtar's action letters are n, l, u, r, d, f (its Env.action_map);
    # the minimal sets below are read from each game's own
    # minimal_action_set(), written out by hand as the reference.
    expected = {
        "Asterix": ["NOOP", "LEFT", "UP", "RIGHT", "DOWN"],
        "Breakout": ["NOOP", "LEFT", "RIGHT"],
        "Freeway": ["NOOP", "UP", "DOWN"],
        "Seaquest": ["NOOP", "LEFT", "UP", "RIGHT", "DOWN", "FIRE"],
        "SpaceInvaders": ["NOOP", "LEFT", "RIGHT", "FIRE"],
    }
    meanings = {g: minatar_env.action_meanings(g) for g in GAMES}
    assert meanings == expected
    union, index = actor_mimic.union_action_space(meanings)
    # ALE's full-action-set order: NOOP, FIRE, UP, RIGHT, LEFT, DOWN, ...
    assert union == ["NOOP", "FIRE", "UP", "RIGHT", "LEFT", "DOWN"]
    for g in GAMES:
        assert [union[i] for i in index[g]] == expected[g]
    # Breakout's RIGHT (its action 2) is Seaquest's RIGHT (its action 3).
    assert index["Breakout"][2] == index["Seaquest"][3] == union.index("RIGHT")
    # Two games alone give the union of just those two.
    small, idx = actor_mimic.union_action_space(
        {g: meanings[g] for g in ("Breakout", "Freeway")}
    )
    assert small == ["NOOP", "UP", "RIGHT", "LEFT", "DOWN"]
    assert list(idx["Freeway"]) == [0, 1, 4]


# ------------------------------------------------------------ vector env ----
@pytest.mark.parametrize("game", ["Breakout", "Freeway"])
def test_vector_env_matches_minatar_stepped_directly(game: str) -> None:
    """Same seed and actions: the same states, rewards and episode ends as
    minatar.Environment itself (with its minimal-set action indices)."""
    from minatar import Environment

    vec = minatar_env.MinAtarVectorEnv(game, 2, seed=7)
    direct = Environment(minatar_env.GAMES[game])
    direct.seed(7)  # lane 0 of the vector env is seeded with seed + 0
    direct.reset()
    minimal = direct.minimal_action_set()
    rng = np.random.default_rng(0)
    obs, _ = vec.reset(seed=7)
    np.testing.assert_array_equal(obs[0], direct.state())
    ends = 0
    for _ in range(3000):  # Freeway ends after 2500 frames: one episode end
        a = rng.integers(0, vec.num_actions, 2)
        obs, reward, terminated, truncated, info = vec.step(a)
        r, term = direct.act(minimal[a[0]])
        assert (reward[0], terminated[0]) == (r, term)
        assert not truncated.any()
        if term:
            ends += 1
            np.testing.assert_array_equal(info["final_obs"][0], direct.state())
            direct.reset()
        np.testing.assert_array_equal(obs[0], direct.state())
        assert obs.dtype == np.uint8 and obs.shape[1:] == (10, 10, vec_channels(game))
    assert ends > 0


def vec_channels(game: str) -> int:
    return minatar_env.CHANNELS[game]


def test_vector_env_truncates_at_the_frame_cap() -> None:
    vec = minatar_env.MinAtarVectorEnv("Freeway", 1, max_episode_frames=5, seed=0)
    for t in range(1, 11):
        _, _, terminated, truncated, info = vec.step(np.zeros(1, np.int64))
        assert not terminated[0]
        assert truncated[0] == (t % 5 == 0)
        assert ("final_obs" in info) == (t % 5 == 0)


def test_bad_game_names_are_clear_errors(capsys) -> None:
    with pytest.raises(ValueError, match="unknown MinAtar game 'Pong'"):
        minatar_env.check_game("Pong")
    with pytest.raises(SystemExit):
        dqn.main(["--preset", "minatar_smoke", "--game", "Pong"])
    assert "unknown MinAtar game" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        dqn.main(["--preset", "minatar_smoke", "--family", "nes"])
    assert "argument --family: invalid choice" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        minatar_study.main(["students", "--games", "Pong"])
    assert "unknown MinAtar game" in capsys.readouterr().err


# ---------------------------------------------------------------- replay ----
def test_transition_replay_keeps_true_next_states() -> None:
    """Driven like the training loop: sampled (s, a, r, s', term) are exactly
    the env's, with the final observation as s' when an episode ends."""
    env = minatar_env.MinAtarVectorEnv("Breakout", 3, max_episode_frames=20, seed=1)
    replay = common.TransitionReplay(200, 3, env.single_observation_shape, 0)
    obs, _ = env.reset(seed=1)
    replay.start(obs)
    rng = np.random.default_rng(2)
    truth = []
    for _ in range(150):  # wraps the 67-slot lanes twice
        a = rng.integers(0, env.num_actions, 3)
        nxt, r, term, trunc, info = env.step(a)
        done = term | trunc
        final = info.get("final_obs")
        replay.add(a, r, term, done, nxt, final)
        for i in range(3):
            landed = final[i] if done[i] else nxt[i]
            truth.append((obs[i].tobytes(), a[i], r[i], landed.tobytes(), term[i]))
        obs = nxt
    kept = set(truth[-3 * replay.cap :])
    s, a, r, s2, term = replay.sample(500)
    for k in range(500):
        item = (s[k].tobytes(), a[k], r[k], s2[k].tobytes(), term[k])
        assert item in kept
    assert term.any() and len(replay) == 3 * replay.cap


# -------------------------------------------------------- compiled update ----
def test_compiled_step_equals_keras_train_on_batch() -> None:
    """The fused XLA update does what Keras' own trainer does: same loss and
    the same weights after three steps of centered RMSprop."""
    import keras

    def learner_pair():
        q = minatar_env.minatar_cnn(3, 4, name="q")
        t = minatar_env.minatar_cnn(3, 4, name="t")
        return q, t, dqn.dqn_learner(q, t, gamma=0.99)

    keras.utils.set_random_seed(0)
    q1, t1, ours = learner_pair()
    q2, t2, ref = learner_pair()
    q2.set_weights(q1.get_weights())
    t1.set_weights([3 * w for w in q1.get_weights()])
    t2.set_weights(t1.get_weights())
    cfg = dqn.DQNConfig(optimizer="rmsprop", learning_rate=1e-3)
    opt1, opt2 = dqn.make_optimizer(cfg), dqn.make_optimizer(cfg)
    ours.compile(optimizer=opt1, loss=ours.loss_fn)
    ref.compile(optimizer=opt2, loss=ref.loss_fn)
    step = dqn.compiled_train_step(ours, opt1)
    rng = np.random.default_rng(1)
    for _ in range(3):
        x = rng.integers(0, 2, (16, 10, 10, 4)).astype(np.uint8)
        x2 = rng.integers(0, 2, (16, 10, 10, 4)).astype(np.uint8)
        y = np.stack(
            [rng.integers(0, 3, 16), rng.integers(-1, 2, 16), rng.random(16) < 0.3],
            axis=1,
        ).astype(np.float32)
        got = step([x, x2], y)
        want = float(np.asarray(ref.train_on_batch([x, x2], y)))
        np.testing.assert_allclose(got, want, rtol=1e-5)
    for a, b in zip(q1.get_weights(), q2.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    for a, b in zip(t1.get_weights(), t2.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)  # the target network is frozen
    assert any(
        not np.allclose(a, 3 * b)
        for a, b in zip(q1.get_weights(), t1.get_weights(), strict=True)
    )


def test_centered_rmsprop_is_torchs_formula() -> None:
    """torch.optim.RMSprop(centered=True): ε outside the root (written out in
    NumPy from PyTorch's documented update), unlike keras.optimizers.RMSprop."""
    import keras

    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(4, 3)).astype(np.float32)
    grads = [1e-3 * rng.normal(size=(4, 3)).astype(np.float32) for _ in range(4)]
    var = keras.Variable(w0)
    opt = dqn.CenteredRMSprop(2.5e-4, rho=0.95, epsilon=0.01)
    w, sq, mean = w0.astype(np.float64), np.zeros((4, 3)), np.zeros((4, 3))
    for g in grads:
        opt.apply([keras.ops.convert_to_tensor(g)], [var])
        sq = 0.95 * sq + 0.05 * g.astype(np.float64) ** 2
        mean = 0.95 * mean + 0.05 * g
        w = w - 2.5e-4 * g / (np.sqrt(sq - mean**2) + 0.01)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(var), w, rtol=1e-5)
    # Keras' own RMSprop (ε inside the root) moves ~10x less at these scales.
    keras_var = keras.Variable(w0)
    keras_opt = keras.optimizers.RMSprop(2.5e-4, rho=0.95, epsilon=0.01, centered=True)
    for g in grads:
        keras_opt.apply([keras.ops.convert_to_tensor(g)], [keras_var])
    ours_moved = np.abs(keras.ops.convert_to_numpy(var) - w0).mean()
    keras_moved = np.abs(keras.ops.convert_to_numpy(keras_var) - w0).mean()
    assert ours_moved > 5 * keras_moved


# ------------------------------------------------------------ smoke runs ----
def test_dqn_smoke_on_minatar(tmp_path: Path) -> None:
    state = dqn.main(["--preset", "minatar_smoke", "--run-dir", str(tmp_path)])
    assert state["step"] == 512 and state["nonfinite_losses"] == 0
    # One update per frame once learning starts at 64.
    assert state["updates"] == 512 - 64 + 1
    evals = rows(tmp_path / "eval.csv")
    assert [int(r["step"]) for r in evals] == [256, 512]
    assert all(int(r["eval_episodes"]) > 0 for r in evals)
    train = rows(tmp_path / "train.csv")
    assert [int(r["frames"]) for r in train] == [128, 256, 384, 512]
    # The committed form of an expert (expert.npz) equals the checkpoint's.
    a = common.load_q_network(tmp_path, "Breakout", "minatar")
    (tmp_path / "checkpoint.npz").rename(tmp_path / "moved.npz")
    b = common.load_q_network(tmp_path, "Breakout", "minatar")
    x = np.random.default_rng(0).integers(0, 2, (5, 10, 10, 4)).astype(np.uint8)
    np.testing.assert_array_equal(a.predict_on_batch(x), b.predict_on_batch(x))
    assert a.output.shape[-1] == 3  # Breakout's minimal action set


@pytest.mark.parametrize("loss", ["xe", "cc"])
def test_actor_mimic_smoke_on_minatar(tmp_path: Path, loss: str) -> None:
    """Breakout (4 channels) and Freeway (7): the student pads to 7."""
    argv = ["--preset", "minatar_smoke", "--games", "Breakout", "Freeway"]
    argv += ["--fresh-experts", "--loss", loss, "--run-dir", str(tmp_path)]
    state = actor_mimic.main(argv)
    assert state["updates"] > 0
    assert state["nonfinite_losses"] == {"Breakout": 0, "Freeway": 0}
    evals = rows(tmp_path / "eval.csv")
    assert {(r["game"], int(r["step"])) for r in evals} == {
        (g, s) for g in ("Breakout", "Freeway") for s in (96, 192)
    }
    with np.load(tmp_path / "checkpoint.npz") as ckpt:
        assert ckpt["student/0"].shape == (3, 3, 7, 16)  # conv kernel, 7 channels
        assert ckpt["student/4"].shape == (128, 5)  # union of the two games


@pytest.mark.parametrize("loss", ["xe", "cc"])
def test_amn_learner_pads_channels_and_matches_reference(loss: str) -> None:
    """Freeway's view of a student that also plays Seaquest (10 channels)."""
    student = minatar_env.minatar_cnn(6, 10, name="s")
    expert = minatar_env.minatar_cnn(3, 7, name="e")
    own = np.array([0, 2, 5])  # NOOP, UP, DOWN in the union layout
    amn = actor_mimic.amn_learner(student, expert, own, 0.5, loss, "Freeway")
    x = np.random.default_rng(0).integers(0, 2, (8, 10, 10, 7)).astype(np.uint8)
    padded = np.concatenate([x, np.zeros((8, 10, 10, 3), np.uint8)], axis=-1)
    z = np.asarray(student.predict_on_batch(padded), np.float64)[:, own] / 0.5
    np.testing.assert_allclose(amn.actor.predict_on_batch(x), z * 0.5, rtol=1e-5)
    q = np.asarray(expert.predict_on_batch(x), np.float64) / 0.5
    expected = reference_amn_loss(z, q, loss)
    pred = amn.predict_on_batch(x)
    got = float(np.asarray(amn.loss_fn(None, pred)))
    np.testing.assert_allclose(got, expected, rtol=2e-4, atol=2e-4)


def _freeway_cc_learner(scale: str, rows: int, seed: int):
    """A CC-AMN learner on Freeway (K = 3) with `--cc-logit-scale scale`, and
    on a random batch: the student's logits z, the expert's Q-values and the
    learner's loss."""
    student = minatar_env.minatar_cnn(3, 7, name="s")
    expert = minatar_env.minatar_cnn(3, 7, name="e")
    own = np.array([0, 1, 2])
    amn = actor_mimic.amn_learner(student, expert, own, 1.0, "cc", "Freeway", scale)
    x = np.random.default_rng(seed).integers(0, 2, (rows, 10, 10, 7)).astype(np.uint8)
    z = np.asarray(student.predict_on_batch(x), np.float64)
    q = np.asarray(expert.predict_on_batch(x), np.float64)
    loss = float(np.asarray(amn.loss_fn(None, amn.predict_on_batch(x))))
    return amn, x, z, q, loss


def test_amn_learner_scales_the_cc_logits_by_k_plus_1() -> None:
    """`--cc-logit-scale K+1`: Freeway's CC loss sees 4·z (K = 3)."""
    amn, x, z, q, got = _freeway_cc_learner("K+1", rows=8, seed=1)
    np.testing.assert_allclose(got, reference_amn_loss(4 * z, q, "cc"), rtol=2e-4)
    # The policy is the raw logits' argmax: the scale does not touch it.
    np.testing.assert_allclose(amn.actor.predict_on_batch(x), z, rtol=1e-5)


def test_amn_learner_with_the_mean_parameterization() -> None:
    """`--cc-logit-scale mean`: the CC whose mean is the student's softmax.

    The loss is the CC NLL of the target at the natural parameters eta with
    mean(eta) = softmax(z); eta's mean is checked against mpmath, and the
    NLL is mpmath's at that eta.
    """
    from keras_cc.ops import cc_natural_from_mean_logits
    from tests.reference import divided_difference as dd

    _, _, z, q, got = _freeway_cc_learner("mean", rows=6, seed=2)
    eta = np.asarray(cc_natural_from_mean_logits(z), np.float64)
    softmax = np.exp(z - z.max(1, keepdims=True))
    softmax /= softmax.sum(1, keepdims=True)
    for row in range(len(z)):
        np.testing.assert_allclose(dd.mean(eta[row]), softmax[row], rtol=1e-4)
    y = np.exp(q - q.max(1, keepdims=True))
    y /= y.sum(1, keepdims=True)
    want = np.mean([dd.nll(y[r], eta[r]) for r in range(len(z))])
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-5)
    assert actor_mimic.parse_logit_scale("Mean") == "mean"


@pytest.mark.parametrize("k", [3, 6])
def test_cc_with_logit_scale_k_plus_1_steps_like_cross_entropy_near_uniform(
    k: int,
) -> None:
    """Near uniform targets the gradient of the CC loss at s·z, s = K + 1, is
    K + 1 times cross-entropy's (which Adam's normalisation cancels), so both
    losses stop at the same logits; at s = 1 the CC still pulls hard at
    cross-entropy's optimum (its own lies K + 1 times further out)."""
    from keras_cc.ops import cc_mean

    rng = np.random.default_rng(k)
    y = 1 / k + 0.01 * rng.standard_normal((16, k))
    y /= y.sum(1, keepdims=True)

    def cc_grad(z: np.ndarray, scale: float) -> np.ndarray:
        # d/dz [log C(s z) - s z·y] = s (E_CC(s z)[x] - y)
        mean = np.asarray(cc_mean((scale * z).astype(np.float32)), np.float64)
        return scale * (mean - y)

    def xe_grad(z: np.ndarray) -> np.ndarray:
        return np.exp(z) / np.exp(z).sum(1, keepdims=True) - y

    def size(g: np.ndarray) -> float:
        return float(np.abs(g).max())

    s = actor_mimic.cc_logit_scale("K+1", k)
    assert s == k + 1
    z = 0.01 * rng.standard_normal((16, k))
    assert size(cc_grad(z, s) - s * xe_grad(z)) < 0.05 * size(s * xe_grad(z))
    xe_optimum = np.log(y) - np.log(y).mean(1, keepdims=True)
    start = np.zeros_like(y)
    assert size(xe_grad(xe_optimum)) < 1e-9 * size(xe_grad(start))
    assert size(cc_grad(xe_optimum, s)) < 0.05 * size(cc_grad(start, s))
    assert size(cc_grad(xe_optimum, 1.0)) > 0.5 * size(cc_grad(start, 1.0))


def test_cc_logit_scale_flag_rejects_bad_values() -> None:
    assert actor_mimic.parse_logit_scale("k+1") == "K+1"
    assert actor_mimic.cc_logit_scale("2.5", 6) == 2.5
    for bad in ("0", "-1", "nan", "inf", "K+2"):
        with pytest.raises(ValueError, match="--cc-logit-scale"):
            actor_mimic.parse_logit_scale(bad)
    cfg = actor_mimic.AMNConfig(loss="xe", cc_logit_scale="3", fresh_experts=True)
    assert any("applies to --loss cc only" in p for p in actor_mimic.amn_checks(cfg))


# ------------------------------------------------------- kill and resume ----
def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        cmd, cwd=REPO, env=env, capture_output=True, text=True, check=True, **kw
    )


def test_killed_minatar_expert_resumes_exactly(tmp_path: Path) -> None:
    """SIGKILL mid-run; the resumed run restores replay and environments, and
    its log equals that of a run that was never interrupted."""
    base = [sys.executable, "-m", "examples.atari.dqn", "--preset", "minatar_smoke"]
    base += ["--total-steps", "768"]
    _run([*base, "--run-dir", str(tmp_path / "whole")], timeout=900)

    cmd = [*base, "--run-dir", str(tmp_path / "killed")]
    # The checkpoint at 384 follows this line; 900 s is generous because CI
    # machines can be saturated.
    reached = kill_once_printed(cmd, REPO, "step       384", timeout=900)
    assert reached, "the run did not reach step 384 before the deadline"
    evals = rows(tmp_path / "killed" / "eval.csv")
    assert [int(r["step"]) for r in evals] == [256]
    done = _run(cmd, timeout=900)
    assert "replay and environments restored" in done.stdout
    whole = rows(tmp_path / "whole" / "train.csv")
    resumed = rows(tmp_path / "killed" / "train.csv")
    assert [r["step"] for r in resumed] == [r["step"] for r in whole]
    for a, b in zip(whole, resumed, strict=True):
        for key in ("episode_return", "episodes", "updates", "epsilon"):
            assert a[key] == b[key], (key, a, b)
        np.testing.assert_allclose(float(a["loss"]), float(b["loss"]), rtol=1e-4)
    evals_whole = rows(tmp_path / "whole" / "eval.csv")
    assert rows(tmp_path / "killed" / "eval.csv") == evals_whole


def test_resume_without_the_local_replay_refills_it(tmp_path: Path) -> None:
    """A fresh clone has the committed checkpoint but not replay.npz."""
    argv = ["--preset", "minatar_smoke", "--run-dir", str(tmp_path)]
    first = dqn.main([*argv, "--total-steps", "256"])
    (tmp_path / "replay.npz").unlink()
    second = dqn.main([*argv, "--total-steps", "512"])
    assert first["step"] == 256 and second["step"] == 512
    assert second["updates"] == first["updates"] + 256
    assert [int(r["step"]) for r in rows(tmp_path / "eval.csv")] == [256, 512]


def test_module_help_runs_from_the_repository_root() -> None:
    """`python -m examples.atari.<module> --help` from the repository root:
    each module run as ``__main__`` (as ``-m`` does), in one fresh
    interpreter, so TensorFlow is imported once rather than three times."""
    modules = ("dqn", "actor_mimic", "minatar_study")
    code = (
        "import runpy, sys\n"
        f"for module in {modules!r}:\n"
        "    sys.argv = [module, '--help']\n"
        "    print('== ' + module, flush=True)\n"
        "    try:\n"
        "        runpy.run_module('examples.atari.' + module, run_name='__main__')\n"
        "    except SystemExit as exit:\n"
        "        assert exit.code in (0, None), (module, exit.code)\n"
    )
    done = _run([sys.executable, "-c", code])
    parts = done.stdout.split("== ")[1:]
    assert [p.split("\n", 1)[0] for p in parts] == list(modules)
    assert all("usage" in p for p in parts)


# -------------------------------------------------------- the study runner ----
SAMPLED_RUNS = (
    {"games": ["Breakout"], "loss": "xe", "temperature": 1.0},
    {"games": ["Breakout"], "loss": "cc", "temperature": 1.0},
    {"games": ["Breakout", "SpaceInvaders"], "loss": "cc", "temperature": 0.1},
    {"games": ["Breakout", "SpaceInvaders"], "loss": "cc_scaled", "temperature": 1.0},
)


def test_study_lists_every_student_run(monkeypatch) -> None:
    monkeypatch.setattr(minatar_study, "SEEDS", (1, 2))
    runs = minatar_study.student_runs(["Breakout", "SpaceInvaders"])
    key = [(tuple(r["games"]), r["loss"], r["temperature"], r["seed"]) for r in runs]
    both = ("Breakout", "SpaceInvaders")
    assert key[:4] == [
        (("Breakout",), "xe", 1.0, 1),
        (("Breakout",), "cc", 1.0, 1),
        (("SpaceInvaders",), "xe", 1.0, 1),
        (("SpaceInvaders",), "cc", 1.0, 1),
    ]
    # Seed by seed: (alone + together at T = 1 and 0.1) × (AMN, CC-AMN) ...
    first = [
        *(((g,), loss, 1.0) for g in both for loss in ("xe", "cc")),
        *((both, loss, t) for t in (1.0, 0.1) for loss in ("xe", "cc")),
    ]
    assert key[:16] == [(*k, seed) for seed in (1, 2) for k in first]
    # ... then CC-AMN ×(K+1) alone and together at T = 1.
    scaled = [((g,), "cc_scaled", 1.0) for g in both] + [(both, "cc_scaled", 1.0)]
    assert key[16:22] == [(*k, seed) for seed in (1, 2) for k in scaled]
    # ... and CC-AMN under the mean parameterisation together at T = 1.
    assert key[22:] == [(both, "cc_mean", 1.0, seed) for seed in (1, 2)]
    assert len(set(key)) == len(key) == 24


@pytest.mark.slow
def test_study_runs_end_to_end_then_skips_finished_runs(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    """The one-command study on two games with tiny budgets and one seed:
    experts, their students, the two-game students at both temperatures,
    then the report; a second invocation trains nothing."""
    from examples.atari import minatar_report

    games = ["Breakout", "SpaceInvaders"]
    monkeypatch.setattr(minatar_study, "EXPERT_FRAMES", dict.fromkeys(games, 128))
    monkeypatch.setattr(minatar_study, "STUDENT_FRAMES", 96)
    monkeypatch.setattr(minatar_study, "SEEDS", (1,))
    monkeypatch.setattr(minatar_report, "RANDOM_EPISODES", 3)
    monkeypatch.setattr(minatar_report, "TARGET_STEPS", 4)
    tiny = ["--buffer-size", "256", "--learning-starts", "32", "--batch-size", "8"]
    tiny += ["--eval-every", "96", "--eval-steps", "120", "--eval-envs", "2"]
    tiny += ["--log-every", "32", "--checkpoint-every", "32"]
    tiny += ["--max-episode-frames", "40", "--eps-mid-step", "32"]
    tiny += ["--eps-end-step", "32", "--num-envs", "2"]
    argv = ["all", "--out", str(tmp_path), "--games", *games, *tiny]
    # Every kind of student once (each run costs a compile): alone (AMN,
    # CC-AMN), together at T = 0.1, and CC-AMN ×(K+1) together. The full
    # list is test_study_lists_every_student_run's.
    every_run = minatar_study.student_runs

    def some_runs(games):
        kinds = {(len(r["games"]), r["loss"], r["temperature"]) for r in SAMPLED_RUNS}
        return [
            r
            for r in every_run(games)
            if (len(r["games"]), r["loss"], r["temperature"]) in kinds
            and (len(r["games"]) > 1 or r["games"] == ["Breakout"])
        ]

    monkeypatch.setattr(minatar_study, "student_runs", some_runs)
    minatar_study.main(argv)
    runs = minatar_study.student_runs(games)
    assert len(runs) == 4
    for run in runs:
        assert minatar_study.finished(minatar_study.student_dir(tmp_path, run), 96)
    assert (tmp_path / "experts" / "SpaceInvaders" / "expert.npz").exists()
    capsys.readouterr()
    minatar_study.main(argv)
    assert "[dqn]" not in capsys.readouterr().out  # nothing retrained
    body = minatar_study.main(["report", "--out", str(tmp_path), "--games", *games])
    assert "Pending student runs: 0" in body
    sharpness = json.loads((tmp_path / "expert_targets.json").read_text())
    assert sharpness["Breakout"]["states"] == 4 * 8
    assert 1 / 3 <= sharpness["Breakout"]["top_probability_T1"] <= 1
    # The report's tables show the trained runs (n = 1) and mark the
    # settings this test leaves out as pending.
    assert "(n=1)" in body and "pending" in body.split("Pending")[0].lower()
    assert (tmp_path / "curves_single.png").exists()
    assert (tmp_path / "curves_all.png").exists()


def test_study_skips_a_student_that_another_process_trains(
    tmp_path: Path, monkeypatch
) -> None:
    """Two study processes (one per core) share the run list: a run whose
    lock a live process holds is left to it; an unlocked one is trained."""
    calls: list[list[str]] = []
    monkeypatch.setattr(actor_mimic, "main", lambda argv: calls.append(argv))
    run = dict(games=["Breakout"], loss="cc", temperature=1.0, seed=1)
    run_dir = minatar_study.student_dir(tmp_path, run)
    run_dir.mkdir(parents=True)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run_dir / "lock").write_text(str(other.pid))
        minatar_study.run_student(tmp_path, run, [])
        assert calls == []
    finally:
        other.kill()
        other.wait()
    minatar_study.run_student(tmp_path, run, [])
    assert len(calls) == 1 and str(run_dir) in calls[0]
    assert not (run_dir / "lock").exists()


def test_report_wall_time_counts_each_logged_interval_once(tmp_path: Path) -> None:
    """A two-game student logs one row per game at each step, with the
    per-game rate: 5000 frames at 1000/s, then 5000 at 500/s = 15 s."""
    from examples.atari import minatar_report

    header = "step,game,steps_per_s\n"
    body = "".join(
        f"{step},{game},{rate}\n"
        for step, rate in ((5000, 1000.0), (10000, 500.0))
        for game in ("Breakout", "Freeway")
    )
    (tmp_path / "train.csv").write_text(header + body)
    assert minatar_report.wall_seconds(tmp_path) == pytest.approx(15.0)
