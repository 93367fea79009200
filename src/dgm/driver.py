"""``dgm.sample``: warm-up with step-size adaptation, then sampling; chains ``vmap``ped inside one ``lax.scan``.

The scan runs over iterations and ``vmap``s the method's ``step`` over chains inside its body, so one host callback
per iteration (rate-limited) drives a single progress bar for all chains. Warm-up adapts one step size per chain by
BlackJAX's dual averaging (Hoffman & Gelman 2014) on the acceptance probability; a failed trajectory counts as
acceptance 0 (so failures shrink the step, as they should) and failure rates are recorded separately from acceptance.
Compilation is timed apart from running (ahead-of-time ``lower().compile()``).
"""

from __future__ import annotations

import sys
import time
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.adaptation.step_size import dual_averaging_adaptation, find_reasonable_step_size

from dgm.kernels.base import Method
from dgm.integrator import FAILURE_NAMES
from dgm.methods import SAMPLER_DEFAULTS, accepted_options, build_method, check_sampler_options
from dgm.model import GenerativeModel
from dgm.precision import float64
from dgm.result import Result, schema_stats


class _Progress:
    """A tqdm bar fed from inside the compiled scan by ``jax.debug.callback`` (every ``every`` iterations)."""

    def __init__(self, total: int, description: str, enabled: bool):
        self.enabled = enabled and total > 0
        self.total = total
        self.description = description
        self.every = max(1, total // 100)
        self.bar = None
        self.offset = 0

    def open(self):
        if self.enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, desc=self.description, file=sys.stderr, leave=True)

    def update(self, iteration):
        if self.bar is not None:
            done = min(int(iteration) + 1 + self.offset, self.total)
            self.bar.update(done - self.bar.n)

    def close(self):
        if self.bar is not None:
            self.bar.update(self.total - self.bar.n)
            self.bar.close()
            self.bar = None

    def tick(self, iteration, n_iterations):
        if not self.enabled:
            return
        due = (iteration % self.every == 0) | (iteration == n_iterations - 1)
        jax.lax.cond(due, lambda i: jax.debug.callback(self.update, i), lambda i: None, iteration)


def _over_chains(fn, chain_method: str):
    """Map ``fn`` over the leading (chain) axis of its arguments: ``vmap`` or a sequential ``lax.map``."""
    if chain_method == "vectorized":
        return jax.vmap(fn)
    return lambda *args: jax.lax.map(lambda a: fn(*a), args)


_N_CODES = max(FAILURE_NAMES) + 1


def _failure_one_hot(method: Method, infos):
    """``(n_chains, _N_CODES)`` int32 indicator of each chain's failure code (zeros for methods without one)."""
    failure = jax.vmap(method.stats)(infos).get("failure")
    if failure is None:
        return jnp.zeros((jax.tree_util.tree_leaves(infos)[0].shape[0], _N_CODES), jnp.int32)
    return jax.nn.one_hot(failure, _N_CODES, dtype=jnp.int32)


def _phase(method: Method, n_chains: int, n_iterations: int, adapt: bool, record: bool, progress: _Progress,
           chain_method: str = "vectorized", thin: int = 1):
    """A jittable ``(states, key, step_sizes) -> (states, step_sizes, outputs, failure_counts)`` for one phase.

    ``failure_counts`` ``(n_chains, n_codes)`` counts the failure codes of *every* iteration run, the ``thin - 1``
    unrecorded iterations between kept draws included.
    """
    da_init, da_update, da_final = dual_averaging_adaptation(method.target_acceptance)
    step_chains = _over_chains(method.step, chain_method)

    def run(states, key, step_sizes):
        da_state = jax.vmap(da_init)(step_sizes)

        def one_iteration(states, key, current):
            return step_chains(jax.random.split(key, n_chains), states, current)

        def body(carry, xs):
            states, da_state, counts = carry
            iteration, key = xs
            current = jnp.exp(da_state.log_step_size) if adapt else step_sizes
            if thin > 1:  # run thin - 1 unrecorded iterations (their failures counted), then the recorded one
                keys = jax.random.split(key, thin)

                def unrecorded(i, carry):
                    states, counts = carry
                    states, infos = one_iteration(states, keys[i], current)
                    return states, counts + _failure_one_hot(method, infos)

                states, counts = jax.lax.fori_loop(0, thin - 1, unrecorded, (states, counts))
                key = keys[-1]
            states, infos = one_iteration(states, key, current)
            counts = counts + _failure_one_hot(method, infos)
            if adapt:
                acceptance = jnp.nan_to_num(jax.vmap(method.acceptance)(infos), nan=0.0)
                da_state = jax.vmap(da_update)(da_state, acceptance)
            out = {"stats": jax.vmap(method.stats)(infos)}
            if method.log_density is not None:
                out["stats"]["lp"] = jax.vmap(method.log_density)(states)
            if method.initial_step_size is not None:  # the step size each chain used at this iteration
                out["stats"]["step_size"] = current
            if record:
                out["inputs"] = jax.vmap(method.position)(states)
            progress.tick(iteration, n_iterations)
            return (states, da_state, counts), out

        xs = (jnp.arange(n_iterations), jax.random.split(key, n_iterations))
        counts = jnp.zeros((n_chains, _N_CODES), jnp.int32)
        (states, da_state, counts), outputs = jax.lax.scan(body, (states, da_state, counts), xs)
        final = jax.vmap(da_final)(da_state) if adapt else step_sizes
        return states, final, outputs, counts

    return run


