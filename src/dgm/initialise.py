"""Finding starting points on the manifold ``{u : g(u) = x_obs}`` (one per chain).

* If the model has an exact initialiser ``init(key, x_obs)``, it is used (and polished by Newton steps if its
  residual is above ``tol``).
* Otherwise a generic solver starts from standard-normal draws (the default input density; for other densities the
  draws only serve as starting points) and runs minimum-norm Gauss-Newton,
  ``u <- u - a J^T (J J^T)^{-1} (g(u) - x_obs)``, with the step length ``a`` chosen by backtracking on
  ``|g(u) - x_obs|_2`` (tried in turn, so an accepted full step costs one generator call). Starts run one after
  another on CPU (``lax.map``: a small working set, no lock-stepped loops) and in parallel (``vmap``) on
  accelerators, with restarts; if fewer than the requested number reach ``|g(u) - x_obs|_inf < tol`` a
  :class:`ManifoldInitialisationError` names the best residual reached.

Every returned point is checked: finite, on the manifold, and with a full-rank Jacobian (else a clear error).

**Linear time for structured models.** For a model that declares Markov / independent structure (square noise, see
:mod:`dgm.structure`) the Gauss-Newton step is the structured geometry's ``J^T (J J^T)^{-1} r``
(:func:`dgm.geometry.base.minimum_norm_step`, no recursion at all) and the rank check its per-step noise Jacobians
(:meth:`~dgm.geometry.structured.StructuredGeometry.singular_value_ratio`, which the factorisation inverts) plus a
finite ``log|J J^T|``: both
``O(T)``, so a T = 4000 model initialises without ever forming the ``N x N`` Gram matrix
(``benchmarks/structured_init.py``). The declaration is first checked against the model's generator at the starting
points (:meth:`dgm.structure.MarkovStructure.check_generator`). Otherwise the dense geometry's ``J`` is used, with a
tiny ridge ``mu I`` (``mu = 1e-14 tr(J J^T) / N``) guarding near-singular ``J J^T`` and an SVD rank check.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from dgm.geometry.base import minimum_norm_step, newton_iterate
from dgm.geometry.dense import DenseGeometry
from dgm.errors import ManifoldInitialisationError  # defined in dgm.errors; importable from here as before
from dgm.model import GenerativeModel


_BACKTRACK = 2.0 ** -np.arange(12)


def uses_structured_geometry(model: GenerativeModel) -> bool:
    """Whether the linear-time structured geometry applies to ``model`` (declared structure, ``df/dv_t`` square)."""
    return model.structure is not None and bool(getattr(model.structure, "square", False))


def _geometry(model: GenerativeModel, structured: bool):
    """The geometry whose ``factorise`` / solves the initialiser uses (its ``x_obs`` is never read here)."""
    if structured:
        from dgm.geometry.structured import StructuredGeometry

        return StructuredGeometry(model, None)
    return DenseGeometry(model.generator, None)


@functools.lru_cache(maxsize=16)
def _gauss_newton_solver(model: GenerativeModel, structured: bool, tol: float, max_iterations: int):
    """``jit(vmap(u0 -> (u, max residual)))`` for fixed ``x_obs`` (an argument), cached per model and settings."""
    alphas = jnp.asarray(_BACKTRACK)
    generator = model.generator
    geometry = _geometry(model, structured)

    def direction(u, c):
        if structured:
            return minimum_norm_step(geometry, geometry.factorise(u), c)
        jac = jax.jacfwd(generator)(u)
        gram = jac @ jac.T
        mu = 1e-14 * jnp.trace(gram) / gram.shape[0]
        return jac.T @ jnp.linalg.solve(gram + mu * jnp.eye(gram.shape[0]), c)

    def solve(u0, x_obs):
        def residual(u):
            return generator(u) - x_obs

        def correction(u, c):
            step = direction(u, c)
            # backtracking: the longest step of 1, 1/2, 1/4, ... that reduces |c|_2 (else the least bad one), tried
            # in turn so that an accepted full step costs one generator evaluation
            current = jnp.sqrt(jnp.sum(c**2))

            def untried(carry):
                i, _, best_norm = carry
                return (i < alphas.shape[0]) & ~(best_norm < current)

            def try_next(carry):
                i, best, best_norm = carry
                norm = jnp.sqrt(jnp.sum(residual(u - alphas[i] * step) ** 2))
                norm = jnp.where(jnp.isfinite(norm), norm, jnp.inf)
                better = norm < best_norm
                return i + 1, jnp.where(better, i, best), jnp.where(better, norm, best_norm)

            _, best, _ = jax.lax.while_loop(untried, try_next, (0, 0, jnp.asarray(jnp.inf, c.dtype)))
            return alphas[best] * step

        result = newton_iterate(residual, correction, u0, tol, max_iterations)
        return result.position, jnp.where(result.converged | jnp.isfinite(result.max_residual), result.max_residual,
                                          jnp.inf)

    if jax.default_backend() == "cpu":  # one start after another: a smaller working set, no lock-stepped loops
        return jax.jit(lambda starts, x_obs: jax.lax.map(lambda u0: solve(u0, x_obs), starts))
    return jax.jit(jax.vmap(solve, in_axes=(0, None)))


@functools.lru_cache(maxsize=16)
def _rank_statistics(model: GenerativeModel, structured: bool):
    geometry = _geometry(model, structured)

    def statistics(u):
        factor = geometry.factorise(u)
        return geometry.singular_value_ratio(factor), geometry.half_log_det_gram(factor)

    return jax.jit(jax.vmap(statistics))


def check_full_rank(model: GenerativeModel, positions: np.ndarray, structured=None) -> None:
    """Raise ``ValueError`` if the geometry cannot work at any of ``positions``: smallest/largest singular value below
    ``1e-12`` or a non-finite ``log|J J^T|``.

    Dense: the singular values of ``J`` (``J J^T`` singular). Structured (``structured=None`` picks it when
    :func:`uses_structured_geometry`): those of every noise Jacobian ``G_t``, which the linear-time factorisation
    inverts; a singular ``G_t`` is refused even where ``J`` keeps full rank through the parameter columns (the dense
    geometry can still run there, and the message says so)."""
    structured = uses_structured_geometry(model) if structured is None else bool(structured)
    ratio, half_log_det = (np.asarray(a) for a in _rank_statistics(model, structured)(jnp.asarray(positions)))
    bad = np.flatnonzero(~np.isfinite(ratio) | (ratio < 1e-12) | ~np.isfinite(half_log_det))
    if bad.size and structured:
        raise ValueError(
            f"a noise Jacobian G_t = df/dv_t of the declared structure is singular at starting point(s) "
            f"{bad.tolist()} (smallest/largest singular value {ratio[bad[0]]:.3g}): the Jacobian is rank-deficient "
            "for the linear-time structured geometry, which inverts every G_t. If the full Jacobian still has full "
            "rank, sample with geometry='dense'."
        )
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
    structured=None,
) -> np.ndarray:
    """Return ``n_points`` inputs (``(n_points, input_dim)`` float64) with ``|g(u) - x_obs|_inf < tol``.

    ``structured``: use the structured geometry's linear-time Gauss-Newton steps and rank check (and check the
    declared structure against the generator at the starting points); ``None`` (default) does so whenever
    :func:`uses_structured_geometry`. ``False`` forces the dense solver and SVD rank check.
    """
    x_obs = jnp.asarray(x_obs, jnp.float64)
    structured = uses_structured_geometry(model) if structured is None else bool(structured)
    solver = _gauss_newton_solver(model, structured, float(tol), int(max_iterations))
    found: list[np.ndarray] = []
    best = np.inf
    key_init, key = jax.random.split(key)
    structure_checked = False

    def check_structure(starts):
        nonlocal structure_checked
        if structured and not structure_checked:
            model.structure.check_generator(model.generator, starts, name=repr(model.name))
            structure_checked = True

    if model.init is not None:
        starts = jnp.asarray(jax.vmap(model.init, in_axes=(0, None))(jax.random.split(key_init, n_points), x_obs),
                             jnp.float64)
        check_structure(starts)
        points, residuals = solver(starts, x_obs)
        ok = np.asarray(residuals) < tol
        found.extend(np.asarray(points)[ok])
        best = min(best, float(np.min(residuals)))
    attempt = 0
    while len(found) < n_points and attempt < max_attempts:
        key, key_attempt = jax.random.split(key)
        starts = jax.random.normal(key_attempt, (starts_per_point * n_points, model.input_dim), jnp.float64)
        check_structure(starts)
        points, residuals = solver(starts, x_obs)
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
    if structured:
        model.structure.check_generator(model.generator, positions, name=repr(model.name))
    check_full_rank(model, positions, structured)
    return positions
