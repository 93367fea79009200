"""The :class:`Dataset` record, the errors and the checks shared by every loader."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import NamedTuple, Optional, Tuple

import numpy as np

# The exceptions live in dgm.errors and the checksum in dgm.fileio; imported here so the old names keep working.
from dgm.errors import DatasetCorruptError, DatasetNotFoundError
from dgm.fileio import sha256_file

__all__ = ["Dataset", "DatasetNotFoundError", "DatasetCorruptError", "sha256_file", "package_file", "verify_sha256",
           "check_split", "split_three"]


class Dataset(NamedTuple):
    """Images as float32 rows ``(n, prod(image_shape))`` in ``[0, 1]``, labels as int64 ``(n,)``."""

    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    image_shape: Tuple[int, ...]
    train_labels: np.ndarray
    valid_labels: np.ndarray
    test_labels: np.ndarray
    name: str


def package_file(package: str, relative: str) -> Optional[Path]:
    """``<package dir>/<relative>`` if the top-level ``package`` is installed (found without importing it), else
    ``None``."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / relative
        if candidate.is_file():
            return candidate
    return None


def verify_sha256(path: Path, expected: str, what: str, install: str) -> None:
    actual = sha256_file(path)
    if actual != expected:
        raise DatasetCorruptError(
            f"{what} at {path} is corrupt or not the expected file: sha256 {actual}, expected {expected}. "
            f"Reinstall it with `{install}`.")


def check_split(name: str, images: np.ndarray, labels: np.ndarray, n: int, dim: int, path, upper: float = 1.0):
    """Check one split's shapes, dtype and ranges; raise :class:`DatasetCorruptError` naming what is wrong."""
    if not isinstance(images, np.ndarray) or images.shape != (n, dim):
        raise DatasetCorruptError(f"{path}: {name} images should have shape {(n, dim)}, got "
                                  f"{getattr(images, 'shape', type(images).__name__)}")
    if not isinstance(labels, np.ndarray) or labels.shape != (n,):
        raise DatasetCorruptError(f"{path}: {name} labels should have shape {(n,)}, got "
                                  f"{getattr(labels, 'shape', type(labels).__name__)}")
    if not np.all(np.isfinite(images)) or images.min() < 0 or images.max() > upper:
        raise DatasetCorruptError(f"{path}: {name} intensities should lie in [0, {upper}], got "
                                  f"[{np.nanmin(images)}, {np.nanmax(images)}]")
    if labels.min() < 0 or labels.max() > 9:
        raise DatasetCorruptError(f"{path}: {name} labels should be digits 0..9, got [{labels.min()}, {labels.max()}]")


def split_three(images: np.ndarray, labels: np.ndarray, n_valid: int, n_test: int, seed: int):
    """A fixed random split into train/valid/test (``numpy.random.default_rng(seed)`` permutation)."""
    n = images.shape[0]
    if n_valid < 0 or n_test < 0 or n_valid + n_test >= n:
        raise ValueError(f"n_valid={n_valid} and n_test={n_test} leave no training data out of {n} images")
    perm = np.random.default_rng(seed).permutation(n)
    te, va, tr = perm[:n_test], perm[n_test:n_test + n_valid], perm[n_test + n_valid:]
    return images[tr], images[va], images[te], labels[tr], labels[va], labels[te]
