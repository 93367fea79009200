"""``dgm.sample``: warm-up with step-size adaptation, then sampling; chains ``vmap``ped inside one ``lax.scan``.

The scan runs over iterations and ``vmap``s the method's ``step`` over chains inside its body, so one host callback
per iteration (rate-limited) drives a single progress bar for all chains. Warm-up adapts one step size per chain by
BlackJAX's dual averaging (Hoffman & Gelman 2014) on the acceptance probability; a failed trajectory counts as
acceptance 0 (so failures shrink the step, as they should) and failure rates are recorded separately from acceptance.
Compilation is timed apart from running (ahead-of-time ``lower().compile()``).
"""

from __future__ import annotations

import inspect
import sys
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.adaptation.step_size import dual_averaging_adaptation

from dgm.kernels.base import Method
from dgm.methods import METHODS
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


def _phase(method: Method, n_chains: int, n_iterations: int, adapt: bool, record: bool, progress: _Progress,
           chain_method: str = "vectorized", thin: int = 1):
    """A jittable ``(states, key, step_sizes) -> (states, step_sizes, outputs)`` for one phase."""
    da_init, da_update, da_final = dual_averaging_adaptation(method.target_acceptance)
    step_chains = _over_chains(method.step, chain_method)

    def run(states, key, step_sizes):
        da_state = jax.vmap(da_init)(step_sizes)

        def one_iteration(states, key, current):
            return step_chains(jax.random.split(key, n_chains), states, current)

        def body(carry, xs):
            states, da_state = carry
            iteration, key = xs
            current = jnp.exp(da_state.log_step_size) if adapt else step_sizes
            if thin > 1:  # run thin - 1 unrecorded iterations, then the recorded one
                keys = jax.random.split(key, thin)
                states = jax.lax.fori_loop(
                    0, thin - 1, lambda i, s: one_iteration(s, keys[i], current)[0], states
                )
                key = keys[-1]
            states, infos = one_iteration(states, key, current)
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
            return (states, da_state), out

        xs = (jnp.arange(n_iterations), jax.random.split(key, n_iterations))
        (states, da_state), outputs = jax.lax.scan(body, (states, da_state), xs)
        final = jax.vmap(da_final)(da_state) if adapt else step_sizes
        return states, final, outputs

    return run


