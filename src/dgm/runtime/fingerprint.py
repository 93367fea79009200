"""The settings fingerprint of a checkpointed run: what a resumed :func:`dgm.sample` call must agree on.

A flat dict of JSON values: the model (name, shapes, and a digest of its functions — the program of each, as a jaxpr
traced in float64, and the values of the constants it closes over), the observation (digest), the method and every
option, chains, phase lengths, thinning, seed, chunking (it sets the key schedule), chain layout and starting points.
:func:`differences` names each setting that differs, for the error message.
"""

from __future__ import annotations

import hashlib
import re
import weakref

import jax
import jax.numpy as jnp
import numpy as np

from dgm.fileio import sha256_bytes


def _array_digest(value) -> str:
    a = np.ascontiguousarray(np.asarray(value))
    return f"{a.dtype.str}{list(a.shape)}:{sha256_bytes(a.tobytes())[:16]}"


def _jsonable(value):
    if isinstance(value, (np.ndarray, jax.Array)):
        return _array_digest(value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


_PROBES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _model_probe(model) -> str:
    """A digest of the model's functions: the program of each (its jaxpr, traced in float64, function addresses
    removed) and the values of the constants it closes over. Another generator, latent map or input density — or the
    same code around other data — gives another digest. Tracing only (no compilation); cached per model object."""
    if model in _PROBES:
        return _PROBES[model]
    from dgm.precision import float64

    digest = hashlib.sha256()
    with float64():
        like = jax.ShapeDtypeStruct((model.input_dim,), jnp.float64)
        for fn in (model.generator, model.latents, model.log_input_density):
            closed = jax.make_jaxpr(fn)(like)
            digest.update(re.sub(r" at 0x[0-9a-fA-F]+", "", str(closed.jaxpr)).encode())
            for const in closed.consts:
                digest.update(_array_digest(const).encode())
    _PROBES[model] = digest.hexdigest()[:16]
    return _PROBES[model]


def fingerprint(model, x_obs, *, method, common, options, n_chains, n_warmup, n_samples, thin, seed, chunk_size,
                chain_method, step_size_adaptation, initial_positions=None) -> dict:
    """The settings a resumed call must share with the checkpointed run (a flat dict of JSON values): the model
    (name, shapes, a probe of its functions), the observation (digest), method and every option, chains, phases'
    lengths, thinning, seed, chunking (it sets the key schedule), chain layout and starting points."""
    record = {
        "model": model.name, "input_dim": model.input_dim, "output_shape": list(model.output_shape()),
        "latent_shape": list(model.latent_shape()), "model_functions": _model_probe(model),
        "observation": _array_digest(np.asarray(x_obs, dtype=np.float64)), "method": method,
        "n_chains": n_chains, "n_warmup": n_warmup, "n_samples": n_samples, "thin": thin, "seed": seed,
        "chunk_size": chunk_size, "chain_method": chain_method, "step_size_adaptation": step_size_adaptation,
        "initial_positions": None if initial_positions is None else _array_digest(
            np.asarray(initial_positions, dtype=np.float64)),
    }
    record.update({f"option {k}": _jsonable(v) for k, v in sorted(common.items())})
    record.update({f"option {k}": _jsonable(v) for k, v in sorted(options.items())})
    return record


def differences(stored: dict, given: dict) -> list[str]:
    out = []
    for key in sorted(set(stored) | set(given), key=lambda k: (k.startswith("option"), k)):
        if stored.get(key, "(not set)") != given.get(key, "(not set)"):
            shown = "(differs)" if key in ("model_functions", "observation", "initial_positions") else None
            out.append(f"{key}: {shown or repr(given.get(key, '(not set)'))} here, "
                       f"{shown or repr(stored.get(key, '(not set)'))} in the checkpoint")
    return out
