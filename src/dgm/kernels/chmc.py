"""Constrained Hamiltonian Monte Carlo transition (Algorithm 1, main loop), BlackJAX style.

State: the current point on the manifold with its cached Jacobian factor, potential and gradient (so the end of one
trajectory is the start of the next and nothing is computed twice). A step:

1. ``n ~ N(0, I)``; ``p = PROJECTMOM(n)``, the momentum drawn from the Gaussian on the tangent space;
2. ``N_s ~ U{lo..hi}`` constrained leapfrog steps (:func:`dgm.integrator.integrate`);
3. accept with probability ``min(1, exp(H(u, p) - H(u', p')))``, ``H = phi(u) + p^T p / 2`` and
   ``phi(u) = -log rho(u) + 1/2 log|J J^T|`` (eq. 16), so the chain targets ``rho(u) |J J^T|^{-1/2}`` on the manifold;
   a trajectory that failed (Newton non-convergence, non-reversible step, non-finite energy) is a rejection whose
   reason is recorded in ``info.failure``.

``init`` / ``build_kernel`` / :func:`as_top_level_api` follow BlackJAX's conventions, so the kernel composes with
BlackJAX utilities (e.g. ``blackjax.util.run_inference_algorithm``).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from blackjax.base import SamplingAlgorithm

from dgm.geometry.base import Geometry, ManifoldPoint, project_momentum
from dgm.integrator import NON_FINITE, OK, IntegratorSettings, integrate
from dgm.precision import require_float64

Array = jax.Array


class CHMCState(NamedTuple):
    point: ManifoldPoint

    @property
    def position(self) -> Array:
        return self.point.position


class CHMCInfo(NamedTuple):
    acceptance_rate: Array  # min(1, exp(-dH)), 0 for failed trajectories (never NaN)
    is_accepted: Array
    failure: Array  # 0 = none, else dgm.integrator.FAILURE_NAMES code
    newton_iterations: Array
    num_integration_steps: Array
    energy: Array
    newton_refreshes: Array  # Newton refreshes of the Jacobian in stalled projections (dgm.geometry.base)


def init(position: Array, geometry: Geometry) -> CHMCState:
    """State at ``position`` (which must lie on the manifold: see :mod:`dgm.initialise`)."""
    require_float64(position)
    return CHMCState(geometry.point(position))


def _select(flag, new, old):
    return jax.tree_util.tree_map(lambda a, b: jnp.where(flag, a, b), new, old)


def build_kernel(geometry: Geometry, settings: IntegratorSettings = IntegratorSettings(), n_steps=(4, 8)):
    """Return ``step(key, state, step_size) -> (state, info)``; ``n_steps = (lo, hi)`` inclusive bounds."""
    lo, hi = int(n_steps[0]), int(n_steps[1])
    if not 1 <= lo <= hi:
        raise ValueError(f"n_steps must be (lo, hi) with 1 <= lo <= hi, got {n_steps!r}")

    def step(key: Array, state: CHMCState, step_size) -> tuple[CHMCState, CHMCInfo]:
        key_momentum, key_steps, key_accept = jax.random.split(key, 3)
        point = state.point
        noise = jax.random.normal(key_momentum, point.position.shape, point.position.dtype)
        momentum = project_momentum(geometry, point.factor, noise)
        energy0 = point.potential + 0.5 * jnp.sum(momentum**2)
        n = jax.random.randint(key_steps, (), lo, hi + 1)
        trajectory = integrate(geometry, point, momentum, step_size, n, settings)
        energy1 = trajectory.point.potential + 0.5 * jnp.sum(trajectory.momentum**2)
        status = jnp.where((trajectory.status == OK) & ~jnp.isfinite(energy1), NON_FINITE, trajectory.status)
        log_accept = jnp.where(status == OK, energy0 - energy1, -jnp.inf)
        acceptance_rate = jnp.minimum(1.0, jnp.exp(log_accept))
        accepted = jnp.log(jax.random.uniform(key_accept, dtype=energy0.dtype)) < log_accept
        new_point = _select(accepted, trajectory.point, point)
        info = CHMCInfo(
            acceptance_rate,
            accepted,
            status.astype(jnp.int32),
            trajectory.newton_iterations,
            trajectory.steps_taken,
            jnp.where(accepted, energy1, energy0),
            trajectory.newton_refreshes,
        )
        return CHMCState(new_point), info

    return step


def as_top_level_api(
    geometry: Geometry, step_size: float, *, n_steps=(4, 8), settings: IntegratorSettings = IntegratorSettings()
) -> SamplingAlgorithm:
    """A ``blackjax.base.SamplingAlgorithm``: ``init(position)``, ``step(key, state)`` with a fixed step size, usable
    with BlackJAX utilities such as ``blackjax.util.run_inference_algorithm``."""
    kernel = build_kernel(geometry, settings, n_steps)
    return SamplingAlgorithm(lambda position, *_: init(position, geometry),
                             lambda key, state: kernel(key, state, step_size))
