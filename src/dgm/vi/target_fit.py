r"""Fitting a variational family to a fixed unnormalised target ``pi~(x) = Z pi(x)``, and what comes out of it.

A *family* is a pytree of trainable parameters plus a function ``draw(params, key) -> (log_w, score, x)`` for
one draw: ``x`` a sample, ``log w`` an importance log-weight with ``E[w] = Z`` (so ``E[log w]`` is an ELBO),
reparameterised, and ``score`` the log-probability of the draw's discrete choices (MetFlow's accept/reject
decisions; 0 for a plain flow).  The gradient estimator is that of :func:`dgm.vi.metflow.surrogate`: ``grad log w
+ (log w - b) grad score`` with ``b`` the batch mean of ``log w``.  Three families
are built here from the pieces of :mod:`dgm.vi.metflow` and :mod:`dgm.vi.mcvae`:

* :func:`metflow_family` -- ``q_0`` (a learnt diagonal Gaussian) then ``K`` MetFlow kernels sharing one flow;
* :func:`flow_family` -- ``q_0`` then the same flow once (a plain RealNVP of *equal parameter count*);
* :func:`gaussian_family` -- ``q_0`` alone (mean-field VI).

:func:`fit` maximises ``mean surrogate`` over ``batch`` draws with Adam (optax), ``chunk`` steps per jitted
``lax.scan`` and a tqdm bar over the chunks; :func:`draws` returns samples and log-weights of a fitted family, and
``log_z_estimate`` the importance-sampling estimate ``log mean w`` (biased down, consistent).
"""

from __future__ import annotations

import math
import sys
import time
from typing import Callable, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.scipy.special import logsumexp

from dgm.vi import metflow as mf

__all__ = ["DiagonalGaussian", "Family", "FitResult", "fit", "draws", "log_z_estimate", "metflow_family",
           "flow_family", "gaussian_family", "n_parameters"]

_LOG_2PI = math.log(2.0 * math.pi)


class DiagonalGaussian(eqx.Module):
    """``q_0 = N(loc, diag(exp(log_scale))^2)`` with the reparameterisation ``x = loc + scale * eps``."""

    loc: jax.Array
    log_scale: jax.Array

    def __init__(self, dim: int, scale: float = 1.0, dtype=jnp.float32):
        self.loc = jnp.zeros(dim, dtype)
        self.log_scale = jnp.full(dim, math.log(scale), dtype)

    def rsample_and_log_prob(self, key):
        eps = jax.random.normal(key, self.loc.shape, self.loc.dtype)
        x = self.loc + jnp.exp(self.log_scale) * eps
        return x, -0.5 * jnp.sum(eps * eps) - jnp.sum(self.log_scale) - 0.5 * eps.size * _LOG_2PI


class Family(NamedTuple):
    """A variational family for a fixed target: trainable ``params`` and ``draw(params, key) -> (log w, score, x)``
    (module docstring)."""

    name: str
    params: object
    draw: Callable


def n_parameters(params) -> int:
    """Number of trainable scalars in ``params``."""
    return int(sum(v.size for v in jax.tree_util.tree_leaves(eqx.filter(params, eqx.is_inexact_array))))


def metflow_family(log_target: Callable, dim: int, n_steps: int, *, key, n_layers: int = 4, width: int = 32,
                   noise_dim: int = 0, scale: float = 1.0, learn_decisions: bool = True,
                   dtype=jnp.float32) -> Family:
    """``q_0`` then ``n_steps`` MetFlow kernels sharing one RealNVP (:mod:`dgm.vi.metflow`); ``learn_decisions``:
    learn the logits of the extended target's decision law ``m`` (else ``m`` uniform)."""
    n_steps = mf.check_steps("n_steps (K)", n_steps)
    flow = mf.astype(mf.realnvp(key, dim, n_layers=n_layers, width=width, noise_dim=noise_dim), dtype)
    logits = jnp.zeros(n_steps, dtype) if learn_decisions else None
    params = (DiagonalGaussian(dim, scale, dtype), mf.MetFlow(flow, noise_dim), logits)

    def draw(params, key):
        q0, metflow, logits = params
        k0, k1 = jax.random.split(key)
        x0, log_q0 = q0.rsample_and_log_prob(k0)
        log_w, score, info = mf.log_weight(metflow, log_target, x0, log_q0, k1, n_steps, logits)
        return log_w, score, info.position

    return Family(f"MetFlow (K={n_steps})", params, draw)


