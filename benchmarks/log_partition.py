"""Accuracy and speed of keras_cc.ops.cc_log_partition, against its baselines.

(a) Accuracy: the worst error per regime, K and dtype, for our op and for the
    paper's eq. 6 evaluated directly (the published approach), against an
    mpmath reference (the positive series of tests/reference/), judged by
    the accuracy bar of docs/numerics.md.
(b) Sweep: thousands of seeded random rows (K log-uniform in 2..2000, five
    shapes of logits, offsets, float32 and float64) against the longdouble
    positive series of tests/reference/; the worst error / bar per dtype.
(c) Speed: forward + backward at batch 1024 for K in {2, 10, 100, 1000},
    against ``logsumexp`` (the cross-entropy normaliser) and eq. 6, under
    ``tf.function`` with and without XLA (TensorFlow backend), or under
    ``jax.jit`` (JAX backend, e.g. on a GPU), for N(0, 3^2) logits and for
    two harder shapes. Baselines are timed in the same run, interleaved, and
    the ratio is what we report.
(d) Large K: K = 10 000 and 50 000 at batch 256: accuracy, speed ratio to
    ``logsumexp`` and peak memory of forward + backward.
(e) Covariance: ``cc_covariance`` at K = 1000, time and peak memory per row.

Usage, from the repository root (the references are imported from tests/):
    python -m benchmarks.log_partition                 # all parts, TF backend
    python -m benchmarks.log_partition --part sweep --rows 4000
    python -m benchmarks.log_partition --part speed
    KERAS_BACKEND=jax python -m benchmarks.log_partition --part speed

The mpmath references are cached in benchmarks/results/reference_cache.json
as they are computed, so an interrupted run resumes where it stopped; each
table is written to benchmarks/results/ as soon as it is complete.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import keras
import numpy as np
from keras import ops

from keras_cc.ops import cc_covariance, cc_log_partition
from tests.reference import (
    error_ratios,
    longdouble_series,
    mpmath_series,
    random_rows,
    regimes,
    sweep_errors,
)

HERE = Path(__file__).resolve().parent

RESULTS = HERE / "results"
CACHE = RESULTS / "reference_cache.json"


def eq6_log_partition(z):
    """Eq. 6 of Gordon-Rodriguez et al. (2020), evaluated as written.

    C(lambda)^-1 = (-1)^(K+1) sum_k lambda_k / prod_{i != k} log(lambda_i /
    lambda_k) with lambda = softmax(z); A(z) = log C^-1 + logsumexp(z).
    """
    k = z.shape[-1]
    lam = ops.softmax(z, axis=-1)
    diff = ops.expand_dims(z, -2) - ops.expand_dims(z, -1)  # [k, i] = z_i - z_k
    eye = ops.eye(k, dtype=z.dtype)
    prod = ops.prod(diff + eye, axis=-1)  # the diagonal contributes 1
    sign = 1.0 if k % 2 == 1 else -1.0
    inv_c = sign * ops.sum(lam / prod, axis=-1)
    return ops.log(inv_c) + ops.logsumexp(z, axis=-1)


def _value_and_grad(fn, z):
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(z)
            value = fn(z)
            total = tf.reduce_sum(value)
        return value, tape.gradient(total, z)
    import jax

    value, vjp = jax.vjp(fn, z)
    return value, vjp(ops.ones_like(value))[0]


# ---------------------------------------------------------------- accuracy --


def _load_cache() -> dict:
    return json.loads(CACHE.read_text()) if CACHE.exists() else {}


def _reference(cache: dict, z: np.ndarray) -> tuple[float, np.ndarray]:
    key = z.tobytes().hex()
    if key not in cache:
        a, mean = mpmath_series(z)
        cache[key] = [a, mean.tolist()]
        RESULTS.mkdir(exist_ok=True)
        CACHE.write_text(json.dumps(cache))
    a, mean = cache[key]
    return a, np.asarray(mean)


def accuracy(ks: list[int]) -> str:
    cache = _load_cache()
    lines = [
        "| K | dtype | regime | ours: A err / bar | ours: mean err / bar "
        "| eq. 6: A err / bar | eq. 6: mean err / bar |",
        "|---|---|---|---|---|---|---|",
    ]
    tally = {"ours": [0, 0], "eq6": [0, 0]}  # failures, cases
    for k in ks:
        cases = regimes(k, np.random.default_rng(k))
        refs = {}
        for name, z in cases.items():
            print(f"reference K={k} {name}", flush=True)
            refs[name] = _reference(cache, z)
        for dtype in ("float32", "float64"):
            batch = ops.convert_to_tensor(np.stack(list(cases.values())).astype(dtype))
            ours_a, ours_mean = _value_and_grad(cc_log_partition, batch)
            eq6_a, eq6_mean = _value_and_grad(eq6_log_partition, batch)
            ours_a, ours_mean, eq6_a, eq6_mean = (
                np.asarray(ops.convert_to_numpy(t), np.float64)
                for t in (ours_a, ours_mean, eq6_a, eq6_mean)
            )
            for i, name in enumerate(cases):
                row = []
                for label, a, mean in (
                    ("ours", ours_a[i], ours_mean[i]),
                    ("eq6", eq6_a[i], eq6_mean[i]),
                ):
                    errs = error_ratios(a, mean, *refs[name], dtype)
                    tally[label][0] += int(max(errs) > 1)
                    tally[label][1] += 1
                    row += [_fmt(e) for e in errs]
                lines.append(f"| {k} | {dtype} | {name} | " + " | ".join(row) + " |")
    summary = (
        f"\nFailures of the bar (error / bar > 1, or NaN/Inf): ours "
        f"{tally['ours'][0]}/{tally['ours'][1]}, eq. 6 "
        f"{tally['eq6'][0]}/{tally['eq6'][1]}.\n"
    )
    return "\n".join(lines) + "\n" + summary


def _fmt(ratio: float) -> str:
    if not np.isfinite(ratio):
        return "**NaN/Inf**"
    text = f"{ratio:.1e}"
    return f"**{text}**" if ratio > 1 else text


# ------------------------------------------------------------------- speed --


def _compile(fn, jit: bool):
    def loss_and_grad(z):
        return _value_and_grad(lambda t: ops.sum(fn(t)), z)

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.function(loss_and_grad, jit_compile=jit)
    import jax

    return jax.jit(loss_and_grad)


def _time(fn, z, repeats: int) -> float:
    for _ in range(2):
        ops.convert_to_numpy(fn(z)[1])
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        ops.convert_to_numpy(fn(z)[1])
        times.append(time.perf_counter() - start)
    return float(np.median(times))


SHAPES = {
    "N(0, 3^2)": lambda rng, b, k: rng.normal(size=(b, k)) * 3,
    # A CC-LS optimum: one logit about 100 above a tight cluster.
    "label smoothing, gap 100": lambda rng, b, k: (
        np.where(np.arange(k) == 0, 100.0, 0.0) + rng.normal(size=(b, k)) * 0.01
    ),
    "near uniform, within 0.1": lambda rng, b, k: rng.uniform(0, 0.1, size=(b, k)),
}


def speed(ks: list[int], batch: int, repeats: int, shapes: list[str]) -> str:
    backend = keras.backend.backend()
    modes = [False, True] if backend == "tensorflow" else [True]
    lines = [
        "| backend | compiled | logits | K | logsumexp ms | eq. 6 ms | ours ms "
        "| ours / logsumexp | eq. 6 / logsumexp |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    rng = np.random.default_rng(0)
    for jit in modes:
        for shape in shapes:
            for k in ks:
                z = ops.convert_to_tensor(
                    SHAPES[shape](rng, batch, k).astype("float32")
                )
                fns = {
                    "lse": _compile(lambda t: ops.logsumexp(t, axis=-1), jit),
                    "ours": _compile(cc_log_partition, jit),
                }
                # Eq. 6 needs a (batch, K, K) tensor: 4 GB at K = 1000.
                if k <= 100 and shape == "N(0, 3^2)":
                    fns["eq6"] = _compile(eq6_log_partition, jit)
                t = _interleaved_times(fns, z, repeats)
                eq6 = t.get("eq6")
                label = (
                    ("XLA" if jit else "tf.function")
                    if backend == "tensorflow"
                    else "jax.jit"
                )
                lines.append(
                    f"| {backend} | {label} | {shape} | {k} | {t['lse'] * 1e3:.3f} | "
                    + (f"{eq6 * 1e3:.2f}" if eq6 else "-")
                    + f" | {t['ours'] * 1e3:.2f} | {t['ours'] / t['lse']:.1f}x | "
                    + (f"{eq6 / t['lse']:.1f}x" if eq6 else "-")
                    + " |"
                )
                print(lines[-1], flush=True)
    return "\n".join(lines) + "\n"


def _interleaved_times(fns: dict, z, repeats: int, rounds: int = 3) -> dict:
    """Best of ``rounds`` interleaved medians, so machine noise hits all alike."""
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name].append(_time(fn, z, repeats))
    return {name: min(v) for name, v in times.items()}


# ------------------------------------------------------------------- sweep --


def sweep(rows: int, seed: int, k_max: int) -> str:
    """Worst error / bar per dtype and family over seeded random rows."""

    def value_and_grad(z):
        value, grad = _value_and_grad(cc_log_partition, ops.convert_to_tensor(z))
        return (
            np.asarray(ops.convert_to_numpy(value), np.float64),
            np.asarray(ops.convert_to_numpy(grad), np.float64),
        )

    sample = random_rows(np.random.default_rng(seed), rows, k_max=k_max)
    results = sweep_errors(sample, value_and_grad)
    table = defaultdict(lambda: [0, 0, 0.0, 0.0, None])  # rows, fails, A, mean, K
    for family, dtype, k, a_ratio, mean_ratio in results:
        for key in ((dtype, family.replace(" + offset", "")), (dtype, "all")):
            entry = table[key]
            entry[0] += 1
            entry[1] += int(not max(a_ratio, mean_ratio) <= 1)
            if max(a_ratio, mean_ratio) >= max(entry[2], entry[3]):
                entry[4] = k
            entry[2] = max(entry[2], a_ratio)
            entry[3] = max(entry[3], mean_ratio)
    lines = [
        f"Seed {seed}, {rows} rows, K log-uniform in 2..{k_max}.\n",
        "| dtype | logits | rows | failures | worst A err / bar "
        "| worst mean err / bar | K of the worst row |",
        "|---|---|---|---|---|---|---|",
    ]
    for (dtype, family), (n, fails, a, m, k) in sorted(table.items()):
        lines.append(
            f"| {dtype} | {family} | {n} | {fails} | {_fmt(a)} | {_fmt(m)} | {k} |"
        )
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------- large K --


def _peak_rss_mb(code: str) -> str:
    """Peak resident memory around a snippet, measured in a fresh process.

    The snippet defines ``setup()`` (warm-up: imports, a baseline run,
    tracing) and ``run()``. Returns "peak after setup -> peak after run" in
    MB: when run() stays below the warm-up's high-water mark the two are
    equal, and the first is then an upper bound on what run() needs.
    """
    script = (
        "import resource, sys\n"
        + code
        + "\nsetup()\nbase = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "run()\npeak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(f'{base / 1024:.0f} -> {peak / 1024:.0f}')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        cwd=HERE.parent,
    )
    return out.stdout.strip().splitlines()[-1]


_LARGE_K_MEMORY = """
import numpy as np, tensorflow as tf, keras
from keras_cc.ops import cc_log_partition
rng = np.random.default_rng(0)
z = tf.constant((rng.normal(size=({batch}, {k})) * 3).astype("float32"))
def step(fn):
    @tf.function(jit_compile={jit})
    def f(t):
        with tf.GradientTape() as tape:
            tape.watch(t)
            v = tf.reduce_sum(fn(t))
        return v, tape.gradient(v, t)
    return f
