"""Three ELBO-gradient estimators behind one interface (Lee, Yu & Yang 2018, NeurIPS; slides in /work/shared/papers).

``ELBO(theta) = E_{q_theta}[log p(x_obs, z)] + H[q_theta]`` for a Gaussian family (the entropy ``H`` is analytic and
its gradient is added exactly by all three estimators, so they differ only in how they differentiate
``E_q[f]``, ``f = log p(x_obs, .)``). With ``z = T_theta(eps)``, ``eps ~ N(0, I)``:

* :class:`ScoreFunction` (REINFORCE): ``grad E_q[f] = E_q[(f(z) - b) grad_theta log q_theta(z)]``; unbiased for any
  constant ``b`` (optional leave-one-out baseline), valid for any ``f``, high variance.
* :class:`Reparameterisation` (plain): ``E_eps[grad_theta f(T_theta(eps))]`` with ``grad`` the autodiff gradient
  of the branch taken. For a discontinuous ``f`` this misses the jumps and is **biased**: it equals the true
  gradient minus the boundary term.
* :class:`ReparameterisationBoundary` (Lee et al.): plain reparameterisation plus an unbiased estimate of the
  boundary term ``sum_k int_{H_k} q Delta_k (V_theta . n_k) dS`` (:mod:`dgm.vi.nondiff.boundary`). Unbiased.

Interface: ``estimator(model, family, params, key, num_samples) -> GradientEstimate`` with ``grad`` (the average, a
pytree like ``params``: an *ascent* direction for the ELBO), ``per_sample`` (``(num_samples, P)`` i.i.d. single-draw
estimates, flattened as ``jax.flatten_util.ravel_pytree(params)``, whose mean is ``grad``: their column variances are
the per-component variances of the single-sample estimator) and ``elbo`` (MC estimate of the ELBO from the draws).
Estimators are hashable frozen dataclasses; ``model``/``family``/``estimator`` can be closed over under ``jit``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from dgm.vi.nondiff.boundary import BOUNDARY_MODES, boundary_term_samples
from dgm.vi.nondiff.program import PiecewiseModel

Array = jax.Array

__all__ = [
    "GradientEstimate",
    "ScoreFunction",
    "Reparameterisation",
    "ReparameterisationBoundary",
    "elbo_estimate",
    "ESTIMATORS",
]


class GradientEstimate(NamedTuple):
    grad: Any  # pytree like params, mean of per_sample
    per_sample: Array  # (N, P)
    elbo: Array  # scalar


def _entropy_grad_flat(family, params) -> Array:
    g, _ = ravel_pytree(jax.grad(family.entropy)(params))
    return g


def _finish(params, per_sample: Array, log_p: Array, family) -> GradientEstimate:
    _, unravel = ravel_pytree(params)
    per_sample = per_sample + _entropy_grad_flat(family, params)[None, :]
    elbo = jnp.mean(log_p) + family.entropy(params)
    return GradientEstimate(unravel(jnp.mean(per_sample, axis=0)), per_sample, elbo)


def elbo_estimate(model: PiecewiseModel, family, params, key, num_samples: int) -> Array:
    """MC estimate ``mean_i log p(x_obs, z_i) + H[q_theta]``, ``z_i ~ q_theta``."""
    z = family.transform(params, family.sample_eps(key, (num_samples,)))
    return jnp.mean(jax.vmap(model.log_joint)(z)) + family.entropy(params)


@dataclasses.dataclass(frozen=True)
class ScoreFunction:
    """Score-function (likelihood-ratio) estimator ``(f(z) - b) grad log q_theta(z)`` (+ exact entropy gradient).

    ``baseline=True`` uses the leave-one-out mean of ``f`` over the other draws as ``b`` (needs ``N >= 2``; still
    unbiased as ``b_i`` is independent of ``z_i``)."""

    baseline: bool = False
    name: str = "score"

    def __call__(self, model: PiecewiseModel, family, params, key, num_samples: int) -> GradientEstimate:
        z = jax.lax.stop_gradient(family.transform(params, family.sample_eps(key, (num_samples,))))
        log_p = jax.vmap(model.log_joint)(z)
        if self.baseline:
            if num_samples < 2:
                raise ValueError("the leave-one-out baseline needs num_samples >= 2")
            b = (jnp.sum(log_p) - log_p) / (num_samples - 1)
        else:
            b = jnp.zeros_like(log_p)
        score = jax.vmap(lambda zi: ravel_pytree(jax.grad(family.log_prob)(params, zi))[0])(z)
        return _finish(params, (log_p - b)[:, None] * score, log_p, family)


def _reparam_samples(model, family, params, eps):
    def one(e):
        lp, g = jax.value_and_grad(lambda p: model.log_joint(family.transform(p, e)))(params)
        return lp, ravel_pytree(g)[0]

    return jax.vmap(one)(eps)


@dataclasses.dataclass(frozen=True)
class Reparameterisation:
    """Plain reparameterisation ``grad_theta log p(T_theta(eps))`` (+ exact entropy gradient). Biased when the
    log joint jumps across the branch hyperplanes (it ignores the boundary term)."""

    name: str = "reparam"

    def __call__(self, model: PiecewiseModel, family, params, key, num_samples: int) -> GradientEstimate:
        log_p, per = _reparam_samples(model, family, params, family.sample_eps(key, (num_samples,)))
        return _finish(params, per, log_p, family)


@dataclasses.dataclass(frozen=True)
class ReparameterisationBoundary:
    """Lee, Yu & Yang (2018): plain reparameterisation + boundary term, unbiased for piecewise-smooth models.

    ``boundary`` picks how the sum over hyperplanes is estimated per draw: ``"sum"`` (exact sum, all K), ``"uniform"``
    (one hyperplane uniformly at random, times K, as in the paper) or ``"weighted"`` (one hyperplane with probability
    proportional to its ``q``-mass). Each of the ``num_samples`` draws pairs one interior ``eps`` with its own
    boundary draw(s)."""

    boundary: str = "sum"
    name: str = "reparam+boundary"

    def __post_init__(self):
        if self.boundary not in BOUNDARY_MODES:
            raise ValueError(f"boundary must be one of {BOUNDARY_MODES}, got {self.boundary!r}")

    def __call__(self, model: PiecewiseModel, family, params, key, num_samples: int) -> GradientEstimate:
        key_in, key_b = jax.random.split(key)
        log_p, per = _reparam_samples(model, family, params, family.sample_eps(key_in, (num_samples,)))
        per = per + boundary_term_samples(model, family, params, key_b, num_samples, self.boundary)
        return _finish(params, per, log_p, family)


ESTIMATORS = {
    "score": ScoreFunction(),
    "reparam": Reparameterisation(),
    "reparam+boundary": ReparameterisationBoundary(),
}
