"""One file holding a training state: the array leaves of a pytree plus a JSON record, written atomically.

``save_state(path, leaves, meta, format=...)`` writes an ``.npz`` (``leaf0 .. leafN``, any extra named arrays, and the
JSON ``meta`` as bytes) through :func:`dgm.fileio.atomic_write`, so a kill leaves the previous state or the new one,
never a torn file. ``load_state(path, format=..., like=leaves)`` reads it back and checks the format tag and that the
stored leaves have the shapes and dtypes of ``like`` (the state of a freshly initialised run with the same settings),
raising :class:`dgm.errors.CheckpointError` otherwise. ``check_settings`` compares the settings a checkpoint was
written with against the current ones and names every difference.

Used by :mod:`dgm.vi.batched_fit` and :mod:`dgm.vae.train` (resumable training); the pytree structure itself is
never stored -- it is rebuilt from the run's own initialisation, so a checkpoint cannot smuggle in code.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from dgm.errors import CheckpointError
from dgm.fileio import atomic_write

__all__ = ["save_state", "load_state", "check_settings", "json_normal"]


def json_normal(value):
    """``value`` after a JSON round trip (tuples -> lists, numpy scalars -> numbers), for comparing settings."""
    return json.loads(json.dumps(value, sort_keys=True, default=lambda v: v.item() if hasattr(v, "item") else str(v)))


def save_state(path, leaves: Sequence, meta: dict, *, format: str, arrays: Optional[dict] = None) -> Path:
    """Write ``leaves`` (arrays), the named ``arrays`` and the JSON-serialisable ``meta`` to ``path`` atomically."""
    out = {f"leaf{i}": np.asarray(leaf) for i, leaf in enumerate(leaves)}
    for name, value in (arrays or {}).items():
        out[f"array_{name}"] = np.asarray(value)
    record = dict(json_normal(meta), format=format, n_leaves=len(leaves), arrays=sorted(arrays or {}))
    out["meta"] = np.frombuffer(json.dumps(record, sort_keys=True).encode(), np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **out)
    return atomic_write(path, buffer.getvalue())


def load_state(path, *, format: str, like: Optional[Sequence] = None) -> dict:
    """``{"meta": dict, "leaves": [np.ndarray], "arrays": {name: np.ndarray}}`` from :func:`save_state`'s file."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(bytes(f["meta"]).decode())
            if meta.get("format") != format:
                raise CheckpointError(f"{path} is not a {format} checkpoint (format {meta.get('format')!r})")
            leaves = [f[f"leaf{i}"] for i in range(meta["n_leaves"])]
            arrays = {name: f[f"array_{name}"] for name in meta["arrays"]}
    except CheckpointError:
        raise
    except Exception as err:  # zip / json / missing-key errors: a torn or foreign file
        raise CheckpointError(f"checkpoint {path} is unreadable ({type(err).__name__}: {err})") from None
    if like is not None:
        like = [np.asarray(v) for v in like]
        if len(leaves) != len(like) or any(a.shape != b.shape or a.dtype != b.dtype for a, b in zip(leaves, like)):
            raise CheckpointError(f"checkpoint {path}: the stored state does not fit this model (different "
                                  "architecture or parameter dtype)")
    return dict(meta=meta, leaves=leaves, arrays=arrays)


def check_settings(path, saved: dict, current: dict) -> None:
    """Raise :class:`dgm.errors.CheckpointError` naming every setting in which ``saved`` and ``current`` differ."""
    saved, current = json_normal(saved), json_normal(current)
    if saved == current:
        return
    diff = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
    raise CheckpointError(f"checkpoint {path} belongs to another run (settings differ: "
                          + ", ".join(f"{k}: saved {saved.get(k)!r}, now {current.get(k)!r}" for k in diff)
                          + "); remove it or use another checkpoint location")
