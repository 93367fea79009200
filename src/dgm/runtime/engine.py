"""The one sampling engine behind every entry point: plan a run, compile its chunk program, run it chunk by chunk,
assemble the :class:`dgm.Result`.

``dgm.sample`` (one observation), ``dgm.sample_many`` (a batch, one more ``vmap``/``lax.map`` over observations),
checkpointed and resumed runs (:mod:`dgm.runtime.checkpoint`) and sharded runs (:mod:`dgm.runtime.sharding`) are thin
layers over these steps, so a method or option added here works in all of them, with the same draws for one seed:

1. :func:`plan` — validate the options, build the method (:mod:`dgm.methods`: geometry, integrator, kernel, declared
   symmetries, metric), decide the step-size adaptation (``dual-averaging`` over the warm-up, the
   ``find-reasonable-step-size`` heuristic without warm-up, ``fixed`` or ``none``);
2. :func:`starting_points`, :func:`adaptation_start` — the chains' starting points (checked, symmetries checked there)
   and the adaptation state (step sizes, dual averaging, the diagonal metric's Welford state, the window schedule);
3. :func:`compile_programs` — the compiled chunk program (:func:`chunk_program`), cached across calls by
   configuration (observed values are an argument);
4. :func:`execute` — the host loop over chunks (:func:`run_phase`) for the warm-up and the sampling phase;
5. :func:`run_settings`, :func:`run_metadata`, :func:`assemble`, :func:`conclude` — the ``Result``, its manifold
   components and the closing report.

**The chunk program.** A chunk of iterations runs in ``lax.scan``: every chain's transition (``vmap``, or ``lax.map``
one chain after another), dual averaging of the step size (BlackJAX; Hoffman & Gelman 2014, Algorithm 5) when
adapting, the diagonal metric's windows (:mod:`dgm.adaptation`), thinning, and the latents and constraint residual of
each recorded draw. Warm-up and sampling are the same program with different runtime flags. A failed trajectory
counts as acceptance 0 for adaptation (so failures shrink the step) and is recorded by reason apart.

**Keys.** ``split(root, 3)`` gives the initialisation, warm-up and sampling keys; chunk ``k`` of a phase uses
``fold_in(phase_key, k)``, iteration ``j`` of a chunk ``split(chunk_key, chunk_size)[j]`` and chain ``c``
``split(iteration_key, n_chains)[c]`` on every layout (a sharded program takes its devices' slice of that split).

**Layout-independent warm-up.** Programs that hold different numbers of chains (one device's ``vmap`` of 16 chains,
four devices' ``vmap`` of 4, a ``lax.map`` of one) are compiled differently: on CPU, XLA's SIMD lanes and scalar
remainder loops round transcendental functions differently in the last bit (measured: 1e-13 in a transition's
acceptance probability). With a fixed step size such differences stay at rounding level; dual averaging, however,
feeds every acceptance probability back into the step size, and the trajectories, chaotic, amplify the difference to
order 1 within 50 warm-up iterations (the sharded step sizes of issue 21). Dual averaging therefore sees each
acceptance probability rounded to a multiple of ``2**-20`` (:func:`dgm.adaptation.acceptance_on_grid`, far below the
Monte Carlo noise of the adaptation): the adapted step sizes are bit-identical on every layout (a rounding
difference would have to straddle one of the ``2**20`` grid points), and the draws agree to rounding (1e-14
measured).
"""

from __future__ import annotations

import dataclasses
import sys
import time
import warnings
from collections import OrderedDict
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.adaptation.step_size import dual_averaging_adaptation, find_reasonable_step_size

from dgm.adaptation import acceptance_on_grid, initial_metric_state, metric_window_step, warmup_schedule
from dgm.components import components_after_sampling, warn_if_stuck
from dgm.mixing import mode_mixing, warn_if_not_mixing
from dgm.integrator import FAILURE_NAMES
from dgm.kernels.base import Method
from dgm.methods import SAMPLER_DEFAULTS, accepted_options, build_method, check_sampler_options
from dgm.model import GenerativeModel
from dgm.result import Result, schema_stats
from dgm.symmetry import check_symmetries

FAILURE_WARNING_RATE = 0.2
"""A warning is issued when more than this fraction of the warm-up or sampling iterations failed numerically."""

CHAIN_METHODS = ("vectorized", "sequential", "sharded")


