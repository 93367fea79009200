"""The boundary (surface) term of the ELBO gradient for piecewise-smooth models (Lee, Yu & Yang 2018).

Write the ELBO with the analytic Gaussian entropy, ``ELBO(theta) = E_{q_theta}[f(z)] + H[q_theta]`` with
``f = log p(x_obs, .)`` smooth on each region ``R_j`` of the hyperplane arrangement of a
:class:`~dgm.vi.nondiff.program.PiecewiseModel`. For the reparameterisation ``z = T_theta(eps)``, ``q_theta`` is
transported by the velocity field ``V_theta(z) = dT_theta(eps)/dtheta |_{eps = T_theta^{-1}(z)}``, so it obeys the
continuity equation ``d q_theta / d theta = -div(q_theta V_theta)``. On each (theta-independent) region, with the
divergence theorem,

    d/dtheta int_{R_j} q f = int_{R_j} q V . grad f  -  int_{dR_j} q f (V . n_j^out) dS.

The first terms summed over regions are ``E_eps[ grad_theta f_j(T_theta(eps)) ]``, the plain reparameterisation
gradient (autodiff cannot see the jumps). Each hyperplane ``H_k`` bounds the region on its ``+`` side (outward normal
``-n_k``) and the one on its ``-`` side (outward normal ``+n_k``), with ``n_k = a_k/|a_k|`` pointing into
``a_k . z + b_k > 0``, so the surface terms combine into the *boundary term*

    B = sum_k int_{H_k} q_theta(z) Delta_k(z) (V_theta(z) . n_k) dS(z),
    Delta_k(z) = f_+(z) - f_-(z)         (value on the + side minus the - side, :meth:`PiecewiseModel.jump`).

Sanity check (slides' example, ``z = theta + eps``, ``V = 1``, ``H = {0}``): ``B = q_theta(0) (f_+(0) - f_-(0))``:
raising ``theta`` moves mass ``q_theta(0) dtheta`` from the ``-`` to the ``+`` side.

Sampling ``B`` for Gaussian ``q_theta = N(mu, L L^T)``. With ``H_k = {n_k . z = c_k}`` (``c_k = -b_k/|a_k|``), the
scalar ``n_k . z ~ N(n_k . mu, |L^T n_k|^2)``, so

    int_{H_k} q g dS = m_k E_q[g(z) | n_k . z = c_k],     m_k = N(c_k; n_k . mu, |L^T n_k|^2),

and the conditional law is exactly sampled in eps-space: with ``w = L^T n_k`` and ``t = c_k - n_k . mu``, draw
``eps ~ N(0, I)`` and project, ``eps' = eps - w (w . eps - t)/|w|^2`` (a Gaussian conditioned on a linear
functional), then ``z' = T_theta(eps')`` lies on ``H_k`` and ``V_theta(z') . n_k = grad_theta[n_k . T_theta(eps')]``
with ``eps'`` held fixed (``n_k`` for the mean; ``n_ki sigma_i eps'_i`` for ``log sigma_i``; ``n_ki eps'_j L_ij`` or
``n_ki eps'_j`` for the Cholesky entries). One draw gives the unbiased per-sample estimate

* ``"sum"``: ``sum_k m_k Delta_k(z'_k) grad[n_k . T(eps'_k)]`` (exact sum over the K boundaries; cost ``O(K)``);
* ``"uniform"``: one ``k ~ Uniform{1..K}``, rescaled by ``K`` (the paper's subsampling);
* ``"weighted"``: one ``k`` with probability ``m_k / sum_j m_j``, rescaled by ``1/P(k)`` (importance sampling of
  the boundary by its ``q``-mass; same cost as ``"uniform"``, usually far lower variance when only a few
  hyperplanes carry mass).

Cite: Lee, Yu & Yang (2018), "Reparameterization Gradient for Non-differentiable Models", NeurIPS (slides in
``/work/shared/papers``): the gradient is the reparameterisation term on each smooth region plus a surface integral
over the region boundaries, estimated by sampling on the boundaries.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from dgm.vi.nondiff.program import PiecewiseModel

Array = jax.Array

__all__ = [
    "BOUNDARY_MODES",
    "hyperplane_masses",
    "log_hyperplane_masses",
    "project_to_hyperplane",
    "normal_velocity",
    "boundary_contribution",
    "boundary_term_samples",
]

BOUNDARY_MODES = ("sum", "uniform", "weighted")


def _hyperplane_stats(model: PiecewiseModel, family, params):
    """Per hyperplane: unit normal ``n`` (K, d), ``w = L^T n`` (K, d), ``t = c - n . mu`` (K,), ``|w|^2`` (K,)."""
    mu = params["mean"]
    n, c = model.unit_hyperplanes(dtype=mu.dtype)
    w = jax.vmap(lambda nk: family.project_scale(params, nk))(n)
    t = c - n @ mu
    return n, w, t, jnp.sum(w * w, axis=1)


def log_hyperplane_masses(model: PiecewiseModel, family, params) -> Array:
    """``log m_k`` with ``m_k = int_{H_k} q_theta dS``, the density of ``n_k . z`` at ``c_k`` (shape ``(K,)``)."""
    _, _, t, w2 = _hyperplane_stats(model, family, params)
    return -0.5 * t * t / w2 - 0.5 * jnp.log(2.0 * math.pi * w2)


def hyperplane_masses(model: PiecewiseModel, family, params) -> Array:
    """``m_k = int_{H_k} q_theta dS``: the density of ``n_k . z`` at ``c_k`` under ``q_theta`` (shape ``(K,)``)."""
    return jnp.exp(log_hyperplane_masses(model, family, params))


def project_to_hyperplane(w: Array, t: Array, eps: Array) -> Array:
    """Exact draw from ``N(0, I)`` conditioned on ``w . eps = t``, given an unconditioned draw ``eps``."""
    return eps - w * (jnp.dot(w, eps) - t) / jnp.dot(w, w)


def normal_velocity(family, params, eps: Array, n: Array):
    """``V_theta(z) . n`` at ``z = T_theta(eps)`` for every parameter: ``grad_theta [n . T_theta(eps)]``, eps fixed."""
    eps = jax.lax.stop_gradient(eps)
    return jax.grad(lambda p: jnp.dot(n, family.transform(p, eps)))(params)


def _contribution(model, family, params, stats, k, eps):
    n, w, t, w2 = stats
    mass = jnp.exp(-0.5 * t[k] ** 2 / w2[k]) / jnp.sqrt(2.0 * math.pi * w2[k])
    eps_on = project_to_hyperplane(w[k], t[k], eps)
    z_on = family.transform(params, eps_on)
    vel, _ = ravel_pytree(normal_velocity(family, params, eps_on, n[k]))
    return jax.lax.stop_gradient(mass * model.jump(z_on, k) * vel)


def boundary_contribution(model: PiecewiseModel, family, params, k, eps: Array) -> Array:
    """Flat ``m_k Delta_k(z') grad[n_k . T(eps')]`` for the projection ``eps'`` of ``eps`` onto ``H_k``; its mean
    over ``eps ~ N(0, I)`` is hyperplane ``k``'s part of the boundary term (flattened like ``ravel_pytree(params)``)."""
    return _contribution(model, family, params, _hyperplane_stats(model, family, params), k, eps)


