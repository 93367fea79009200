"""Stochastic-gradient ascent on the ELBO with optax (Adam by default), jitted with ``lax.scan``.

Each step draws ``num_samples`` i.i.d. single-draw gradient estimates ``g_1..g_N`` from an estimator of
:mod:`dgm.vi.nondiff.estimators`, ascends along their mean, and records

* ``elbo[t]``: the estimator's MC ELBO estimate at ``theta_t`` (same draws; analytic entropy),
* ``grad_var[t]``: the per-component sample variance of the single-draw estimates at ``theta_t``
  (``(num_steps, P)``, components ordered as ``ravel_pytree(params)``); divide by ``N`` for the variance of the
  averaged step direction.

Lee, Yu & Yang (2018) compare estimators exactly this way (ELBO vs iteration and the gradient variance).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

Array = jax.Array

__all__ = ["FitResult", "fit"]


class FitResult(NamedTuple):
    params: Any  # final parameters (pytree)
    elbo: Array  # (num_steps,) ELBO estimate before each step
    grad_var: Array  # (num_steps, P) per-component variance of the single-draw gradient estimator
    params_trace: Optional[Array]  # (num_steps, P) flattened parameters before each step, if recorded


@functools.lru_cache(maxsize=64)
def _adam(learning_rate: float) -> optax.GradientTransformation:
    return optax.adam(learning_rate)


@functools.partial(
    jax.jit, static_argnames=("model", "family", "estimator", "num_steps", "num_samples", "optimizer", "record_params")
)
def _fit(params, key, *, model, family, estimator, num_steps, num_samples, optimizer, record_params):
    opt_state = optimizer.init(params)

    def step(carry, key_t):
        p, s = carry
        est = estimator(model, family, p, key_t, num_samples)
        ascent = jax.tree_util.tree_map(jnp.negative, est.grad)  # optax minimises
        updates, s = optimizer.update(ascent, s, p)
        p_new = optax.apply_updates(p, updates)
        var = jnp.var(est.per_sample, axis=0, ddof=1) if num_samples > 1 else jnp.zeros_like(est.per_sample[0])
        out = (est.elbo, var, ravel_pytree(p)[0] if record_params else None)
        return (p_new, s), out

    (params, _), (elbo, var, trace) = jax.lax.scan(step, (params, opt_state), jax.random.split(key, num_steps))
    return FitResult(params, elbo, var, trace)


def fit(
    model,
    family,
    params,
    estimator,
    key,
    *,
    num_steps: int = 1000,
    num_samples: int = 8,
    learning_rate: float = 1e-2,
    optimizer: Optional[optax.GradientTransformation] = None,
    record_params: bool = False,
) -> FitResult:
    """Maximise the ELBO of ``model`` over ``family`` from ``params`` with ``estimator``.

    ``optimizer`` defaults to ``optax.adam(learning_rate)``; a custom one must be hashable (optax transformations
    are) and is used as a static argument. The whole loop is one ``jit``-compiled ``lax.scan``.
    """
    if optimizer is None:
        optimizer = _adam(float(learning_rate))
    return _fit(
        params,
        key,
        model=model,
        family=family,
        estimator=estimator,
        num_steps=int(num_steps),
        num_samples=int(num_samples),
        optimizer=optimizer,
        record_params=bool(record_params),
    )
