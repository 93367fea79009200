"""Constrained HMC with a diagonal mass matrix ``M = diag(m)`` on the manifold, for the static and dynamic kernels.

With kinetic energy ``p^T M^{-1} p / 2`` the constrained dynamics (RATTLE with geodesic sub-steps, Algorithm 1) use

* momentum ``p ~ N(0, M)`` projected with the M-weighted projection ``p <- p - J^T (J M^{-1} J^T)^{-1} J M^{-1} p``
  (so that the velocity ``M^{-1} p`` is tangent, ``J M^{-1} p = 0``);
* drift ``u' = u + h M^{-1} p``, position projection along ``range(M^{-1} J^T)``:
  ``u <- u - M^{-1} J^T (J M^{-1} J^T)^{-1} c(u)`` (quasi-Newton, the factor of the previous point), and the new
  momentum ``M (u' - u) / h``;
* the Gram factor ``J M^{-1} J^T``.

The target on the manifold is unchanged, ``rho(u) |J J^T|^{-1/2}`` w.r.t. the Hausdorff measure (equivalently
``rho(u) delta(c(u))``). The *potential*, however, changes: the dynamics with metric ``M`` preserve the Riemannian
volume that ``M`` induces on the manifold, not the Euclidean one, so ``phi(u) = -log rho(u) + 1/2 log|J M^{-1} J^T|``
(the metric's Gram matrix, as in mici's ``ConstrainedEuclideanMetricSystem``). Keeping ``1/2 log|J J^T|`` with
metric dynamics samples ``rho |J J^T|^{-1/2} |J M^{-1} J^T|^{1/2}`` instead: ``tests/test_metric.py`` shows it fails
the quadrature check. Derivation: in the coordinates ``y = M^{1/2} u`` the M-dynamics above are exactly
identity-metric constrained HMC (every formula above is the identity-metric one with ``J_y = J M^{-1/2}``,
``p_y = M^{-1/2} p``), whose potential is ``-log rho + 1/2 log|J_y J_y^T|`` and
``J_y J_y^T = J M^{-1} J^T``; the target ``rho(u) delta(c(u)) du`` in ``y`` is ``rho delta(c) dy`` up to the
constant ``|M|^{-1/2}``.

That change of variables is also how it is implemented: the geometry is built for the generator ``y -> g(sigma y)``
and the density ``y -> rho(sigma y)`` with ``sigma = sqrt(diag M^{-1})`` (the dense geometry then computes exactly
the M-weighted projections, Gram factor and potential above), the state carries ``sigma`` and the point in ``y``, and
``position = sigma * y``. Nothing of the integrator or kernels is duplicated. Consequences: the Newton tolerance is on
``|c|_inf`` as before; the reversibility check compares ``y``, i.e. ``u`` in units of ``sigma`` (relative to the
adapted scales); the step size is in ``y`` units.

The recorded ``lp`` is still ``log rho(u) - 1/2 log|J J^T|`` (one extra ``N x N`` determinant per recorded draw).

Only the dense geometry takes a metric: the structured (linear-time) geometry derives per-step Jacobians from the
model's declared transition ``f(x_{t-1}, z, v_t)``, which has no place for per-entry input scales; ``metric=`` with
it raises ``ValueError``. Dense metrics are not offered: the adapted covariance of draws on the manifold is singular
in the normal directions.

Adaptation (:mod:`dgm.adaptation`): the driver's windowed warm-up estimates ``M^{-1}`` from the chain's draws of
``u`` with BlackJAX's Welford/window pieces and calls :func:`set_inverse_mass` at each window end.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from dgm.geometry.base import ManifoldPoint
from dgm.kernels.base import Method
from dgm.kernels.chmc import CHMCState
from dgm.precision import require_float64

Array = jax.Array

METRICS = ("identity", "diagonal")


class MetricState(NamedTuple):
    """A point on the manifold in the scaled coordinates ``y = u / scale`` and the scale ``sqrt(diag M^{-1})``."""

    point: ManifoldPoint
    scale: Array

    @property
    def position(self) -> Array:
        return self.scale * self.point.position


def scaled_model_parts(generator: Callable, log_input_density: Callable, scale: Array):
    """The generator and input density in the coordinates ``y = u / scale`` (the constant log-Jacobian is dropped)."""
    return (lambda y: generator(scale * y)), (lambda y: log_input_density(scale * y))


def with_diagonal_metric(method: Method, geometry_for: Callable[[Array], Any],
                         kernel_for: Callable[[Any], Callable], inverse_mass=None) -> Method:
    """``method`` (a constrained HMC method with :class:`~dgm.kernels.chmc.CHMCState` states) re-expressed with a
    diagonal metric: ``geometry_for(scale)`` builds the geometry in ``y = u / scale``, ``kernel_for(geometry)`` the
    kernel ``step``. ``inverse_mass`` (``(d,)``, positive) is the starting ``M^{-1}`` (default: identity)."""

    def init_scaled(u: Array, scale: Array) -> MetricState:
        require_float64(u)
        return MetricState(geometry_for(scale).point(u / scale), scale)

    def init(u: Array) -> MetricState:
        initial = jnp.ones_like(u) if inverse_mass is None else jnp.asarray(inverse_mass, u.dtype)
        return init_scaled(u, jnp.sqrt(initial))

    def step(key, state: MetricState, step_size):
        kernel = kernel_for(geometry_for(state.scale))
        new, info = kernel(key, CHMCState(state.point), step_size)
        return MetricState(new.point, state.scale), info

    def set_inverse_mass(state: MetricState, new_inverse_mass: Array) -> MetricState:
        return init_scaled(state.position, jnp.sqrt(new_inverse_mass))

    def log_density(state: MetricState) -> Array:
        """``log rho(u) - 1/2 log|J J^T|``, the target's log density (the potential holds ``|J M^{-1} J^T|``)."""
        factor = state.point.factor
        jacobian = factor.jacobian / state.scale  # the dense factor holds J_y = J diag(scale)
        half_log_det = 0.5 * jnp.linalg.slogdet(jacobian @ jacobian.T)[1]
        return -state.point.potential + geometry_for(state.scale).half_log_det_gram(factor) - half_log_det

    def relocate(state: MetricState, u: Array) -> MetricState:
        return init_scaled(u, state.scale)

    return method._replace(init=init, step=step, position=lambda state: state.position,
                           set_inverse_mass=set_inverse_mass, log_density=log_density, relocate=relocate)


def check_inverse_mass(inverse_mass, dim: int):
    """A clear error for a wrong fixed ``inverse_mass``; returns it as a NumPy array (or ``None``)."""
    import numpy as np

    if inverse_mass is None:
        return None
    inverse_mass = np.asarray(inverse_mass, dtype=np.float64)
    if inverse_mass.shape != (dim,):
        raise ValueError(f"inverse_mass must be the diagonal of M^-1, shape ({dim},), got {inverse_mass.shape}")
    if not np.all(np.isfinite(inverse_mass)) or not np.all(inverse_mass > 0):
        raise ValueError("inverse_mass must be finite and positive")
    return inverse_mass