def boundary_term_samples(model: PiecewiseModel, family, params, key, num_samples: int, mode: str = "sum") -> Array:
    """``(num_samples, P)`` i.i.d. unbiased estimates of the boundary term ``B`` (see module docstring for modes)."""
    if mode not in BOUNDARY_MODES:
        raise ValueError(f"boundary mode must be one of {BOUNDARY_MODES}, got {mode!r}")
    flat_params, _ = ravel_pytree(params)
    num_k = model.num_boundaries
    if num_k == 0:
        return jnp.zeros((num_samples, flat_params.shape[0]), flat_params.dtype)
    key_k, key_eps = jax.random.split(key)
    stats = _hyperplane_stats(model, family, params)
    contrib = lambda k, e: _contribution(model, family, params, stats, k, e)  # noqa: E731
    if mode == "sum":
        eps = family.sample_eps(key_eps, (num_samples, num_k))
        ks = jnp.arange(num_k)
        per = jax.vmap(lambda e_row: jax.vmap(contrib)(ks, e_row))(eps)  # (N, K, P)
        return jnp.sum(per, axis=1)
    eps = family.sample_eps(key_eps, (num_samples,))
    if mode == "uniform":
        ks = jax.random.randint(key_k, (num_samples,), 0, num_k)
        weight = jnp.full((num_samples,), float(num_k), eps.dtype)
    else:  # weighted by the q-mass of each hyperplane
        _, _, t, w2 = stats
        logits = jax.lax.stop_gradient(-0.5 * t * t / w2 - 0.5 * jnp.log(2.0 * math.pi * w2))
        ks = jax.random.categorical(key_k, logits, shape=(num_samples,))
        weight = jnp.exp(jax.nn.logsumexp(logits) - logits[ks])
    return weight[:, None] * jax.vmap(contrib)(ks, eps)
