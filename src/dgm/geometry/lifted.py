"""The lifted manifold of a noisy relaxation (Au, Graham & Thiery, *Manifold lifting*, JRSS B 2023, section 3).

The noisy relaxation of a generative model, ``pi_sigma(u) ∝ rho(u) N(x_obs; g(u), sigma^2 I)`` on ``R^n``, is the
``u``-marginal of a distribution on the *lifted manifold*

    M_sigma = {z = (u, eta) in R^(n+m) : g(u) + sigma eta = x_obs},

with density ``rho(u) N(eta; 0, I) |J_sigma J_sigma^T|^{-1/2}`` w.r.t. its ``n``-dimensional Hausdorff measure, where
``J_sigma = [J(u), sigma I]`` and ``J_sigma J_sigma^T = J J^T + sigma^2 I``: exactly the constrained-HMC target of
eq. 16 of the paper for the generator ``(u, eta) -> g(u) + sigma eta`` with input density ``rho(u) N(eta)``.

Why (the graph chart, one line of the coarea formula): for ``sigma > 0``, ``M_sigma`` is the graph of
``eta(u) = (x_obs - g(u)) / sigma``, so
``dH = |I_n + J^T J / sigma^2|^{1/2} du = sigma^{-m} |J J^T + sigma^2 I|^{1/2} du``
(Sylvester's determinant identity) and

    rho(u) N(eta(u)) |J J^T + sigma^2 I|^{-1/2} dH = sigma^{-m} rho(u) N((x_obs - g(u)) / sigma) du ∝ pi_sigma(u) du.

At ``sigma = 0`` the same formulas give ``M_0 = {g(u) = x_obs} x R^m`` with density
``rho(u) |J J^T|^{-1/2} N(eta)``: the manifold target of the paper (eq. 16) times an independent standard normal
``eta``, the ``sigma -> 0`` limit of the family. :mod:`dgm.kernels.tempered` runs the unchanged constrained-HMC kernel
on every ``M_sigma`` of a ladder, ``sigma = 0`` included; Au et al. show that constrained HMC on ``M_sigma`` needs no
step-size reduction as ``sigma -> 0`` (unlike HMC on ``pi_sigma``, whose step must shrink like ``sigma``), so one
step size serves the whole ladder.

The geometry is the dense one (:class:`~dgm.geometry.dense.DenseGeometry`) of the lifted generator; ``sigma`` may be
a traced value (one per ladder level under ``vmap``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dgm.geometry.dense import DenseGeometry
from dgm.model import GenerativeModel

Array = jax.Array


def split(z: Array, input_dim: int) -> tuple[Array, Array]:
    """``z = (u, eta)`` -> ``(u, eta)``."""
    return z[:input_dim], z[input_dim:]


def lifted_generator(model: GenerativeModel, sigma):
    """``(u, eta) -> g(u) + sigma eta``."""
    n = model.input_dim

    def generator(z):
        return model.generator(z[:n]) + sigma * z[n:]

    return generator


def lifted_log_density(model: GenerativeModel):
    """``(u, eta) -> log rho(u) - |eta|^2 / 2``."""
    n = model.input_dim

    def log_density(z):
        eta = z[n:]
        return model.log_input_density(z[:n]) - 0.5 * jnp.sum(eta * eta)

    return log_density


def lifted_geometry(model: GenerativeModel, x_obs: Array, sigma, *, projection: str = "quasi-newton",
                    log_det_gradient: str = "vjp") -> DenseGeometry:
    """The dense geometry of ``M_sigma`` (``sigma >= 0``, may be traced)."""
    return DenseGeometry(lifted_generator(model, sigma), x_obs, lifted_log_density(model), projection=projection,
                         log_det_gradient=log_det_gradient)


def lift(model: GenerativeModel, x_obs: Array, u: Array, sigma) -> Array:
    """The point of ``M_sigma`` above ``u`` (``sigma > 0``): ``(u, (x_obs - g(u)) / sigma)``."""
    return jnp.concatenate([u, (x_obs - model.generator(u)) / sigma])
