"""Exact Metropolis–Hastings moves along declared symmetries, interleaved with constrained HMC.

**Target.** Constrained HMC samples ``pi(u) = rho(u) |J J^T|^{-1/2}`` with respect to the Hausdorff measure ``H`` on
the ``k``-dimensional manifold ``M = {u : g(u) = x}`` (paper, eq. 16; ``k = M - N``). A declared symmetry
(:mod:`dgm.symmetry`) is a diffeomorphism ``s`` of ``R^M`` with ``g(s(u)) = g(u)``, so it maps ``M`` onto ``M``,
possibly one connected component onto another.

**Move.** Propose ``u' = s(u)`` and accept with probability ``min(1, r(u))``,

    r(u) = pi(s(u)) J_s(u) / pi(u),     J_s(u) = sqrt(det(V^T Ds(u)^T Ds(u) V)),

with ``V`` (``M x k``) an orthonormal basis of the tangent space ``ker J(u)`` (the last ``k`` columns of the
complete QR factor of ``J(u)^T``) and ``Ds`` the Jacobian of ``s`` (``Ds V`` by ``k`` forward-mode JVPs).
``J_s`` is the volume change of ``Ds`` restricted to the tangent space, the Jacobian of the area formula
``∫_M f(s(u)) J_s(u) dH(u) = ∫_M f(v) dH(v)``; it is 1 for isometries (sign flips, permutations) and is computed
regardless, never assumed.

**Why it is reversible.** *Involution* (``s = s^{-1}``): by the chain rule ``J_s(s(u)) J_s(u) = 1``, hence
``r(s(u)) = 1 / r(u)``. For any bounded ``f``, substituting ``v = s(u)`` (area formula, ``s^{-1} = s``)

    ∫ f(u, s(u)) min(1, r(u)) pi(u) dH(u) = ∫ f(s(v), v) min(1, r(s(v))) pi(s(v)) J_s(v) dH(v)
                                          = ∫ f(s(v), v) min(pi(v), pi(s(v)) J_s(v)) dH(v)
                                          = ∫ f(s(v), v) min(1, r(v)) pi(v) dH(v),

so the accepted flow from ``u`` to ``s(u)`` equals the flow back: detailed balance, and rejections stay put.
*A map with its inverse* (``Symmetry(s, inverse=t)`` or ``order=k``): ``s`` and ``t`` are proposed with probability
1/2 each; the same substitution pairs the move ``u -> s(u)`` with ``v -> t(v)`` (``J_t(s(u)) J_s(u) = 1``), so the
kernel is reversible. *A uniformly chosen element of a finite group* (every element declared as an entry): the
element ``h`` and its inverse are chosen equally often, the same pairing. With several entries one is picked
uniformly: a mixture of reversible kernels is reversible. Every move leaves ``pi`` invariant, so alternating it with
the HMC transitions (each ``pi``-invariant) keeps the chain's target; ``symmetry_probability = p`` applies the move
after a transition with probability ``p`` (a mixture with the identity).

**Why the default is p = 1/2, not 1.** An exact symmetry of the target (``pi(s(u)) J_s(u) = pi(u)``, e.g. the two
crescents of sbibm's two_moons) is accepted every time; applied after *every* transition, an involution then flips
the chain between its images deterministically: the chain is periodic, thinning by an even factor records one mode
only, and ESS reads the alternation as antithetic (inflated). With ``p = 1/2`` the image a draw sits in is a fair coin
independent of the past, which is the right behaviour for exact and inexact symmetries alike.

**Momentum.** Constrained HMC draws a fresh momentum from the tangent-space Gaussian at the start of every
transition (the state holds none), so the move acts on the position only: nothing is pushed forward or re-projected.

**Checks in the move** (numerical failures are counted rejections, ``symmetry_failure``): ``s(u)`` must lie on the
manifold within the Newton tolerance (``|g(s(u)) - x|_inf < tol``), the inverse must bring it back
(``|s^{-1}(s(u)) - u|_inf <= reverse_check_tol``, as the integrator's reversibility check), and the ratio must be
finite. The move costs one dense Jacobian and QR of ``J^T`` at ``u`` (``O(N M^2)``), ``k`` JVPs of ``s`` and one
manifold point (factor, potential, gradient) at ``s(u)``, whatever the geometry.

No library provides MH moves on an implicitly defined manifold with this Jacobian, hence written here.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from dgm.kernels.base import Method

Array = jax.Array

# Failure codes of a symmetry move (0 = fine), recorded as ``symmetry_failure``.
OFF_MANIFOLD = 1
NOT_REVERSIBLE = 2
NON_FINITE = 3
SYMMETRY_FAILURE_NAMES = {OFF_MANIFOLD: "off_manifold", NOT_REVERSIBLE: "not_reversible", NON_FINITE: "non_finite"}


class SymmetryInfo(NamedTuple):
    proposed: Array  # bool: a move was attempted after this transition
    accepted: Array  # bool
    acceptance_rate: Array  # min(1, r), 0 when not proposed or failed
    index: Array  # int32: which declared symmetry was proposed (-1: none)
    failure: Array  # int32: 0 or a SYMMETRY_FAILURE_NAMES code
    log_jacobian: Array  # log J_s(u) of the proposed map (0 when none)


class WithSymmetryInfo(NamedTuple):
    transition: Any  # the HMC transition's info
    symmetry: SymmetryInfo


def tangent_log_jacobian(generator, s, u: Array) -> Array:
    """``log J_s(u) = 1/2 log det(V^T Ds^T Ds V)``, ``V`` an orthonormal basis of ``ker dg/du`` at ``u``."""
    jac = jax.jacfwd(generator)(u)
    n_out = jac.shape[0]
    q, _ = jnp.linalg.qr(jac.T, mode="complete")
    basis = q[:, n_out:]  # (M, k), orthonormal, J basis = 0
    image = jax.vmap(lambda v: jax.jvp(s, (u,), (v,))[1], in_axes=1, out_axes=1)(basis)
    _, log_det = jnp.linalg.slogdet(image.T @ image)
    return 0.5 * log_det


def _directed_maps(symmetries):
    """``[(forward, backward), ...]``: each declared map and, unless an involution, its inverse as a second move."""
    maps = []
    for symmetry in symmetries:
        maps.append((symmetry.map, symmetry.apply_inverse))
        if not symmetry.involution:
            maps.append((symmetry.apply_inverse, symmetry.map))
    return maps


def build_move(generator, x_obs, symmetries, *, tol: float, reverse_check_tol: float, position, relocate,
               log_density, include_jacobian: bool = True):
    """``move(key, state) -> (state, SymmetryInfo)``: one MH move along a uniformly chosen declared symmetry.

    ``position(state) -> u``, ``relocate(state, u') -> state`` (the state at another point of the manifold) and
    ``log_density(state) -> log pi(u)`` (``log rho - 1/2 log|J J^T|``) come from the sampling method.
    ``include_jacobian=False`` drops ``J_s`` from the ratio: wrong for non-isometric maps, for tests only.
    """
    directed = _directed_maps(symmetries)
    entry_of = jnp.asarray([i for i, s in enumerate(symmetries) for _ in range(1 if s.involution else 2)], jnp.int32)
    n_entries = len(symmetries)
    first_of = [sum(1 if s.involution else 2 for s in symmetries[:i]) for i in range(n_entries)]
    two_way = jnp.asarray([not s.involution for s in symmetries])
    first_of = jnp.asarray(first_of, jnp.int32)

    def propose(branch, u):
        def one(forward, backward):
            def run(u):
                v = forward(u)
                log_jac = tangent_log_jacobian(generator, forward, u) if include_jacobian else jnp.zeros((), u.dtype)
                return v, backward(v), log_jac

            return run

        return jax.lax.switch(branch, [one(f, b) for f, b in directed], u)

    def move(key, state):
        key_entry, key_direction, key_accept = jax.random.split(key, 3)
        entry = jax.random.randint(key_entry, (), 0, n_entries)
        flip = two_way[entry] & jax.random.bernoulli(key_direction)
        branch = first_of[entry] + flip.astype(jnp.int32)
        u = position(state)
        u_new, u_back, log_jac = propose(branch, u)
        residual = jnp.max(jnp.abs(generator(u_new) - x_obs))
        new_state = relocate(state, u_new)
        log_ratio = log_density(new_state) - log_density(state) + log_jac
        reversible = jnp.max(jnp.abs(u_back - u)) <= reverse_check_tol
        failure = jnp.where(
            ~(residual < tol), OFF_MANIFOLD,
            jnp.where(~reversible, NOT_REVERSIBLE, jnp.where(jnp.isfinite(log_ratio), 0, NON_FINITE)),
        ).astype(jnp.int32)
        log_ratio = jnp.where(failure == 0, log_ratio, -jnp.inf)
        accepted = jnp.log(jax.random.uniform(key_accept, dtype=u.dtype)) < log_ratio
        state = jax.tree_util.tree_map(lambda a, b: jnp.where(accepted, a, b), new_state, state)
        info = SymmetryInfo(jnp.asarray(True), accepted, jnp.minimum(1.0, jnp.exp(log_ratio)), entry_of[branch],
                            failure, jnp.where(jnp.isfinite(log_jac), log_jac, 0.0))
        return state, info

    return move


DEFAULT_SYMMETRY_PROBABILITY = 0.5
"""Default probability of a symmetry move after each transition (see the module docstring)."""


def no_move_info(dtype=jnp.float64) -> SymmetryInfo:
    return SymmetryInfo(jnp.asarray(False), jnp.asarray(False), jnp.zeros((), dtype), jnp.asarray(-1, jnp.int32),
                        jnp.asarray(0, jnp.int32), jnp.zeros((), dtype))


def with_symmetry_moves(method: Method, generator, x_obs, symmetries, *, probability: float = DEFAULT_SYMMETRY_PROBABILITY, tol: float,
                        reverse_check_tol: float, include_jacobian: bool = True) -> Method:
    """``method`` (a constrained HMC method with ``relocate`` and ``log_density``) followed, after each transition and
    with probability ``probability``, by a symmetry move (:func:`build_move`). Its statistics gain
    ``symmetry_proposed``, ``symmetry_accepted``, ``symmetry_acceptance_rate``, ``symmetry_index`` (which declared
    symmetry, -1 none) and ``symmetry_failure``; step-size adaptation still reads the HMC transition's acceptance."""
    if method.relocate is None or method.log_density is None:
        raise ValueError(f"method {method.name!r} cannot make symmetry moves (it has no manifold state to move)")
    probability = float(probability)
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"symmetry_probability must be in [0, 1], got {probability!r}")
    move = build_move(generator, x_obs, symmetries, tol=tol, reverse_check_tol=reverse_check_tol,
                      position=method.position, relocate=method.relocate, log_density=method.log_density,
                      include_jacobian=include_jacobian)
    base_step, base_stats, base_acceptance = method.step, method.stats, method.acceptance

    def step(key, state, step_size):
        key_step, key_coin, key_move = jax.random.split(key, 3)
        state, info = base_step(key_step, state, step_size)
        do_move = jax.random.uniform(key_coin) < probability
        state, sym_info = jax.lax.cond(do_move, move, lambda k, s: (s, no_move_info()), key_move, state)
        return state, WithSymmetryInfo(info, sym_info)

    def stats(info: WithSymmetryInfo) -> dict:
        out = dict(base_stats(info.transition))
        out.update({f"symmetry_{name}": value for name, value in info.symmetry._asdict().items()
                    if name != "log_jacobian"})
        return out

    return method._replace(step=step, stats=stats, acceptance=lambda info: base_acceptance(info.transition))
