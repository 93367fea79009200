"""What the integrator needs to know about the constraint manifold ``{u : c(u) = g(u) - x_obs = 0}``.

A *geometry* evaluates, at a point ``u``, a **factor**: everything needed to apply the constraint Jacobian
``J = dc/du`` (shape ``N x M``), its transpose, and the inverse of the Gram matrix ``J J^T``. The dense geometry keeps
``J`` and the Cholesky factor of ``J J^T``; the structured one keeps the pieces of a block-triangular Jacobian. The
integrator and kernels use only the functions of :class:`Geometry`, so they never know which one they run on.

From those operations follow, generically:

* the momentum projection onto the cotangent space, ``p - J^T (J J^T)^{-1} J p`` (PROJECTMOM, Algorithm 1);
* the quasi-Newton position projection (PROJECTPOS, Algorithm 1): with ``J`` frozen at the previous point,
  ``u <- u - J^T (J J^T)^{-1} c(u)`` until ``|c(u)|_inf < tol``. Every iterate stays on ``u_start + range(J^T)``,
  which is what RATTLE's Lagrange multiplier needs.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp

Array = jax.Array


class ManifoldPoint(NamedTuple):
    """A point on the manifold with everything the dynamics reuse from it (cached, never recomputed).

    ``potential`` is ``phi(u) = -log rho(u) + 1/2 log|J J^T|`` (eq. 16-17), ``potential_grad`` its gradient (eq. 20).
    """

    position: Array
    factor: Any
    potential: Array
    potential_grad: Array


class Geometry(Protocol):
    """The interface shared by :class:`~dgm.geometry.dense.DenseGeometry` and the structured geometry."""

    def constraint(self, u: Array) -> Array:
        """``c(u) = g(u) - x_obs``."""

    def factorise(self, u: Array) -> Any:
        """The factor at ``u`` (Jacobian and Gram-matrix factorisation), without the potential."""

    def point(self, u: Array) -> ManifoldPoint:
        """Factor, potential and potential gradient at ``u``, sharing all intermediate work."""

    def jacobian_vector(self, factor: Any, v: Array) -> Array:
        """``J v``."""

    def jacobian_transpose_vector(self, factor: Any, w: Array) -> Array:
        """``J^T w``."""

    def gram_solve(self, factor: Any, r: Array) -> Array:
        """``(J J^T)^{-1} r``."""

    def half_log_det_gram(self, factor: Any) -> Array:
        """``1/2 log|J J^T|``."""

    def project_position(self, factor: Any, u_start: Array, tol: float, max_iterations: int) -> "ProjectionResult":
        """PROJECTPOS: move ``u_start`` along ``range(J^T)`` of the factor's point onto the manifold."""

    def singular_value_ratio(self, factor: Any) -> Array:
        """Smallest over largest singular value of the matrix the geometry needs non-singular (``J`` itself for the
        dense geometry; the per-step noise Jacobians ``G_t`` for the structured one): the rank check."""


def project_momentum(geometry: Geometry, factor: Any, momentum: Array) -> Array:
    """PROJECTMOM of Algorithm 1: ``p - J^T (J J^T)^{-1} J p`` (orthogonal projection onto ``ker J``).

    A geometry with a fused ``project_momentum(factor, p)`` (the structured one) supplies its own.
    """
    fused = getattr(geometry, "project_momentum", None)
    if fused is not None:
        return fused(factor, momentum)
    lagrange = geometry.gram_solve(factor, geometry.jacobian_vector(factor, momentum))
    return momentum - geometry.jacobian_transpose_vector(factor, lagrange)


class ProjectionResult(NamedTuple):
    position: Array
    converged: Array
    iterations: Array
    max_residual: Array


def newton_iterate(constraint, correction, u_start: Array, tol: float, max_iterations: int) -> ProjectionResult:
    """Iterate ``u <- u - correction(u, c(u))`` until ``|c(u)|_inf < tol`` (converged), ``max_iterations`` (not
    converged) or a non-finite residual (not converged; the caller counts it as a rejection)."""

    def cond(carry):
        _, c, i = carry
        norm = jnp.max(jnp.abs(c))
        return (norm >= tol) & (i < max_iterations) & jnp.isfinite(norm)

    def body(carry):
        u, c, i = carry
        u = u - correction(u, c)
        return u, constraint(u), i + 1

    u, c, i = jax.lax.while_loop(cond, body, (u_start, constraint(u_start), jnp.asarray(0, jnp.int32)))
    norm = jnp.max(jnp.abs(c))
    return ProjectionResult(u, (norm < tol) & jnp.all(jnp.isfinite(u)), i, norm)


def minimum_norm_step(geometry: Geometry, factor: Any, residual: Array) -> Array:
    """``J^T (J J^T)^{-1} r``: the minimum-norm ``du`` with ``J du = r`` (one Gauss-Newton / quasi-Newton step).

    A geometry with a fused ``pseudo_inverse_apply(factor, r)`` (the structured one) supplies that product itself."""
    fused = getattr(geometry, "pseudo_inverse_apply", None)
    if fused is not None:
        return fused(factor, residual)
    return geometry.jacobian_transpose_vector(factor, geometry.gram_solve(factor, residual))


def quasi_newton_projection(
    geometry: Geometry, factor: Any, u_start: Array, tol: float, max_iterations: int
) -> ProjectionResult:
    """PROJECTPOS of Algorithm 1 with the factor of the previous point reused (the paper's quasi-Newton choice):
    ``u <- u - J^T (J J^T)^{-1} c(u)`` (:func:`minimum_norm_step` with the frozen factor)."""
    return newton_iterate(geometry.constraint, lambda u, c: minimum_norm_step(geometry, factor, c), u_start, tol,
                          max_iterations)
