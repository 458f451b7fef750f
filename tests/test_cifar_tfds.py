"""CIFAR-10 through tensorflow-datasets in the label-smoothing example.

``tfds.testing.mock_data`` stands in for the dataset (random images of the
real feature spec; nothing is downloaded), so the loader, its dispatch from
``--data-dir`` and the ``tf.data`` pipeline with the paper's augmentation are
checked offline.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

from examples.label_smoothing import data
from examples.label_smoothing.train import AUGMENT_DEFAULTS

tfds = pytest.importorskip("tensorflow_datasets")


def test_tfds_loader_feeds_the_augmented_pipeline(tmp_path):
    with tfds.testing.mock_data(num_examples=100):
        loaded = data.load_data("cifar10", str(tmp_path))
        prepared = data.prepare_data("cifar10", str(tmp_path), val_fraction=0.2)
    assert loaded.x_train.shape == (100, 32, 32, 3) and loaded.x_train.dtype == np.uint8
    assert loaded.x_test.shape == (100, 32, 32, 3)
    assert loaded.y_train.dtype == np.int64 and loaded.num_classes == 10
    assert loaded.y_train.min() >= 0 and loaded.y_train.max() < 10
    assert len(prepared.x_train) + len(prepared.x_val) == 100
    assert prepared.x_train.dtype == np.float32

    train, _, test = data.make_datasets(
        prepared, "ls", 0.1, 2, seed=0, augment=AUGMENT_DEFAULTS["cifar10"]
    )
    x, y = next(iter(train))
    assert tuple(x.shape) == (2, 32, 32, 3) and tuple(y.shape) == (2, 10)
    np.testing.assert_allclose(np.sum(y, axis=-1), 1.0, rtol=1e-6)
    x_test, _ = next(iter(test))
    # Evaluation batches are not augmented: they are the standardised images.
    np.testing.assert_allclose(x_test, prepared.x_test[: len(x_test)], rtol=1e-6)


def test_binary_directory_is_still_read_offline(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    for name, n in (("data_batch_1", 3), ("test_batch", 2)):
        labels = rng.integers(0, 10, size=(n, 1), dtype=np.uint8)
        pixels = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        (tmp_path / f"{name}.bin").write_bytes(np.hstack([labels, pixels]).tobytes())
    # Without tensorflow-datasets: the binary files need none.
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    loaded = data.load_data("cifar10", str(tmp_path))
    assert loaded.x_train.shape == (3, 32, 32, 3) and len(loaded.y_test) == 2
    with pytest.raises(ImportError, match="pip install tensorflow-datasets"):
        data.load_data("cifar10", str(tmp_path / "empty"))
