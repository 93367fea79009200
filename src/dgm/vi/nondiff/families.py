"""Gaussian variational families with the location-scale reparameterisation ``z = T_theta(eps) = mu + L eps``.

``eps ~ N(0, I_d)``; ``theta`` is an unconstrained parameter dict:

* :class:`MeanFieldGaussian`: ``theta = {"mean": mu, "log_scale": log sigma}``, ``L = diag(sigma)``;
* :class:`FullRankGaussian`: ``theta = {"mean": mu, "tril": v}`` with ``v`` the ``d(d+1)/2`` lower-triangular
  entries of ``L`` in row-major order, the diagonal ones stored as logs (``L_ii = exp(v_ii)``), so ``L`` is a
  Cholesky factor of ``Sigma = L L^T``.

Everything the estimators need of a family is here: sampling ``eps``, ``T_theta``, its inverse, ``log q_theta``, the
(analytic) entropy, and ``L`` (the restriction of ``q_theta`` to a hyperplane is Gaussian and is sampled through
``L``, see :mod:`dgm.vi.nondiff.boundary`). The velocity field of the reparameterisation, ``V_theta(z) =
d T_theta(eps)/d theta`` at ``eps = T_theta^{-1}(z)``, is obtained by autodiff of ``transform`` with ``eps`` fixed.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

__all__ = ["MeanFieldGaussian", "FullRankGaussian"]

_LOG_2PI = math.log(2.0 * math.pi)


@dataclasses.dataclass(frozen=True)
class MeanFieldGaussian:
    """``q_theta = N(mu, diag(sigma^2))``, ``theta = {"mean", "log_scale"}``, ``z = mu + sigma * eps``."""

    dim: int

    def init(self, mean=None, scale=1.0) -> dict:
        mean = jnp.zeros(self.dim) if mean is None else jnp.broadcast_to(jnp.asarray(mean, float), (self.dim,))
        log_scale = jnp.broadcast_to(jnp.log(jnp.asarray(scale, mean.dtype)), (self.dim,))
        return {"mean": jnp.asarray(mean), "log_scale": jnp.asarray(log_scale)}

    def scale_tril(self, params) -> Array:
        return jnp.diag(jnp.exp(params["log_scale"]))

    def transform(self, params, eps: Array) -> Array:
        return params["mean"] + jnp.exp(params["log_scale"]) * eps

    def inverse(self, params, z: Array) -> Array:
        return (z - params["mean"]) * jnp.exp(-params["log_scale"])

    def project_scale(self, params, n: Array) -> Array:
        """``L^T n`` (the direction in eps-space whose inner product with eps gives ``n . (z - mu)``)."""
        return jnp.exp(params["log_scale"]) * n

    def log_prob(self, params, z: Array) -> Array:
        eps = self.inverse(params, z)
        return -0.5 * jnp.sum(eps**2) - jnp.sum(params["log_scale"]) - 0.5 * self.dim * _LOG_2PI

    def entropy(self, params) -> Array:
        return jnp.sum(params["log_scale"]) + 0.5 * self.dim * (1.0 + _LOG_2PI)

    def sample_eps(self, key, shape=()) -> Array:
        return jax.random.normal(key, tuple(shape) + (self.dim,), dtype=jnp.result_type(float))


@dataclasses.dataclass(frozen=True)
class FullRankGaussian:
    """``q_theta = N(mu, L L^T)``, ``theta = {"mean", "tril"}`` (log-diagonal Cholesky entries), ``z = mu + L eps``."""

    dim: int

    @property
    def _tril_indices(self):
        return np.tril_indices(self.dim)

    def init(self, mean=None, scale=1.0) -> dict:
        mean = jnp.zeros(self.dim) if mean is None else jnp.broadcast_to(jnp.asarray(mean, float), (self.dim,))
        rows, cols = self._tril_indices
        scale = jnp.broadcast_to(jnp.asarray(scale, mean.dtype), (self.dim,))
        tril = jnp.where(jnp.asarray(rows == cols), jnp.log(scale)[rows], 0.0)
        return {"mean": jnp.asarray(mean), "tril": tril}

    def scale_tril(self, params) -> Array:
        rows, cols = self._tril_indices
        v = params["tril"]
        v = jnp.where(jnp.asarray(rows == cols), jnp.exp(v), v)
        return jnp.zeros((self.dim, self.dim), v.dtype).at[rows, cols].set(v)

    def transform(self, params, eps: Array) -> Array:
        return params["mean"] + eps @ self.scale_tril(params).T

    def inverse(self, params, z: Array) -> Array:
        L = self.scale_tril(params)
        return jax.scipy.linalg.solve_triangular(L, (z - params["mean"]).T, lower=True).T

    def project_scale(self, params, n: Array) -> Array:
        return n @ self.scale_tril(params)

    def _log_diag(self, params) -> Array:
        rows, cols = self._tril_indices
        return params["tril"][np.flatnonzero(rows == cols)]

    def log_prob(self, params, z: Array) -> Array:
        eps = self.inverse(params, z)
        return -0.5 * jnp.sum(eps**2) - jnp.sum(self._log_diag(params)) - 0.5 * self.dim * _LOG_2PI

    def entropy(self, params) -> Array:
        return jnp.sum(self._log_diag(params)) + 0.5 * self.dim * (1.0 + _LOG_2PI)

    def sample_eps(self, key, shape=()) -> Array:
        return jax.random.normal(key, tuple(shape) + (self.dim,), dtype=jnp.result_type(float))
