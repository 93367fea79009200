"""``dgm.sample_many``: condition on many observations at once, in one compiled program.

The driver's chunk program (:func:`dgm.driver._chunk_program`: a ``lax.scan`` over iterations, chains ``vmap``ped,
step size adapted by dual averaging per chain) takes the observation as an argument; here it is ``vmap``ped once
more, over a leading observation axis, so ``n_obs x n_chains`` chains advance together in one program that compiles
once per shape (and is cached across calls); or, with ``chain_method="sequential"`` (CPU default), ``lax.map``
runs the observations one after another inside that one program. With ``sharded=True`` the observation axis is
split over a 1-D device mesh (:func:`dgm.runtime.sharding.sharded_program`; across hosts after
:func:`dgm.runtime.distributed.initialize`), padding the batch to a multiple of the mesh size with copies of the last
observation (their draws are dropped).

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

import time

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.adaptation.step_size import dual_averaging_adaptation

from dgm.adaptation import initial_metric_state, warmup_schedule
from dgm.compilation_cache import enable as enable_compilation_cache
from dgm.driver import (ProgramCache, _Progress, _chunk_program, _heuristic_step_sizes, _report, _root_key,
                        _run_phase)
from dgm.integrator import FAILURE_NAMES
from dgm.methods import SAMPLER_DEFAULTS, accepted_options, build_method, check_sampler_options
from dgm.model import GenerativeModel
from dgm.precision import float64
from dgm.result import Result, schema_stats

_BATCH_CACHE = ProgramCache(8)


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
    root = _root_key(seed)
    return np.asarray(jax.vmap(jax.random.fold_in, in_axes=(None, 0))(root, jnp.asarray(indices, jnp.uint32)))


def _batched_programs(cache_key, method_at, model, n_obs, n_chains, chunk_size, da_like, x_like, mm_like, mesh,
                      chain_method="vectorized"):
    """``(init, chunk, compile_time)``: the driver's programs ``vmap``ped over observations (``chunk`` returns its
    outputs ``(chunk, obs, chain, ...)`` so the driver's host loop slices and joins them along iterations)."""
    key = ProgramCache.key(cache_key)
    cached = _BATCH_CACHE.get(key)
    if cached is not None:
        return cached[:2] + (0.0,)
    t0 = time.perf_counter()

    def init_fn(positions, xs):
        return jax.vmap(lambda p, x: jax.vmap(method_at(x).init)(p))(positions, xs)

    run = _chunk_program(method_at, model, n_chains, chunk_size, chain_method)
    if chain_method == "vectorized":
        batched = jax.vmap(run, in_axes=(0, 0, 0, 0, 0, 0, None, None, None, None), out_axes=(0, 0, 0, 1))
    else:  # one observation after another (lax.map), its chains one after another: no lock-stepped loops

        def batched(states, da_state, mm_state, step_sizes, keys, xs, *flags):
            def one(args):
                return run(*args, *flags)

            states, da_state, mm_state, outputs = jax.lax.map(one, (states, da_state, mm_state, step_sizes, keys,
                                                                     xs))
            return states, da_state, mm_state, jax.tree_util.tree_map(lambda a: jnp.swapaxes(a, 0, 1), outputs)
    positions_like = jax.ShapeDtypeStruct((n_obs, n_chains, model.input_dim), jnp.float64)
    states_like = jax.eval_shape(init_fn, positions_like, x_like)
    scalar_int = jax.ShapeDtypeStruct((), jnp.int32)
    example = (states_like, da_like, mm_like, jax.ShapeDtypeStruct((n_obs, n_chains), jnp.float64),
               jax.ShapeDtypeStruct((n_obs, 2), jnp.uint32), x_like, jax.ShapeDtypeStruct((), jnp.bool_), scalar_int,
               scalar_int, jax.ShapeDtypeStruct((chunk_size, 2), jnp.bool_))
    if mesh is None:
        init = jax.jit(init_fn).lower(positions_like, x_like).compile()
        chunk = jax.jit(batched).lower(*example).compile()
    else:
        from jax.sharding import PartitionSpec

        from dgm.runtime.sharding import sharded_program

        axis = PartitionSpec(mesh.axis_names[0])
        init = sharded_program(init_fn, mesh, (True, True), axis, (positions_like, x_like))
        chunk = sharded_program(batched, mesh, (True,) * 6 + (False,) * 4,
                                (axis, axis, axis, PartitionSpec(None, mesh.axis_names[0])), example,
                                host_outputs=(3,))
    return _BATCH_CACHE.put(key, (init, chunk, time.perf_counter() - t0))