# ---------------------------------------------------------------------------------------------------------------------
# 1. the plan
# ---------------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Plan:
    """What a run is: the model, the method and its validated options, the run's lengths and how the step size is
    chosen. ``algorithm`` is the method built around the (first) observation; :meth:`method_at` builds it around
    another (a traced observation inside the compiled programs)."""

    model: GenerativeModel
    method: str
    common: dict  # the integrator options (dgm.methods.check_sampler_options)
    options: dict  # the method's own options (n_warmup added for methods that adapt in the warm-up)
    given: frozenset  # the common options the user set
    algorithm: Method
    applied: dict  # the common options the method uses
    n_chains: int
    n_warmup: int
    n_samples: int
    thin: int
    chunk_size: int
    chain_method: str
    adapt: bool
    how: str  # "dual-averaging", "find-reasonable-step-size", "fixed" or "none"
    step_size_requested: Optional[float]

    def method_at(self, x_obs) -> Method:
        return build_method(self.method, self.model, x_obs, self.common, self.options, self.given)[0]

    @property
    def identity(self) -> tuple:
        """What the compiled programs depend on (observed values excluded)."""
        return (self.model, self.method, tuple(sorted(self.common.items())), tuple(sorted(self.options.items())),
                self.n_chains, self.chunk_size, self.chain_method)


def check_run_lengths(**values) -> list[int]:
    """Each of ``n_chains``/``n_samples``/``thin``/``chunk_size`` (>= 1) and ``n_warmup`` (>= 0) as an ``int``."""
    checked = []
    for name, value in values.items():
        minimum = 0 if name == "n_warmup" else 1
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
        checked.append(int(value))
    return checked


def resolve_chain_method(chain_method: str, allowed=CHAIN_METHODS) -> str:
    """``"auto"``: sequential on CPU (batched small linear algebra costs more than it saves), vectorized elsewhere."""
    if chain_method == "auto":
        return "sequential" if jax.default_backend() == "cpu" else "vectorized"
    if chain_method not in allowed:
        raise ValueError(f"chain_method must be 'auto', {', '.join(repr(m) for m in allowed[:-1])} or "
                         f"{allowed[-1]!r}, got {chain_method!r}")
    return chain_method


def plan(model: GenerativeModel, x_obs, *, method: str = "chmc", n_chains: int = 4, n_warmup: int = 500,
         n_samples: int = 500, thin: int = 1, chunk_size: int = 100, chain_method: str = "auto", step_size=None,
         n_steps=(4, 8), n_inner: int = 1, tol: float = 1e-8, max_newton: int = 50, adapt_step_size=None,
         **options) -> Plan:
    """The :class:`Plan` of a run conditioned on ``x_obs`` (a checked observation; for a batch, its first one).

    The keywords and their defaults are :func:`dgm.sample`'s (documented there); ``**options`` are the method's.
    Call inside :func:`dgm.precision.float64`. Raises ``ValueError`` naming a bad option."""
    n_chains, n_warmup, n_samples, thin, chunk_size = check_run_lengths(
        n_chains=n_chains, n_warmup=n_warmup, n_samples=n_samples, thin=thin, chunk_size=chunk_size)
    chain_method = resolve_chain_method(chain_method)
    common = check_sampler_options(step_size, n_steps, n_inner, tol, max_newton)
    given = frozenset(k for k, v in common.items() if v != SAMPLER_DEFAULTS[k])  # set by the user: must apply
    if adapt_step_size is not None and "adapt_step_size" in accepted_options(method):
        options = dict(options, adapt_step_size=bool(adapt_step_size))  # a method that decides it itself (ABC-MCMC)
    if "n_warmup" in accepted_options(method):  # a method adapting parameters of its own in the warm-up (tempering)
        options = dict(options, n_warmup=n_warmup)
    algorithm, applied = build_method(method, model, jnp.asarray(x_obs), common, options, given)
    if algorithm.epsilon == 0.0:  # exact methods sample a manifold: fewer observed outputs than inputs
        model.validate_observation(np.asarray(x_obs))
    has_step_size = algorithm.initial_step_size is not None
    if adapt_step_size and not has_step_size:
        raise ValueError(f"method {method!r} has no step size to adapt (adapt_step_size=True)")
    adapt = has_step_size and (step_size is None if adapt_step_size is None else bool(adapt_step_size))
    how = ("none" if not has_step_size else "dual-averaging" if adapt and n_warmup
           else "find-reasonable-step-size" if adapt else "fixed")
    return Plan(model, method, common, dict(options), given, algorithm, applied, n_chains, n_warmup, n_samples, thin,
                chunk_size, chain_method, bool(adapt), how, step_size)


# ---------------------------------------------------------------------------------------------------------------------
# 2. starting points and adaptation state
# ---------------------------------------------------------------------------------------------------------------------
def root_key(seed):
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


def seed_setting(seed):
    """The seed as recorded in ``Result.settings``: the integer, or the key's two words."""
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        return int(seed)
    return np.asarray(root_key(seed)).tolist()


