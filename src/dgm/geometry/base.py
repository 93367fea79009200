"""What the integrator needs to know about the constraint manifold ``{u : c(u) = g(u) - x_obs = 0}``.

A *geometry* evaluates, at a point ``u``, a **factor**: everything needed to apply the constraint Jacobian
``J = dc/du`` (shape ``N x M``), its transpose, and the inverse of the Gram matrix ``J J^T``. The dense geometry keeps
``J`` and the Cholesky factor of ``J J^T``; the structured one keeps the pieces of a block-triangular Jacobian. The
integrator and kernels use only the functions of :class:`Geometry`, so they never know which one they run on.

From those operations follow, generically:

* the momentum projection onto the cotangent space, ``p - J^T (J J^T)^{-1} J p`` (PROJECTMOM, Algorithm 1);
* the quasi-Newton position projection (PROJECTPOS, Algorithm 1): with ``J`` frozen at the previous point,
  ``u <- u - J^T (J J^T)^{-1} c(u)`` until ``|c(u)|_inf < tol``. Every iterate stays on ``u_start + range(J^T)``,
  which is what RATTLE's Lagrange multiplier needs;
* when that iteration stalls, a *Newton refresh* (:func:`refreshed_projection`): with ``u = u_s + J_0^T lam``
  (``J_0`` the Jacobian of the previous point), Newton's method for ``lam`` needs ``(J(u_r) J_0^T)^{-1}`` at a
  refreshed point ``u_r``; a geometry provides it as ``newton_operator(factor, u_r)`` and applies
  ``J_0^T (J(u_r) J_0^T)^{-1} c`` with ``newton_correction(factor, operator, c)`` (linear time on the structured
  and additive geometries through an ``L x L`` capacitance, an LU of ``J(u_r) J_0^T`` on the dense one).

The projection tolerance is relative to the observation scale (:func:`constraint_tolerance`): converged when
``|g(u) - x|_inf < tol * max(1, |x|_inf)``, so observations in the hundreds are not held to an absolute precision
that float64 rounding of ``g`` cannot reach, and observations of order one keep the absolute ``tol``.
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
    refreshes: Array = 0  # Newton refreshes of the Jacobian (refreshed_projection)


def constraint_tolerance(geometry, tol) -> Array:
    """The absolute residual tolerance of a projection: ``tol * max(1, |x_obs|_inf)`` (the observation scale; the
    geometry's ``x_obs``, or ``tol`` itself when it has none)."""
    x_obs = getattr(geometry, "x_obs", None)
    if x_obs is None:
        return jnp.asarray(tol)
    return tol * jnp.maximum(1.0, jnp.max(jnp.abs(jnp.asarray(x_obs))))


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
    return ProjectionResult(u, (norm < tol) & jnp.all(jnp.isfinite(u)), i, norm, jnp.asarray(0, jnp.int32))


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


STALL_HORIZON = 20
"""A quasi-Newton iteration has stalled when its residual norm did not fall in two iterations running, or when at the rate of its last step
(``rho = |c_new| / |c_old|``) reaching ``tol`` would take more than this many further iterations (or more than are
left): a Newton refresh (one Jacobian) is then cheaper than the iterations it saves, and it rescues the projections
that would otherwise hit ``max_iterations`` and be rejected."""
REFRESH_ITERATIONS = 10
"""Iterations allowed after each refresh before refreshing again (Newton converges in a few or stalls)."""


def _chord_iterate(constraint, correction, u, c, best_u, best_norm, i, tol, limit, horizon):
    """``u <- u - correction(c)`` while ``|c|_inf >= tol``, finite, ``i < limit`` and not stalled (the norm did not
    fall in two iterations running, or at its last rate it would need more than ``min(horizon, limit - i)`` further
    iterations). Keeps the
    iterate of smallest residual (all iterates lie on ``u_start + range(J_0^T)``). Returns
    ``(u, c, best_u, best_norm, i, stalled)``."""

    def cond(carry):
        _, c, _, _, i, stalled, _ = carry
        norm = jnp.max(jnp.abs(c))
        return (norm >= tol) & (i < limit) & jnp.isfinite(norm) & ~stalled

    def body(carry):
        u, c, best_u, best_norm, i, _, rises = carry
        norm = jnp.max(jnp.abs(c))
        u = u - correction(c)
        c = constraint(u)
        new_norm = jnp.max(jnp.abs(c))
        better = new_norm < best_norm  # False for NaN
        best_u = jnp.where(better, u, best_u)
        best_norm = jnp.where(better, new_norm, best_norm)
        rate = new_norm / norm
        needed = jnp.log(tol / new_norm) / jnp.log(jnp.clip(rate, 1e-300, 1.0 - 1e-12))
        budget = jnp.minimum(horizon, limit - i - 1)
        rises = jnp.where(new_norm < norm, 0, rises + 1)  # NaN counts as a rise
        stalled = ~jnp.isfinite(new_norm) | (rises >= 2) | ((rises == 0) & (new_norm >= tol) & (needed > budget))
        return u, c, best_u, best_norm, i + 1, stalled, rises

    u, c, best_u, best_norm, i, stalled, _ = jax.lax.while_loop(
        cond, body, (u, c, best_u, best_norm, i, jnp.asarray(False), jnp.asarray(0, jnp.int32)))
    return u, c, best_u, best_norm, i, stalled


def refreshed_projection(geometry: Geometry, factor: Any, u_start: Array, tol, max_iterations: int,
                         max_refreshes: int) -> ProjectionResult:
    """PROJECTPOS: quasi-Newton with the previous point's factor (Algorithm 1) and, when that stalls (the residual
    norm rises twice running, or would not reach ``tol`` soon at its rate: :data:`STALL_HORIZON`), up to
    ``max_refreshes`` Newton
    refreshes: from the iterate of smallest residual ``u_r``, the geometry's ``newton_operator(factor, u_r)``
    (``J(u_r)``, the matrix ``J(u_r) J_0^T`` in factorised form) drives at most :data:`REFRESH_ITERATIONS` chord
    iterations ``u <- u - J_0^T (J(u_r) J_0^T)^{-1} c(u)``; a stall there refreshes again.

    Every iterate stays on ``u_start + range(J_0^T)`` (RATTLE's constraint on the Lagrange multiplier), so a
    converged result solves the same equations as the plain quasi-Newton iteration; only which of possibly several
    solutions is found may differ, and the integrator's reversibility check covers that. Two nested loops, the
    refresh only in the outer one, so chains batched by ``vmap`` evaluate refreshes only when one of them needs it.
    """
    if max_refreshes <= 0:  # the paper's iteration exactly (no stall test)
        return quasi_newton_projection(geometry, factor, u_start, tol, max_iterations)
    tol = jnp.asarray(tol)
    c0 = geometry.constraint(u_start)
    zero = jnp.asarray(0, jnp.int32)
    inf = jnp.asarray(jnp.inf, c0.dtype)
    u, c, best_u, best_norm, i, _ = _chord_iterate(
        geometry.constraint, lambda c: minimum_norm_step(geometry, factor, c), u_start, c0, u_start,
        jnp.where(jnp.isfinite(jnp.max(jnp.abs(c0))), jnp.max(jnp.abs(c0)), inf), zero, tol, max_iterations,
        STALL_HORIZON)

    def outer_cond(carry):
        u, c, best_u, best_norm, i, refreshes = carry
        norm = jnp.max(jnp.abs(c))
        converged = (norm < tol) & jnp.all(jnp.isfinite(u))
        return ~converged & (refreshes < max_refreshes) & jnp.isfinite(best_norm)

    def outer_body(carry):
        _, _, best_u, best_norm, i, refreshes = carry
        operator = geometry.newton_operator(factor, best_u)
        c = geometry.constraint(best_u)
        u, c, best_u, best_norm, i, _ = _chord_iterate(
            geometry.constraint, lambda c: geometry.newton_correction(factor, operator, c), best_u, c, best_u,
            best_norm, i, tol, i + REFRESH_ITERATIONS, REFRESH_ITERATIONS)
        return u, c, best_u, best_norm, i, refreshes + 1

    u, c, best_u, best_norm, i, refreshes = jax.lax.while_loop(outer_cond, outer_body,
                                                               (u, c, best_u, best_norm, i, zero))
    norm = jnp.max(jnp.abs(c))
    converged = (norm < tol) & jnp.all(jnp.isfinite(u))
    return ProjectionResult(u, converged, i, norm, refreshes)
