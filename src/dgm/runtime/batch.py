"""``dgm.sample_many``: condition on many observations at once, in one compiled program.

The engine's chunk program (:func:`dgm.runtime.engine.chunk_program`: a ``lax.scan`` over iterations, chains
``vmap``ped, step size adapted by dual averaging per chain) takes the observation as an argument; here it is
``vmap``ped once more, over a leading observation axis, so ``n_obs x n_chains`` chains advance together in one
program that compiles once per shape (and is cached across calls); or, with ``chain_method="sequential"`` (CPU
default), ``lax.map`` runs the observations one after another inside that one program. With ``sharded=True`` the
observation axis is split over a 1-D device mesh (:func:`dgm.runtime.sharding.sharded_program`; across hosts after
:func:`dgm.runtime.distributed.initialize`), padding the batch to a multiple of the mesh size with copies of the
last observation (their draws are dropped).

**Keys.** Observation ``i`` (its *index*: ``indices[i]``, default ``i``) is sampled from the root key
``k_i = fold_in(PRNGKey(seed), index)`` exactly as ``dgm.sample`` samples from its seed (``split(k_i, 3)`` into
initialisation, warm-up and sampling keys). Each observation's chains therefore see the same random numbers however
the batch is split, ordered or laid out: ``sample_many(m, xs, seed=s, chain_method=c)[i]`` holds the draws of
``dgm.sample(m, xs[i], seed=jax.random.fold_in(jax.random.PRNGKey(s), i), chain_method=c)``, and a batch split into
pieces (``indices=`` giving each piece its positions in the whole) gives the whole batch's results. With
``chain_method="sequential"`` (the default on CPU: ``lax.map`` over observations, then over chains) the per-chain
program is the same whatever the batch, and the equalities are bit for bit (tested). With ``"vectorized"``
(``vmap`` over observations x chains, the default on accelerators) XLA's kernels for different batch sizes may round
a few operations differently (measured on CPU: 4e-13 after 50 iterations), so the draws agree to rounding.

**One Result per observation** (a list): each is a complete posterior with its own ``to_arviz()`` DataTree,
summary, diagnostics and ``save``, which is what ArviZ's functions expect (one posterior with ``chain`` and
``draw``); a stacked view is ``xarray.concat([r.to_arviz().posterior.ds for r in results], dim="observation")``.
Each result's ``wall_time`` is the batch's sampling time divided by the number of observations (the amortised cost,
so ESS per second stays comparable with ``dgm.sample``); ``settings["batch_wall_time"]`` holds the whole.
"""

from __future__ import annotations

import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from dgm.compilation_cache import enable as enable_compilation_cache
from dgm.model import GenerativeModel
from dgm.precision import float64
from dgm.result import Result
from dgm.runtime import engine
from dgm.runtime.sharding import chain_mesh


def check_observation_batch(model: GenerativeModel, x_obs_batch, manifold: bool) -> np.ndarray:
    """``x_obs_batch`` as a float64 ``(n_obs, output_dim)`` array; ``ValueError`` naming the first bad observation
    (wrong shape, NaN/inf, or more outputs than inputs for the exact methods)."""
    xs = np.asarray(x_obs_batch, dtype=np.float64)
    out_shape = model.output_shape()
    if xs.ndim != 1 + len(out_shape) or xs.shape[1:] != out_shape or xs.shape[0] < 1:
        raise ValueError(f"x_obs_batch must have shape (n_obs, {', '.join(map(str, out_shape))}) with n_obs >= 1: "
                         f"one observation of the generator's output shape {out_shape} per row; got {xs.shape}")
    bad = np.flatnonzero(~np.all(np.isfinite(xs.reshape(len(xs), -1)), axis=1))
    if bad.size:
        raise ValueError(f"x_obs_batch has non-finite values (NaN/inf) in observation(s) {bad[:10].tolist()}")
    model.validate_observation(xs[0], manifold=manifold)
    return xs


def observation_keys(seed, indices) -> np.ndarray:
    """``(n_obs, 2)`` root keys ``fold_in(PRNGKey(seed), index)``, one per observation index."""
    root = engine.root_key(seed)
    return np.asarray(jax.vmap(jax.random.fold_in, in_axes=(None, 0))(root, jnp.asarray(indices, jnp.uint32)))