def phase_keys(seed):
    """``(key_init, key_warmup, key_sample)`` of a run with this seed: ``split(root_key(seed), 3)``."""
    return tuple(jax.random.split(root_key(seed), 3))


def check_initial_positions(model, x, positions, algorithm: Method, tol: float,
                            check_structure: bool = True) -> np.ndarray:
    """User-given starting points as float64 ``(n_chains, input_dim)``; exact methods need them on the manifold."""
    positions = np.asarray(positions, dtype=np.float64)
    if positions.ndim != 2 or positions.shape[1] != model.input_dim:
        raise ValueError(f"initial_positions must have shape (n_chains, {model.input_dim}), got {positions.shape}")
    if not np.all(np.isfinite(positions)):
        raise ValueError("initial_positions contain non-finite values")
    if algorithm.epsilon == 0.0:  # exact methods start on the manifold
        residual = np.max(np.abs(np.asarray(jax.vmap(model.generator)(jnp.asarray(positions))) - np.asarray(x)), 1)
        allowed = tol * max(1.0, float(np.max(np.abs(np.asarray(x))))) if np.size(x) else tol  # the projections' rule
        bad = np.flatnonzero(~(residual < allowed))
        if bad.size:
            raise ValueError(
                f"initial_positions {bad.tolist()} are not on the manifold: |g(u) - x_obs|_inf = "
                f"{residual[bad[0]]:.3g} >= tol * max(1, |x_obs|_inf) = {allowed:g}"
            )
    if check_structure and model.structure is not None:  # a declaration computing another x changes the target
        model.structure.check_generator(model.generator, positions, name=repr(model.name))
    return positions


def starting_points(run: Plan, algorithm: Method, key_init, x, initial_positions=None) -> np.ndarray:
    """The chains' starting points for observation ``x``: the method's own initialisation from ``key_init``
    (``model.init`` or a solver), or ``initial_positions`` checked; declared symmetries are checked there."""
    model = run.model
    if initial_positions is None:
        positions = np.asarray(algorithm.initial_positions(key_init, run.n_chains), dtype=np.float64)
    else:
        positions = check_initial_positions(model, x, initial_positions, algorithm, run.common["tol"],
                                            check_structure=run.options.get("geometry", "auto") != "dense")
    if positions.shape != (run.n_chains, model.input_dim):
        raise ValueError(f"initial positions have shape {positions.shape}, expected "
                         f"{(run.n_chains, model.input_dim)}")
    if model.symmetries:  # declared maps must preserve g (and be undone by their inverse) where chains start
        check_symmetries(model.symmetries, model.generator, positions, tol=run.common["tol"], name=repr(model.name),
                         inverse_tol=run.options.get("reverse_check_tol") or run.common["tol"] ** 0.5)
    return positions


class Adaptation(NamedTuple):
    """The adaptation state a run starts from; every array has leading axes ``batch + (n_chains,)``."""

    step_sizes: Any
    da_state: Any  # BlackJAX's dual-averaging state
    mm_state: Any  # BlackJAX's Welford state of the diagonal metric, or None
    schedule: np.ndarray  # (n_warmup, 2) metric-window flags (dgm.adaptation.warmup_schedule)


def adaptation_start(run: Plan, batch: tuple = ()) -> Adaptation:
    """Step sizes at the method's initial value, dual averaging from there, an identity metric when the method has
    an adaptable one; ``batch``: leading axes (``(n_obs,)`` for :func:`dgm.sample_many`)."""
    algorithm = run.algorithm
    initial = np.nan if algorithm.initial_step_size is None else algorithm.initial_step_size
    step_sizes = jnp.full(batch + (run.n_chains,), initial, jnp.float64)
    da_init, _, _ = dual_averaging_adaptation(algorithm.target_acceptance)
    da_state = _over_leading(da_init, step_sizes)
    mm_state = None
    if algorithm.set_inverse_mass is not None:  # a diagonal metric adapted in windows during warm-up
        one = initial_metric_state(run.n_chains, run.model.input_dim)
        mm_state = jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, batch + a.shape), one)
    schedule = warmup_schedule(run.n_warmup if run.adapt and mm_state is not None else 0)
    return Adaptation(step_sizes, da_state, mm_state, schedule)


def _over_leading(fn, tree):
    """``fn`` (of one chain's arrays) mapped over every leading axis of the step sizes' shape."""
    leaves = jax.tree_util.tree_leaves(tree)
    shape = jnp.shape(leaves[0])
    flat = jax.tree_util.tree_map(lambda a: jnp.reshape(a, (-1,) + jnp.shape(a)[len(shape):]), tree)
    out = jax.vmap(fn)(flat)
    return jax.tree_util.tree_map(lambda a: jnp.reshape(a, shape + jnp.shape(a)[1:]), out)