def setup():
    global ours
    lse = step(lambda t: tf.reduce_logsumexp(t, axis=-1))
    lse(z)[1].numpy()
    ours = step(cc_log_partition)
    ours.get_concrete_function(z)
def run():
    ours(z)[1].numpy()
"""


def large_k(ks: list[int], batch: int, repeats: int) -> str:
    """Accuracy (8 rows), speed and peak memory at vocabulary-size K (float32)."""
    lines = [
        "| K | logits | worst A err / bar | worst mean err / bar |",
        "|---|---|---|---|",
    ]
    rng = np.random.default_rng(1)
    for k in ks:
        for shape in ("N(0, 3^2)", "label smoothing, gap 100"):
            z = SHAPES[shape](rng, 4, k).astype("float32")
            value, grad = _value_and_grad(cc_log_partition, ops.convert_to_tensor(z))
            value = np.asarray(ops.convert_to_numpy(value), np.float64)
            grad = np.asarray(ops.convert_to_numpy(grad), np.float64)
            worst = np.zeros(2)
            for i in range(len(z)):
                ref = longdouble_series(z[i].astype(np.float64))
                worst = np.maximum(
                    worst, error_ratios(value[i], grad[i], *ref, "float32")
                )
            lines.append(f"| {k} | {shape} | {_fmt(worst[0])} | {_fmt(worst[1])} |")
            print(lines[-1], flush=True)
    lines += [
        "",
        "| compiled | K | batch | logsumexp ms | ours ms | ours / logsumexp "
        "| ours: process peak RSS after warm-up -> after run, MB |",
        "|---|---|---|---|---|---|---|",
    ]
    modes = [False, True] if keras.backend.backend() == "tensorflow" else [True]
    for jit in modes:
        for k in ks:
            z = ops.convert_to_tensor(
                (rng.normal(size=(batch, k)) * 3).astype("float32")
            )
            fns = {
                "lse": _compile(lambda t: ops.logsumexp(t, axis=-1), jit),
                "ours": _compile(cc_log_partition, jit),
            }
            t = _interleaved_times(fns, z, repeats)
            memory = "-"
            if keras.backend.backend() == "tensorflow":
                code = _LARGE_K_MEMORY.format(batch=batch, k=k, jit=jit)
                memory = _peak_rss_mb(code)
            label = "XLA" if jit else "tf.function"
            lines.append(
                f"| {label} | {k} | {batch} | {t['lse'] * 1e3:.2f} | "
                f"{t['ours'] * 1e3:.1f} | {t['ours'] / t['lse']:.1f}x | {memory} |"
            )
            print(lines[-1], flush=True)
    return "\n".join(lines) + "\n"


# -------------------------------------------------------------- covariance --

_COVARIANCE_MEMORY = """
import numpy as np
from keras_cc.ops import cc_covariance
z = np.random.default_rng(0).normal(size=(1, {k})) * 3
def setup():
    cc_covariance(z[:, :8])
