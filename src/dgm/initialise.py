"""Finding starting points on the manifold ``{u : g(u) = x_obs}`` (one per chain).

* If the model has an exact initialiser ``init(key, x_obs)``, it is used (and polished by Newton steps if its
  residual is above ``tol``).
* Otherwise a generic solver starts from standard-normal draws (the default input density; for other densities the
  draws only serve as starting points) and runs damped minimum-norm Gauss-Newton,
  ``u <- u - a J^T (J J^T + mu I)^{-1} (g(u) - x_obs)``, with the step length ``a`` chosen by backtracking on
  ``|g(u) - x_obs|_2`` and a tiny ``mu`` guarding near-singular ``J J^T``. Starts run in parallel (``vmap``) with
  restarts; if fewer than the requested number reach ``|g(u) - x_obs|_inf < tol`` a
  :class:`ManifoldInitialisationError` names the best residual reached.

Every returned point is checked: finite, on the manifold, and with a full-rank Jacobian (else a clear error).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from dgm.geometry.base import newton_iterate
from dgm.model import GenerativeModel


class ManifoldInitialisationError(ValueError):
    """No point within the tolerance of the manifold was found."""


_BACKTRACK = 2.0 ** -np.arange(12)


def _gauss_newton_solver(generator, x_obs, tol, max_iterations):
    alphas = jnp.asarray(_BACKTRACK)

    def residual(u):
        return generator(u) - x_obs

    def correction(u, c):
        jac = jax.jacfwd(generator)(u)
        gram = jac @ jac.T
        mu = 1e-14 * jnp.trace(gram) / gram.shape[0]
        direction = jac.T @ jnp.linalg.solve(gram + mu * jnp.eye(gram.shape[0]), c)
        # backtracking: the longest step of 1, 1/2, 1/4, ... that reduces |c|_2 (else the least bad one)
        norms = jax.vmap(lambda a: jnp.sqrt(jnp.sum(residual(u - a * direction) ** 2)))(alphas)
        norms = jnp.where(jnp.isfinite(norms), norms, jnp.inf)
        improving = norms < jnp.sqrt(jnp.sum(c**2))
        best = jnp.where(jnp.any(improving), jnp.argmax(improving), jnp.argmin(norms))
        return alphas[best] * direction

    def solve(u0):
        result = newton_iterate(residual, correction, u0, tol, max_iterations)
        return result.position, jnp.where(result.converged | jnp.isfinite(result.max_residual), result.max_residual,
                                          jnp.inf)

    return jax.jit(jax.vmap(solve))


def check_full_rank(model: GenerativeModel, positions: np.ndarray) -> None:
    """Raise ``ValueError`` if ``J J^T`` is (numerically) singular at any of ``positions``."""
    jac = jax.vmap(jax.jacfwd(model.generator))(jnp.asarray(positions))
    singular_values = np.asarray(jnp.linalg.svd(jac, compute_uv=False))
    ratio = singular_values.min(axis=1) / np.maximum(singular_values.max(axis=1), np.finfo(float).tiny)
    bad = np.flatnonzero(~np.isfinite(ratio) | (ratio < 1e-12))
    if bad.size:
        raise ValueError(
            f"the generator's Jacobian is rank-deficient at starting point(s) {bad.tolist()} (smallest/largest "
            f"singular value {ratio[bad[0]]:.3g}): the observations do not define a smooth manifold of the inputs "
            "there, so constrained HMC cannot run. Check that every output depends on the inputs."
        )


def find_points_on_manifold(
    model: GenerativeModel,
    x_obs,
    key,
    n_points: int,
    *,
    tol: float = 1e-8,
    max_iterations: int = 100,
    max_attempts: int = 5,
    starts_per_point: int = 2,
    rank_check=None,
) -> np.ndarray:
    """Return ``n_points`` inputs (``(n_points, input_dim)`` float64) with ``|g(u) - x_obs|_inf < tol``.

    ``rank_check(positions)`` raises for a singular ``J J^T``; default :func:`check_full_rank` (an SVD of the dense
    Jacobian; the structured geometry passes a linear-time check instead).
    """
    x_obs = jnp.asarray(x_obs, jnp.float64)
    solver = _gauss_newton_solver(model.generator, x_obs, tol, max_iterations)
    found: list[np.ndarray] = []
    best = np.inf
    key_init, key = jax.random.split(key)
    if model.init is not None:
        starts = jax.vmap(model.init, in_axes=(0, None))(jax.random.split(key_init, n_points), x_obs)
        points, residuals = solver(jnp.asarray(starts, jnp.float64))
        ok = np.asarray(residuals) < tol
        found.extend(np.asarray(points)[ok])
        best = min(best, float(np.min(residuals)))
    attempt = 0
    while len(found) < n_points and attempt < max_attempts:
        key, key_attempt = jax.random.split(key)
        starts = jax.random.normal(key_attempt, (starts_per_point * n_points, model.input_dim), jnp.float64)
        points, residuals = solver(starts)
        residuals = np.asarray(residuals)
        ok = residuals < tol
        found.extend(np.asarray(points)[ok])
        best = min(best, float(np.min(residuals)))
        attempt += 1
    if len(found) < n_points:
        hint = "all starting points gave non-finite generator values" if not np.isfinite(best) else (
            f"best residual |g(u) - x_obs|_inf reached: {best:.3g}"
        )
        raise ManifoldInitialisationError(
            f"found {len(found)} of {n_points} points on the manifold within tol={tol:g} after {attempt} rounds of "
            f"Gauss-Newton from prior draws ({hint}). Is the observation reachable by the generator? "
            "Pass an exact initialiser (GenerativeModel(init=...)) or a larger tol."
        )
    positions = np.stack(found[:n_points]).astype(np.float64)
    (rank_check or (lambda p: check_full_rank(model, p)))(positions)
    return positions