# ---------------------------------------------------------------------------------------------------------------------
# 3. the compiled chunk program and its cache
# ---------------------------------------------------------------------------------------------------------------------
def over_chains(fn, chain_method: str):
    """Map ``fn`` over the leading (chain) axis of its arguments: ``vmap`` or a sequential ``lax.map``
    (``"sharded"``: each device ``vmap``s its own chains, :mod:`dgm.runtime.sharding`)."""
    if chain_method in ("vectorized", "sharded"):
        return jax.vmap(fn)
    return lambda *args: jax.lax.map(lambda a: fn(*a), args)


def chunk_program(method_at, model: GenerativeModel, n_chains: int, chunk_size: int, chain_method: str,
                  chain_keys=None):
    """``(states, da_state, mm_state, step_sizes, key, x_obs, adapt, n_active, n_sub, schedule)
    -> (states, da_state, mm_state, outputs)``.

    One program serves warm-up and sampling: ``chunk_size`` iterations in ``lax.scan``, of which the first
    ``n_active`` run (the rest are skipped: the last chunk of a phase); each iteration runs ``n_sub`` transitions and
    records the last (thinning); ``adapt`` switches dual averaging of the step size on or off. The observation
    ``x_obs`` is an argument, so conditioning on new data of the same shape reuses the program. Outputs per recorded
    iteration and chain: the method's statistics (and ``step_size``, ``lp``), inputs ``u``, latents,
    ``|g(u) - x_obs|_inf``, and failure counts by reason over the ``n_sub - 1`` unrecorded transitions. Methods with
    an adaptable diagonal metric (``Method.set_inverse_mass``) also carry ``mm_state`` (``None`` otherwise) and
    follow ``schedule`` (``(chunk_size, 2)`` booleans) while adapting: :func:`dgm.adaptation.metric_window_step`.
    ``chain_keys(key) -> (n_chains, 2)``: the transition keys of this program's chains (default
    ``random.split(key, n_chains)``; a sharded program takes its devices' slice of the global split).
    """
    if chain_keys is None:
        def chain_keys(key):
            return jax.random.split(key, n_chains)
    failure_codes = jnp.asarray(sorted(FAILURE_NAMES), jnp.int32)

    def run(states, da_state, mm_state, step_sizes, key, x_obs, adapt, n_active, n_sub, schedule):
        method = method_at(x_obs)
        _, da_update, _ = dual_averaging_adaptation(method.target_acceptance)
        step_chains = over_chains(method.step, chain_method)

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
            # rounded to a grid, so that the layout's last-bit rounding cannot steer the step size (module docstring)
            acceptance = acceptance_on_grid(acceptance)
            da_state = jax.lax.cond(adapt & active, lambda d: jax.vmap(da_update)(d, acceptance), lambda d: d, da_state)
            if mm_state is not None:  # windowed adaptation of a diagonal metric
                reexpress = over_chains(method.set_inverse_mass, chain_method)
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


def hashable(value):
    """``value`` as a cache key (arrays by their bytes); ``TypeError`` for what cannot key a cache."""
    if isinstance(value, (list, tuple)):
        return tuple(hashable(v) for v in value)
    if isinstance(value, np.ndarray):
        return ("ndarray", value.shape, value.dtype.str, value.tobytes())
    hash(value)
    return value


class ProgramCache:
    """A least-recently-used store of compiled programs keyed by their configuration; a configuration that cannot be
    hashed (:func:`hashable`) is compiled every time instead of cached."""

    def __init__(self, size: int):
        self.size, self.entries = size, OrderedDict()

    @staticmethod
    def key(configuration):
        try:
            return hashable(configuration)
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


class Programs(NamedTuple):
    """The compiled programs of one configuration: ``init(positions, x) -> states`` and the chunk program."""

    init: Callable
    chunk: Callable
    compile_time: float
    hook: Optional[Callable] = None  # the method's warm-up hook (warmup_hook_program), None when it has none


PROGRAM_CACHE = ProgramCache(24)
"""Compiled programs by configuration: repeated runs with the same model, method, options and shapes (any observed
values) skip tracing and compilation. Small: each entry holds two XLA executables."""


HOOK_KEY = 0x7E3
"""``fold_in`` constant of the key a method's warm-up hook gets after a chunk (distinct from the transitions')."""