def _call_builder(name, model, x_obs, common: dict, options: dict) -> Method:
    builder = METHODS.get(name)
    if builder is None:
        raise ValueError(f"unknown method {name!r}; available: {sorted(METHODS)}")
    parameters = inspect.signature(builder).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    kwargs = {k: v for k, v in common.items() if accepts_any or k in parameters}
    return builder(model, x_obs, **kwargs, **options)


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
      step_size: integrator step size; ``None`` adapts it during warm-up (dual averaging); a number fixes it (unless
        ``adapt_step_size=True``, which uses it as the starting value).
      n_steps: ``(lo, hi)``: the number of leapfrog steps is drawn uniformly from ``lo..hi`` each iteration.
      n_inner: geodesic sub-steps per leapfrog step (Algorithm 1's ``N_g``).
      tol: Newton convergence tolerance on ``|g(u) - x_obs|_inf``.
      max_newton: Newton iterations before a projection counts as not converged (Algorithm 1's ``M``).
      chain_method: how chains share the machine inside the scan: ``"vectorized"`` (``vmap``: one batched step),
        ``"sequential"`` (``lax.map``: one chain after another within each iteration) or ``"auto"``: sequential on
        CPU, where batched small linear algebra and lock-stepped while-loops cost more than they save, vectorized on
        accelerators.
      thin: keep every ``thin``-th draw of the sampling phase (``n_samples`` draws are kept, ``n_samples * thin``
        iterations run; statistics are those of the kept iterations).
      initial_positions: optional ``(n_chains, input_dim)`` starting inputs (for constrained HMC they must lie on
        the manifold within ``tol``); default: the method's own initialisation (``model.init`` or a solver).
      progress: show a progress bar and a closing line with acceptance and rejection counts.
      **options: method options, e.g. ``projection="newton"``, ``log_det_gradient="autodiff"``, ``geometry="dense"``,
        ``reverse_check_tol``, ``target_acceptance``, ``noise_scale``, ``epsilon``.

    Returns:
      :class:`dgm.Result`.
    """
    if int(n_chains) < 1 or int(n_samples) < 1 or int(n_warmup) < 0:
        raise ValueError("n_chains and n_samples must be >= 1 and n_warmup >= 0")
    if not tol > 0:
        raise ValueError(f"tol must be positive, got {tol!r}")
    n_chains, n_warmup, n_samples = int(n_chains), int(n_warmup), int(n_samples)
    if chain_method == "auto":
        chain_method = "sequential" if jax.default_backend() == "cpu" else "vectorized"
    if chain_method not in ("vectorized", "sequential"):
        raise ValueError(f"chain_method must be 'auto', 'vectorized' or 'sequential', got {chain_method!r}")
    with float64():
        x = jnp.asarray(model.validate_observation(x_obs))
        common = dict(step_size=step_size, n_steps=tuple(n_steps), n_inner=n_inner, tol=tol, max_newton=max_newton)
        algorithm = _call_builder(method, model, x, common, options)
        adapt = algorithm.initial_step_size is not None and (
            step_size is None if adapt_step_size is None else bool(adapt_step_size)
        )
        key_init, key_warmup, key_sample = jax.random.split(jax.random.PRNGKey(seed), 3)
        if initial_positions is None:
            positions = np.asarray(algorithm.initial_positions(key_init, n_chains), dtype=np.float64)
        else:
            positions = _check_initial_positions(model, x, initial_positions, algorithm, tol)
        if positions.shape != (n_chains, model.input_dim):
            raise ValueError(f"initial positions have shape {positions.shape}, expected {(n_chains, model.input_dim)}")
        states = jax.jit(jax.vmap(algorithm.init))(jnp.asarray(positions))
        initial = np.nan if algorithm.initial_step_size is None else algorithm.initial_step_size
        step_sizes = jnp.full((n_chains,), initial, jnp.float64)

        thin = int(thin)
        if thin < 1:
            raise ValueError(f"thin must be >= 1, got {thin}")
        bar = _Progress(n_warmup + n_samples, f"{algorithm.name} ({n_chains} chains)", progress)
        warmup_fn = jax.jit(_phase(algorithm, n_chains, n_warmup, adapt, False, bar, chain_method))
        sample_fn = jax.jit(_phase(algorithm, n_chains, n_samples, False, True, bar, chain_method, thin))

        def latents_of(inputs):
            return jax.vmap(jax.vmap(model.latents))(inputs)

        def residual_of(inputs):  # |g(u) - x_obs|_inf of every draw, (chain, draw)
            return jnp.max(jnp.abs(jax.vmap(jax.vmap(model.generator))(inputs) - x), axis=-1)

        post_fn = jax.jit(lambda inputs: (latents_of(inputs), residual_of(inputs)))

        t0 = time.perf_counter()
        compiled_warmup = warmup_fn.lower(states, key_warmup, step_sizes).compile() if n_warmup else None
        compiled_sample = sample_fn.lower(states, key_sample, step_sizes).compile()
        inputs_shape = jax.ShapeDtypeStruct((n_chains, n_samples, model.input_dim), jnp.float64)
        compiled_post = post_fn.lower(inputs_shape).compile()
        compile_time = time.perf_counter() - t0

        bar.open()
        try:
            t0 = time.perf_counter()
            warmup_stats = {}
            if n_warmup:
                states, step_sizes, warmup_out = compiled_warmup(states, key_warmup, step_sizes)
                jax.block_until_ready(states)
                warmup_stats = {k: np.swapaxes(np.asarray(v), 0, 1) for k, v in warmup_out["stats"].items()}
            bar.offset = n_warmup
            states, step_sizes, out = compiled_sample(states, key_sample, step_sizes)
            jax.block_until_ready(out)
            wall_time = time.perf_counter() - t0
        finally:
            bar.close()
        inputs = jnp.swapaxes(out["inputs"], 0, 1)
        latents, residual = compiled_post(inputs)
        stats = {k: np.swapaxes(np.asarray(v), 0, 1) for k, v in out["stats"].items()}
        stats["constraint_residual"] = np.asarray(residual)
        settings = dict(common, method=method, n_chains=n_chains, n_warmup=n_warmup, n_samples=n_samples, seed=seed,
                        adapt_step_size=adapt, chain_method=chain_method, thin=thin, **{k: v for k, v in options.items() if np.isscalar(v)})
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
        )
    _report(result, progress)
    return result


def _report(result: Result, progress: bool) -> None:
    counts = result.rejection_counts()
    warm = result.rejection_counts(warmup=True)
    if warm and result.warmup_stats:
        n_warm = np.asarray(result.warmup_stats["failure"]).size
        rate = sum(warm.values()) / max(n_warm, 1)
        if rate > 0.5:
            warnings.warn(
                f"{result.method}: {rate:.0%} of warm-up trajectories failed numerically ({warm}); the adapted step "
                f"size {np.asarray(result.step_size)} may be meaningless. Check tol/max_newton and the model.",
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
