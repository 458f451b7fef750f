"""Smoke test of an installed keras_cc wheel; run it from outside the source tree.

    python .ci/wheel_smoke.py SOURCE_TREE WHEEL_VERSION

Checks that ``keras_cc`` is imported from the installed wheel (not from
SOURCE_TREE), that ``keras_cc.__version__`` is the version in the wheel's
name and metadata, and that a tiny model trains with the CC loss and metric,
saves to ``.keras`` and loads back with the same predictions and loss.
"""

from __future__ import annotations

import importlib.metadata
import sys
import tempfile
from pathlib import Path

import keras
import numpy as np

import keras_cc


def main(source_tree: str, wheel_version: str) -> None:
    origin = Path(keras_cc.__file__).resolve()
    source = Path(source_tree).resolve()
    if origin.is_relative_to(source):
        raise SystemExit(f"keras_cc was imported from the source tree: {origin}")
    installed = importlib.metadata.version("keras-cc")
    if not keras_cc.__version__ == installed == wheel_version:
        raise SystemExit(
            f"version mismatch: keras_cc.__version__ {keras_cc.__version__}, "
            f"installed metadata {installed}, wheel {wheel_version}"
        )

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, 3, size=64), 3)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile(
        optimizer="adam",
        loss=keras_cc.losses.ContinuousCategoricalCrossentropy(
            from_logits=True, label_smoothing=0.1
        ),
        metrics=[keras_cc.metrics.ContinuousCategoricalCrossentropy(from_logits=True)],
    )
    history = model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    losses = history.history["loss"]
    if not np.all(np.isfinite(losses)):
        raise SystemExit(f"non-finite training loss: {losses}")

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.keras"
        model.save(path)
        loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6
    )
    np.testing.assert_allclose(
        loaded.evaluate(x, y, verbose=0), model.evaluate(x, y, verbose=0), rtol=1e-6
    )
    print(
        f"wheel smoke test passed: keras_cc {keras_cc.__version__} from {origin}, "
        f"loss {losses[0]:.4f} -> {losses[-1]:.4f}, saved and loaded"
    )


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2])