def warmup_hook_program(method_at, algorithm: Method, batched: bool = False):
    """The method's warm-up hook (:attr:`dgm.kernels.base.Method.warmup_hook`: its own adaptation across chains,
    e.g. the tempered ladder) as a jitted ``(states, x_obs, key) -> states``, or ``None``; ``batched``: states,
    observations and keys with a leading observation axis."""
    if algorithm.warmup_hook is None:
        return None

    def hook(states, x_obs, key):
        return method_at(x_obs).warmup_hook(states, key)

    return jax.jit(jax.vmap(hook) if batched else hook)


def compile_programs(run: Plan, x_like, adaptation: Adaptation, mesh=None, n_obs: Optional[int] = None) -> Programs:
    """The compiled ``(init, chunk)`` programs of ``run`` (from the cache when this configuration ran before).

    ``n_obs=None``: one observation ``x_like``; ``mesh`` with ``chain_method="sharded"`` splits the chains over the
    devices (:func:`dgm.runtime.sharding.sharded_chain_programs`). ``n_obs``: a batch ``(n_obs, *x_shape)``, the
    chunk program ``vmap``ped (``"vectorized"``) or ``lax.map``ped (``"sequential"``) over observations, its outputs
    ``(chunk, obs, chain, ...)``; ``mesh`` splits the observations over the devices.
    """
    from dgm.runtime.sharding import sharded_chain_programs, sharded_program

    key = ProgramCache.key((run.identity, n_obs, tuple(x_like.shape), mesh))
    cached = PROGRAM_CACHE.get(key)
    if cached is not None:
        return cached._replace(compile_time=0.0)
    t0 = time.perf_counter()
    da_like, mm_like = adaptation.da_state, adaptation.mm_state
    n_chains, chunk_size, method_at = run.n_chains, run.chunk_size, run.method_at
    scalar_int, flag = jax.ShapeDtypeStruct((), jnp.int32), jax.ShapeDtypeStruct((), jnp.bool_)
    window_like = jax.ShapeDtypeStruct((chunk_size, 2), jnp.bool_)
    hook = warmup_hook_program(method_at, run.algorithm, batched=n_obs is not None)
    if n_obs is None and run.chain_method == "sharded":
        init, chunk = sharded_chain_programs(chunk_program, method_at, run.model, n_chains, chunk_size, mesh,
                                             da_like, x_like, mm_like)
        return PROGRAM_CACHE.put(key, Programs(init, chunk, time.perf_counter() - t0, hook))
    program = chunk_program(method_at, run.model, n_chains, chunk_size, run.chain_method)
    if n_obs is None:
        def init_fn(positions, x_obs):
            return jax.vmap(method_at(x_obs).init)(positions)

        batch_shape, chunk_fn = (), program
    else:
        def init_fn(positions, xs):
            return jax.vmap(lambda p, x: jax.vmap(method_at(x).init)(p))(positions, xs)

        batch_shape = (n_obs,)
        if run.chain_method == "vectorized":
            chunk_fn = jax.vmap(program, in_axes=(0, 0, 0, 0, 0, 0, None, None, None, None), out_axes=(0, 0, 0, 1))
        else:  # one observation after another (lax.map), its chains one after another: no lock-stepped loops
            def chunk_fn(states, da_state, mm_state, step_sizes, keys, xs, *flags):
                states, da_state, mm_state, outputs = jax.lax.map(
                    lambda args: program(*args, *flags), (states, da_state, mm_state, step_sizes, keys, xs))
                return states, da_state, mm_state, jax.tree_util.tree_map(lambda a: jnp.swapaxes(a, 0, 1), outputs)
    positions_like = jax.ShapeDtypeStruct(batch_shape + (n_chains, run.model.input_dim), jnp.float64)
    states_like = jax.eval_shape(init_fn, positions_like, x_like)
    example = (states_like, da_like, mm_like, jax.ShapeDtypeStruct(batch_shape + (n_chains,), jnp.float64),
               jax.ShapeDtypeStruct(batch_shape + (2,), jnp.uint32), x_like, flag, scalar_int, scalar_int,
               window_like)
    if mesh is None or n_obs is None:
        init = jax.jit(init_fn).lower(positions_like, x_like).compile()
        chunk = jax.jit(chunk_fn).lower(*example).compile()
        if hook is not None:
            hook = hook.lower(states_like, x_like, jax.ShapeDtypeStruct(batch_shape + (2,), jnp.uint32)).compile()
    else:
        from jax.sharding import PartitionSpec

        axis = PartitionSpec(mesh.axis_names[0])
        init = sharded_program(init_fn, mesh, (True, True), axis, (positions_like, x_like))
        chunk = sharded_program(chunk_fn, mesh, (True,) * 6 + (False,) * 4,
                                (axis, axis, axis, PartitionSpec(None, mesh.axis_names[0])), example,
                                host_outputs=(3,))
    return PROGRAM_CACHE.put(key, Programs(init, chunk, time.perf_counter() - t0, hook))


