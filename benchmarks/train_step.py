"""Time one training step of the paper's CIFAR CNN: CC-LS against LS.

Both models (same architecture and initial weights, Adam behind the
non-finite-gradient guard, compiled the Keras default way, i.e. with XLA where
the backend supports it) train on the same random CIFAR-shaped batch with the
same label-smoothed targets; only the loss differs (keras_cc's
``ContinuousCategoricalCrossentropy`` vs Keras' ``CategoricalCrossentropy``,
both ``from_logits=True``). After a warm-up, steps are timed one at a time,
alternating between the two models (and swapping which goes first each round)
so that machine load drifts hit both alike; the report gives the medians and
their ratio.

    python -m benchmarks.train_step                 # TF, batch 128
    python -m benchmarks.train_step --backend jax --repeats 50
"""

from __future__ import annotations

import argparse
import os
import statistics
import time


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Median time of one training step, CC-LS vs LS, same run.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--image-size", type=int, default=32, help="CIFAR: 32")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--alpha", type=float, default=0.1)
    p.add_argument("--warmup", type=int, default=5, help="untimed steps per loss")
    p.add_argument("--repeats", type=int, default=30, help="timed steps per loss")
    p.add_argument("--batch-norm", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--dropout", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--backend", choices=("tensorflow", "jax"))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    for name in ("batch_size", "image_size", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup < 1:
        p.error("--warmup must be >= 1 (the first step compiles)")
    if args.classes < 2:
        p.error("--classes must be >= 2")
    if not 0 <= args.alpha < 1:
        p.error("--alpha must be in [0, 1)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.backend:
        os.environ["KERAS_BACKEND"] = args.backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np

    from examples.label_smoothing.model import build_cnn, make_loss, make_optimizer

    rng = np.random.default_rng(args.seed)
    shape = (args.image_size, args.image_size, 3)
    x = rng.standard_normal((args.batch_size, *shape)).astype(np.float32)
    labels = rng.integers(0, args.classes, args.batch_size)
    y = (1 - args.alpha) * np.eye(args.classes, dtype=np.float32)[labels]
    y += args.alpha / args.classes

    models = {}
    for loss in ("ls", "cc"):
        keras.utils.set_random_seed(args.seed)  # same initial weights
        model = build_cnn(
            shape,
            args.classes,
            batch_norm=args.batch_norm,
            dropout=args.dropout,
            weight_decay=0.0,
        )
        model.compile(optimizer=make_optimizer(1e-3), loss=make_loss(loss))
        models[loss] = model

    def step(model) -> float:
        t0 = time.perf_counter()
        # train_on_batch returns the loss as a Python float, which waits for
        # the step to finish (no asynchronous dispatch left in the timing).
        model.train_on_batch(x, y)
        return time.perf_counter() - t0

    for model in models.values():
        for _ in range(args.warmup):
            step(model)
    times: dict[str, list[float]] = {name: [] for name in models}
    order = list(models)
    for i in range(args.repeats):
        for name in order if i % 2 == 0 else order[::-1]:
            times[name].append(step(models[name]))

    med = {name: statistics.median(t) for name, t in times.items()}
    ratio = med["cc"] / med["ls"]
    print(
        f"backend {keras.backend.backend()}, batch {args.batch_size}, input "
        f"{shape}, K={args.classes}, BN {'on' if args.batch_norm else 'off'}, "
        f"dropout {'on' if args.dropout else 'off'}, {args.repeats} timed steps "
        f"per loss after {args.warmup} warm-up"
    )
    for name, label in (("ls", "LS   "), ("cc", "CC-LS")):
        t = sorted(times[name])
        q1, q3 = t[len(t) // 4], t[(3 * len(t)) // 4]
        print(
            f"  {label}: median {1e3 * med[name]:8.2f} ms/step  "
            f"(IQR {1e3 * q1:.2f}-{1e3 * q3:.2f} ms)"
        )
    # Step i of each loss ran back to back, so their ratio cancels slow drifts
    # of machine load. (Minima are not reported: one lucky step skews them.)
    paired = statistics.median(
        c / ls for c, ls in zip(times["cc"], times["ls"], strict=True)
    )
    print(f"  ratio CC-LS / LS: {ratio:.3f}x (medians)")
    print(f"                    {paired:.3f}x (median of back-to-back pairs)")
    _loss_alone(args, make_loss, labels, med["ls"])
    return 0


def _loss_alone(args: argparse.Namespace, make_loss, labels, step_ls: float) -> None:
    """Loss value + gradient alone, on (batch, K) logits, compiled (XLA).

    Under machine load the whole-step timings above are noisy; the loss is
    the only difference between the two steps, so its own extra cost, divided
    by the LS step time, is a steadier estimate of the overhead.
    """
    import keras
    import numpy as np

    rng = np.random.default_rng(args.seed + 1)
    logits = 3.0 * rng.standard_normal((args.batch_size, args.classes)).astype(
        "float32"
    )
    y = (1 - args.alpha) * np.eye(args.classes, dtype="float32")[labels]
    y += args.alpha / args.classes
    backend = keras.backend.backend()
    cost = {}
    for name in ("ls", "cc"):
        loss = make_loss(name)
        if backend == "tensorflow":
            import tensorflow as tf

            @tf.function(jit_compile=True)
            def fn(z, loss=loss):
                with tf.GradientTape() as tape:
                    tape.watch(z)
                    value = loss(y, z)
                return value, tape.gradient(value, z)

            z = tf.constant(logits)
        else:
            import jax

            fn = jax.jit(jax.value_and_grad(lambda z, loss=loss: loss(y, z)))
            z = logits
        for _ in range(5):
            keras.ops.convert_to_numpy(fn(z)[1])
        samples = []
        for _ in range(200):
            t0 = time.perf_counter()
            keras.ops.convert_to_numpy(fn(z)[1])
            samples.append(time.perf_counter() - t0)
        cost[name] = statistics.median(samples)
    extra = cost["cc"] - cost["ls"]
    print(
        f"loss + gradient alone ({args.batch_size}x{args.classes} logits, XLA): "
        f"CE {1e6 * cost['ls']:.0f} us, CC {1e6 * cost['cc']:.0f} us; "
        f"CC's extra {1e3 * extra:.3f} ms = {100 * extra / step_ls:.2f}% of the "
        f"LS step -> estimated ratio {1 + extra / step_ls:.3f}x"
    )


if __name__ == "__main__":
    raise SystemExit(main())
