r"""Maximising an ELBO in model and variational parameters on many independent data sets at once, in resumable
chunks.

Given a pytree of trainable parameters with a leading *data-set* axis (``params[s]`` belongs to data set ``s``), the
stacked data (``data[s]``) and an objective ``elbo(params_s, data_s, key) -> scalar`` (a Monte-Carlo or exact ELBO
estimate), :func:`fit_batched` runs ``iterations`` optimiser steps (optax; RMSProp in the Hamiltonian-VAE paper)

    params_s <- update(params_s, grad_params [-elbo(params_s, data_s, fold_in(key_s, i))]),    i = 0, 1, ...

for every data set ``s`` simultaneously (``jax.vmap``), ``record_every`` steps per jitted ``lax.scan``.  After every
chunk it stores the mean ELBO estimate over the chunk's iterations and any user ``record(params)`` (e.g. the current
parameter error), and -- given a ``checkpoint`` path -- writes the whole state (parameters, optimiser state, the
iteration count and the records) atomically (:func:`dgm.fileio.atomic_write`).  A later call with the same
``settings`` continues from the file; because iteration ``i`` always draws from ``fold_in(key_s, i)`` the result is
bit-identical to an uninterrupted run, whatever the chunk at which it was killed.  A finished checkpoint is simply
loaded.  Different ``settings`` (another learning rate, iteration count, ...) raise
:class:`dgm.errors.CheckpointError` rather than silently mixing runs.

Written by hand: optax gives the optimiser, equinox the parameter pytrees; the chunked, checkpointed, vmapped
training loop is in neither.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from dgm.pytree_checkpoint import check_settings, json_normal, load_state, save_state

__all__ = ["BatchedFit", "fit_batched", "load_checkpoint", "FORMAT"]

FORMAT = "dgm.vi.batched_fit/1"


class BatchedFit(NamedTuple):
    """The outcome of :func:`fit_batched`.

    * ``params``: the trained parameters (leading data-set axis), combined with the static part;
    * ``iterations``: ``(n_records,)`` iteration counts at which the records were taken (``record_every``,
      ``2 record_every``, ...);
    * ``elbo``: ``(n_records, n_sets)`` mean ELBO estimate over each chunk's iterations;
    * ``records``: ``{name: (n_records, n_sets, ...)}`` from ``record(params)`` after each chunk;
    * ``seconds``: wall-clock seconds of this call (compilation included); ``resumed_from``: the iteration a
      checkpoint was continued from (0 for a fresh start).
    """

    params: Any
    iterations: np.ndarray
    elbo: np.ndarray
    records: dict
    seconds: float
    resumed_from: int


def _positive(name, v):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")
    return int(v)


def load_checkpoint(path) -> dict:
    """Read a checkpoint written by :func:`fit_batched`: ``{"meta": {...}, "leaves": [...], "arrays": {"iterations",
    "elbo", "record_<name>"...}}``; a missing, truncated or foreign file raises :class:`dgm.errors.CheckpointError`."""
    return load_state(path, format=FORMAT)


def fit_batched(elbo: Callable, params, static, data, keys, *, optimiser: optax.GradientTransformation,
                iterations: int, record_every: int = 1000, record: Optional[Callable] = None,
                checkpoint=None, settings: Optional[dict] = None, progress: bool = False,
                description: str = "fit") -> BatchedFit:
    """Maximise ``elbo`` on every data set at once (module docstring).

    * ``elbo(model, data_s, key) -> scalar`` with ``model = eqx.combine(params_s, static)``;
    * ``params``: the trainable leaves with a leading data-set axis (``eqx.partition`` of a vmapped init);
      ``static``: the rest (shared); ``data``: a pytree with the same leading axis; ``keys``: ``(n_sets,)`` keys;
    * ``record(model) -> {name: array}`` for one data set's model (vmapped here), taken after every chunk;
    * ``checkpoint``: a file path (``.npz``) to continue from and to write after every chunk; ``settings``: a
      JSON-serialisable dict that must match the checkpoint's (put every setting that changes the result in it);
    * ``progress``: a tqdm bar over the iterations (with the current mean ELBO).
    """
    iterations = _positive("iterations", iterations)
    record_every = _positive("record_every", record_every)
    settings = json_normal(dict(settings or {}, iterations=iterations, record_every=record_every))
    n_sets = int(keys.shape[0])
    opt_state = jax.vmap(optimiser.init)(params)
    state_leaves, treedef = jax.tree_util.tree_flatten((params, opt_state))
    start, hist_it, hist_elbo, hist_rec = 0, [], [], {}
    path = None if checkpoint is None else Path(checkpoint)
    if path is not None and path.exists():
        saved = load_state(path, format=FORMAT, like=state_leaves)
        check_settings(path, saved["meta"]["settings"], settings)
        params, opt_state = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(v) for v in saved["leaves"]])
        start = int(saved["meta"]["iteration"])
        hist_it, hist_elbo = list(saved["arrays"]["iterations"]), list(saved["arrays"]["elbo"])
        hist_rec = {name[len("record_"):]: list(v) for name, v in saved["arrays"].items() if name.startswith("record_")}
    resumed_from = start

    def loss(p, data_s, key):
        return -elbo(eqx.combine(p, static), data_s, key)

    def chunk_one(p, state, data_s, key, first, length):
        def body(carry, i):
            p, state = carry
            value, grads = jax.value_and_grad(loss)(p, data_s, jax.random.fold_in(key, i))
            updates, state = optimiser.update(grads, state, p)
            return (optax.apply_updates(p, updates), state), -value

        (p, state), values = lax.scan(body, (p, state), first + jnp.arange(length))
        return p, state, jnp.mean(values)

    compiled = {}

    def run_chunk(p, state, first, length):
        if length not in compiled:
            compiled[length] = jax.jit(jax.vmap(lambda p, s, d, k, f: chunk_one(p, s, d, k, f, length),
                                                in_axes=(0, 0, 0, 0, None)))
        return compiled[length](p, state, data, keys, jnp.asarray(first, jnp.int32))

    record_fn = None if record is None else jax.jit(jax.vmap(lambda p: record(eqx.combine(p, static))))
    t0 = time.perf_counter()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=iterations, initial=start, desc=description, unit="it", file=sys.stderr, leave=False)
    try:
        while start < iterations:
            length = min(record_every, iterations - start)
            params, opt_state, mean_elbo = run_chunk(params, opt_state, start, length)
            start += length
            mean_elbo = np.asarray(mean_elbo, np.float64)
            if not np.all(np.isfinite(mean_elbo)):
                bad = int(np.sum(~np.isfinite(mean_elbo)))
                raise FloatingPointError(f"{description}: the ELBO became non-finite on {bad} of {n_sets} data sets by "
                                         f"iteration {start}; lower the learning rate")
            hist_it.append(start)
            hist_elbo.append(mean_elbo)
            if record_fn is not None:
                for name, value in record_fn(params).items():
                    hist_rec.setdefault(name, []).append(np.asarray(value))
            if path is not None:
                leaves = jax.tree_util.tree_leaves((params, opt_state))
                arrays = {"iterations": np.asarray(hist_it, np.int64), "elbo": np.asarray(hist_elbo, np.float64),
                          **{f"record_{k}": np.stack(v) for k, v in hist_rec.items()}}
                save_state(path, leaves, dict(iteration=start, settings=settings), format=FORMAT, arrays=arrays)
            if bar is not None:
                bar.update(length)
                bar.set_postfix_str(f"ELBO {float(np.mean(mean_elbo)):.4g}", refresh=False)
    finally:
        if bar is not None:
            bar.close()
    return BatchedFit(eqx.combine(params, static), np.asarray(hist_it, np.int64),
                      np.asarray(hist_elbo, np.float64).reshape(len(hist_it), n_sets),
                      {k: np.stack(v) for k, v in hist_rec.items()}, time.perf_counter() - t0, resumed_from)