def flow_family(log_target: Callable, dim: int, *, key, n_layers: int = 4, width: int = 32, scale: float = 1.0,
                dtype=jnp.float32) -> Family:
    """``q_0`` then one RealNVP of the same architecture as :func:`metflow_family`'s (equal parameter count)."""
    flow = mf.astype(mf.realnvp(key, dim, n_layers=n_layers, width=width), dtype)
    params = (DiagonalGaussian(dim, scale, dtype), flow)

    def draw(params, key):
        q0, flow = params
        x0, log_q0 = q0.rsample_and_log_prob(key)
        log_w, y = mf.flow_log_weight(flow, log_target, x0, log_q0)
        return log_w, jnp.zeros_like(log_w), y

    return Family("RealNVP flow", params, draw)


def gaussian_family(log_target: Callable, dim: int, *, scale: float = 1.0, dtype=jnp.float32) -> Family:
    def draw(q0, key):
        x0, log_q0 = q0.rsample_and_log_prob(key)
        log_w = log_target(x0) - log_q0
        return log_w, jnp.zeros_like(log_w), x0

    return Family("mean-field Gaussian", DiagonalGaussian(dim, scale, dtype), draw)


def _batch_objective(draw, params, key, batch):
    """``(mean surrogate, mean log w)`` over ``batch`` draws; the score term's baseline is the batch mean of
    ``log w`` (held fixed)."""
    log_w, score, _ = jax.vmap(lambda k: draw(params, k))(jax.random.split(key, batch))
    baseline = lax.stop_gradient(jnp.mean(log_w))
    return jnp.mean(mf.surrogate(log_w, score, baseline)), jnp.mean(log_w)


class FitResult(NamedTuple):
    params: object
    elbo_trace: np.ndarray  # mean log w per chunk of steps
    seconds: float


def fit(family: Family, *, steps: int = 2000, batch: int = 256, learning_rate: float = 1e-3, seed: int = 0,
        chunk: int = 100, progress: bool = True, clip: float = 10.0) -> FitResult:
    """Maximise the family's ELBO by Adam on its gradient estimator; ``steps`` optimiser steps of ``batch`` draws,
    run ``chunk`` at a time in one jitted ``lax.scan`` (a tqdm bar over the chunks shows the running ELBO).
    Gradients are clipped to global norm ``clip`` (MH decisions make single-batch gradients heavy-tailed)."""
    steps, batch, chunk = (mf.check_steps(n, v) for n, v in (("steps", steps), ("batch", batch), ("chunk", chunk)))
    if not (np.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"learning_rate must be a finite positive number, got {learning_rate!r}")
    optimiser = optax.chain(optax.clip_by_global_norm(clip), optax.adam(learning_rate))
    params, static = eqx.partition(family.params, eqx.is_inexact_array)
    opt_state = optimiser.init(params)
    root = jax.random.key(seed)

    def loss(p, key):
        surrogate, elbo = _batch_objective(family.draw, eqx.combine(p, static), key, batch)
        return -surrogate, elbo

    @jax.jit
    def run_chunk(params, opt_state, c):
        def body(carry, i):
            params, opt_state = carry
            (_, elbo), grads = jax.value_and_grad(loss, has_aux=True)(params, jax.random.fold_in(root, i))
            updates, opt_state = optimiser.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), elbo

        (params, opt_state), elbos = lax.scan(body, (params, opt_state), c * chunk + jnp.arange(chunk))
        return params, opt_state, jnp.mean(elbos)

    n_chunks = -(-steps // chunk)
    trace = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_chunks * chunk, desc=f"fit {family.name}", unit="step", file=sys.stderr)
    t0 = time.perf_counter()
    try:
        for c in range(n_chunks):
            params, opt_state, elbo = run_chunk(params, opt_state, c)
            trace.append(float(elbo))
            if bar is not None:
                bar.update(chunk)
                bar.set_postfix_str(f"ELBO {trace[-1]:.3f}", refresh=False)
    finally:
        if bar is not None:
            bar.close()
    return FitResult(eqx.combine(params, static), np.asarray(trace), time.perf_counter() - t0)


def draws(family: Family, params, n: int, *, seed: int = 1, chunk: int = 10_000):
    """``(x, log w)`` for ``n`` fresh draws of the fitted family (numpy arrays ``(n, dim)`` and ``(n,)``)."""
    fn = eqx.filter_jit(lambda p, keys: jax.vmap(lambda k: family.draw(p, k))(keys))
    xs, lws = [], []
    root = jax.random.key(seed)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        keys = jax.random.split(jax.random.fold_in(root, start), chunk)
        log_w, _, x = fn(params, keys)
        xs.append(np.asarray(x)[:m])
        lws.append(np.asarray(log_w)[:m])
    return np.concatenate(xs), np.concatenate(lws)


def log_z_estimate(log_w: np.ndarray) -> float:
    """``log mean_j w_j`` in float64 (non-finite log-weights count as ``w = 0``)."""
    lw = np.asarray(log_w, np.float64)
    lw = np.where(np.isfinite(lw), lw, -np.inf)
    return float(logsumexp(lw) - math.log(lw.size))
