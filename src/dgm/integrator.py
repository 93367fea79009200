"""Constrained leapfrog: RATTLE with geodesic sub-steps and a reversibility check (Algorithm 1, SIMDYN / SIMGEO).

One trajectory of ``n_steps`` steps of size ``dt`` from ``(u, p)`` with ``p`` in the tangent space:

* kick: ``p <- PROJECTMOM(p - (dt/2) grad phi(u))`` at the start and the end, a full ``dt`` kick in between (two
  adjacent half kicks merged: projection is linear and idempotent);
* drift (SIMGEO), ``n_inner`` geodesic sub-steps of ``h = dt / n_inner``: ``u' = PROJECTPOS(u + h p)`` with the factor
  of ``u``; factor at ``u'``; ``p <- PROJECTMOM((u' - u) / h)`` with the factor of ``u'``; then the reverse move
  ``u_r = PROJECTPOS(u' - h p)`` must come back: ``|u - u_r|_inf <= reverse_check_tol``, else the step is not reversible.

Projections use the tolerance ``tol * max(1, |x_obs|_inf)`` (:func:`dgm.geometry.base.constraint_tolerance`) and, when
the quasi-Newton iteration stalls, up to ``max_refreshes`` Newton refreshes of the Jacobian
(:func:`dgm.geometry.base.refreshed_projection`); the refreshes are counted.

Everything is a ``lax.while_loop`` that stops at the first failure; the failure reason is returned as a code so the
kernel counts it as a rejection (never an exception mid-run). The gradient of the potential is evaluated only at the
end of each drift, reusing the factor (``geometry.point``); intermediate sub-steps compute the factor alone.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from dgm.geometry.base import Geometry, ManifoldPoint, constraint_tolerance, project_momentum

Array = jax.Array

# Status codes of a trajectory (0 = fine); the kernel reports counts of each as rejection reasons.
OK = 0
NEWTON_NOT_CONVERGED = 1
NOT_REVERSIBLE = 2
NON_FINITE = 3
DIVERGENT = 4  # energy error above the dynamic kernel's max_delta_energy (dgm.kernels.chmc_dynamic)
FAILURE_NAMES = {
    NEWTON_NOT_CONVERGED: "newton_not_converged",
    NOT_REVERSIBLE: "not_reversible",
    NON_FINITE: "non_finite",
    DIVERGENT: "divergent",
}


class IntegratorSettings(NamedTuple):
    n_inner: int = 1
    tol: float = 1e-8
    max_newton: int = 50
    reverse_check_tol: float = 1e-4  # the paper's sqrt(tol) for tol = 1e-8
    max_refreshes: int = 2  # Newton refreshes of the Jacobian per projection when quasi-Newton stalls


class TrajectoryResult(NamedTuple):
    point: ManifoldPoint
    momentum: Array
    status: Array  # int32 code
    newton_iterations: Array  # total over the trajectory (forward and reverse projections)
    steps_taken: Array
    newton_refreshes: Array  # Newton refreshes of the Jacobian over the trajectory


def _geodesic_substep(geometry: Geometry, u, factor, momentum, h, settings: IntegratorSettings, evaluate):
    """One SIMGEO sub-step. ``evaluate(u')`` returns ``(new_factor, extra)``; returns the new state, a status, the
    Newton iterations and the Newton refreshes."""
    tol = constraint_tolerance(geometry, settings.tol)
    forward = geometry.project_position(factor, u + h * momentum, tol, settings.max_newton, settings.max_refreshes)
    u_new = forward.position
    new_factor, extra = evaluate(u_new)
    new_momentum = project_momentum(geometry, new_factor, (u_new - u) / h)
    backward = geometry.project_position(new_factor, u_new - h * new_momentum, tol, settings.max_newton,
                                         settings.max_refreshes)
    reversible = jnp.max(jnp.abs(backward.position - u)) <= settings.reverse_check_tol
    finite = jnp.all(jnp.isfinite(new_momentum)) & jnp.all(jnp.isfinite(u_new))
    status = jnp.where(
        ~forward.converged,
        NEWTON_NOT_CONVERGED,
        jnp.where(
            ~finite,
            NON_FINITE,
            jnp.where(~backward.converged, NEWTON_NOT_CONVERGED, jnp.where(reversible, OK, NOT_REVERSIBLE)),
        ),
    ).astype(jnp.int32)
    return (u_new, new_factor, extra, new_momentum, status, forward.iterations + backward.iterations,
            jnp.asarray(forward.refreshes + backward.refreshes, jnp.int32))


def geodesic_drift(geometry: Geometry, point: ManifoldPoint, momentum: Array, dt, settings: IntegratorSettings):
    """SIMGEO: ``n_inner`` geodesic sub-steps of size ``dt / n_inner``; returns ``(point, momentum, status, iters,
    refreshes)``."""
    h = dt / settings.n_inner

    def factor_only(u):
        return geometry.factorise(u), None

    def full_point(u):
        new = geometry.point(u)
        return new.factor, new

    u, factor, p = point.position, point.factor, momentum
    status = jnp.asarray(OK, jnp.int32)
    iterations = jnp.asarray(0, jnp.int32)
    refreshes = jnp.asarray(0, jnp.int32)
    if settings.n_inner > 1:

        def cond(carry):
            i, _, _, _, status, _, _ = carry
            return (i < settings.n_inner - 1) & (status == OK)

        def body(carry):
            i, u, factor, p, _, iterations, refreshes = carry
            u, factor, _, p, status, its, ref = _geodesic_substep(geometry, u, factor, p, h, settings, factor_only)
            return i + 1, u, factor, p, status, iterations + its, refreshes + ref

        _, u, factor, p, status, iterations, refreshes = jax.lax.while_loop(
            cond, body, (jnp.asarray(0, jnp.int32), u, factor, p, status, iterations, refreshes)
        )
    _, _, new_point, p_new, last_status, its, ref = _geodesic_substep(geometry, u, factor, p, h, settings,
                                                                       full_point)
    status = jnp.where(status == OK, last_status, status)
    return new_point, p_new, status, iterations + its, refreshes + ref


def kick(geometry: Geometry, point: ManifoldPoint, momentum: Array, coefficient) -> Array:
    """``PROJECTMOM(p - coefficient * grad phi(u))``."""
    return project_momentum(geometry, point.factor, momentum - coefficient * point.potential_grad)


def integrate(
    geometry: Geometry, point: ManifoldPoint, momentum: Array, dt, n_steps, settings: IntegratorSettings
) -> TrajectoryResult:
    """SIMDYN: ``n_steps`` (may be traced) constrained leapfrog steps; stops at the first failure."""
    momentum = kick(geometry, point, momentum, 0.5 * dt)

    def cond(carry):
        i, _, _, status, _, _ = carry
        return (i < n_steps) & (status == OK)

    def body(carry):
        i, point, p, _, iterations, refreshes = carry
        new_point, p, status, its, ref = geodesic_drift(geometry, point, p, dt, settings)
        coefficient = jnp.where(i == n_steps - 1, 0.5, 1.0) * dt
        p = kick(geometry, new_point, p, coefficient)
        finite = jnp.isfinite(new_point.potential) & jnp.all(jnp.isfinite(p))
        status = jnp.where((status == OK) & ~finite, NON_FINITE, status).astype(jnp.int32)
        return i + 1, new_point, p, status, iterations + its, refreshes + ref

    zero = jnp.asarray(0, jnp.int32)
    init = (zero, point, momentum, jnp.asarray(OK, jnp.int32), zero, zero)
    steps, point, momentum, status, iterations, refreshes = jax.lax.while_loop(cond, body, init)
    return TrajectoryResult(point, momentum, status, iterations, steps, refreshes)
