"""Datasets and targets for the label-smoothing study.

Everything here is NumPy (plus tf.data for the input pipeline), so it works
the same under every Keras backend.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATASETS: tuple[str, ...] = ("cifar10", "digits", "mnist1d", "digit-pairs")
# MNIST-1D is generated, never downloaded: this seed fixes the dataset (the
# package's own default), whatever the training seed.
MNIST1D_SEED = 42
# Digit pairs: the pairs drawn are fixed by this seed, whatever the training
# seed, so every run of a study sees the same examples.
DIGIT_PAIRS_SEED = 0
# Training + validation pairs per class (few, so that 100 classes are not
# learnt trivially; with 30 the paper's CNN reaches what two single-digit
# reads would), and test pairs per class.
DIGIT_PAIRS_PER_CLASS = 10
DIGIT_PAIRS_TEST_PER_CLASS = 20

# One CIFAR binary record: 1 label byte, then a 32x32 image as 1024 red, 1024
# green and 1024 blue bytes, rows in order (https://www.cs.toronto.edu/~kriz/cifar.html).
_CIFAR_RECORD = 1 + 3 * 32 * 32


@dataclass
class Data:
    """Train/(validation)/test splits; inputs float32 channels-last (NHWC
    images, or (N, length, 1) signals), labels int64 in [0, K)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    name: str
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


def read_cifar_binary_file(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Parse one CIFAR-10 binary batch file into (images uint8 NHWC, labels).

    Plain byte parsing with NumPy: the binary distribution needs no unpickling,
    so reading a downloaded directory executes nothing from it.
    """
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % _CIFAR_RECORD:
        raise ValueError(
            f"{path}: size {raw.size} bytes is not a positive multiple of the "
            f"CIFAR-10 record size {_CIFAR_RECORD} (1 label + 3072 pixel bytes); "
            "is this the binary version (cifar-10-binary.tar.gz)?"
        )
    records = raw.reshape(-1, _CIFAR_RECORD)
    labels = records[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise ValueError(f"{path}: label {labels.max()} out of range for CIFAR-10.")
    # Stored channel-major (3, 32, 32); Keras wants channels last.
    images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def load_cifar_binary_dir(directory: str | os.PathLike) -> Data:
    """CIFAR-10 from a local directory in the binary format.

    Expects ``data_batch_1.bin`` ... ``data_batch_5.bin`` (any number >= 1)
    and ``test_batch.bin``, e.g. the ``cifar-10-batches-bin`` folder of the
    official archive.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"CIFAR directory {directory} does not exist.")
    train_files = sorted(
        directory.glob("data_batch_*.bin"),
        key=lambda p: int(p.stem.rsplit("_", 1)[-1]) if p.stem[-1].isdigit() else 0,
    )
    test_file = directory / "test_batch.bin"
    if not train_files or not test_file.is_file():
        raise FileNotFoundError(
            f"{directory} must hold data_batch_*.bin and test_batch.bin "
            "(the CIFAR-10 binary version)."
        )
    parts = [read_cifar_binary_file(p) for p in train_files]
    x_train = np.concatenate([p[0] for p in parts])
    y_train = np.concatenate([p[1] for p in parts])
    x_test, y_test = read_cifar_binary_file(test_file)
    return Data(x_train, y_train, x_test, y_test, 10, "cifar10")


def load_cifar10_tfds(data_dir: str | os.PathLike) -> Data:
    """CIFAR-10 through tensorflow-datasets: ``tfds.load("cifar10",
    data_dir=data_dir)``.

    Reads the prepared copy in ``data_dir``, or downloads and prepares it
    there first (about 170 MB, once). The splits come back as arrays, so the
    validation split, the standardisation and the ``tf.data`` training
    pipeline with the paper's augmentation (``make_datasets``) are the same
    as for the other loaders.
    """
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise ImportError(
            "CIFAR-10 from a --data-dir without the binary files is read with "
            "tensorflow-datasets, which is not installed: `pip install "
            "tensorflow-datasets` (in the examples extra), or point --data-dir "
            "at the CIFAR-10 binary files (data_batch_*.bin, test_batch.bin)."
        ) from error
    train, test = tfds.load(
        "cifar10", split=["train", "test"], as_supervised=True, data_dir=str(data_dir)
    )
    return Data(*_tfds_arrays(tfds, train), *_tfds_arrays(tfds, test), 10, "cifar10")


