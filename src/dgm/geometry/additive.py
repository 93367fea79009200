"""Manifold geometry of additive-noise generators ``x = m(u1) + s * v`` (paper, Appendices B-D, specialised).

For ``u = (u1, v)`` with ``L`` parameter inputs ``u1``, one noise input per output (``N`` of them) and fixed positive
scales ``s`` (``S = diag(s)``), the constraint Jacobian is ``J = [A | S]`` with ``A = dm/du1`` (``N x L``), and

* ``J J^T = A A^T + S^2``; with the capacitance ``K = I_L + A^T S^{-2} A`` (Woodbury)
  ``(J J^T)^{-1} = S^{-2} - S^{-2} A K^{-1} A^T S^{-2}`` and ``log|J J^T| = 2 sum log s + log|K|`` (eq. 17);
* the minimum-norm step ``J^T (J J^T)^{-1} r = [a; (r - A a) / s]`` with ``a = K^{-1} A^T S^{-2} r`` (two products
  with ``A`` and an ``L x L`` solve: the quasi-Newton step and the momentum projection);
* the log-determinant gradient (eq. 20) only involves ``u1`` (``J`` does not depend on ``v``):
  ``d/du1 1/2 log|J J^T| = vec(W)^T d vec(A) / du1`` with ``W = (J J^T)^{-1} A = S^{-2} A K^{-1}``: **one VJP of
  ``u1 -> A(u1)``** with the cotangent ``W`` (the "capacitance cotangent"), whose primal output is ``A`` itself, so
  the Jacobian of ``m`` is evaluated once per point and nothing is differentiated through a factorisation;
* the Newton refresh (:func:`dgm.geometry.base.refreshed_projection`) at ``u_r``: ``J(u_r) J_0^T = A_r A_0^T + S^2``,
  ``J_0^T (J(u_r) J_0^T)^{-1} c = [a; (c - A_r a) / s]`` with ``a = M^{-1} A_0^T S^{-2} c`` and the unsymmetric
  ``M = I_L + A_0^T S^{-2} A_r`` (LU): one Jacobian of ``m`` and ``O(N L^2 + L^3)``.

``A`` comes from ``jax.jacfwd`` (``L`` JVPs) or ``jax.jacrev`` (``N`` VJPs), whichever is cheaper for the shape
(:mod:`dgm.geometry.jacobian_choice`; ``jacobian_mode`` overrides). When ``L >= N`` the capacitance is no smaller than
the Gram matrix and the geometry factorises ``G = A A^T + S^2`` (``N x N``) instead, with ``W = G^{-1} A``
(``factorisation="auto"`` chooses; ``"capacitance"`` / ``"gram"`` override). Either way the cost per point is one
Jacobian of ``m``, one VJP of it and ``O(N L min(N, L))``, against the structured geometry's second-order reverse
pass through ``L`` JVPs of ``m`` and the dense geometry's ``L + N`` columns.

No library provides these operations, hence written here. Models declare the form with
:func:`dgm.structure.additive_noise_structure` (which is also a valid independent structure for
:class:`~dgm.geometry.structured.StructuredGeometry`, the generic path the tests compare against).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl

from dgm.geometry.base import ManifoldPoint, newton_iterate, refreshed_projection
from dgm.geometry.jacobian_choice import jacobian_transform, resolve_jacobian_mode
from dgm.model import GenerativeModel
from dgm.structure import AdditiveNoiseStructure

Array = jax.Array

FACTORISATIONS = ("auto", "capacitance", "gram")


class AdditiveFactor(NamedTuple):
    """``A = dm/du1`` at a point and the Cholesky factor of ``K = I + A^T S^{-2} A`` (capacitance form, ``L x L``) or
    of ``G = A A^T + S^2`` (Gram form, ``N x N``)."""

    mean_jacobian: Array  # (N, L)
    cholesky: Array


class AdditiveNewtonOperator(NamedTuple):
    """A Newton refresh at ``u_r``: ``A_r`` and the LU form of ``M = I + A_0^T S^{-2} A_r`` (capacitance form) or of
    ``A_r A_0^T + S^2`` (Gram form)."""

    mean_jacobian: Array
    lu: Array
    pivots: Array


def choose_factorisation(factorisation: str, n_parameters: int, n_outputs: int) -> str:
    """``"capacitance"`` when ``L < N`` (or when asked), ``"gram"`` otherwise."""
    if factorisation not in FACTORISATIONS:
        raise ValueError(f"factorisation must be one of {FACTORISATIONS}, got {factorisation!r}")
    if factorisation != "auto":
        return factorisation
    return "capacitance" if n_parameters < n_outputs else "gram"


class AdditiveNoiseGeometry:
    """Geometry of ``{u : m(u1) + s * v = x_obs}`` for a model declared with
    :func:`dgm.structure.additive_noise_structure` (module docstring); the interface of
    :class:`~dgm.geometry.dense.DenseGeometry`."""

    def __init__(self, model: GenerativeModel, x_obs: Array, projection: str = "quasi-newton", *,
                 jacobian_mode: str = "auto", factorisation: str = "auto", max_refreshes: int = 0):
        structure = model.structure
        if not isinstance(structure, AdditiveNoiseStructure):
            raise ValueError(
                f"AdditiveNoiseGeometry needs a model declared with dgm.structure.additive_noise_structure; "
                f"{model.name!r} has structure {structure!r}")
        if projection not in ("quasi-newton", "newton"):
            raise ValueError(f"projection must be 'quasi-newton' or 'newton', got {projection!r}")
        if model.input_dim != structure.input_dim or model.parameter_inputs != structure.n_parameter_inputs:
            raise ValueError(
                f"model {model.name!r} (input_dim {model.input_dim}, parameter_inputs {model.parameter_inputs}) does "
                f"not match its structure (input_dim {structure.input_dim}, n_parameter_inputs "
                f"{structure.n_parameter_inputs})")
        self.model, self.structure = model, structure
        self.generator = model.generator
        self.log_input_density = model.log_input_density
        self.x_obs = x_obs
        self.projection = projection
        self.max_refreshes = int(max_refreshes)
        self._L, self._N = structure.n_parameter_inputs, structure.n_steps
        self.jacobian_mode = resolve_jacobian_mode(jacobian_mode, n_inputs=self._L, n_outputs=self._N)
        self.factorisation = choose_factorisation(factorisation, self._L, self._N)
        self._mean_jacobian_fn = jacobian_transform(self.jacobian_mode, n_inputs=self._L, n_outputs=self._N)(
            structure.mean_fn)

    # -- pieces ---------------------------------------------------------------------------------------------------
    def _scales(self, dtype) -> Array:
        return self.structure.noise_scales(dtype)

    def mean_jacobian(self, u1: Array) -> Array:
        """``A = dm/du1`` (``N x L``) by the chosen mode."""
        return self._mean_jacobian_fn(u1).astype(u1.dtype)

    def _factor(self, jac: Array) -> AdditiveFactor:
        s = self._scales(jac.dtype)
        if self.factorisation == "capacitance":
            scaled = jac / s[:, None]
            matrix = jnp.eye(self._L, dtype=jac.dtype) + scaled.T @ scaled
        else:
            matrix = jac @ jac.T + jnp.diag(s * s)
        return AdditiveFactor(jac, jnp.linalg.cholesky(matrix))

    def _log_det_cotangent(self, factor: AdditiveFactor) -> Array:
        """``W = (J J^T)^{-1} A``: ``S^{-2} A K^{-1}`` or ``G^{-1} A``."""
        jac = factor.mean_jacobian
        if self.factorisation == "capacitance":
            s = self._scales(jac.dtype)
            return jsl.cho_solve((factor.cholesky, True), jac.T).T / (s * s)[:, None]
        return jsl.cho_solve((factor.cholesky, True), jac)

    def _split(self, v: Array):
        return v[:self._L], v[self._L:]

    # -- the Geometry interface -----------------------------------------------------------------------------------
    def constraint(self, u: Array) -> Array:
        return self.generator(u) - self.x_obs

    def factorise(self, u: Array) -> AdditiveFactor:
        return self._factor(self.mean_jacobian(u[:self._L]))

    def point(self, u: Array) -> ManifoldPoint:
        log_rho, grad_log_rho = jax.value_and_grad(self.log_input_density)(u)
        jac, pullback = jax.vjp(self.mean_jacobian, u[:self._L])
        factor = self._factor(jac)
        (grad_u1,) = pullback(self._log_det_cotangent(factor))
        grad_half_log_det = jnp.concatenate([grad_u1, jnp.zeros(self._N, u.dtype)])
        return ManifoldPoint(u, factor, self.half_log_det_gram(factor) - log_rho, grad_half_log_det - grad_log_rho)

    def jacobian_vector(self, factor: AdditiveFactor, v: Array) -> Array:
        v1, v2 = self._split(v)
        return factor.mean_jacobian @ v1 + self._scales(v.dtype) * v2

    def jacobian_transpose_vector(self, factor: AdditiveFactor, w: Array) -> Array:
        return jnp.concatenate([factor.mean_jacobian.T @ w, self._scales(w.dtype) * w])

    def gram_solve(self, factor: AdditiveFactor, r: Array) -> Array:
        if self.factorisation == "gram":
            return jsl.cho_solve((factor.cholesky, True), r)
        jac, s2 = factor.mean_jacobian, self._scales(r.dtype) ** 2
        a = jsl.cho_solve((factor.cholesky, True), jac.T @ (r / s2))
        return (r - jac @ a) / s2

    def half_log_det_gram(self, factor: AdditiveFactor) -> Array:
        half_log_det = jnp.sum(jnp.log(jnp.diagonal(factor.cholesky)))
        if self.factorisation == "capacitance":
            half_log_det = half_log_det + jnp.sum(jnp.log(self._scales(factor.cholesky.dtype)))
        return half_log_det

    def pseudo_inverse_apply(self, factor: AdditiveFactor, r: Array) -> Array:
        """``J^T (J J^T)^{-1} r = [a; (r - A a) / s]``, ``a = K^{-1} A^T S^{-2} r`` (capacitance form)."""
        jac, s = factor.mean_jacobian, self._scales(r.dtype)
        if self.factorisation == "gram":
            return self.jacobian_transpose_vector(factor, jsl.cho_solve((factor.cholesky, True), r))
        a = jsl.cho_solve((factor.cholesky, True), jac.T @ (r / (s * s)))
        return jnp.concatenate([a, (r - jac @ a) / s])

    def project_momentum(self, factor: AdditiveFactor, momentum: Array) -> Array:
        """``p - J^T (J J^T)^{-1} J p``."""
        return momentum - self.pseudo_inverse_apply(factor, self.jacobian_vector(factor, momentum))

    def singular_value_ratio(self, factor: AdditiveFactor) -> Array:
        """A lower bound on ``sigma_min(J) / sigma_max(J)``: ``min s / sqrt(max s^2 + sigma_max(A)^2)`` (``J J^T =
        A A^T + S^2`` is never singular: the rank check always passes)."""
        s = self._scales(factor.mean_jacobian.dtype)
        top = jnp.linalg.norm(factor.mean_jacobian, 2)
        return jnp.min(s) / jnp.sqrt(jnp.max(s) ** 2 + top**2)

    # -- projection -----------------------------------------------------------------------------------------------
    def newton_operator(self, factor: AdditiveFactor, u: Array) -> AdditiveNewtonOperator:
        """``A_r = A(u_r)`` and the LU form of ``M = I + A_0^T S^{-2} A_r`` (or of ``A_r A_0^T + S^2``)."""
        fresh = self.mean_jacobian(u[:self._L])
        jac0, s = factor.mean_jacobian, self._scales(u.dtype)
        if self.factorisation == "capacitance":
            matrix = jnp.eye(self._L, dtype=u.dtype) + (jac0 / (s * s)[:, None]).T @ fresh
        else:
            matrix = fresh @ jac0.T + jnp.diag(s * s)
        lu, pivots = jsl.lu_factor(matrix)
        return AdditiveNewtonOperator(fresh, lu, pivots)

    def newton_correction(self, factor: AdditiveFactor, operator: AdditiveNewtonOperator, c: Array) -> Array:
        """``J_0^T (J(u_r) J_0^T)^{-1} c``."""
        jac0, s = factor.mean_jacobian, self._scales(c.dtype)
        if self.factorisation == "gram":
            return self.jacobian_transpose_vector(factor, jsl.lu_solve((operator.lu, operator.pivots), c))
        a = jsl.lu_solve((operator.lu, operator.pivots), jac0.T @ (c / (s * s)))
        return jnp.concatenate([a, (c - operator.mean_jacobian @ a) / s])

    def project_position(self, factor: AdditiveFactor, u_start: Array, tol: float, max_iterations: int,
                         max_refreshes: int = None):
        """Quasi-Newton with up to ``max_refreshes`` Newton refreshes (default the geometry's), or full Newton."""
        if self.projection == "newton":
            return newton_iterate(
                self.constraint, lambda u, c: self.newton_correction(factor, self.newton_operator(factor, u), c),
                u_start, tol, max_iterations)
        refreshes = self.max_refreshes if max_refreshes is None else int(max_refreshes)
        return refreshed_projection(self, factor, u_start, tol, max_iterations, refreshes)
