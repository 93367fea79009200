"""Atomic file writing and checksums: the one place dgm writes files that must never be seen half-written.

``atomic_write`` is the classic temp-file + fsync + rename + directory-fsync sequence (POSIX ``rename`` is atomic
within one file system), so a reader sees the old file or the new one, never a torn one, even after a kill or a
power cut. Checkpoints, trained models and cached data sets all go through it.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Union

__all__ = ["atomic_write", "sha256_bytes", "sha256_file", "fsync_directory"]


def fsync_directory(directory: Path) -> None:
    """Flush a directory's entry table (so a rename inside it survives a crash); a no-op where unsupported."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory handles
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path, data: Union[bytes, Callable[[BinaryIO], None]]) -> Path:
    """Write ``data`` (bytes, or a function that writes to a binary file object) to ``path`` atomically: temporary
    file in the same directory, fsync, rename over ``path``, fsync the directory. Creates missing parent
    directories. Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    fsync_directory(path.parent)
    return path


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of a byte string."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