def run():
    np.asarray(cc_covariance(z))
"""


def covariance(k: int, repeats: int) -> str:
    """Time and peak memory of ``cc_covariance`` for one row (eager, float64)."""
    z = np.random.default_rng(0).normal(size=(1, k)) * 3
    cc_covariance(z)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        ops.convert_to_numpy(cc_covariance(z))
        times.append(time.perf_counter() - start)
    memory = "-"
    if keras.backend.backend() == "tensorflow":
        memory = _peak_rss_mb(_COVARIANCE_MEMORY.format(k=k))
    return (
        "| K | rows | dtype | median s | process peak RSS after warm-up -> after "
        "run, MB |\n"
        "|---|---|---|---|---|\n"
        f"| {k} | 1 | float64 | {np.median(times):.3f} | {memory} |\n"
    )


def _machine() -> str:
    device = "CPU"
    if keras.backend.backend() == "jax":
        import jax

        device = ", ".join(str(d.device_kind) for d in jax.devices())
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{device}; Python {platform.python_version()}, Keras {keras.__version__}, "
        f"backend {keras.backend.backend()}"
    )


def main() -> None:
    parts = ["accuracy", "sweep", "speed", "large", "covariance"]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=parts + ["all"], default="all")
    parser.add_argument("--ks", type=int, nargs="+", default=[2, 10, 100, 1000])
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=SHAPES)
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--k-max", type=int, default=2000)
    parser.add_argument("--large-ks", type=int, nargs="+", default=[10000, 50000])
    parser.add_argument("--large-batch", type=int, default=256)
    args = parser.parse_args()
    if keras.backend.backend() == "jax":
        import jax

        jax.config.update("jax_enable_x64", True)
    RESULTS.mkdir(exist_ok=True)
    command = " ".join(["python -m benchmarks.log_partition", *sys.argv[1:]])
    header = f"Machine: {_machine()}\nCommand: {command}\n\n"
    backend = keras.backend.backend()
    runs = {
        "accuracy": (lambda: accuracy(args.ks), "log_partition_accuracy.md"),
        "sweep": (
            lambda: sweep(args.rows, args.seed, args.k_max),
            "log_partition_sweep.md",
        ),
        "speed": (
            lambda: speed(args.ks, args.batch, args.repeats, args.shapes),
            f"log_partition_speed_{backend}.md",
        ),
        "large": (
            lambda: large_k(args.large_ks, args.large_batch, max(3, args.repeats // 3)),
            f"log_partition_large_k_{backend}.md",
        ),
        "covariance": (
            lambda: covariance(1000, 5),
            f"log_partition_covariance_{backend}.md",
        ),
    }
    for part in parts:
        if args.part in (part, "all"):
            run, name = runs[part]
            table = header + run()
            (RESULTS / name).write_text(table)
            print(table)


if __name__ == "__main__":
    main()
