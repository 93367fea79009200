"""The dimension-changing map between the manifold and its noisy relaxation, its inverse and its Jacobian.

With ``M = {u : g(u) = x_obs}`` (dimension ``d = n - m``), ``J = dg/du`` and the normal map
``N(u) = J(u)^T (J(u) J(u)^T)^{-1}`` (``n x m``, a right inverse of ``J``: ``J N = I``), the map

    T_sigma : M x R^m -> R^n,    T_sigma(u, eta) = u - sigma N(u) eta

moves a point of the manifold along its normal space. To first order ``g(T_sigma(u, eta)) = x_obs - sigma eta``, so a
standard-normal ``eta`` lands ``v = T_sigma(u, eta)`` where the noisy relaxation of scale ``sigma`` puts its mass:
``T_sigma`` is the reversible-jump (Green 1995) bridge between the manifold (level 0 of
:mod:`dgm.kernels.tempered`) and the relaxation ``pi_sigma`` (level 1).

**Inverse** (:func:`invert_normal_map`). ``v = T_sigma(u, eta)`` iff ``u`` lies on ``M`` and ``v - u`` lies in the
normal space ``range J(u)^T``: with ``lambda = -sigma (J J^T)^{-1} eta``, ``(u, lambda)`` solves

    F(u, lambda) = [g(u) - x_obs ;  u + J(u)^T lambda - v] = 0        (n + m equations, n + m unknowns)

and ``eta = -J(u) J(u)^T lambda / sigma``. It is solved by Newton's method with the full Jacobian of ``F`` (autodiff;
it holds the second derivatives of ``g`` through ``d(J^T lambda)/du``), started at ``(v, 0)`` -- a deterministic
function of ``v`` alone, as reversibility requires. ``v`` may have several such preimages (``F`` has one root per
point of ``M`` whose normal space passes through ``v``); Newton returns one of them or none. The swap of
:mod:`dgm.kernels.tempered` therefore checks, as Zappa, Holmes-Cerfon & Goodman (2018) and Algorithm 1's reverse
projection do, that the inverse applied to a proposed ``v = T_sigma(u, eta)`` returns ``(u, eta)``; otherwise the
move is rejected. That restricts ``T_sigma`` to the set ``D`` on which the computed inverse is its inverse, and the
swap is an involution on ``D x T_sigma(D)``.

**Jacobian** (:func:`log_abs_det_normal_map`). The reversible-jump acceptance needs the density of ``T_sigma`` w.r.t.
the reference measures: ``H^d`` (Hausdorff) on ``M`` times Lebesgue on ``R^m``, and Lebesgue on ``R^n``. With ``Q``
an ``n x d`` orthonormal basis of the tangent space ``ker J(u)`` (any chart ``t -> u(t)`` of ``M`` with
``du/dt(0) = Q`` is an isometry at ``t = 0``, so its Jacobian there is that of ``H^d``),

    |det DT_sigma(u, eta)| = |det [ (I - sigma d(N(u) eta)/du) Q ,  -sigma N(u) ]|          (n x n)

the first block being the derivative along the manifold (it includes how the normal map turns along ``M``: the
curvature of ``M`` and the change of ``J``), the second the derivative in ``eta``. At ``eta = 0`` it reduces to
``sigma^m |J J^T|^{-1/2}``. ``d(N(u) eta)/du`` is forward-mode autodiff of ``u -> N(u) eta`` (``n`` JVPs), ``Q`` the
last ``d`` columns of a complete QR factorisation of ``J^T``; the determinant is a dense ``O(n^3)`` LU
(``slogdet``). No library provides this map for JAX functions, hence written here.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl

from dgm.geometry.base import newton_iterate

Array = jax.Array


def normal_directions(generator: Callable[[Array], Array], u: Array, eta: Array) -> Array:
    """``N(u) eta = J^T (J J^T)^{-1} eta`` (defined off the manifold too, wherever ``J`` has full rank)."""
    jac = jax.jacfwd(generator)(u)
    return jac.T @ jnp.linalg.solve(jac @ jac.T, eta)


def normal_map(generator: Callable[[Array], Array], u: Array, eta: Array, sigma) -> Array:
    """``T_sigma(u, eta) = u - sigma N(u) eta``."""
    return u - sigma * normal_directions(generator, u, eta)


class NormalMapInverse(NamedTuple):
    position: Array  # u on the manifold
    eta: Array  # the normal coordinates with T_sigma(u, eta) = v
    converged: Array
    iterations: Array


def invert_normal_map(generator: Callable[[Array], Array], x_obs: Array, v: Array, sigma, tol: float,
                      max_iterations: int) -> NormalMapInverse:
    """``(u, eta)`` with ``g(u) = x_obs`` and ``T_sigma(u, eta) = v``: Newton on ``F(u, lambda)`` from ``(v, 0)``.

    Converged when ``|F|_inf < tol`` (both the constraint and ``|u + J^T lambda - v|_inf``)."""
    n = v.shape[0]
    m = x_obs.shape[0]

    def residual(w):
        u, lam = w[:n], w[n:]
        c, vjp = jax.vjp(generator, u)
        (jt_lam,) = vjp(lam)  # J(u)^T lambda
        return jnp.concatenate([c - x_obs, u + jt_lam - v])

    def correction(w, f):
        return jnp.linalg.solve(jax.jacfwd(residual)(w), f)

    start = jnp.concatenate([v, jnp.zeros((m,), v.dtype)])
    result = newton_iterate(residual, correction, start, tol, max_iterations)
    u, lam = result.position[:n], result.position[n:]
    jac = jax.jacfwd(generator)(u)
    eta = -(jac @ (jac.T @ lam)) / sigma
    converged = result.converged & jnp.all(jnp.isfinite(eta))
    return NormalMapInverse(u, eta, converged, result.iterations)


def tangent_basis(jac: Array) -> Array:
    """An ``n x d`` orthonormal basis of ``ker J`` (``J`` is ``m x n`` of full rank): the last ``n - m`` columns of
    the complete QR factorisation of ``J^T``."""
    m = jac.shape[0]
    q, _ = jnp.linalg.qr(jac.T, mode="complete")
    return q[:, m:]


def log_abs_det_normal_map(generator: Callable[[Array], Array], u: Array, eta: Array, sigma) -> Array:
    """``log |det DT_sigma(u, eta)|`` w.r.t. ``H^d x Lebesgue`` on ``M x R^m`` and Lebesgue on ``R^n`` (see the
    module docstring). ``u`` must lie on the manifold."""
    jac = jax.jacfwd(generator)(u)
    basis = tangent_basis(jac)
    turning = jax.jacfwd(lambda w: normal_directions(generator, w, eta))(u)  # d(N(u) eta)/du, n x n
    along_manifold = basis - sigma * (turning @ basis)
    along_normal = -sigma * (jac.T @ jsl.solve(jac @ jac.T, jnp.eye(jac.shape[0], dtype=jac.dtype), assume_a="pos"))
    _, log_det = jnp.linalg.slogdet(jnp.concatenate([along_manifold, along_normal], axis=1))
    return log_det