class _Acceptance(NamedTuple):
    acceptance_rate: jax.Array


def _heuristic_step_sizes(method: Method):
    """A jittable ``(keys, states, step_sizes) -> step_sizes``: a starting step size per chain without warm-up: BlackJAX's ``find_reasonable_step_size`` (Hoffman & Gelman
    2014, Algorithm 4, as NumPyro's) at the chain's starting state, targeting ``method.target_acceptance``.

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


def _check_initial_positions(model, x, positions, algorithm: Method, tol: float) -> np.ndarray:
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
    thin: int = 1,
    initial_positions=None,
    **options,
) -> Result:
    """Sample the inputs of ``model`` conditioned on ``generator(u) = x_obs``.

    Args:
      model: the :class:`dgm.GenerativeModel`.
      x_obs: observed values, shape ``model.output_shape()``; checked for shape and finiteness.
      method: ``"chmc"`` (constrained HMC), ``"hmc"``/``"nuts"`` (BlackJAX on the noisy relaxation: pass
        ``noise_scale``), or an ABC baseline (see ``dgm.methods.METHODS``).
      n_chains, n_warmup, n_samples, seed: chains run in parallel (``vmap``); warm-up draws are discarded.
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
        ``"sequential"`` (``lax.map``: one chain after another within each iteration) or ``"auto"``: sequential on
        CPU, where batched small linear algebra and lock-stepped while-loops cost more than they save, vectorized on
        accelerators.
      thin: keep every ``thin``-th draw of the sampling phase (``n_samples`` draws are kept, ``n_samples * thin``
        iterations run; per-draw statistics are those of the kept iterations, while
        ``result.rejection_counts()`` counts the failures of every iteration run).
      initial_positions: optional ``(n_chains, input_dim)`` starting inputs (for constrained HMC they must lie on
        the manifold within ``tol``); default: the method's own initialisation (``model.init`` or a solver).
      progress: show a progress bar and a closing line with acceptance and rejection counts.
      **options: method options, e.g. ``projection="newton"``, ``log_det_gradient="autodiff"``, ``geometry="dense"``,
        ``reverse_check_tol``, ``target_acceptance``, ``noise_scale``, ``epsilon``. An option the method does not
        accept (a typo, or ``step_size`` for a method without one) is a ``ValueError`` naming the options it accepts.

    Returns:
      :class:`dgm.Result`.

    Warns:
      RuntimeWarning: when more than ``FAILURE_WARNING_RATE`` of the warm-up or of the sampling iterations failed
      numerically (with the counts by reason).
    """
    for name, value, minimum in (("n_chains", n_chains, 1), ("n_samples", n_samples, 1), ("n_warmup", n_warmup, 0),
                                 ("thin", thin, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    n_chains, n_warmup, n_samples, thin = int(n_chains), int(n_warmup), int(n_samples), int(thin)
    if chain_method == "auto":
        chain_method = "sequential" if jax.default_backend() == "cpu" else "vectorized"
    if chain_method not in ("vectorized", "sequential"):
        raise ValueError(f"chain_method must be 'auto', 'vectorized' or 'sequential', got {chain_method!r}")
    common = check_sampler_options(step_size, n_steps, n_inner, tol, max_newton)
    given = {k for k, v in common.items() if v != SAMPLER_DEFAULTS[k]}  # set by the user: must apply
    if adapt_step_size is not None and "adapt_step_size" in accepted_options(method):
        options = dict(options, adapt_step_size=bool(adapt_step_size))  # a method that decides it itself (ABC-MCMC)
    with float64():
        x = jnp.asarray(model.validate_observation(x_obs))
        algorithm, applied = build_method(method, model, x, common, options, given)
        has_step_size = algorithm.initial_step_size is not None
        if adapt_step_size and not has_step_size:
            raise ValueError(f"method {method!r} has no step size to adapt (adapt_step_size=True)")
        adapt = has_step_size and (step_size is None if adapt_step_size is None else bool(adapt_step_size))
        key_init, key_warmup, key_sample = jax.random.split(jax.random.PRNGKey(seed), 3)
        if initial_positions is None:
            positions = np.asarray(algorithm.initial_positions(key_init, n_chains), dtype=np.float64)
        else:
            positions = _check_initial_positions(model, x, initial_positions, algorithm, common["tol"])
        if positions.shape != (n_chains, model.input_dim):
            raise ValueError(f"initial positions have shape {positions.shape}, expected {(n_chains, model.input_dim)}")
        states = jax.jit(jax.vmap(algorithm.init))(jnp.asarray(positions))
        initial = np.nan if algorithm.initial_step_size is None else algorithm.initial_step_size
        step_sizes = jnp.full((n_chains,), initial, jnp.float64)
        if not has_step_size:
            how = "none"
        elif adapt and n_warmup:
            how = "dual-averaging"  # over the warm-up, from algorithm.initial_step_size
        elif adapt:  # nothing to adapt in: the documented heuristic (timed as warm-up), recorded
            how = "find-reasonable-step-size"
        else:
            how = "fixed"

        bar = _Progress(n_warmup + n_samples, f"{algorithm.name} ({n_chains} chains)", progress)
        warmup_fn = jax.jit(_phase(algorithm, n_chains, n_warmup, adapt, False, bar, chain_method))
        sample_fn = jax.jit(_phase(algorithm, n_chains, n_samples, False, True, bar, chain_method, thin))

        def latents_of(inputs):
            return jax.vmap(jax.vmap(model.latents))(inputs)

        def residual_of(inputs):  # |g(u) - x_obs|_inf of every draw, (chain, draw)
            return jnp.max(jnp.abs(jax.vmap(jax.vmap(model.generator))(inputs) - x), axis=-1)

        post_fn = jax.jit(lambda inputs: (latents_of(inputs), residual_of(inputs)))

        heuristic_keys = jax.random.split(key_warmup, n_chains)
        t0 = time.perf_counter()
        compiled_heuristic = (jax.jit(_heuristic_step_sizes(algorithm)).lower(heuristic_keys, states, step_sizes)
                              .compile() if how == "find-reasonable-step-size" else None)
        compiled_warmup = warmup_fn.lower(states, key_warmup, step_sizes).compile() if n_warmup else None
        compiled_sample = sample_fn.lower(states, key_sample, step_sizes).compile()
        inputs_shape = jax.ShapeDtypeStruct((n_chains, n_samples, model.input_dim), jnp.float64)
        compiled_post = post_fn.lower(inputs_shape).compile()
        compile_time = time.perf_counter() - t0

        bar.open()
        try:
            t0 = time.perf_counter()
            warmup_stats = {}
            if compiled_heuristic is not None:
                step_sizes = compiled_heuristic(heuristic_keys, states, step_sizes)
            if n_warmup:
                states, step_sizes, warmup_out, _ = compiled_warmup(states, key_warmup, step_sizes)
                jax.block_until_ready(states)
                warmup_stats = {k: np.swapaxes(np.asarray(v), 0, 1) for k, v in warmup_out["stats"].items()}
            bar.offset = n_warmup
            states, step_sizes, out, counts = compiled_sample(states, key_sample, step_sizes)
            jax.block_until_ready(out)
            wall_time = time.perf_counter() - t0
        finally:
            bar.close()
        inputs = jnp.swapaxes(out["inputs"], 0, 1)
        latents, residual = compiled_post(inputs)
        stats = {k: np.swapaxes(np.asarray(v), 0, 1) for k, v in out["stats"].items()}
        stats["constraint_residual"] = np.asarray(residual)
        counts = np.asarray(counts).sum(0)
        failure_counts = ({name: int(counts[code]) for code, name in FAILURE_NAMES.items()}
                          if "failure" in stats else {})
        ran = np.asarray(step_sizes, dtype=float)
        settings = {k: v for k, v in options.items() if np.isscalar(v)}
        settings.update(
            applied, method=method, n_chains=n_chains, n_warmup=n_warmup, n_samples=n_samples, seed=seed,
            step_size=(None if not has_step_size else float(ran[0]) if np.all(ran == ran[0]) else ran.tolist()),
            step_size_requested=step_size, adapt_step_size=bool(adapt), step_size_adaptation=how,
            chain_method=chain_method, thin=thin,
        )
        result = Result(
            latents=np.asarray(latents),
            inputs=np.asarray(inputs),
            stats=schema_stats(stats),
            step_size=np.asarray(step_sizes),
            wall_time=wall_time,
            compile_time=compile_time,
            method=algorithm.name,
            max_residual=float(np.max(residual)),
            x_obs=np.asarray(x),
            epsilon=algorithm.epsilon,
            settings=settings,
            warmup_stats=schema_stats(warmup_stats),
            latent_names=getattr(model, "latent_names", None),
            failure_counts=failure_counts,
            kernel=algorithm.kernel,
        )
    _report(result, progress)
    return result


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
            f"(+{result.compile_time:.2f} s compile); acceptance {result.acceptance_rate:.3f}; "
            f"rejections by reason: {failures}; max |g(u)-x|_inf {result.max_residual:.2e}",
            file=sys.stderr,
        )