def _tfds_arrays(tfds, dataset) -> tuple[np.ndarray, np.ndarray]:
    """A tfds ``(image, label)`` split as (uint8 NHWC images, int64 labels)."""
    images, labels = [], []
    for x, y in tfds.as_numpy(dataset.batch(10_000)):
        images.append(x)
        labels.append(y)
    return np.concatenate(images), np.concatenate(labels).astype(np.int64)


def is_cifar_binary_dir(directory: str | os.PathLike) -> bool:
    """Whether ``directory`` holds CIFAR-10 binary batches (``data_batch_*.bin``)."""
    return any(Path(directory).glob("data_batch_*.bin"))


def load_cifar10_keras() -> Data:
    """CIFAR-10 through ``keras.datasets.cifar10`` (downloads on first use)."""
    import keras

    (x_train, y_train), (x_test, y_test) = keras.datasets.cifar10.load_data()
    return Data(
        x_train,
        y_train.reshape(-1).astype(np.int64),
        x_test,
        y_test.reshape(-1).astype(np.int64),
        10,
        "cifar10",
    )


def load_digits(
    size: int = 16, test_fraction: float = 0.2, split_seed: int = 0
) -> Data:
    """scikit-learn's 8x8 digits, bilinearly upsampled to ``size`` x ``size``.

    The paper's CNN halves the resolution three times, so 8x8 would leave 1x1
    maps; 16x16 keeps the architecture meaningful (2x2x128 penultimate
    features) at a quarter of CIFAR's compute. The split is stratified and
    fixed by ``split_seed`` so that every run of an ablation sees the same test
    set, whatever its training seed.
    """
    if size < 8:
        raise ValueError(f"--digits-size must be >= 8; got {size}.")
    images, labels, train, test = _split_digits(test_fraction, split_seed)
    if size != 8:
        images = _bilinear_resize(images, size)
    images = images[..., None]
    return Data(images[train], labels[train], images[test], labels[test], 10, "digits")