class _Acceptance(NamedTuple):
    acceptance_rate: jax.Array


def heuristic_step_sizes(method: Method):
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


def heuristic_program(run: Plan, key_warmup, states, step_sizes, x, batched: bool, compile_ahead: bool):
    """``(program, keys, compile_time)``: the ``find-reasonable-step-size`` heuristic for these chains (each chain's
    key ``split(key_warmup, n_chains)[c]``, per observation in a batch), compiled ahead unless ``compile_ahead`` is
    false (sharded states: compiled at the first call, for their layout)."""
    t0 = time.perf_counter()
    if batched:
        keys = jax.vmap(lambda k: jax.random.split(k, run.n_chains))(jnp.asarray(key_warmup))
        program = jax.jit(jax.vmap(lambda k, s, st, xo: heuristic_step_sizes(run.method_at(xo))(k, s, st)))
    else:
        keys = jax.random.split(key_warmup, run.n_chains)
        program = jax.jit(lambda k, s, st, xo: heuristic_step_sizes(run.method_at(xo))(k, s, st))
    if compile_ahead:
        program = program.lower(keys, states, step_sizes, x).compile()
    return program, keys, time.perf_counter() - t0


def start_chains(run: Plan, programs: Programs, positions, x, start: Adaptation, key_warmup, *, batched=False,
                 compile_ahead=True, checkpoint=None):
    """``(states, adaptation, compile_time)`` the run starts from: restored from a resumed ``checkpoint`` (bit for
    bit), or the states at ``positions`` with, when the plan says so, the ``find-reasonable-step-size`` heuristic's
    step sizes (its compilation added to the programs')."""
    compile_time = programs.compile_time
    if checkpoint is not None and checkpoint.resumed:
        init = (jax.vmap(lambda p, xo: jax.vmap(run.method_at(xo).init)(p)) if batched
                else lambda p, xo: jax.vmap(run.method_at(xo).init)(p))
        like = jax.eval_shape(init, positions, x)
        states, da_state, mm_state, step_sizes = checkpoint.restore(
            (like, start.da_state, start.mm_state, start.step_sizes))
        return states, Adaptation(step_sizes, da_state, mm_state, start.schedule), compile_time
    states = programs.init(jnp.asarray(positions), x)
    if run.how == "find-reasonable-step-size":
        heuristic, keys, seconds = heuristic_program(run, key_warmup, states, start.step_sizes, x, batched,
                                                     compile_ahead)
        start = start._replace(step_sizes=heuristic(keys, states, start.step_sizes, x))
        compile_time += seconds
    return states, start, compile_time


# ---------------------------------------------------------------------------------------------------------------------
# 4. the host loop
# ---------------------------------------------------------------------------------------------------------------------
class Progress:
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


def chunk_key(key, index):
    """The key of chunk ``index`` of a phase: ``fold_in(key, index)``, for each key of a batch (``(n, 2)``) alike."""
    if jnp.ndim(key) > 1:
        return jax.vmap(jax.random.fold_in, in_axes=(0, None))(key, index)
    return jax.random.fold_in(key, index)


def run_phase(chunk, states, da_state, step_sizes, key, x, adapt: bool, n_iterations: int, n_sub: int,
              chunk_size: int, bar: Progress, mm_state=None, schedule=None, checkpoint=None, phase=None, hook=None):
    """Run ``n_iterations`` recorded iterations in compiled chunks; outputs as NumPy, iterations on axis 1
    (``(chain, draw, ...)``; a batch: ``(obs, draw, chain, ...)``). ``schedule``: ``(n_iterations, 2)`` metric-window
    flags (:func:`dgm.adaptation.warmup_schedule`), or none.

    Chunk ``index`` uses the key ``fold_in(key, index)``: the draws depend on (seed, phase, chunk index) only. With a
    ``checkpoint`` (:class:`dgm.runtime.checkpoint.Run`) the phase starts at the run's next chunk and each chunk's
    outputs and state go to ``checkpoint.after_chunk`` (draws to disk) instead of being kept: the outputs are ``{}``.
    ``hook``: ``(states, x, key) -> states`` run after every chunk, before it is checkpointed (the method's own
    warm-up adaptation across chains, :func:`warmup_hook_program`), with the key ``fold_in(chunk key, HOOK_KEY)``.
    """
    pieces = []
    first = 0 if checkpoint is None else checkpoint.first_chunk(phase)
    bar.advance(min(first * chunk_size, n_iterations))
    for index, start in enumerate(range(0, n_iterations, chunk_size)):
        if index < first:
            continue
        n_active = min(chunk_size, n_iterations - start)
        window = np.zeros((chunk_size, 2), bool)
        if schedule is not None and len(schedule):
            window[:n_active] = schedule[start:start + n_active]
        states, da_state, mm_state, outputs = chunk(states, da_state, mm_state, step_sizes, chunk_key(key, index),
                                                    x, jnp.asarray(adapt), jnp.int32(n_active), jnp.int32(n_sub),
                                                    jnp.asarray(window))
        if hook is not None:
            states = hook(states, x, chunk_key(chunk_key(key, index), HOOK_KEY))
        piece = jax.tree_util.tree_map(lambda a, n=n_active: np.asarray(a)[:n], outputs)
        if checkpoint is None:
            pieces.append(piece)
        else:
            checkpoint.after_chunk(phase, index, piece, (states, da_state, mm_state, step_sizes), key)
        bar.advance(n_active)
    if not pieces:
        return {}, states, da_state, mm_state
    joined = jax.tree_util.tree_map(lambda *a: np.swapaxes(np.concatenate(a, axis=0), 0, 1), *pieces)
    return joined, states, da_state, mm_state


