"""Benchmark of the exact ContinuousCategorical sampler.

For K in {2, 10, 100, 1000} and logit spreads {0, 1, 10, 100} (logits evenly
spaced from 0 down to -spread) this reports the per-proposal acceptance rate
(closed form, and measured from the sampler's own proposal count) and the
throughput in samples per second, eagerly and under ``tf.function``. It prints
a markdown table and writes it to ``benchmarks/sampler_results.md``.

Usage::

    python -m benchmarks.sampler                 # full grid, n = 10000 draws
    python -m benchmarks.sampler --num-samples 2000 --repeats 2 --out /tmp/x.md
"""

from __future__ import annotations

import argparse
import os
import platform
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_cc.distributions import ContinuousCategorical  # noqa: E402
from keras_cc.distributions.continuous_categorical import _sample_cc  # noqa: E402

KS = (2, 10, 100, 1000)
SPREADS = (0.0, 1.0, 10.0, 100.0)
# Beyond the grid: the regimes with the lowest acceptance we know of, m tied
# logits on top and the other K - m far below them (acceptance about
# max(sqrt(m/K), 1/(m-1)!) once the gap is >> K).
FAR_CLUSTERS = ((100, 1, 1000.0), (100, 4, 1000.0), (1000, 1, 1000.0), (1000, 5, 1e4))


def _cases():
    """(K, label, logits) for the grid and the far-cluster rows."""
    for k in KS:
        for spread in SPREADS:
            yield k, f"{spread:g}", np.linspace(0.0, -spread, k)
    for k, m, gap in FAR_CLUSTERS:
        label = f"{gap:g} ({m} at 0, {k - m} at -{gap:g})"
        yield k, label, np.array([0.0] * m + [-gap] * (k - m))


def _best_time(fn, repeats: int) -> float:
    """Best wall time of ``repeats`` calls after one warm-up call (which traces)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def run(num_samples: int, repeats: int) -> list[dict]:
    """Measure every (K, spread) cell; returns one dict per row of the table."""
    rows = []
    for k, label, values in _cases():
        logits = tf.constant(values, tf.float32)
        dist = ContinuousCategorical(logits=logits)
        rate = float(dist.sampler_acceptance_rate())
        _, proposals = _sample_cc(num_samples, logits, seed=(1, 2))
        measured = num_samples / int(proposals)

        # The seed is a tensor argument, so the graph is traced once.
        graph_sample = tf.function(
            lambda seed, d=dist: d.sample(num_samples, seed=seed)
        )
        seed = tf.constant([3, 4])
        t_graph = _best_time(lambda f=graph_sample, s=seed: f(s).numpy(), repeats)
        t_eager = _best_time(
            lambda d=dist: d.sample(num_samples, seed=(3, 4)).numpy(), repeats
        )
        rows.append(
            dict(
                k=k,
                spread=label,
                rate=rate,
                measured=measured,
                graph=num_samples / t_graph,
                eager=num_samples / t_eager,
            )
        )
        print(f"K={k:5d} spread={label} done", flush=True)
    return rows


def to_markdown(rows: list[dict], num_samples: int, command: str) -> str:
    """The results as a markdown table with the command and machine."""
    lines = [
        "# ContinuousCategorical sampler benchmark",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPU cores visible, TensorFlow {tf.__version__}, "
        f"load average at start {os.getloadavg()[0]:.1f} (shared machine), "
        "float32, CPU only. Logits evenly spaced from 0 to -spread; "
        f"{num_samples} samples per call, best of the timed calls.",
        "",
        "Acceptance = probability that one proposal is accepted (closed form; "
        "'measured' = samples / proposals drawn). Throughput in samples/s.",
        "",
        "| K | spread | acceptance | measured | samples/s (tf.function) "
        "| samples/s (eager) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['k']} | {r['spread']} | {r['rate']:.4f} | {r['measured']:.4f} "
            f"| {r['graph']:,.0f} | {r['eager']:,.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-samples", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--out",
        default=os.path.join(os.path.dirname(__file__), "sampler_results.md"),
    )
    args = parser.parse_args()
    command = (
        f"python -m benchmarks.sampler --num-samples {args.num_samples} "
        f"--repeats {args.repeats}"
    )
    table = to_markdown(run(args.num_samples, args.repeats), args.num_samples, command)
    print(table)
    with open(args.out, "w") as f:
        f.write(table)


if __name__ == "__main__":
    main()
