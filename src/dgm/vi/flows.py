r"""Baseline variational families for the Hamiltonian-VAE comparisons: a planar normalizing flow and mean-field
Gaussian VB.

* :class:`PlanarFlow` -- ``z_0 ~ N(0, I_d)`` pushed through ``K`` planar maps (Rezende & Mohamed 2015, eq. 10)
  ``f(z) = z + u_hat tanh(w^T z + b)`` with ``log|det df/dz| = log|1 + u_hat^T (1 - tanh^2(w^T z + b)) w|``
  (their eq. 11-12) and ``u_hat`` constrained so that ``w^T u_hat >= -1`` (their appendix A.1: invertible).  The
  planar layer is **flowjax**'s (:class:`flowjax.bijections.Planar`, the tanh variant; the ``K`` layers are stacked
  with :class:`flowjax.bijections.Scan`, one ``lax.scan``), not rewritten here.  ``log q_K(z_K) = log N(z_0; 0, I)
  - sum_k log|det|``.  The initial density is the standard normal as in Caterini et al.'s Gaussian experiment.
* :class:`MeanFieldGaussian` -- ``q(z) = N(loc, diag(scale^2))``, reparameterised ``z = loc + scale * eps``.

Both expose ``sample_and_log_prob(key, n) -> (z (n, d), log q(z) (n,))``, differentiable in their parameters, and
``elbo(log_target, key, n)`` = ``mean_j [log_target(z_j) - log q(z_j)]``.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from flowjax.bijections import Planar, Scan

__all__ = ["PlanarFlow", "MeanFieldGaussian"]

_LOG_2PI = math.log(2.0 * math.pi)


def _check_positive_int(name, v):
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    return v


class PlanarFlow(eqx.Module):
    """``K`` planar layers on a standard-normal base in ``d`` dimensions (module docstring)."""

    bijection: Scan
    dim: int = eqx.field(static=True)
    n_layers: int = eqx.field(static=True)

    def __init__(self, dim: int, n_layers: int, *, key):
        self.dim = _check_positive_int("dim", dim)
        self.n_layers = _check_positive_int("n_layers (K)", n_layers)
        keys = jax.random.split(key, n_layers)
        self.bijection = Scan(eqx.filter_vmap(lambda k: Planar(k, dim=dim))(keys))

    def sample_and_log_prob(self, key, n: int):
        z0 = jax.random.normal(key, (n, self.dim), self.bijection.bijection.params.dtype)
        log_q0 = -0.5 * jnp.sum(z0 * z0, -1) - 0.5 * self.dim * _LOG_2PI
        z, log_det = jax.vmap(self.bijection.transform_and_log_det)(z0)
        return z, log_q0 - log_det

    def elbo(self, log_target, key, n: int):
        z, log_q = self.sample_and_log_prob(key, n)
        return jnp.mean(jax.vmap(log_target)(z) - log_q)


class MeanFieldGaussian(eqx.Module):
    """``N(loc, diag(exp(log_scale))^2)``."""

    loc: jax.Array
    log_scale: jax.Array

    def __init__(self, dim: int, *, loc=0.0, scale=1.0, dtype=jnp.float32):
        dim = _check_positive_int("dim", dim)
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be finite and positive, got {scale!r}")
        self.loc = jnp.broadcast_to(jnp.asarray(loc, dtype), (dim,))
        self.log_scale = jnp.full((dim,), math.log(scale), dtype)

    def sample_and_log_prob(self, key, n: int):
        eps = jax.random.normal(key, (n,) + self.loc.shape, self.loc.dtype)
        z = self.loc + jnp.exp(self.log_scale) * eps
        log_q = -0.5 * jnp.sum(eps * eps, -1) - jnp.sum(self.log_scale) - 0.5 * self.loc.shape[0] * _LOG_2PI
        return z, log_q

    def entropy(self):
        return jnp.sum(self.log_scale) + 0.5 * self.loc.shape[0] * (1.0 + _LOG_2PI)

    def elbo(self, log_target, key, n: int):
        z, log_q = self.sample_and_log_prob(key, n)
        return jnp.mean(jax.vmap(log_target)(z) - log_q)
