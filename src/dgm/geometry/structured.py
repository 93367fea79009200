"""Linear-time manifold geometry for Markov and independent generators (paper, Appendix D).

For a generator declared with :mod:`dgm.structure` (``x_t = f(x_{t-1}, z, v_t)``, ``z = g_z(u1)``,
``u = (u1, v_1..v_T)``) the constraint Jacobian is ``J = [A | B]``, ``A = dx/du1`` (``N x L``), ``B = dx/dv`` block
lower bidiagonal-generated:

* ``B w`` is the tangent-linear recursion ``dx_t = F_t dx_{t-1} + G_t w_t`` (``F_t = df/dx_{t-1}``,
  ``G_t = df/dv_t``, evaluated along the *generated* trajectory at ``u``), ``B^T`` its adjoint (``lax.scan``);
* ``B^{-1} r`` is ``w_t = G_t^{-1} (r_t - F_t r_{t-1})`` and ``B^{-T} y`` is ``s_t - F_{t+1}^T s_{t+1}`` with
  ``s_t = G_t^{-T} y_t``: no recursion at all;
* ``C = B^{-1} A`` follows per step: ``C_t = G_t^{-1} P_t`` with ``P_t = (df/dz)(dz/du1)`` (plus
  ``F_1 dx_0/du1`` for ``t = 1``), so ``A`` is never formed (``A = B C`` when needed);
* ``J J^T = B (I + C C^T) B^T``; with the capacitance ``K = I_L + C^T C`` (Woodbury)
  ``(J J^T)^{-1} r = B^{-T} (s - C K^{-1} C^T s)``, ``s = B^{-1} r``, and
  ``log|J J^T| = 2 sum_t log|det G_t| + log det K``.

Everything costs ``O(T (D^3 + L D^2) + L^3)`` (``T`` steps of state dimension ``D``, ``L`` parameter inputs).
Independent generators are the case ``F_t = 0`` (block-diagonal ``B``): no scan at all.

Two products simplify further and are used where the interface allows it (identical in exact arithmetic):
``J^T (J J^T)^{-1} r = [C^T y; y]`` with ``y = (I + C C^T)^{-1} B^{-1} r`` (the quasi-Newton step of
:meth:`StructuredGeometry.project_position`) and ``J^T (J J^T)^{-1} J p = [C^T q; q]``, ``q = (I + C C^T)^{-1}
(C p_1 + p_2)`` (:meth:`StructuredGeometry.project_momentum`).

The potential ``phi(u) = -log rho(u) + 1/2 log|J J^T|`` and its gradient come from one ``jax.value_and_grad``
through this linear-time computation (reverse mode through the trajectory, the per-step Jacobians and the small
factorisations: still linear in ``T``), with the factor returned as auxiliary output so it is computed once.

Position projection: quasi-Newton (the paper's choice) with Newton refreshes when it stalls
(:func:`dgm.geometry.base.refreshed_projection`), or full Newton (``projection="newton"``). Newton needs
``(J(u) J_0^T)^{-1}`` for the Jacobian ``J_0 = [B_0 C_0 | B_0]`` of the previous point; it has a linear-time form too:
``J(u) J_0^T = B (I + C C_0^T) B_0^T``, so
``J_0^T (J(u) J_0^T)^{-1} c = [C_0^T y; y]``, ``y = (I + C C_0^T)^{-1} B^{-1} c``, and by Woodbury
``(I + C C_0^T)^{-1} = I - C M^{-1} C_0^T`` with the unsymmetric ``L x L`` capacitance ``M = I_L + C_0^T C`` (LU).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl

from dgm.geometry.base import ManifoldPoint, newton_iterate, refreshed_projection
from dgm.model import GenerativeModel
from dgm.structure import MarkovStructure

Array = jax.Array


@jax.custom_jvp
def _half_log_det_spd(K: Array) -> Array:
    """``1/2 log det K`` for symmetric positive-definite ``K`` (Cholesky), with the analytic derivative
    ``d(1/2 log det K) = 1/2 tr(K^{-1} dK)``.

    Written by hand because autodiff through ``jnp.linalg.cholesky`` transposes into multi-right-hand-side
    triangular solves that XLA's CPU backend runs slowly in float64 (measured: 54 ms for the gradient at L = 50
    against 0.2 ms here); this is the whole potential-gradient cost of the MNIST in-painting generator otherwise.
    """
    return jnp.sum(jnp.log(jnp.diagonal(jnp.linalg.cholesky(K))))


@_half_log_det_spd.defjvp
def _half_log_det_spd_jvp(primals, tangents):
    (K,), (dK,) = primals, tangents
    return _half_log_det_spd(K), 0.5 * jnp.sum(jnp.linalg.inv(K) * dK)


class StructuredFactor(NamedTuple):
    """The pieces of ``J = [B C | B]`` at a point (``T`` steps, state dim ``D``, ``L`` parameter inputs)."""

    transition: Optional[Array]  # F_t = df/dx_{t-1}, (T, D, D); None for independent generators
    noise_jacobian: Array  # G_t = df/dv_t, (T, D, D)
    noise_jacobian_inverse: Array  # G_t^{-1}, (T, D, D)
    log_abs_det_noise_jacobian: Array  # log|det G_t|, (T,)
    reduced_parameter_jacobian: Array  # C = B^{-1} A, (T, D, L)
    capacitance_cholesky: Array  # chol(I_L + C^T C), (L, L) lower


def _matvec(m, x):  # batched m_t @ x_t
    return jnp.einsum("tij,tj->ti", m, x)


def _rmatvec(m, x):  # batched m_t^T @ x_t
    return jnp.einsum("tji,tj->ti", m, x)


class StructuredGeometry:
    """Geometry of ``{u : generator(u) = x_obs}`` for a model with a :class:`~dgm.structure.MarkovStructure`.

    Same interface as :class:`~dgm.geometry.dense.DenseGeometry`; ``unroll`` is passed to the ``lax.scan`` of the
    ``B`` / ``B^T`` recursions (1 is fastest on CPU for small ``D``: unrolling by 4-8 measured 10x slower at T = 800).
    """

    def __init__(self, model: GenerativeModel, x_obs: Array, projection: str = "quasi-newton", *, unroll: int = 1,
                 max_refreshes: int = 0):
        structure = model.structure
        if not isinstance(structure, MarkovStructure):
            raise ValueError(
                f"StructuredGeometry needs a model declared with dgm.structure (markov_model / independent_model); "
                f"{model.name!r} has structure {structure!r}"
            )
        if projection not in ("quasi-newton", "newton"):
            raise ValueError(f"projection must be 'quasi-newton' or 'newton', got {projection!r}")
        if not structure.square:
            raise ValueError(
                f"model {model.name!r} has {structure.noise_dim} noise inputs per step but state dimension "
                f"{structure.state_dim}: the linear-time geometry needs df/dv_t square (noise_dim == state_dim). "
                "Use the dense geometry instead: dgm.sample(..., geometry='dense')"
            )
        if model.input_dim != structure.input_dim or model.parameter_inputs != structure.n_parameter_inputs:
            raise ValueError(
                f"model {model.name!r} (input_dim {model.input_dim}, parameter_inputs {model.parameter_inputs}) does "
                f"not match its structure (input_dim {structure.input_dim}, n_parameter_inputs "
                f"{structure.n_parameter_inputs})"
            )
        self.model = model
        self.structure = structure
        self.generator = model.generator
        self.log_input_density = model.log_input_density
        self.x_obs = x_obs
        self.projection = projection
        self.unroll = int(unroll)
        self.max_refreshes = int(max_refreshes)
        self._T, self._D, self._L = structure.n_steps, structure.state_dim, structure.n_parameter_inputs

    # -- the constraint ----------------------------------------------------------------------------
    def constraint(self, u: Array) -> Array:
        return self.generator(u) - self.x_obs

    # -- the factor ----------------------------------------------------------------------------------
    def _factor_and_half_log_det(self, u: Array):
        s = self.structure
        D, L = self._D, self._L
        u1, v = s.split(u)
        traj = s.simulate(u)
        z = traj.parameters
        # dz/du1 as a batch of L tangents of z (any pytree), and dx_0/du1 (D, L).
        eye_l = jnp.eye(L, dtype=u.dtype)
        z_tangents = jax.vmap(lambda t: jax.jvp(s.parameter_transform, (u1,), (t,))[1])(eye_l)
        x0_jac = jax.vmap(
            lambda t: jax.jvp(lambda a: s.initial_state(s.parameter_transform(a)), (u1,), (t,))[1], out_axes=1
        )(eye_l).astype(u.dtype)

        # Per step, one batch of D + L + D tangent directions (x_prev, z, v) through f.
        zeros_z = jax.tree_util.tree_map(jnp.zeros_like, z)
        zero_d = jnp.zeros((D, D), u.dtype)
        eye_d = jnp.eye(D, dtype=u.dtype)
        tan_x = jnp.concatenate([eye_d, jnp.zeros((L, D), u.dtype), zero_d])
        tan_z = jax.tree_util.tree_map(
            lambda zz, zt: jnp.concatenate([jnp.broadcast_to(zz, (D,) + zz.shape), zt,
                                            jnp.broadcast_to(zz, (D,) + zz.shape)]),
            zeros_z, z_tangents,
        )
        tan_v = jnp.concatenate([zero_d, jnp.zeros((L, D), u.dtype), eye_d])

        def step_jacobians(x_prev, vt, t):
            def directional(tx, tz, tv):
                return jax.jvp(lambda a, b, c: s.step(a, b, c, t), (x_prev, z, vt), (tx, tz, tv))[1]

            rows = jax.vmap(directional)(tan_x, tan_z, tan_v)  # (D + L + D, D): transposed Jacobian blocks
            return rows[:D].T, rows[D:D + L].T, rows[D + L:].T  # F_t (D,D), P_t (D,L), G_t (D,D)

        F, P, G = jax.vmap(step_jacobians)(traj.previous, v, s.step_indices())
        if s.independent:
            F = None
        else:
            P = P.at[0].add(F[0] @ x0_jac)
        G_inv = jnp.linalg.inv(G)
        _, log_abs_det = jnp.linalg.slogdet(G)
        C = jnp.einsum("tij,tjl->til", G_inv, P)
        K = jnp.eye(L, dtype=u.dtype) + jnp.einsum("tdl,tdm->lm", C, C)
        K_chol = jnp.linalg.cholesky(jax.lax.stop_gradient(K))  # for solves; the log det below carries gradients
        half_log_det = jnp.sum(log_abs_det) + _half_log_det_spd(K)
        return half_log_det, StructuredFactor(F, G, G_inv, log_abs_det, C, K_chol)

    def factorise(self, u: Array) -> StructuredFactor:
        return self._factor_and_half_log_det(u)[1]

    def point(self, u: Array) -> ManifoldPoint:
        log_rho, grad_log_rho = jax.value_and_grad(self.log_input_density)(u)
        (half_log_det, factor), grad_half_log_det = jax.value_and_grad(self._factor_and_half_log_det, has_aux=True)(u)
        return ManifoldPoint(u, factor, half_log_det - log_rho, grad_half_log_det - grad_log_rho)

    # -- B, B^T, B^{-1}, B^{-T} on (T, D) arrays ----------------------------------------------------
    def _b(self, f: StructuredFactor, w: Array) -> Array:
        gw = _matvec(f.noise_jacobian, w)
        if f.transition is None:
            return gw

        def body(x_prev, inputs):
            F_t, gw_t = inputs
            x = F_t @ x_prev + gw_t
            return x, x

        _, out = jax.lax.scan(body, jnp.zeros_like(gw[0]), (f.transition, gw), unroll=self.unroll)
        return out

    def _b_transpose(self, f: StructuredFactor, y: Array) -> Array:
        if f.transition is None:
            lam = y
        else:

            def body(carry, inputs):  # carry = F_{t+1}^T lam_{t+1}
                F_t, y_t = inputs
                lam_t = y_t + carry
                return F_t.T @ lam_t, lam_t

            _, lam = jax.lax.scan(body, jnp.zeros_like(y[0]), (f.transition, y), reverse=True, unroll=self.unroll)
        return _rmatvec(f.noise_jacobian, lam)

    def _b_inverse(self, f: StructuredFactor, r: Array) -> Array:
        if f.transition is not None:
            r = r - jnp.concatenate([jnp.zeros_like(r[:1]), _matvec(f.transition[1:], r[:-1])])
        return _matvec(f.noise_jacobian_inverse, r)

    def _b_inverse_transpose(self, f: StructuredFactor, y: Array) -> Array:
        s = _rmatvec(f.noise_jacobian_inverse, y)
        if f.transition is None:
            return s
        return s - jnp.concatenate([_rmatvec(f.transition[1:], s[1:]), jnp.zeros_like(s[:1])])

    def _capacitance_project(self, f: StructuredFactor, s: Array) -> Array:
        """``(I + C C^T)^{-1} s = s - C K^{-1} C^T s`` on a ``(T, D)`` array."""
        C = f.reduced_parameter_jacobian
        coefficients = jsl.cho_solve((f.capacitance_cholesky, True), jnp.einsum("tdl,td->l", C, s))
        return s - jnp.einsum("tdl,l->td", C, coefficients)

    def _split_tangent(self, v: Array):
        return v[: self._L], v[self._L:].reshape(self._T, self._D)

    def _join_cotangent(self, f: StructuredFactor, y: Array) -> Array:
        """``[C^T y; y]`` flattened: ``J^T B^{-T} y``."""
        return jnp.concatenate([jnp.einsum("tdl,td->l", f.reduced_parameter_jacobian, y), y.reshape(-1)])

    # -- the Geometry interface -----------------------------------------------------------------------
    def jacobian_vector(self, factor: StructuredFactor, v: Array) -> Array:
        v1, w = self._split_tangent(v)
        return self._b(factor, jnp.einsum("tdl,l->td", factor.reduced_parameter_jacobian, v1) + w).reshape(-1)

    def jacobian_transpose_vector(self, factor: StructuredFactor, w: Array) -> Array:
        return self._join_cotangent(factor, self._b_transpose(factor, w.reshape(self._T, self._D)))

    def gram_solve(self, factor: StructuredFactor, r: Array) -> Array:
        s = self._b_inverse(factor, r.reshape(self._T, self._D))
        return self._b_inverse_transpose(factor, self._capacitance_project(factor, s)).reshape(-1)

    def half_log_det_gram(self, factor: StructuredFactor) -> Array:
        return jnp.sum(factor.log_abs_det_noise_jacobian) + jnp.sum(
            jnp.log(jnp.diagonal(factor.capacitance_cholesky))
        )

    def singular_value_ratio(self, factor: StructuredFactor) -> Array:
        """``min_t sigma_min(G_t) / sigma_max(G_t)`` (linear in ``T``): the factorisation inverts every ``D x D`` noise
        Jacobian ``G_t``, so this must be well above 0. With all ``G_t`` invertible ``J J^T = B (I + C C^T) B^T`` is
        non-singular. (A singular ``G_t`` does not always make ``J`` rank-deficient, the parameter columns ``A`` may
        make up for it, but this geometry cannot work there; the dense one can.)"""
        singular_values = jnp.linalg.svd(factor.noise_jacobian, compute_uv=False)  # (T, D)
        tiny = jnp.finfo(singular_values.dtype).tiny
        return jnp.min(jnp.min(singular_values, axis=1) / jnp.maximum(jnp.max(singular_values, axis=1), tiny))

    def pseudo_inverse_apply(self, factor: StructuredFactor, r: Array) -> Array:
        """``J^T (J J^T)^{-1} r`` without any recursion: ``[C^T y; y]``, ``y = (I + C C^T)^{-1} B^{-1} r``."""
        y = self._capacitance_project(factor, self._b_inverse(factor, r.reshape(self._T, self._D)))
        return self._join_cotangent(factor, y)

    def project_momentum(self, factor: StructuredFactor, momentum: Array) -> Array:
        """``p - J^T (J J^T)^{-1} J p`` without any recursion (equal to :func:`dgm.geometry.base.project_momentum`)."""
        p1, p2 = self._split_tangent(momentum)
        q = jnp.einsum("tdl,l->td", factor.reduced_parameter_jacobian, p1) + p2
        return momentum - self._join_cotangent(factor, self._capacitance_project(factor, q))

    def project_position(self, factor: StructuredFactor, u_start: Array, tol: float, max_iterations: int,
                         max_refreshes: int = None):
        """Quasi-Newton PROJECTPOS: ``u <- u - J^T (J J^T)^{-1} c(u)`` with the factor of the previous point (via the
        fused :meth:`pseudo_inverse_apply`), with up to ``max_refreshes`` Newton refreshes when it stalls (default
        the geometry's ``max_refreshes``); or full Newton (``projection="newton"``, a refresh every iteration)."""
        if self.projection == "newton":
            return newton_iterate(
                self.constraint, lambda u, c: self.newton_correction(factor, self.newton_operator(factor, u), c),
                u_start, tol, max_iterations)
        refreshes = self.max_refreshes if max_refreshes is None else int(max_refreshes)
        return refreshed_projection(self, factor, u_start, tol, max_iterations, refreshes)

    def newton_operator(self, factor: StructuredFactor, u: Array):
        """The factor at ``u`` and the LU form of ``M = I_L + C_0^T C(u)`` (module docstring)."""
        fresh = self.factorise(u)
        capacitance = jnp.eye(self._L, dtype=u.dtype) + jnp.einsum(
            "tdl,tdm->lm", factor.reduced_parameter_jacobian, fresh.reduced_parameter_jacobian)
        return fresh, jsl.lu_factor(capacitance)

    def newton_correction(self, factor: StructuredFactor, operator, c: Array) -> Array:
        """``J_0^T (J(u_r) J_0^T)^{-1} c = [C_0^T y; y]``, ``y = s - C M^{-1} C_0^T s``, ``s = B(u_r)^{-1} c``."""
        fresh, lu = operator
        s = self._b_inverse(fresh, c.reshape(self._T, self._D))
        coefficients = jsl.lu_solve(lu, jnp.einsum("tdl,td->l", factor.reduced_parameter_jacobian, s))
        y = s - jnp.einsum("tdl,l->td", fresh.reduced_parameter_jacobian, coefficients)
        return self._join_cotangent(factor, y)