def _split_digits(
    test_fraction: float = 0.2, split_seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's digits (8x8, values 0..16) and a stratified split.

    Returns the images, the labels and the indices of the training and test
    images. The split depends on the labels and ``split_seed`` only, so the
    digits dataset and the digit pairs hold out the same test images.
    """
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_load_digits()
    labels = bunch.target.astype(np.int64)
    train, test = train_test_split(
        np.arange(len(labels)),
        test_size=test_fraction,
        random_state=split_seed,
        stratify=labels,
    )
    return bunch.images.astype(np.float32), labels, train, test


def load_digit_pairs(
    pairs_per_class: int = DIGIT_PAIRS_PER_CLASS,
    test_pairs_per_class: int = DIGIT_PAIRS_TEST_PER_CLASS,
    seed: int = DIGIT_PAIRS_SEED,
) -> Data:
    """Two of scikit-learn's digits side by side: 100 classes, 10 a + b.

    An example is an 8x16 image, digit ``a`` on the left and ``b`` on the
    right, of class ``10 a + b``. The digit images are split as in
    :func:`load_digits` (stratified 80/20, fixed seed); the training pairs
    (from which the validation split is later carved) are made only of
    training digit images and the test pairs only of held-out ones, so no
    digit image of the test set is ever seen in training. Each class gets
    ``pairs_per_class`` distinct training pairs and ``test_pairs_per_class``
    distinct test pairs, drawn with ``seed``; both sets are shuffled, so that
    ``--limit-train``/``--limit-test`` keep a sample of every class rather
    than the first classes. Nothing is downloaded: the digits ship with
    scikit-learn.
    """
    images, labels, train, test = _split_digits()
    rng = np.random.default_rng(seed)
    x_train, y_train = _digit_pairs(images, labels, train, pairs_per_class, rng)
    x_test, y_test = _digit_pairs(images, labels, test, test_pairs_per_class, rng)
    return Data(x_train, y_train, x_test, y_test, 100, "digit-pairs")


def _digit_pairs(
    images: np.ndarray,
    labels: np.ndarray,
    pool: np.ndarray,
    per_class: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """``per_class`` distinct pairs of images from ``pool`` per class, shuffled."""
    by_digit = [pool[labels[pool] == d] for d in range(10)]
    left, right = [], []
    for a in range(10):
        for b in range(10):
            na, nb = len(by_digit[a]), len(by_digit[b])
            if per_class > na * nb:
                raise ValueError(
                    f"{per_class} pairs per class asked for, but digits {a} and "
                    f"{b} make only {na * nb} distinct pairs."
                )
            # Indices into the na x nb grid of pairs: distinct pairs.
            chosen = rng.choice(na * nb, size=per_class, replace=False)
            left.append(by_digit[a][chosen // nb])
            right.append(by_digit[b][chosen % nb])
    left, right = np.concatenate(left), np.concatenate(right)
    order = rng.permutation(len(left))
    left, right = left[order], right[order]
    x = np.concatenate([images[left], images[right]], axis=2)[..., None]
    return x, 10 * labels[left] + labels[right]


def _bilinear_resize(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of (N, h, w) images, align-corners=False like TF/PIL."""
    n, h, w = images.shape

    def coords(n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pos = (np.arange(size) + 0.5) * n_in / size - 0.5
        pos = np.clip(pos, 0, n_in - 1)
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, (pos - lo).astype(np.float32)

    r0, r1, fr = coords(h)
    c0, c1, fc = coords(w)
    rows = (
        images[:, r0, :] * (1 - fr)[None, :, None]
        + images[:, r1, :] * fr[None, :, None]
    )
    return rows[:, :, c0] * (1 - fc) + rows[:, :, c1] * fc


def load_mnist1d(seed: int = MNIST1D_SEED) -> Data:
    """MNIST-1D (Greydanus & Kobak, 2024), generated locally by ``mnist1d``.

    ``mnist1d.data.make_dataset`` with the package's default arguments builds
    the standard 4 000 / 1 000 split of 40-sample signals in 10 classes from
    ten templates, procedurally: nothing is downloaded (its download helpers
    are never called). Generating takes seconds, so each seed's dataset is
    generated once per process and its (read-only) arrays are shared by the
    later calls, e.g. the runs of an in-process grid. The generator reseeds
    NumPy's global RNG, so the caller seeds its own randomness afterwards.
    """
    if seed not in _MNIST1D_CACHE:
        try:
            from mnist1d.data import get_dataset_args, make_dataset
        except ImportError as err:
            raise ImportError(
                "--dataset mnist1d needs the `mnist1d` package: "
                'pip install -e ".[examples]"'
            ) from err
        args = get_dataset_args()
        args.seed = seed
        raw = make_dataset(args)
        arrays = (
            raw["x"].astype(np.float32)[..., None],
            np.asarray(raw["y"], dtype=np.int64),
            raw["x_test"].astype(np.float32)[..., None],
            np.asarray(raw["y_test"], dtype=np.int64),
        )
        for array in arrays:
            array.setflags(write=False)  # shared: no caller may change it
        _MNIST1D_CACHE[seed] = arrays
    return Data(*_MNIST1D_CACHE[seed], 10, "mnist1d")


# MNIST-1D's arrays (x_train, y_train, x_test, y_test) by generator seed.
_MNIST1D_CACHE: dict[int, tuple[np.ndarray, ...]] = {}


def load_data(
    name: str,
    data_dir: str | None = None,
    digits_size: int = 16,
    pairs_per_class: int = DIGIT_PAIRS_PER_CLASS,
) -> Data:
    """Dispatch on the dataset name.

    CIFAR-10: without ``data_dir``, ``keras.datasets``; from a ``data_dir``
    holding the binary batches, those (offline); from any other
    ``data_dir``, tensorflow-datasets with that data directory.
    """
    if data_dir and name != "cifar10":
        raise ValueError("--data-dir applies to cifar10 only.")
    if name == "cifar10":
        if not data_dir:
            return load_cifar10_keras()
        if is_cifar_binary_dir(data_dir):
            return load_cifar_binary_dir(data_dir)
        return load_cifar10_tfds(data_dir)
    if name == "digits":
        return load_digits(size=digits_size)
    if name == "mnist1d":
        return load_mnist1d()
    if name == "digit-pairs":
        return load_digit_pairs(pairs_per_class)
    raise ValueError(f"Unknown dataset {name!r}; choose from {', '.join(DATASETS)}.")


def split_validation(data: Data, fraction: float, split_seed: int = 0) -> Data:
    """Carve a stratified validation set out of the training set.

    The split depends on ``split_seed`` only, so every run of a study (any
    loss, any training seed) selects its epoch on the same examples, and the
    test set is never looked at for any choice.
    """
    from sklearn.model_selection import train_test_split

    if not 0.0 < fraction < 1.0:
        raise ValueError(f"--val-fraction must be in (0, 1); got {fraction}.")
    n_val = int(np.ceil(fraction * len(data.y_train)))
    if n_val < data.num_classes or len(data.y_train) - n_val < data.num_classes:
        raise ValueError(
            f"--val-fraction {fraction} of {len(data.y_train)} training examples "
            f"leaves {n_val} validation examples for {data.num_classes} classes "
            "(a stratified split needs at least one per class on each side); "
            "use more data or another --val-fraction."
        )
    x_train, x_val, y_train, y_val = train_test_split(
        data.x_train,
        data.y_train,
        test_size=fraction,
        random_state=split_seed,
        stratify=data.y_train,
    )
    return Data(
        x_train,
        y_train,
        data.x_test,
        data.y_test,
        data.num_classes,
        data.name,
        x_val,
        y_val,
    )


def standardise(data: Data) -> Data:
    """Scale by the training set's global mean and std (one scalar each).

    Global, not per-channel, as in the paper; the validation and test sets use
    the training statistics so nothing about them leaks into the inputs.
    """
    x_train = data.x_train.astype(np.float32)
    mean = float(x_train.mean())
    std = float(x_train.std())
    if not std > 0:
        raise ValueError("Training images are constant; cannot standardise.")

    def scale(x: np.ndarray | None) -> np.ndarray | None:
        return None if x is None else (x.astype(np.float32) - mean) / std

    return Data(
        scale(x_train),
        data.y_train,
        scale(data.x_test),
        data.y_test,
        data.num_classes,
        data.name,
        scale(data.x_val),
        data.y_val,
    )


def prepare_data(
    name: str,
    data_dir: str | None = None,
    digits_size: int = 16,
    val_fraction: float = 0.1,
    limit_train: int | None = None,
    limit_test: int | None = None,
    pairs_per_class: int = DIGIT_PAIRS_PER_CLASS,
) -> Data:
    """Load, keep the first examples, hold out the validation split, standardise.

    What a training run sees, and what every later look at a run (its
    pictures, a distillation study) must see again: the same split and the
    same standardisation, from the same steps in the same order.
    """
    data = load_data(name, data_dir, digits_size, pairs_per_class)
    if limit_train:
        data.x_train = data.x_train[:limit_train]
        data.y_train = data.y_train[:limit_train]
    if limit_test:
        data.x_test = data.x_test[:limit_test]
        data.y_test = data.y_test[:limit_test]
    return standardise(split_validation(data, val_fraction))


def smoothed_targets(labels: np.ndarray, num_classes: int, alpha: float) -> np.ndarray:
    """y_LS = (1 - alpha) * onehot + alpha / K, float32."""
    onehot = np.eye(num_classes, dtype=np.float32)[labels]
    return (1.0 - alpha) * onehot + alpha / num_classes


def make_datasets(
    data: Data,
    loss: str,
    alpha: float,
    batch_size: int,
    seed: int,
    augment: dict[str, float | bool],
):
    """tf.data pipelines ``(train, validation, test)``, targets per loss.

    ``validation`` is None when ``data`` has no validation split. Targets are
    built in the input pipeline rather than inside the loss, so the loss
    objects stay plain Keras/keras_cc losses and the random draws of RLS/RCC
    need no random state inside the (backend-specific) train step:
    - xe: one-hot everywhere;
    - every other loss: y_LS on the validation and test sets, and on the
      training set except for rls, rcc, whose training targets are
      (1 - alpha) * onehot + alpha * u, u ~ Dirichlet(1), drawn fresh for
      every example of every batch (y_LS is their expected value).
    Augmentation uses Keras preprocessing layers inside tf.data (they run on
    TensorFlow there whatever the Keras backend) on the training batches only.
    """
    import keras
    import tensorflow as tf

    k = data.num_classes

    def targets(labels: np.ndarray) -> np.ndarray:
        if loss == "xe":
            return np.eye(k, dtype=np.float32)[labels]
        return smoothed_targets(labels, k, alpha)

    # rls/rcc start from one-hot; the map below adds the random smoothing mass.
    y_train = (
        np.eye(k, dtype=np.float32)[data.y_train]
        if loss in ("rls", "rcc")
        else targets(data.y_train)
    )

    layers = []
    if augment.get("rotation", 0.0):
        # RandomRotation takes a fraction of a full turn.
        layers.append(
            keras.layers.RandomRotation(augment["rotation"] / 360.0, seed=seed)
        )
    shift = float(augment.get("shift", 0.0))
    if shift:
        layers.append(keras.layers.RandomTranslation(shift, shift, seed=seed + 1))
    if augment.get("flip", False):
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed + 2))

    def transform(x, y):
        for layer in layers:
            x = layer(x, training=True)
        if loss in ("rls", "rcc"):
            # Dirichlet(1) = normalised i.i.d. Exponential(1) draws.
            e = -tf.math.log(tf.random.uniform(tf.shape(y), minval=1e-12, maxval=1.0))
            u = e / tf.reduce_sum(e, axis=-1, keepdims=True)
            y = (1.0 - alpha) * y + alpha * u
        return x, y

    train = tf.data.Dataset.from_tensor_slices((data.x_train, y_train))
    train = train.shuffle(len(data.x_train), seed=seed, reshuffle_each_iteration=True)
    # Full batches only: a smaller last batch would be a second input shape,
    # and compile the train step (XLA, jax.jit) a second time. The shuffle
    # differs every epoch, so every example is still seen.
    train = train.batch(batch_size, drop_remainder=True)
    if layers or loss in ("rls", "rcc"):
        train = train.map(transform, num_parallel_calls=tf.data.AUTOTUNE)
    train = train.prefetch(tf.data.AUTOTUNE)

    def evaluation(x: np.ndarray | None, labels: np.ndarray | None):
        if x is None:
            return None
        ds = tf.data.Dataset.from_tensor_slices((x, targets(labels)))
        return ds.batch(max(batch_size, 256)).prefetch(tf.data.AUTOTUNE)

    return (
        train,
        evaluation(data.x_val, data.y_val),
        evaluation(data.x_test, data.y_test),
    )