class Outcome(NamedTuple):
    warmup: dict  # outputs of the warm-up (run_phase's layout)
    sampling: dict  # outputs of the sampling phase
    carry: tuple  # (states, da_state, mm_state, step_sizes) after the run
    step_sizes: np.ndarray  # the step sizes that ran the sampling phase, on the host
    wall_time: float
    described: Any = None  # Method.describe_states of the final states (a list per observation for a batch)


def execute(run: Plan, chunk, states, adaptation: Adaptation, key_warmup, key_sample, x, bar: Progress,
            checkpoint=None, hook=None) -> Outcome:
    """Warm-up (adapting when the plan says so) then sampling, in compiled chunks; the step sizes adapted by dual
    averaging are its final averaged iterates (Hoffman & Gelman 2014, eq. 6). ``hook``: the method's warm-up hook
    (:attr:`Programs.hook`), run after every warm-up chunk; what the method reports of its final states
    (:attr:`dgm.kernels.base.Method.describe_states`) comes back as ``Outcome.described``."""
    from dgm.runtime.sharding import to_host

    t0 = time.perf_counter()
    if checkpoint is not None:
        checkpoint.begin()
    step_sizes, da_state, mm_state, schedule = adaptation
    warmup, states, da_state, mm_state = run_phase(chunk, states, da_state, step_sizes, key_warmup, x, run.adapt,
                                                   run.n_warmup, 1, run.chunk_size, bar, mm_state, schedule,
                                                   checkpoint, "warmup", hook=hook)
    if run.adapt and run.n_warmup:
        _, _, da_final = dual_averaging_adaptation(run.algorithm.target_acceptance)
        step_sizes = _over_leading(da_final, da_state)
    sampling, states, _, _ = run_phase(chunk, states, da_state, step_sizes, key_sample, x, False, run.n_samples,
                                       run.thin, run.chunk_size, bar, mm_state, checkpoint=checkpoint,
                                       phase="sampling")
    wall_time = time.perf_counter() - t0
    described = None
    if run.algorithm.describe_states is not None:  # e.g. the adapted ladder, its round trips and barrier
        final = jax.device_get(to_host(states))
        if jnp.ndim(key_warmup) > 1:  # a batch: one report per observation
            described = [run.algorithm.describe_states(jax.tree_util.tree_map(lambda a, i=i: a[i], final))
                         for i in range(np.shape(key_warmup)[0])]
        else:
            described = run.algorithm.describe_states(final)
    return Outcome(warmup, sampling, (states, da_state, mm_state, step_sizes), to_host(step_sizes), wall_time,
                   described)


# ---------------------------------------------------------------------------------------------------------------------
# 5. the result
# ---------------------------------------------------------------------------------------------------------------------
def run_settings(run: Plan, algorithm: Method, seed, step_sizes, described: Optional[dict] = None, **extra) -> dict:
    """``Result.settings``: the method's scalar options, the common options it used, the run's lengths, the seed,
    the step size that ran (a list when the chains differ), how it was chosen, and what the method chose itself,
    before the run and (``described``, :attr:`Outcome.described`) during it."""
    ran = np.asarray(step_sizes, dtype=float)
    settings = {k: v for k, v in run.options.items() if np.isscalar(v)}
    has_step_size = algorithm.initial_step_size is not None
    settings.update(
        run.applied, method=run.method, n_chains=run.n_chains, n_warmup=run.n_warmup, n_samples=run.n_samples,
        seed=seed_setting(seed),
        step_size=(None if not has_step_size else float(ran[0]) if np.all(ran == ran[0]) else ran.tolist()),
        step_size_requested=run.step_size_requested, adapt_step_size=run.adapt, step_size_adaptation=run.how,
        chain_method=run.chain_method, thin=run.thin,
    )
    settings.update(extra)
    settings.update(algorithm.settings or {})  # what the method chose itself (e.g. a default noise ladder)
    settings.update(described or {})  # ... and during the run (e.g. the adapted ladder)
    if run.model.symmetries:
        settings["symmetries"] = [sym.name for sym in run.model.symmetries]
    return settings