def sample_many(
    model: GenerativeModel,
    x_obs_batch,
    *,
    method: str = "chmc",
    n_chains: int = 4,
    n_warmup: int = 500,
    n_samples: int = 500,
    seed=0,
    indices=None,
    step_size=None,
    n_steps=(4, 8),
    n_inner: int = 1,
    tol: float = 1e-8,
    max_newton: int = 50,
    progress: bool = True,
    adapt_step_size=None,
    thin: int = 1,
    chunk_size: int = 100,
    chain_method: str = "auto",
    sharded: bool = False,
    mesh=None,
    compilation_cache: bool = True,
    **options,
) -> list[Result]:
    """Sample the inputs of ``model`` conditioned on each row of ``x_obs_batch`` (``(n_obs, output_dim)``).

    The arguments are those of :func:`dgm.sample` (same meaning, same defaults, the same method options), applied to
    every observation, plus:

      seed: an integer (or PRNG key); observation ``indices[i]`` uses ``fold_in(PRNGKey(seed), indices[i])``.
      indices: ``n_obs`` distinct non-negative integers naming the observations for their keys (default
        ``range(n_obs)``); give a piece of a larger batch its positions in it to reproduce the whole batch's results.
      chain_method: ``"vectorized"`` (``vmap`` over observations x chains), ``"sequential"`` (``lax.map``: one
        observation, and within it one chain, after another, inside the same compiled program) or ``"auto"``:
        sequential on CPU, vectorized on accelerators (as :func:`dgm.sample`). The keys, and so the draws up to
        rounding, do not depend on it.
      sharded: split the observations over the devices of ``mesh`` (default: all devices of all processes); each
        device runs its observations by ``chain_method``.

    Returns a list of ``n_obs`` :class:`dgm.Result` (see the module docstring for why a list and what each holds;
    ``settings`` records ``observation_index`` and the observation's key as ``seed``). Starting points are found per
    observation on the host (``model.init`` or Gauss-Newton, as ``dgm.sample``), everything after in one program.
    """
    for name, value, minimum in (("n_chains", n_chains, 1), ("n_samples", n_samples, 1), ("n_warmup", n_warmup, 0),
                                 ("thin", thin, 1), ("chunk_size", chunk_size, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    n_chains, n_warmup, n_samples, thin, chunk_size = map(int, (n_chains, n_warmup, n_samples, thin, chunk_size))
    if mesh is not None and not sharded:
        raise ValueError("mesh is only used with sharded=True")
    if chain_method == "auto":
        chain_method = "sequential" if jax.default_backend() == "cpu" else "vectorized"
    if chain_method not in ("vectorized", "sequential"):
        raise ValueError(f"chain_method must be 'auto', 'vectorized' or 'sequential', got {chain_method!r}")
    common = check_sampler_options(step_size, n_steps, n_inner, tol, max_newton)
    given = {k for k, v in common.items() if v != SAMPLER_DEFAULTS[k]}
    if adapt_step_size is not None and "adapt_step_size" in accepted_options(method):
        options = dict(options, adapt_step_size=bool(adapt_step_size))
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
        algorithm, applied = build_method(method, model, jnp.asarray(xs[0]), common, options, given)
        if algorithm.epsilon == 0.0:
            check_observation_batch(model, xs, manifold=True)

        def method_at(x_obs):
            return build_method(method, model, x_obs, common, options, given)[0]

        has_step_size = algorithm.initial_step_size is not None
        if adapt_step_size and not has_step_size:
            raise ValueError(f"method {method!r} has no step size to adapt (adapt_step_size=True)")
        adapt = has_step_size and (step_size is None if adapt_step_size is None else bool(adapt_step_size))
        how = ("none" if not has_step_size else "dual-averaging" if adapt and n_warmup
               else "find-reasonable-step-size" if adapt else "fixed")
        if sharded:
            from dgm.runtime.sharding import chain_mesh

            mesh = chain_mesh() if mesh is None else mesh
            n_devices = int(mesh.devices.size)
            n_run = -(-n_obs // n_devices) * n_devices  # padded with copies of the last observation
        else:
            mesh, n_run = None, n_obs
        order = np.concatenate([np.arange(n_obs), np.full(n_run - n_obs, n_obs - 1)]).astype(int)
        keys = observation_keys(seed, indices[order])
        split = np.asarray(jax.vmap(lambda k: jax.random.split(k, 3))(jnp.asarray(keys)))
        key_init, key_warmup, key_sample = split[:, 0], split[:, 1], split[:, 2]
        positions = np.stack([
            np.asarray(method_at(jnp.asarray(xs[i])).initial_positions(jnp.asarray(key_init[j]), n_chains),
                       dtype=np.float64) for j, i in enumerate(order[:n_obs])])
        positions = positions[np.minimum(np.arange(n_run), n_obs - 1)]
        x_run = jnp.asarray(xs[order])
        initial = np.nan if algorithm.initial_step_size is None else algorithm.initial_step_size
        step_sizes = jnp.full((n_run, n_chains), initial, jnp.float64)
        da_init, _, da_final = dual_averaging_adaptation(algorithm.target_acceptance)
        da_state = jax.vmap(jax.vmap(da_init))(step_sizes)
        mm_state = (jax.vmap(lambda _: initial_metric_state(n_chains, model.input_dim))(jnp.arange(n_run))
                    if algorithm.set_inverse_mass is not None else None)
        schedule = warmup_schedule(n_warmup if adapt and mm_state is not None else 0)
        setup_time = time.perf_counter() - t_setup

        cache_key = (model, method, tuple(sorted(common.items())), tuple(sorted(options.items())), n_run, n_chains,
                     xs.shape[1:], chunk_size, mesh, chain_method)
        x_like = jax.ShapeDtypeStruct(x_run.shape, jnp.float64)
        init, chunk, compile_time = _batched_programs(cache_key, method_at, model, n_run, n_chains, chunk_size,
                                                      da_state, x_like, mm_state, mesh, chain_method)
        bar = _Progress(n_warmup + n_samples, f"{algorithm.name} ({n_obs} observations x {n_chains} chains)",
                        progress)
        try:
            t0 = time.perf_counter()
            states = init(jnp.asarray(positions), x_run)
            if how == "find-reasonable-step-size":
                heuristic_keys = jax.vmap(lambda k: jax.random.split(k, n_chains))(jnp.asarray(key_warmup))
                step_sizes = jax.jit(jax.vmap(lambda k, s, st, x: _heuristic_step_sizes(method_at(x))(k, s, st)))(
                    heuristic_keys, states, step_sizes, x_run)
            warmup_out, states, da_state, mm_state = _run_phase(chunk, states, da_state, step_sizes,
                                                                jnp.asarray(key_warmup), x_run, adapt, n_warmup, 1,
                                                                chunk_size, bar, mm_state, schedule)
            if adapt and n_warmup:
                step_sizes = jax.vmap(jax.vmap(da_final))(da_state)
            out, states, _, _ = _run_phase(chunk, states, da_state, step_sizes, jnp.asarray(key_sample), x_run,
                                           False, n_samples, thin, chunk_size, bar, mm_state)
            wall_time = time.perf_counter() - t0
        finally:
            bar.close()
        from dgm.runtime.sharding import to_host

        step_sizes = to_host(step_sizes)
    # host outputs are (obs, draw, chain, ...): one Result per observation, (chain, draw, ...)
    out = {k: np.swapaxes(v, 1, 2)[:n_obs] for k, v in _flatten(out).items()}
    warm = {k: np.swapaxes(v, 1, 2)[:n_obs] for k, v in _flatten(warmup_out).items()} if n_warmup else {}
    results = []
    for i in range(n_obs):
        stats = {k[len("stats/"):]: v[i] for k, v in out.items() if k.startswith("stats/")}
        stats["constraint_residual"] = out["residual"][i]
        skipped = out["skipped_failures"][i].sum(axis=1)
        ran = np.asarray(step_sizes[i], dtype=float)
        settings = {k: v for k, v in options.items() if np.isscalar(v)}
        settings.update(
            applied, method=method, n_chains=n_chains, n_warmup=n_warmup, n_samples=n_samples,
            seed=keys[i].tolist(), sample_many_seed=np.asarray(_root_key(seed)).tolist(),
            observation_index=int(indices[i]), n_observations=n_obs, batch_wall_time=wall_time,
            step_size=(None if not has_step_size else float(ran[0]) if np.all(ran == ran[0]) else ran.tolist()),
            step_size_requested=step_size, adapt_step_size=bool(adapt), step_size_adaptation=how,
            chain_method=chain_method, sharded=bool(sharded), thin=thin,
        )
        result = Result(
            latents=out["latents"][i], inputs=out["inputs"][i], stats=schema_stats(stats), step_size=ran,
            wall_time=wall_time / n_obs, compile_time=compile_time, setup_time=setup_time / n_obs,
            method=algorithm.name, max_residual=float(np.max(out["residual"][i])), x_obs=xs[i],
            epsilon=algorithm.epsilon, settings=settings,
            warmup_stats=schema_stats({k[len("stats/"):]: v[i] for k, v in warm.items() if k.startswith("stats/")}),
            latent_names=getattr(model, "latent_names", None), sites=model.site_layout(),
            unrecorded_failures={name: int(skipped[:, j].sum()) for j, name in enumerate(
                FAILURE_NAMES[c] for c in sorted(FAILURE_NAMES))} if "failure" in stats else {},
            kernel=algorithm.kernel,
        )
        _report(result, False)  # warnings about failed trajectories, per observation
        results.append(result)
    if progress:
        import sys

        acceptance = np.mean([r.acceptance_rate for r in results])
        print(f"{algorithm.name}: {n_obs} observations x {n_chains} chains x {n_samples} draws in {wall_time:.2f} s "
              f"({n_obs / wall_time:.2f} observations/s; +{setup_time:.2f} s set-up, {compile_time:.2f} s compile); "
              f"mean acceptance {acceptance:.3f}", file=sys.stderr)
    return results


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}/"))
        else:
            flat[f"{prefix}{key}"] = np.asarray(value)
    return flat
