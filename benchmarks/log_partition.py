"""Accuracy and speed of keras_cc.ops.cc_log_partition, against its baselines.

(a) Accuracy: the worst error per regime, K and dtype, for our op and for the
    paper's eq. 6 evaluated directly (the published approach), against an
    mpmath reference (tests/reference.py), judged by the bar of
    the accuracy bar of docs/numerics.md.
(b) Speed: forward + backward at batch 1024 for K in {2, 10, 100, 1000},
    against ``logsumexp`` (the cross-entropy normaliser) and eq. 6, under
    ``tf.function`` with and without XLA (TensorFlow backend), or under
    ``jax.jit`` (JAX backend, e.g. on a GPU). Baselines are timed in the same
    run, interleaved, and the ratio is what we report.

Usage:
    python benchmarks/log_partition.py                 # both parts, TF backend
    python benchmarks/log_partition.py --part speed
    KERAS_BACKEND=jax python benchmarks/log_partition.py --part speed

The mpmath references are cached in benchmarks/results/reference_cache.json
as they are computed, so an interrupted run resumes where it stopped; each
table is written to benchmarks/results/ as soon as it is complete.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import keras
import numpy as np
from keras import ops

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from reference import log_partition_and_mean, regimes  # noqa: E402

from keras_cc.ops import cc_log_partition  # noqa: E402

RESULTS = HERE / "results"
CACHE = RESULTS / "reference_cache.json"
BAR = {
    "float32": dict(a=1e-5, mean_abs=1e-5, mean_rel=1e-3),
    "float64": dict(a=1e-12, mean_abs=1e-12, mean_rel=1e-9),
}


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
        a, mean = log_partition_and_mean(z)
        cache[key] = [a, mean.tolist()]
        RESULTS.mkdir(exist_ok=True)
        CACHE.write_text(json.dumps(cache))
    a, mean = cache[key]
    return a, np.asarray(mean)


def _errors(a, mean, a_ref, mean_ref, dtype):
    """(A error / bar, worst mean error / bar); inf for NaN or Inf."""
    bar = BAR[dtype]
    if not (np.isfinite(a) and np.all(np.isfinite(mean))):
        return float("inf"), float("inf")
    a_ratio = abs(a - a_ref) / (1 + abs(a_ref)) / bar["a"]
    allowed = bar["mean_abs"] + bar["mean_rel"] * mean_ref
    return a_ratio, float(np.max(np.abs(mean - mean_ref) / allowed))


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
                    errs = _errors(a, mean, *refs[name], dtype)
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


def speed(ks: list[int], batch: int, repeats: int) -> str:
    backend = keras.backend.backend()
    modes = [False, True] if backend == "tensorflow" else [True]
    lines = [
        "| backend | compiled | K | logsumexp ms | eq. 6 ms | ours ms "
        "| ours / logsumexp | eq. 6 / logsumexp |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rng = np.random.default_rng(0)
    for jit in modes:
        for k in ks:
            z = ops.convert_to_tensor(
                (rng.normal(size=(batch, k)) * 3).astype("float32")
            )
            fns = {
                "lse": _compile(lambda t: ops.logsumexp(t, axis=-1), jit),
                "ours": _compile(cc_log_partition, jit),
            }
            # Eq. 6 needs a (batch, K, K) tensor: 4 GB at K = 1000.
            if k <= 100:
                fns["eq6"] = _compile(eq6_log_partition, jit)
            times = {name: [] for name in fns}
            # Interleave the contenders so machine noise hits all of them.
            for _ in range(3):
                for name, fn in fns.items():
                    times[name].append(_time(fn, z, repeats))
            t = {name: min(v) for name, v in times.items()}
            eq6 = t.get("eq6")
            label = (
                ("XLA" if jit else "tf.function")
                if backend == "tensorflow"
                else "jax.jit"
            )
            lines.append(
                f"| {backend} | {label} | {k} | {t['lse'] * 1e3:.3f} | "
                + (f"{eq6 * 1e3:.2f}" if eq6 else "not run (O(K^2) memory)")
                + f" | {t['ours'] * 1e3:.2f} | {t['ours'] / t['lse']:.1f}x | "
                + (f"{eq6 / t['lse']:.1f}x" if eq6 else "-")
                + " |"
            )
            print(lines[-1], flush=True)
    return "\n".join(lines) + "\n"


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
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["accuracy", "speed", "all"], default="all")
    parser.add_argument("--ks", type=int, nargs="+", default=[2, 10, 100, 1000])
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    if keras.backend.backend() == "jax":
        import jax

        jax.config.update("jax_enable_x64", True)
    RESULTS.mkdir(exist_ok=True)
    header = f"Machine: {_machine()}\nCommand: python {' '.join(sys.argv)}\n\n"
    if args.part in ("accuracy", "all"):
        table = header + accuracy(args.ks)
        (RESULTS / "log_partition_accuracy.md").write_text(table)
        print(table)
    if args.part in ("speed", "all"):
        table = header + speed(args.ks, args.batch, args.repeats)
        name = f"log_partition_speed_{keras.backend.backend()}.md"
        (RESULTS / name).write_text(table)
        print(table)


if __name__ == "__main__":
    main()