def run_metadata(run: Plan, algorithm: Method, step_sizes, x, settings: dict, *, wall_time, compile_time,
                 setup_time) -> dict:
    """The ``Result`` fields other than the draws (what a checkpointed run writes to its store's attributes)."""
    return dict(step_size=np.asarray(step_sizes), wall_time=wall_time, compile_time=compile_time,
                setup_time=setup_time, method=algorithm.name, x_obs=np.asarray(x), epsilon=algorithm.epsilon,
                settings=settings, latent_names=getattr(run.model, "latent_names", None), kernel=algorithm.kernel,
                sites=run.model.site_layout())


def assemble(meta: dict, sampling: dict, warmup: dict) -> Result:
    """The in-memory :class:`Result` of one observation from its outputs ``(chain, draw, ...)``."""
    stats = dict(sampling["stats"], constraint_residual=sampling["residual"])
    skipped = np.asarray(sampling["skipped_failures"]).sum(axis=1)  # (chain, reason) over unrecorded transitions
    return Result(
        latents=sampling["latents"], inputs=sampling["inputs"], stats=schema_stats(stats),
        max_residual=float(np.max(sampling["residual"])),
        warmup_stats=schema_stats(warmup["stats"]) if warmup else {},
        unrecorded_failures={name: int(skipped[:, i].sum()) for i, name in enumerate(
            FAILURE_NAMES[c] for c in sorted(FAILURE_NAMES))} if "failure" in stats else {},
        **meta,
    )


def observation_outputs(outputs: dict, i: int) -> dict:
    """Observation ``i``'s outputs ``(chain, draw, ...)`` from a batch's ``(obs, draw, chain, ...)``."""
    return jax.tree_util.tree_map(lambda a: np.swapaxes(np.asarray(a)[i], 0, 1), outputs) if outputs else {}


def conclude(run: Plan, result: Result, x, detect_components, progress: bool) -> Result:
    """The manifold components the chains occupy (exact methods, :mod:`dgm.components`), warnings on numerical
    failures and stuck chains, and the closing line when ``progress``."""
    if result.kernel == "exact":  # constrained HMC: which components of the manifold do the chains occupy?
        result.components = components_after_sampling(
            run.model, x, result.inputs, result.stats, detect_components, tol=run.common["tol"],
            max_newton=run.common["max_newton"], geometry=run.options.get("geometry", "auto"))
    report(result, progress)
    warn_if_stuck(result.components, result.method)
    check_mode_mixing(result)
    return result


def check_mode_mixing(result: Result, stacklevel: int = 5) -> None:
    """After any run: the mode-mixing check across chains (:mod:`dgm.mixing`), stored as
    ``result.mixing`` and warned about, with the remedy, when the chains disagree (not again when the component check
    has already warned that they are stuck in different components)."""
    result.mixing = mode_mixing(result.inputs, result.settings.get("round_trips"))
    if result.components is None or not result.components.stuck:
        warn_if_not_mixing(result.mixing, result.method, stacklevel=stacklevel)


def report(result: Result, progress: bool) -> None:
    """Warn when more than :data:`FAILURE_WARNING_RATE` of a phase's trajectories failed; print the closing line
    (and the symmetry moves' one) when ``progress``."""
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
                stacklevel=4,
            )
    if progress:
        failures = ", ".join(f"{k} {v}" for k, v in counts.items()) if counts else "none counted"
        refreshes = result.stats.get("newton_refreshes")  # issue 25: Newton refreshes of stalled projections
        refreshed = "" if refreshes is None else f"; Newton refreshes {int(np.sum(refreshes))}"
        print(
            f"{result.method}: {result.n_chains} chains x {result.n_draws} draws in {result.wall_time:.2f} s "
            f"(+{result.setup_time:.2f} s set-up, {result.compile_time:.2f} s compile); acceptance "
            f"{result.acceptance_rate:.3f}; rejections by reason: {failures}{refreshed}; "
            f"max |g(u)-x|_inf {result.max_residual:.2e}",
            file=sys.stderr,
        )
        for extra in (result.symmetry_summary_line(), result.tempering_summary_line()):
            if extra:
                print(extra, file=sys.stderr)