def sample_many(
    model: GenerativeModel,
    x_obs_batch,
    *,
    seed=0,
    indices=None,
    chain_method: str = "auto",
    sharded: bool = False,
    mesh=None,
    progress: bool = True,
    compilation_cache: bool = True,
    detect_components="auto",
    **settings,
) -> list[Result]:
    """Sample the inputs of ``model`` conditioned on each row of ``x_obs_batch`` (``(n_obs, output_dim)``).

    ``**settings`` are :func:`dgm.sample`'s run and method options (``method``, ``n_chains``, ``n_warmup``,
    ``n_samples``, ``step_size``, ``n_steps``, ``n_inner``, ``tol``, ``max_newton``, ``adapt_step_size``, ``thin``,
    ``chunk_size`` and the method's own: same meaning, same defaults, checked by the same engine), applied to every
    observation; and:

      seed: an integer (or PRNG key); observation ``indices[i]`` uses ``fold_in(PRNGKey(seed), indices[i])``.
      indices: ``n_obs`` distinct non-negative integers naming the observations for their keys (default
        ``range(n_obs)``); give a piece of a larger batch its positions in it to reproduce the whole batch's results.
      chain_method: ``"vectorized"`` (``vmap`` over observations x chains), ``"sequential"`` (``lax.map``: one
        observation, and within it one chain, after another, inside the same compiled program) or ``"auto"``:
        sequential on CPU, vectorized on accelerators (as :func:`dgm.sample`). The keys, and so the draws up to
        rounding, do not depend on it.
      sharded: split the observations over the devices of ``mesh`` (default: all devices of all processes); each
        device runs its observations by ``chain_method``.

    Everything else is :func:`dgm.sample`'s, through the same engine (:mod:`dgm.runtime.engine`): the method's
    ``n_warmup``-driven adaptation (``chmc-tempered``), declared symmetries (checked at the starting points),
    ``metric="diagonal"``, ``Result.settings`` and the manifold components (``detect_components``).

    Returns a list of ``n_obs`` :class:`dgm.Result` (see the module docstring for why a list and what each holds;
    ``settings`` records ``observation_index`` and the observation's key as ``seed``). Starting points are found per
    observation on the host (``model.init`` or Gauss-Newton, as ``dgm.sample``), everything after in one program.
    """
    if mesh is not None and not sharded:
        raise ValueError("mesh is only used with sharded=True")
    chain_method = engine.resolve_chain_method(chain_method, allowed=("vectorized", "sequential"))
    if compilation_cache:
        enable_compilation_cache()
    t_setup = time.perf_counter()
    with float64():
        xs = check_observation_batch(model, x_obs_batch, manifold=False)
        n_obs = len(xs)
        indices = np.arange(n_obs) if indices is None else np.asarray(indices)
        if (indices.shape != (n_obs,) or not np.issubdtype(indices.dtype, np.integer) or np.any(indices < 0)
                or len(np.unique(indices)) != n_obs):
            raise ValueError(f"indices must be {n_obs} distinct non-negative integers (one per observation), got "
                             f"{indices.tolist() if indices.size < 20 else indices.shape}")
        run = engine.plan(model, xs[0], chain_method=chain_method, **settings)
        mesh = (chain_mesh() if mesh is None else mesh) if sharded else None
        n_devices = 1 if mesh is None else int(mesh.devices.size)
        n_run = -(-n_obs // n_devices) * n_devices  # padded with copies of the last observation (dropped)
        order = np.minimum(np.arange(n_run), n_obs - 1)
        keys = observation_keys(seed, indices[order])
        key_init, key_warmup, key_sample = (np.stack(k) for k in zip(*(engine.phase_keys(k) for k in keys)))
        algorithms = [run.method_at(jnp.asarray(x)) for x in xs]  # each observation's method, as dgm.sample's
        positions = np.stack([engine.starting_points(run, algorithms[i], jnp.asarray(key_init[i]), xs[i])
                              for i in range(n_obs)])[order]
        x_run = jnp.asarray(xs[order])
        start = engine.adaptation_start(run, batch=(n_run,))
        setup_time = time.perf_counter() - t_setup
        programs = engine.compile_programs(run, jax.ShapeDtypeStruct(x_run.shape, jnp.float64), start, mesh,
                                           n_obs=n_run)
        bar = engine.Progress(run.n_warmup + run.n_samples,
                              f"{run.algorithm.name} ({n_obs} observations x {run.n_chains} chains)", progress)
        try:
            states, start, compile_time = engine.start_chains(run, programs, positions, x_run, start,
                                                              jnp.asarray(key_warmup), batched=True,
                                                              compile_ahead=mesh is None)
            outcome = engine.execute(run, programs.chunk, states, start, jnp.asarray(key_warmup),
                                     jnp.asarray(key_sample), x_run, bar, hook=programs.hook)
        finally:
            bar.close()
        results = []
        for i in range(n_obs):  # one Result per observation, as dgm.sample would return it
            settings = engine.run_settings(
                run, algorithms[i], keys[i], outcome.step_sizes[i], sample_many_seed=engine.seed_setting(seed),
                observation_index=int(indices[i]), n_observations=n_obs, batch_wall_time=outcome.wall_time,
                described=None if outcome.described is None else outcome.described[i],
                sharded=bool(sharded))
            meta = engine.run_metadata(run, algorithms[i], outcome.step_sizes[i], xs[i], settings,
                                       wall_time=outcome.wall_time / n_obs, compile_time=compile_time,
                                       setup_time=setup_time / n_obs)
            result = engine.assemble(meta, engine.observation_outputs(outcome.sampling, i),
                                     engine.observation_outputs(outcome.warmup, i))
            results.append(engine.conclude(run, result, xs[i], detect_components, progress=False))
    if progress:
        acceptance = np.mean([r.acceptance_rate for r in results])
        print(f"{run.algorithm.name}: {n_obs} observations x {run.n_chains} chains x {run.n_samples} draws in "
              f"{outcome.wall_time:.2f} s ({n_obs / outcome.wall_time:.2f} observations/s; +{setup_time:.2f} s set-up, "
              f"{compile_time:.2f} s compile); mean acceptance {acceptance:.3f}", file=sys.stderr)
    return results
