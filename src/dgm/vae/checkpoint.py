"""Saving and loading trained VAEs.

``save("model.eqx", vae)`` writes two files:

* ``model.eqx``: the parameters, ``equinox.tree_serialise_leaves`` (numpy ``.npy`` records, leaf by leaf);
* ``model.json``: the hyper-parameters (:class:`dgm.vae.VAEConfig`), the format tag, the dgm version, the
  parameters' dtype, the sha256 of ``model.eqx`` and optional user metadata (e.g. training time).

``load("model.eqx")`` rebuilds a VAE of the stored shape from the JSON and reads the parameters into it.  A missing
or corrupt file, a checksum mismatch, leaves that do not fit the stored hyper-parameters, or a stored config that
differs from ``expect`` raise :class:`dgm.errors.CheckpointError` naming what went wrong.  Both files are
written atomically (:func:`dgm.fileio.atomic_write`: temporary file, fsync, rename).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import equinox as eqx
import jax
import jax.numpy as jnp

from dgm.errors import CheckpointError
from dgm.fileio import atomic_write, sha256_file
from dgm.vae.config import VAEConfig
from dgm.vae.networks import VAE

FORMAT = "dgm.vae/1"

__all__ = ["CheckpointError", "save", "load", "read_metadata", "hyperparameters_path"]


def hyperparameters_path(path) -> Path:
    """The JSON beside a parameters file: ``model.eqx -> model.json``."""
    path = Path(path)
    if path.suffix == ".json":
        raise CheckpointError(f"{path}: give the parameters file (e.g. model.eqx), not the hyper-parameters JSON")
    return path.with_suffix(".json")


def save(path, vae: VAE, *, metadata: Optional[dict] = None) -> Path:
    """Write ``vae`` to ``path`` (parameters) and ``path.with_suffix('.json')`` (hyper-parameters); returns ``path``.
    ``metadata``: any JSON-serialisable dict stored with the hyper-parameters (read it back with
    :func:`read_metadata`)."""
    if not isinstance(vae, VAE):
        raise TypeError(f"save needs a dgm.vae.VAE, got {type(vae).__name__}")
    path = Path(path)
    json_path = hyperparameters_path(path)
    atomic_write(path, lambda f: eqx.tree_serialise_leaves(f, vae))
    record = {
        "format": FORMAT,
        "dgm_version": _version(),
        "dtype": str(vae.log_sigma.dtype),
        "config": vae.config.to_dict(),
        "parameters_file": path.name,
        "parameters_sha256": sha256_file(path),
        "metadata": metadata or {},
    }
    text = json.dumps(record, indent=2, sort_keys=True).encode()
    atomic_write(json_path, text)
    return path


def _read_record(path: Path) -> dict:
    json_path = hyperparameters_path(path)
    if not path.exists():
        raise CheckpointError(f"VAE checkpoint {path} does not exist")
    if not json_path.exists():
        raise CheckpointError(f"VAE checkpoint {path}: its hyper-parameters file {json_path} is missing")
    try:
        record = json.loads(json_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"VAE checkpoint {path}: hyper-parameters file {json_path} is corrupt ({err})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        got = record.get("format") if isinstance(record, dict) else type(record).__name__
        raise CheckpointError(f"VAE checkpoint {path}: {json_path} is not a {FORMAT} record (format {got!r})")
    for field in ("config", "parameters_sha256", "dtype"):
        if field not in record:
            raise CheckpointError(f"VAE checkpoint {path}: {json_path} lacks the field {field!r}")
    return record


def read_metadata(path) -> dict:
    """The ``metadata`` dict stored by :func:`save` (and ``"config"``, ``"dgm_version"``, ``"dtype"``)."""
    record = _read_record(Path(path))
    return {**record.get("metadata", {}), "config": record["config"], "dgm_version": record.get("dgm_version"),
            "dtype": record["dtype"]}


def load(path, *, expect: Optional[VAEConfig] = None) -> VAE:
    """Read a VAE written by :func:`save`.  ``expect``: a config the stored one must equal (e.g. a cache lookup);
    a difference raises :class:`CheckpointError` naming every differing hyper-parameter."""
    path = Path(path)
    record = _read_record(path)
    try:
        config = VAEConfig.from_dict(record["config"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"VAE checkpoint {path}: invalid hyper-parameters in "
                              f"{hyperparameters_path(path)}: {err}") from None
    if expect is not None:
        diff = expect.differences(config)
        if diff:
            lines = ", ".join(f"{k}: expected {a!r}, stored {b!r}" for k, (a, b) in sorted(diff.items()))
            raise CheckpointError(f"VAE checkpoint {path} has different hyper-parameters ({lines})")
    actual = sha256_file(path)
    if actual != record["parameters_sha256"]:
        raise CheckpointError(f"VAE checkpoint {path} is corrupt or was modified: sha256 {actual} does not match "
                              f"{record['parameters_sha256']} recorded in {hyperparameters_path(path)}")
    skeleton = VAE(config, key=jax.random.key(0))
    dtype = jnp.dtype(record["dtype"])
    if dtype == jnp.float64 and not jax.config.jax_enable_x64:
        raise CheckpointError(f"VAE checkpoint {path} holds float64 parameters; load it inside dgm.float64()")
    skeleton = skeleton.astype(dtype)  # every leaf: inside dgm.float64() a fresh VAE's weights are float64
    try:
        return eqx.tree_deserialise_leaves(path, skeleton)
    except Exception as err:  # equinox raises plain RuntimeError/ValueError/EOFError on shape or size mismatch
        raise CheckpointError(f"VAE checkpoint {path}: the parameters do not fit the hyper-parameters in "
                              f"{hyperparameters_path(path)} ({type(err).__name__}: {err})") from None


def _version() -> str:
    try:
        import dgm

        return dgm.__version__
    except Exception:  # pragma: no cover
        return "unknown"
