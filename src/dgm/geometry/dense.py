"""Dense manifold geometry: the full Jacobian ``J`` and the Cholesky factor ``L`` of ``J J^T`` (Appendix B, C).

* ``1/2 log|J J^T| = sum_i log L_ii`` (eq. 17), linear in ``N`` once ``L`` is known.
* Its gradient by the vector-Jacobian-product identity of eq. 20:
  ``d/du 1/2 log|J J^T| = vec(J^T (J J^T)^{-1})^T d vec(J)/du``, i.e. the VJP of ``u -> J(u)`` with cotangent
  ``W = (J J^T)^{-1} J`` (two triangular solves with ``L``). ``J`` is the primal output of that same VJP, so the
  Jacobian is evaluated once per point. Plain reverse-mode autodiff through the Cholesky decomposition
  (``log_det_gradient="autodiff"``) is kept for comparison; ``benchmarks/chmc_step_breakdown.py`` times both, and the
  VJP identity is the default because it is faster.
* Position projection: quasi-Newton (``J`` and ``L`` of the previous point, the paper's choice) or full Newton
  (``projection="newton"``): with ``u = u_start + J_prev^T lam``, iterate ``lam <- lam - (J(u) J_prev^T)^{-1} c(u)``
  with a fresh Jacobian and an LU solve per iteration.

No library provides these manifold operations for JAX functions, hence written here.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl

from dgm.geometry.base import ManifoldPoint, ProjectionResult, newton_iterate, refreshed_projection
from dgm.model import standard_normal_log_density

Array = jax.Array


class DenseFactor(NamedTuple):
    jacobian: Array  # (N, M)
    gram_cholesky: Array  # (N, N), lower triangular, L L^T = J J^T


class DenseNewtonOperator(NamedTuple):
    """``J(u_r) J_0^T`` in LU form (a Newton refresh at ``u_r``)."""

    lu: Array
    pivots: Array


class DenseGeometry:
    """Geometry of ``{u : generator(u) = x_obs}`` with dense linear algebra, ``O(N^2 M + N^3)`` per point."""

    def __init__(
        self,
        generator: Callable[[Array], Array],
        x_obs: Array,
        log_input_density: Callable[[Array], Array] = standard_normal_log_density,
        *,
        projection: str = "quasi-newton",
        log_det_gradient: str = "vjp",
        jacobian_mode: str = "forward",
        max_refreshes: int = 0,
    ):
        if projection not in ("quasi-newton", "newton"):
            raise ValueError(f"projection must be 'quasi-newton' or 'newton', got {projection!r}")
        if log_det_gradient not in ("vjp", "autodiff"):
            raise ValueError(f"log_det_gradient must be 'vjp' or 'autodiff', got {log_det_gradient!r}")
        if jacobian_mode not in ("forward", "reverse", "auto"):
            raise ValueError(f"jacobian_mode must be 'forward', 'reverse' or 'auto', got {jacobian_mode!r}")
        self.generator = generator
        self.x_obs = x_obs
        self.log_input_density = log_input_density
        self.projection = projection
        self.log_det_gradient = log_det_gradient
        self.jacobian_mode = jacobian_mode
        self.max_refreshes = int(max_refreshes)
        self._jacobian_transform = None if jacobian_mode == "auto" else (
            jax.jacfwd if jacobian_mode == "forward" else jax.jacrev)

    # -- the constraint and its Jacobian -------------------------------------------------------
    def constraint(self, u: Array) -> Array:
        return self.generator(u) - self.x_obs

    def jacobian(self, u: Array) -> Array:
        transform = self._jacobian_transform
        if transform is None:  # "auto": by the shape, found at trace time (dgm.geometry.jacobian_choice)
            from dgm.geometry.jacobian_choice import jacobian_transform

            n_outputs = jax.eval_shape(self.generator, u).shape[0]
            transform = jacobian_transform("auto", n_inputs=u.shape[0], n_outputs=n_outputs)
        return transform(self.generator)(u)

    def factorise(self, u: Array) -> DenseFactor:
        jac = self.jacobian(u)
        return DenseFactor(jac, jnp.linalg.cholesky(jac @ jac.T))

    # -- linear algebra with the factor -----------------------------------------------------------
    def jacobian_vector(self, factor: DenseFactor, v: Array) -> Array:
        return factor.jacobian @ v

    def jacobian_transpose_vector(self, factor: DenseFactor, w: Array) -> Array:
        return factor.jacobian.T @ w

    def gram_solve(self, factor: DenseFactor, r: Array) -> Array:
        return jsl.cho_solve((factor.gram_cholesky, True), r)

    def half_log_det_gram(self, factor: DenseFactor) -> Array:
        return jnp.sum(jnp.log(jnp.diagonal(factor.gram_cholesky)))

    def singular_value_ratio(self, factor: DenseFactor) -> Array:
        """``sigma_min(J) / sigma_max(J)`` (an SVD, ``O(N^2 M)``): ``J J^T`` is singular iff it is 0."""
        singular_values = jnp.linalg.svd(factor.jacobian, compute_uv=False)
        return jnp.min(singular_values) / jnp.maximum(jnp.max(singular_values), jnp.finfo(singular_values.dtype).tiny)

    # -- potential phi(u) = -log rho(u) + 1/2 log|J J^T| and its gradient (eqs. 16, 17, 20) -----------------
    def point(self, u: Array) -> ManifoldPoint:
        log_rho, grad_log_rho = jax.value_and_grad(self.log_input_density)(u)
        if self.log_det_gradient == "vjp":
            jac, jacobian_vjp = jax.vjp(self.jacobian, u)
            chol = jnp.linalg.cholesky(jac @ jac.T)
            weights = jsl.cho_solve((chol, True), jac)  # (J J^T)^{-1} J
            (grad_half_log_det,) = jacobian_vjp(weights)
            factor = DenseFactor(jac, chol)
            half_log_det = self.half_log_det_gram(factor)
        else:

            def half_log_det_fn(v):
                jac = self.jacobian(v)
                chol = jnp.linalg.cholesky(jac @ jac.T)
                return jnp.sum(jnp.log(jnp.diagonal(chol))), DenseFactor(jac, chol)

            (half_log_det, factor), grad_half_log_det = jax.value_and_grad(half_log_det_fn, has_aux=True)(u)
        return ManifoldPoint(u, factor, half_log_det - log_rho, grad_half_log_det - grad_log_rho)

    # -- projection onto the manifold -----------------------------------------------------------
    def project_position(self, factor: DenseFactor, u_start: Array, tol: float, max_iterations: int,
                         max_refreshes: int = None):
        """Quasi-Newton (with up to ``max_refreshes`` Newton refreshes when it stalls, default the geometry's
        ``max_refreshes``) or, with ``projection="newton"``, full Newton."""
        if self.projection == "quasi-newton":
            refreshes = self.max_refreshes if max_refreshes is None else int(max_refreshes)
            return refreshed_projection(self, factor, u_start, tol, max_iterations, refreshes)
        return self._newton_projection(factor, u_start, tol, max_iterations)

    def newton_operator(self, factor: DenseFactor, u: Array) -> DenseNewtonOperator:
        """``J(u) J_0^T`` (``J_0`` the factor's Jacobian) in LU form: ``O(N^2 M + N^3)``."""
        lu, pivots = jsl.lu_factor(self.jacobian(u) @ factor.jacobian.T)
        return DenseNewtonOperator(lu, pivots)

    def newton_correction(self, factor: DenseFactor, operator: DenseNewtonOperator, c: Array) -> Array:
        """``J_0^T (J(u_r) J_0^T)^{-1} c``."""
        return factor.jacobian.T @ jsl.lu_solve((operator.lu, operator.pivots), c)

    def _newton_projection(self, factor, u_start, tol, max_iterations) -> ProjectionResult:
        jac_prev = factor.jacobian

        def correction(u, c):
            jac = self.jacobian(u)
            return jac_prev.T @ jnp.linalg.solve(jac @ jac_prev.T, c)

        return newton_iterate(self.constraint, correction, u_start, tol, max_iterations)
