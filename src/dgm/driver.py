"""``dgm.sample``: warm-up with step-size adaptation, then sampling, in compiled chunks cached across calls.

One compiled program (:func:`_chunk_program`) runs a chunk of iterations in ``lax.scan`` — every chain's
transition (``vmap``, or ``lax.map`` one chain after another), dual averaging of the step size (BlackJAX; Hoffman &
Gelman 2014) when adapting, thinning, and the latents and constraint residual of each recorded draw. Warm-up and
sampling are the same program with different runtime flags, and the observation is an argument, so a configuration
compiles once per process: repeated calls (new seeds, new observations of the same shape) reuse it. A failed
trajectory counts as acceptance 0 for adaptation (so failures shrink the step, as they should) and is recorded by
reason apart from acceptance. Set-up (finding starting points), compilation and running are timed separately.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections import OrderedDict
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.adaptation.step_size import dual_averaging_adaptation, find_reasonable_step_size

from dgm.adaptation import initial_metric_state, metric_window_step, warmup_schedule
from dgm.compilation_cache import enable as enable_compilation_cache
from dgm.components import components_after_sampling, warn_if_stuck
from dgm.integrator import FAILURE_NAMES
from dgm.kernels.base import Method
from dgm.methods import SAMPLER_DEFAULTS, accepted_options, build_method, check_sampler_options
from dgm.model import GenerativeModel
from dgm.precision import float64
from dgm.result import Result, schema_stats
from dgm.symmetry import check_symmetries


class _Progress:
    """A tqdm bar over warm-up and sampling iterations, advanced by the host after each compiled chunk."""

    def __init__(self, total: int, description: str, enabled: bool):
        self.bar = None
        if enabled and total > 0:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=description, file=sys.stderr, leave=True)

    def advance(self, n: int):
        if self.bar is not None:
            self.bar.update(n)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _over_chains(fn, chain_method: str):
    """Map ``fn`` over the leading (chain) axis of its arguments: ``vmap`` or a sequential ``lax.map``
    (``"sharded"``: each device ``vmap``s its own chains, :mod:`dgm.runtime.sharding`)."""
    if chain_method in ("vectorized", "sharded"):
        return jax.vmap(fn)
    return lambda *args: jax.lax.map(lambda a: fn(*a), args)


class _Programs(NamedTuple):
    """The compiled programs of one sampling configuration (cached across :func:`sample` calls)."""

    init: Any  # (positions, x_obs) -> states
    chunk: Any  # see _chunk_program
    compile_time: float


def _chunk_program(method_at, model: GenerativeModel, n_chains: int, chunk_size: int, chain_method: str,
                   chain_keys=None):
    """``(states, da_state, mm_state, step_sizes, key, x_obs, adapt, n_active, n_sub, schedule)
    -> (states, da_state, mm_state, outputs)``.

    One program serves warm-up and sampling: ``chunk_size`` iterations in ``lax.scan``, of which the first
    ``n_active`` run (the rest are skipped by ``lax.cond``: the last chunk of a phase); each iteration runs ``n_sub``
    transitions and records the last (thinning); ``adapt`` switches dual averaging of the step size on or off. The
    observation ``x_obs`` is an argument, so conditioning on new data of the same shape reuses the program.
    Outputs per recorded iteration and chain: the method's statistics (and ``step_size``, ``lp``), inputs ``u``,
    latents, ``|g(u) - x_obs|_inf``, and failure counts by reason over the ``n_sub - 1`` unrecorded transitions.
    Methods with an adaptable diagonal metric (``Method.set_inverse_mass``) also carry ``mm_state`` (BlackJAX's
    Welford state per chain; ``None`` otherwise) and follow ``schedule`` (``(chunk_size, 2)`` booleans: in a slow
    window, at a window's end) while adapting: :func:`dgm.adaptation.metric_window_step`.
    ``chain_keys(key) -> (n_chains, 2)``: the transition keys of this program's chains (default
    ``random.split(key, n_chains)``; a sharded program takes its devices' slice of the global split, so the draws do
    not depend on the layout).
    """
    if chain_keys is None:
        def chain_keys(key):
            return jax.random.split(key, n_chains)
    failure_codes = jnp.asarray(sorted(FAILURE_NAMES), jnp.int32)

    def run(states, da_state, mm_state, step_sizes, key, x_obs, adapt, n_active, n_sub, schedule):
        method = method_at(x_obs)
        _, da_update, _ = dual_averaging_adaptation(method.target_acceptance)
        step_chains = _over_chains(method.step, chain_method)

        def transition(states, key, current):
            return step_chains(chain_keys(key), states, current)

        def unrecorded_failures(infos):
            stats = jax.vmap(method.stats)(infos)
            if "failure" not in stats:
                return jnp.zeros((n_chains, failure_codes.size), jnp.int32)
            return (stats["failure"][:, None] == failure_codes[None, :]).astype(jnp.int32)

        def iteration(carry, xs):
            states, da_state, mm_state = carry
            index, key, window = xs
            active = index < n_active  # the last chunk of a phase runs fewer iterations: the rest change nothing
            current = jnp.where(adapt, jnp.exp(da_state.log_step_size), step_sizes)

            # n_sub transitions (thinning), the last one recorded; failures of the others are counted. One copy of
            # the transition in the program: compile time grows with every copy of the integrator's loops.
            def one(i, acc):
                states, counts, _ = acc
                states, infos = transition(states, jax.random.fold_in(key, i), current)
                counts = counts + jnp.where(i < n_sub - 1, unrecorded_failures(infos), 0)
                return states, counts, infos

            no_info = jax.tree_util.tree_map(
                jnp.zeros_like, jax.eval_shape(lambda s: transition(s, key, current)[1], states)
            )
            states, skipped, infos = jax.lax.fori_loop(
                0, jnp.where(active, n_sub, 0), one,
                (states, jnp.zeros((n_chains, failure_codes.size), jnp.int32), no_info),
            )
            acceptance = jnp.nan_to_num(jax.vmap(method.acceptance)(infos), nan=0.0)
            da_state = jax.lax.cond(adapt & active, lambda d: jax.vmap(da_update)(d, acceptance), lambda d: d, da_state)
            if mm_state is not None:  # windowed adaptation of a diagonal metric
                reexpress = _over_chains(method.set_inverse_mass, chain_method)
                states, da_state, mm_state = metric_window_step(method, reexpress, states, da_state, mm_state,
                                                                window & adapt & active)
            stats = jax.vmap(method.stats)(infos)
            if method.initial_step_size is not None:  # the step size each chain used at this iteration
                stats["step_size"] = current
            if method.log_density is not None:
                stats["lp"] = jax.vmap(method.log_density)(states)
            inputs = jax.vmap(method.position)(states)
            out = {
                "stats": stats,
                "inputs": inputs,
                "latents": jax.vmap(model.latents)(inputs),
                "residual": jnp.max(jnp.abs(jax.vmap(model.generator)(inputs) - x_obs), axis=-1),
                "skipped_failures": skipped,
            }
            return (states, da_state, mm_state), out

        xs = (jnp.arange(chunk_size), jax.random.split(key, chunk_size), schedule)
        (states, da_state, mm_state), outputs = jax.lax.scan(iteration, (states, da_state, mm_state), xs)
        return states, da_state, mm_state, outputs

    return run


# Compiled programs by configuration: repeated dgm.sample calls on the same model, method, options and shapes (any
# observed values) skip tracing and compilation. Small: each entry holds two XLA executables.
class ProgramCache:
    """A least-recently-used store of compiled programs keyed by their configuration; a configuration that cannot be
    hashed (:func:`_hashable`) is compiled every time instead of cached."""

    def __init__(self, size: int):
        self.size, self.entries = size, OrderedDict()

    @staticmethod
    def key(configuration):
        try:
            return _hashable(configuration)
        except TypeError:
            return None

    def get(self, key):
        if key is None or key not in self.entries:
            return None
        self.entries.move_to_end(key)
        return self.entries[key]

    def put(self, key, programs):
        if key is not None:
            self.entries[key] = programs
            while len(self.entries) > self.size:
                self.entries.popitem(last=False)
        return programs


_PROGRAM_CACHE = ProgramCache(16)


def _hashable(value):
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, np.ndarray):
        return ("ndarray", value.shape, value.dtype.str, value.tobytes())
    hash(value)  # raises TypeError for what cannot key a cache
    return value


def _compiled_programs(key, method_at, model, n_chains, chunk_size, chain_method, da_like, x,
                       mm_like=None, mesh=None) -> _Programs:
    cache_key = ProgramCache.key(key)
    cached = _PROGRAM_CACHE.get(cache_key)
    if cached is not None:
        return cached._replace(compile_time=0.0)
    t0 = time.perf_counter()
    if chain_method == "sharded":  # chains laid out over a device mesh (dgm.runtime.sharding)
        from dgm.runtime.sharding import sharded_chain_programs

        init, chunk = sharded_chain_programs(method_at, model, n_chains, chunk_size, mesh, da_like, x, mm_like)
        return _PROGRAM_CACHE.put(cache_key, _Programs(init, chunk, time.perf_counter() - t0))
    positions_like = jax.ShapeDtypeStruct((n_chains, model.input_dim), jnp.float64)
    init = jax.jit(lambda positions, x_obs: jax.vmap(method_at(x_obs).init)(positions))
    states_like = jax.eval_shape(init, positions_like, x)
    init = init.lower(positions_like, x).compile()
    chunk = jax.jit(_chunk_program(method_at, model, n_chains, chunk_size, chain_method))
    scalar_int = jax.ShapeDtypeStruct((), jnp.int32)
    chunk = chunk.lower(states_like, da_like, mm_like, jax.ShapeDtypeStruct((n_chains,), jnp.float64),
                        jax.random.PRNGKey(0), x, jax.ShapeDtypeStruct((), jnp.bool_), scalar_int,
                        scalar_int, jax.ShapeDtypeStruct((chunk_size, 2), jnp.bool_)).compile()
    return _PROGRAM_CACHE.put(cache_key, _Programs(init, chunk, time.perf_counter() - t0))


class _Acceptance(NamedTuple):
    acceptance_rate: jax.Array


def _heuristic_step_sizes(method: Method):
    """``(keys, states, step_sizes) -> step_sizes``: a starting step size per chain without warm-up, by BlackJAX's
    ``find_reasonable_step_size`` (Hoffman & Gelman 2014, Algorithm 4, as NumPyro's) at the chain's starting state,
    targeting ``method.target_acceptance``.

    The heuristic doubles or halves the step size from ``method.initial_step_size`` until one transition's
    acceptance probability crosses the target (a failed trajectory counts as acceptance 0) and returns the step at
    the crossing; coming from below that is the first *too large* one, so a step whose acceptance (one more
    transition) is below the target is halved. A heuristic on single transitions, not an adaptation: the result is
    recorded in ``Result.settings`` (NumPyro and BlackJAX's window adaptation start dual averaging from it).
    """

    def acceptance_kernel(step_size):
        def kernel(key, state):
            new_state, info = method.step(key, state, step_size)
            return new_state, _Acceptance(jnp.nan_to_num(method.acceptance(info), nan=0.0))

        return kernel

    def one_chain(key, state, initial):
        key_search, key_check = jax.random.split(key)
        found = find_reasonable_step_size(key_search, acceptance_kernel, state, initial, method.target_acceptance)
        _, check = acceptance_kernel(found)(key_check, state)
        return jnp.where(check.acceptance_rate < method.target_acceptance, 0.5 * found, found)

    return jax.vmap(one_chain)


def _check_initial_positions(model, x, positions, algorithm: Method, tol: float,
                             check_structure: bool = True) -> np.ndarray:
    positions = np.asarray(positions, dtype=np.float64)
    if positions.ndim != 2 or positions.shape[1] != model.input_dim:
        raise ValueError(f"initial_positions must have shape (n_chains, {model.input_dim}), got {positions.shape}")
    if not np.all(np.isfinite(positions)):
        raise ValueError("initial_positions contain non-finite values")
    if algorithm.epsilon == 0.0:  # exact methods start on the manifold
        residual = np.max(np.abs(np.asarray(jax.vmap(model.generator)(jnp.asarray(positions))) - np.asarray(x)), 1)
        bad = np.flatnonzero(~(residual < tol))
        if bad.size:
            raise ValueError(
                f"initial_positions {bad.tolist()} are not on the manifold: |g(u) - x_obs|_inf = "
                f"{residual[bad[0]]:.3g} >= tol = {tol:g}"
            )
    if check_structure and model.structure is not None:  # a declaration computing another x changes the target
        model.structure.check_generator(model.generator, positions, name=repr(model.name))
    return positions


def sample(
    model: GenerativeModel,
    x_obs,
    *,
    method: str = "chmc",
    n_chains: int = 4,
    n_warmup: int = 500,
    n_samples: int = 500,
    seed: int = 0,
    step_size=None,
    n_steps=(4, 8),
    n_inner: int = 1,
    tol: float = 1e-8,
    max_newton: int = 50,
    progress: bool = True,
    adapt_step_size=None,
    chain_method: str = "auto",
    mesh=None,
    thin: int = 1,
    initial_positions=None,
    chunk_size: int = 100,
    compilation_cache: bool = True,
    detect_components="auto",
    checkpoint=None,
    checkpoint_every=None,
    resume=None,
    **options,
) -> Result:
    """Sample the inputs of ``model`` conditioned on ``generator(u) = x_obs``.

    Args:
      model: the :class:`dgm.GenerativeModel`.
      x_obs: observed values, shape ``model.output_shape()``; checked for shape and finiteness.
      method: ``"chmc"`` (constrained HMC), ``"chmc-dynamic"`` (constrained HMC with dynamic integration time,
        NUTS-style; ``max_tree_depth``, ``max_delta_energy``), ``"chmc-tempered"`` (constrained HMC tempered over
        a ladder of noise scales ``noise_scales``, moving exactly between the components of a disconnected
        manifold; :mod:`dgm.kernels.tempered`), ``"hmc"``/``"nuts"`` (BlackJAX on the noisy
        relaxation: pass ``noise_scale``), or an ABC baseline (see ``dgm.methods.METHODS``).
      n_chains, n_warmup, n_samples, seed: chains run in parallel (``vmap``); warm-up draws are discarded. ``seed``
        is an integer or a JAX PRNG key (e.g. ``jax.random.fold_in(jax.random.PRNGKey(s), i)``, the key
        :func:`dgm.sample_many` gives observation ``i``).
      step_size: integrator step size (``> 0``); ``None`` adapts it: by dual averaging during warm-up or, with
        ``n_warmup=0``, by BlackJAX's ``find_reasonable_step_size`` heuristic at the starting point (as NumPyro and
        BlackJAX's window adaptation begin). A number fixes it (unless ``adapt_step_size=True``, which uses it as
        the starting value). ``result.settings`` records the step size that ran (``step_size``; a list when the
        chains differ), the one asked for (``step_size_requested``), ``adapt_step_size`` and
        ``step_size_adaptation``: ``"dual-averaging"``, ``"find-reasonable-step-size"``, ``"fixed"`` or ``"none"``
        (the method has no step size).
      n_steps: ``(lo, hi)`` with ``1 <= lo <= hi``: the number of leapfrog steps is drawn uniformly from ``lo..hi``
        each iteration (an integer ``n`` means ``(n, n)``).
      n_inner: geodesic sub-steps per leapfrog step (Algorithm 1's ``N_g``), ``>= 1``.
      tol: Newton convergence tolerance on ``|g(u) - x_obs|_inf``, ``> 0``.
      max_newton: Newton iterations before a projection counts as not converged (Algorithm 1's ``M``), ``>= 1``.
      chain_method: how chains share the machine inside the scan: ``"vectorized"`` (``vmap``: one batched step),
        ``"sequential"`` (``lax.map``: one chain after another within each iteration), ``"sharded"`` (the chains laid
        out over the devices of ``mesh``, each device ``vmap``ping its share; the same keys, so the draws of
        ``"vectorized"`` for the same seed, up to XLA rounding a smaller batch differently (see
        :mod:`dgm.runtime.sharding`); across hosts after :func:`dgm.runtime.distributed.initialize`) or
        ``"auto"``: sequential on CPU, where batched small linear algebra and lock-stepped while-loops cost more than
        they save, vectorized on accelerators.
      mesh: for ``chain_method="sharded"``: a 1-D ``jax.sharding.Mesh`` (default: every device of every process,
        :func:`dgm.runtime.sharding.chain_mesh`); its size must divide ``n_chains``.
      thin: keep every ``thin``-th draw of the sampling phase (``n_samples`` draws are kept, ``n_samples * thin``
        iterations run; per-draw statistics are those of the kept iterations, while
        ``result.rejection_counts()`` counts the failures of every iteration run).
      initial_positions: optional ``(n_chains, input_dim)`` starting inputs (for constrained HMC they must lie on
        the manifold within ``tol``); default: the method's own initialisation (``model.init`` or a solver).
      progress: show a progress bar and a closing line with acceptance and rejection counts.
      chunk_size: iterations per call of the compiled program (the progress bar advances after each chunk). The
        programs are cached: a repeated call with the same model, method, options and shapes — observed values may
        differ — neither traces nor compiles again.
      compilation_cache: use JAX's persistent compilation cache (on disk, shared between processes; see
        :mod:`dgm.compilation_cache` for its location and the ``DGM_COMPILATION_CACHE=0`` opt-out).
      detect_components: for the exact (manifold) methods with several chains, find the connected components of the
        manifold the chains occupy (:mod:`dgm.components`; ``result.components``) and warn when several are occupied
        and no chain moved between them. ``"auto"``: path tests when the chains disagree (split R-hat of ``u`` or
        ``u**2`` above 1.1) or the model declares symmetries, in runs of at least 20 draws per chain; ``True``:
        always; ``False``: never.
      checkpoint: a directory to write the run to as it goes (it must not exist or be empty): the complete state
        (chain states with their cached geometry, step-size and metric adaptation, step sizes, PRNG keys, phase and
        iteration, the settings) every ``checkpoint_every`` iterations, atomically with a checksum, and the draws to
        an on-disk Zarr store instead of memory: the returned :class:`Result` reads them lazily
        (:mod:`dgm.runtime.checkpoint`, :mod:`dgm.runtime.draw_store`).
      checkpoint_every: iterations (warm-up and sampling counted together) between checkpoints, rounded to the
        nearest whole number of chunks (at least one); default ``10 * chunk_size``. The run's draws do not depend
        on it.
      resume: a checkpoint directory to continue: the same call with ``resume=DIR`` (same model, observation and
        settings — a difference is a ``ValueError`` naming it) goes on from the last good checkpoint and gives draws
        bit-identical to an uninterrupted run; on a finished run it returns the stored result. ``checkpoint=DIR,
        resume=DIR`` continues the run in ``DIR`` if there is one and starts it otherwise.
      **options: method options, e.g. ``projection="newton"``, ``log_det_gradient="autodiff"``, ``geometry="dense"``,
        ``reverse_check_tol``, ``target_acceptance``, ``noise_scale``, ``epsilon``; for the constrained HMC methods
        ``metric="diagonal"`` (a diagonal mass matrix adapted in windows during warm-up, dense geometry;
        ``inverse_mass`` its start, ``adapt_metric=False`` to keep it fixed; :mod:`dgm.kernels.metric`). An option
        the method does not accept (a typo, or ``step_size`` for a method without one) is a ``ValueError`` naming
        the options it accepts.

    Returns:
      :class:`dgm.Result`.

    Warns:
      RuntimeWarning: when more than ``FAILURE_WARNING_RATE`` of the warm-up or of the sampling iterations failed
      numerically (with the counts by reason).
      RuntimeWarning: when the draws lie on several disconnected components of the manifold and no chain moved
      between them (see ``detect_components``).
    """
    for name, value, minimum in (("n_chains", n_chains, 1), ("n_samples", n_samples, 1), ("n_warmup", n_warmup, 0),
                                 ("thin", thin, 1), ("chunk_size", chunk_size, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    n_chains, n_warmup, n_samples, thin, chunk_size = map(int, (n_chains, n_warmup, n_samples, thin, chunk_size))
    if chain_method == "auto":
        chain_method = "sequential" if jax.default_backend() == "cpu" else "vectorized"
    if chain_method not in ("vectorized", "sequential", "sharded"):
        raise ValueError(f"chain_method must be 'auto', 'vectorized', 'sequential' or 'sharded', got {chain_method!r}")
    if chain_method == "sharded":
        from dgm.runtime.sharding import chain_mesh, check_chain_layout

        mesh = chain_mesh() if mesh is None else mesh
        check_chain_layout(n_chains, mesh)
    elif mesh is not None:
        raise ValueError(f"mesh is only used by chain_method='sharded' (got chain_method={chain_method!r})")
    common = check_sampler_options(step_size, n_steps, n_inner, tol, max_newton)
    given = {k for k, v in common.items() if v != SAMPLER_DEFAULTS[k]}  # set by the user: must apply
    if adapt_step_size is not None and "adapt_step_size" in accepted_options(method):
        options = dict(options, adapt_step_size=bool(adapt_step_size))  # a method that decides it itself (ABC-MCMC)
    if "n_warmup" in accepted_options(method):  # a method adapting parameters of its own in the warm-up (tempering)
        options = dict(options, n_warmup=n_warmup)
    if compilation_cache:
        enable_compilation_cache()
    t_setup = time.perf_counter()
    with float64():
        x = jnp.asarray(model.validate_observation(x_obs, manifold=False))
        algorithm, applied = build_method(method, model, x, common, options, given)
        if algorithm.epsilon == 0.0:  # exact methods sample a manifold: fewer observed outputs than inputs
            model.validate_observation(x_obs)

        def method_at(x_obs):  # the same method, built around a traced observation inside the programs
            return build_method(method, model, x_obs, common, options, given)[0]

        has_step_size = algorithm.initial_step_size is not None
        if adapt_step_size and not has_step_size:
            raise ValueError(f"method {method!r} has no step size to adapt (adapt_step_size=True)")
        adapt = has_step_size and (step_size is None if adapt_step_size is None else bool(adapt_step_size))
        if not has_step_size:
            how = "none"
        elif adapt and n_warmup:
            how = "dual-averaging"  # over the warm-up, from algorithm.initial_step_size
        elif adapt:  # nothing to adapt in: the documented heuristic (compiled apart, run as warm-up), recorded
            how = "find-reasonable-step-size"
        else:
            how = "fixed"
        key_init, key_warmup, key_sample = jax.random.split(_root_key(seed), 3)
        run = None
        if checkpoint is not None or resume is not None or checkpoint_every is not None:
            from dgm.runtime import checkpoint as checkpointing

            run = checkpointing.open_run(
                checkpoint=checkpoint, resume=resume, checkpoint_every=checkpoint_every, chunk_size=chunk_size,
                x_obs=x, fingerprint=checkpointing.fingerprint(
                    model, x, method=method, common=common, options=options, n_chains=n_chains, n_warmup=n_warmup,
                    n_samples=n_samples, thin=thin, seed=_seed_setting(seed), chunk_size=chunk_size,
                    chain_method=chain_method, step_size_adaptation=how, initial_positions=initial_positions))
            if run is not None and run.finished:
                return run.result()
        resumed = run is not None and run.resumed
        if resumed:  # the chains' states come from the checkpoint
            positions = np.zeros((n_chains, model.input_dim))
        elif initial_positions is None:
            positions = np.asarray(algorithm.initial_positions(key_init, n_chains), dtype=np.float64)
        else:
            positions = _check_initial_positions(model, x, initial_positions, algorithm, common["tol"],
                                                 check_structure=options.get("geometry", "auto") != "dense")
        if positions.shape != (n_chains, model.input_dim):
            raise ValueError(f"initial positions have shape {positions.shape}, expected {(n_chains, model.input_dim)}")
        if model.symmetries:  # declared maps must preserve g (and be undone by their inverse) where chains start
            check_symmetries(model.symmetries, model.generator, positions, tol=common["tol"], name=repr(model.name),
                             inverse_tol=options.get("reverse_check_tol") or common["tol"] ** 0.5)
        initial = np.nan if algorithm.initial_step_size is None else algorithm.initial_step_size
        step_sizes = jnp.full((n_chains,), initial, jnp.float64)
        da_init, _, da_final = dual_averaging_adaptation(algorithm.target_acceptance)
        da_state = jax.vmap(da_init)(step_sizes)
        setup_time = time.perf_counter() - t_setup

        cache_key = (model, method, tuple(sorted(common.items())), tuple(sorted(options.items())), n_chains,
                     x.shape, chunk_size, chain_method, mesh)
        # a diagonal metric adapted in windows during warm-up (dgm.adaptation), when the method has one
        mm_state = initial_metric_state(n_chains, model.input_dim) if algorithm.set_inverse_mass is not None else None
        schedule = warmup_schedule(n_warmup if adapt and mm_state is not None else 0)
        programs = _compiled_programs(cache_key, method_at, model, n_chains, chunk_size, chain_method, da_state, x,
                                      mm_state, mesh)
        compile_time = programs.compile_time
        heuristic_keys = jax.random.split(key_warmup, n_chains)
        if how == "find-reasonable-step-size" and not resumed:
            t0 = time.perf_counter()
            states_like = jax.eval_shape(lambda p, xo: jax.vmap(method_at(xo).init)(p), positions, x)
            heuristic = jax.jit(lambda keys, states, steps, x_obs: _heuristic_step_sizes(method_at(x_obs))(
                keys, states, steps))
            if chain_method != "sharded":  # (sharded: compiled at the first call, for the states' layout)
                heuristic = heuristic.lower(heuristic_keys, states_like, step_sizes, x).compile()
            compile_time += time.perf_counter() - t0

        bar = _Progress(n_warmup + n_samples, f"{algorithm.name} ({n_chains} chains)", progress)
        try:
            t0 = time.perf_counter()
            if resumed:
                states_like = jax.eval_shape(lambda p, xo: jax.vmap(method_at(xo).init)(p), positions, x)
                states, da_state, mm_state, step_sizes = run.restore((states_like, da_state, mm_state, step_sizes))
            else:
                states = programs.init(jnp.asarray(positions), x)
            if how == "find-reasonable-step-size" and not resumed:
                step_sizes = heuristic(heuristic_keys, states, step_sizes, x)
            if run is not None:
                run.begin()
            warmup_out, states, da_state, mm_state = _run_phase(programs.chunk, states, da_state, step_sizes,
                                                                key_warmup, x, adapt, n_warmup, 1, chunk_size, bar,
                                                                mm_state, schedule, run=run, phase="warmup")
            if adapt and n_warmup:
                step_sizes = jax.vmap(da_final)(da_state)
            out, states, _, _ = _run_phase(programs.chunk, states, da_state, step_sizes, key_sample, x, False,
                                           n_samples, thin, chunk_size, bar, mm_state, run=run, phase="sampling")
            wall_time = time.perf_counter() - t0
        finally:
            bar.close()
            if run is not None:
                run.close()  # the state file being written is finished, also after an error
        if chain_method == "sharded":  # chains held by other processes are gathered
            from dgm.runtime.sharding import to_host

            step_sizes = to_host(step_sizes)
        ran = np.asarray(step_sizes, dtype=float)
        settings = {k: v for k, v in options.items() if np.isscalar(v)}
        settings.update(
            applied, method=method, n_chains=n_chains, n_warmup=n_warmup, n_samples=n_samples,
            seed=_seed_setting(seed),
            step_size=(None if not has_step_size else float(ran[0]) if np.all(ran == ran[0]) else ran.tolist()),
            step_size_requested=step_size, adapt_step_size=bool(adapt), step_size_adaptation=how,
            chain_method=chain_method, thin=thin,
        )
        settings.update(algorithm.settings or {})  # what the method chose itself (e.g. a default noise ladder)
        if model.symmetries:
            settings["symmetries"] = [sym.name for sym in model.symmetries]
        meta = dict(step_size=np.asarray(step_sizes), wall_time=wall_time, compile_time=compile_time,
                    setup_time=setup_time, method=algorithm.name, x_obs=np.asarray(x), epsilon=algorithm.epsilon,
                    settings=settings, latent_names=getattr(model, "latent_names", None), kernel=algorithm.kernel,
                    sites=model.site_layout())
        if run is not None:  # draws on disk: the result reads them lazily
            result = run.finish(meta, (states, da_state, mm_state, step_sizes), key_sample)
        else:
            stats = out["stats"]
            stats["constraint_residual"] = out["residual"]
            skipped = out["skipped_failures"].sum(axis=1)  # (chain, reason) over the unrecorded thinned transitions
            result = Result(
                latents=out["latents"],
                inputs=out["inputs"],
                stats=schema_stats(stats),
                max_residual=float(np.max(out["residual"])),
                warmup_stats=schema_stats(warmup_out["stats"]) if n_warmup else {},
                unrecorded_failures={name: int(skipped[:, i].sum()) for i, name in enumerate(
                    FAILURE_NAMES[c] for c in sorted(FAILURE_NAMES))} if "failure" in stats else {},
                **meta,
            )
        if algorithm.kernel == "exact":  # constrained HMC: which components of the manifold do the chains occupy?
            result.components = components_after_sampling(
                model, x, result.inputs, result.stats, detect_components, tol=common["tol"],
                max_newton=common["max_newton"], geometry=options.get("geometry", "auto"))
    _report(result, progress)
    warn_if_stuck(result.components, result.method)
    return result


def _root_key(seed):
    """``PRNGKey(seed)`` for an integer seed; a PRNG key (raw ``uint32[2]`` or typed) is used as it is."""
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        return jax.random.PRNGKey(int(seed))
    dtype = getattr(seed, "dtype", None)
    if dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key):
        seed = jax.random.key_data(seed)
    key = np.asarray(seed)
    if key.shape != (2,) or key.dtype != np.uint32:
        raise ValueError(f"seed must be an integer or a single PRNG key (uint32[2]), got {seed!r}")
    return jnp.asarray(key)


def _seed_setting(seed):
    """The seed as recorded in ``Result.settings``: the integer, or the key's two words."""
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        return int(seed)
    return np.asarray(_root_key(seed)).tolist()


def _chunk_key(key, index):
    """The key of chunk ``index`` of a phase: ``fold_in(key, index)``, for each key of a batch (``(n, 2)``,
    :func:`dgm.sample_many`) alike."""
    if jnp.ndim(key) > 1:
        return jax.vmap(jax.random.fold_in, in_axes=(0, None))(key, index)
    return jax.random.fold_in(key, index)


def _run_phase(chunk, states, da_state, step_sizes, key, x, adapt: bool, n_iterations: int, n_sub: int,
               chunk_size: int, bar: _Progress, mm_state=None, schedule=None, run=None, phase=None):
    """Run ``n_iterations`` recorded iterations in compiled chunks; outputs as NumPy ``(chain, draw, ...)``.
    ``schedule``: ``(n_iterations, 2)`` metric-window flags (:func:`dgm.adaptation.warmup_schedule`), or none.

    Chunk ``index`` uses the key ``fold_in(key, index)``: the draws depend on (seed, phase, chunk index) only. With
    a checkpointed ``run`` (:class:`dgm.runtime.checkpoint.Run`) the phase starts at the run's next chunk and each
    chunk's outputs and state go to ``run.after_chunk`` (draws to disk) instead of being kept: the outputs are ``{}``.
    """
    pieces = []
    first = 0 if run is None else run.first_chunk(phase)
    bar.advance(min(first * chunk_size, n_iterations))
    for index, start in enumerate(range(0, n_iterations, chunk_size)):
        if index < first:
            continue
        n_active = min(chunk_size, n_iterations - start)
        window = np.zeros((chunk_size, 2), bool)
        if schedule is not None and len(schedule):
            window[:n_active] = schedule[start:start + n_active]
        states, da_state, mm_state, outputs = chunk(states, da_state, mm_state, step_sizes,
                                                    _chunk_key(key, index), x, jnp.asarray(adapt),
                                                    jnp.int32(n_active), jnp.int32(n_sub), jnp.asarray(window))
        piece = jax.tree_util.tree_map(lambda a, n=n_active: np.asarray(a)[:n], outputs)
        if run is None:
            pieces.append(piece)
        else:
            run.after_chunk(phase, index, piece, (states, da_state, mm_state, step_sizes), key)
        bar.advance(n_active)
    if not pieces:
        return {}, states, da_state, mm_state
    joined = jax.tree_util.tree_map(lambda *a: np.swapaxes(np.concatenate(a, axis=0), 0, 1), *pieces)
    return joined, states, da_state, mm_state


FAILURE_WARNING_RATE = 0.2
"""A warning is issued when more than this fraction of the warm-up or sampling iterations failed numerically."""


def _report(result: Result, progress: bool) -> None:
    counts = result.rejection_counts()
    phases = [("sampling", counts, result.n_chains * result.n_draws * int(result.settings.get("thin", 1)),
               "the draws may mix poorly")]
    if result.warmup_stats:
        phases.insert(0, ("warm-up", result.rejection_counts(warmup=True),
                          np.asarray(result.warmup_stats["acceptance_rate"]).size,
                          f"the adapted step size {np.asarray(result.step_size)} may be meaningless"
                          if result.settings.get("adapt_step_size") else "the draws may mix poorly"))
    for phase, phase_counts, n_run, consequence in phases:
        failed = sum(phase_counts.values())
        if n_run and failed / n_run > FAILURE_WARNING_RATE:
            warnings.warn(
                f"{result.method}: {failed / n_run:.0%} of {phase} trajectories ({failed} of {n_run}) failed "
                f"numerically ({', '.join(f'{k} {v}' for k, v in phase_counts.items())}); {consequence}. Check the "
                "step size, tol/max_newton and the model.",
                RuntimeWarning,
                stacklevel=3,
            )
    if progress:
        failures = ", ".join(f"{k} {v}" for k, v in counts.items()) if counts else "none counted"
        print(
            f"{result.method}: {result.n_chains} chains x {result.n_draws} draws in {result.wall_time:.2f} s "
            f"(+{result.setup_time:.2f} s set-up, {result.compile_time:.2f} s compile); acceptance "
            f"{result.acceptance_rate:.3f}; rejections by reason: {failures}; max |g(u)-x|_inf {result.max_residual:.2e}",
            file=sys.stderr,
        )
        extra = result.symmetry_summary_line()
        if extra:
            print(extra, file=sys.stderr)
