"""Generative models whose conditioning manifold ``{u : g(u) = x}`` has several connected components, with the
exact mass of each component (the examples of the tests and benchmarks).

Constrained HMC moves continuously on the manifold, so a chain never leaves the component it starts in; the mass
of component ``M_k`` under the target ``rho(u) |J J^T|^{-1/2}`` (paper, eq. 16) is, by the coarea formula,

    w_k ∝ ∫_{M_k} rho(u) |J(u) J(u)^T|^{-1/2} dH(u),

the posterior probability that ``u`` lies in ``M_k``. Each example below has these weights in closed form or by a
1-/2-D quadrature independent of dgm's geometry, a labelling ``component_of(u) -> int`` (jittable, ``vmap``-able)
with labels indexing the weight vector, maps ``s`` with ``g(s(u)) = g(u)`` that permute the components (to declare as
symmetries), and :func:`start_in_component`, starting points on the manifold all in one chosen component.

* :func:`two_lines`: ``u ~ N(mu, I_2)``, ``x = u1^2``. The manifold is the two lines ``u1 = ±sqrt(x)``; on each,
  ``|J J^T|^{1/2} = 2 sqrt(x)`` is constant, so ``w_± ∝ exp(-(±sqrt(x) - mu1)^2 / 2)``
  (:func:`two_lines_weights`). Symmetry: ``u1 -> -u1`` (an isometry).
* :func:`four_lines`: ``u ~ N(mu, I_3)``, ``x = (u1^2, u2^2)``: four lines ``(±sqrt(x1), ±sqrt(x2), t)`` with
  weights the products of the two-lines weights (:func:`four_lines_weights`). Symmetries: the two sign flips,
  generators of the group ``Z2 x Z2``.
* :func:`hyperbola`: ``u ~ N(mu, I_2)``, ``x = u1 u2 > 0``: two branches (``u1 > 0`` and ``u1 < 0``). Chart
  ``u = (t, x/t)``: ``dH / |grad g| = dt / |t|``, so ``w_± ∝ ∫_{±t > 0} N(t; mu1, 1) N(x/t; mu2, 1) / |t| dt``
  (:func:`hyperbola_weights`, by quadrature). Symmetry: ``s_k(u) = (-k u2, -u1 / k)``, an involution preserving
  ``u1 u2`` that is *not* an isometry for ``k != 1``: the volume change of ``Ds`` along the curve varies with ``u``,
  the example on which a symmetry move that forgets the map's Jacobian is wrong.
* :func:`gaussian_scale`: a simulator with a squared parameter: ``theta ~ N(m, I_2)``, ``y_i = theta1 + theta2 e_i``
  (``e_i ~ N(0, 1)``, ``i = 1..n``), inputs ``u = (theta1, theta2, e_1..e_n)``. The likelihood depends on
  ``theta2`` only through ``theta2^2`` (the variance), so the manifold has the two components ``theta2 > 0`` and
  ``theta2 < 0``, related by the symmetry ``(theta1, theta2, e) -> (theta1, -theta2, -e)``; the posterior masses
  ``w_± ∝ ∫∫_{±theta2 > 0} N(theta; m, I) prod_i N(y_i; theta1, theta2^2) dtheta`` come from a 2-D quadrature
  (:func:`gaussian_scale_weights`).

The weights are normalised NumPy arrays ``w[label]``.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dgm.model import GenerativeModel

Array = jax.Array


class DisconnectedExample(NamedTuple):
    """A model, an observation, and what is known exactly about the components of its manifold.

    Attributes:
      name: short name for tables.
      model: the :class:`dgm.GenerativeModel` (declared without symmetries).
      x_obs: the observation, a float64 NumPy array.
      component_of: ``u -> int32`` label of the component holding ``u`` (jittable), indexing ``weights``.
      weights: exact normalised component masses under the manifold target.
      symmetries: maps ``s(u)`` with ``g(s(u)) = g(u)`` (each an involution) that move between components.
      start: ``(label, n_chains, seed) -> (n_chains, input_dim)`` points on the manifold, all in component ``label``.
    """

    name: str
    model: GenerativeModel
    x_obs: np.ndarray
    component_of: Callable[[Array], Array]
    weights: np.ndarray
    symmetries: tuple
    start: Callable[[int, int, int], np.ndarray]


def _gaussian_log_density(mean):
    mean = np.asarray(mean, dtype=np.float64)

    def log_density(u):
        d = u - jnp.asarray(mean, u.dtype)
        return -0.5 * jnp.sum(d * d)

    return log_density


def _normalise(log_w) -> np.ndarray:
    log_w = np.asarray(log_w, dtype=np.float64)
    w = np.exp(log_w - np.max(log_w))
    return w / w.sum()


def _sign_flip(index: int):
    def flip(u):
        return u.at[index].multiply(-1.0)

    return flip


# ---------------------------------------------------------------------------------------------------------------------
# (a) two lines: x = u1^2
# ---------------------------------------------------------------------------------------------------------------------
def two_lines_weights(x_obs: float, mu1: float) -> np.ndarray:
    """``(w_-, w_+)`` of the lines ``u1 = -sqrt(x)`` (label 0) and ``u1 = +sqrt(x)`` (label 1):
    ``w_± ∝ exp(-(±sqrt(x) - mu1)^2 / 2)``, i.e. ``w_+ = 1 / (1 + exp(-2 sqrt(x) mu1))``."""
    r = float(np.sqrt(x_obs))
    return _normalise([-0.5 * (-r - mu1) ** 2, -0.5 * (r - mu1) ** 2])


def two_lines_component(u: Array) -> Array:
    """0 on ``u1 < 0``, 1 on ``u1 > 0``."""
    return (u[0] > 0).astype(jnp.int32)


flip_first = _sign_flip(0)
"""``(u1, u2, ...) -> (-u1, u2, ...)``."""
flip_second = _sign_flip(1)
"""``(u1, u2, u3, ...) -> (u1, -u2, u3, ...)``."""


def two_lines(x_obs: float = 1.0, mu=(0.5, 0.0)) -> DisconnectedExample:
    """Example (a): ``u ~ N(mu, I_2)``, ``x = u1^2``, two lines with weights :func:`two_lines_weights`."""
    mu = np.asarray(mu, dtype=np.float64)
    if mu.shape != (2,) or x_obs <= 0:
        raise ValueError("two_lines needs mu of shape (2,) and x_obs > 0")
    model = GenerativeModel(lambda u: jnp.atleast_1d(u[0] ** 2), 2, log_input_density=_gaussian_log_density(mu),
                            name="two-lines")
    r = float(np.sqrt(x_obs))

    def start(label: int, n_chains: int, seed: int = 0) -> np.ndarray:
        t = mu[1] + np.random.default_rng(seed).standard_normal(n_chains)
        return np.stack([np.full(n_chains, r if label == 1 else -r), t], axis=1)

    return DisconnectedExample("two-lines", model, np.array([float(x_obs)]), two_lines_component,
                               two_lines_weights(x_obs, mu[0]), (flip_first,), start)


# ---------------------------------------------------------------------------------------------------------------------
# (b) four lines in R^3: x = (u1^2, u2^2)
# ---------------------------------------------------------------------------------------------------------------------
def four_lines_weights(x_obs, mu) -> np.ndarray:
    """Weights of the four lines ``(s1 sqrt(x1), s2 sqrt(x2), t)``, label ``2 [s1 > 0] + [s2 > 0]``: products of
    :func:`two_lines_weights` of each coordinate."""
    w1 = two_lines_weights(x_obs[0], mu[0])
    w2 = two_lines_weights(x_obs[1], mu[1])
    return np.outer(w1, w2).ravel()


def four_lines_component(u: Array) -> Array:
    """``2 [u1 > 0] + [u2 > 0]``."""
    return (2 * (u[0] > 0) + (u[1] > 0)).astype(jnp.int32)


def four_lines(x_obs=(1.0, 0.64), mu=(0.5, -0.7, 0.0)) -> DisconnectedExample:
    """Example (b): ``u ~ N(mu, I_3)``, ``x = (u1^2, u2^2)``; four components of unequal mass
    (default weights ``(0.203, 0.066, 0.551, 0.180)``)."""
    mu = np.asarray(mu, dtype=np.float64)
    x = np.asarray(x_obs, dtype=np.float64)
    if mu.shape != (3,) or x.shape != (2,) or np.any(x <= 0):
        raise ValueError("four_lines needs mu of shape (3,) and x_obs of shape (2,), positive")
    model = GenerativeModel(lambda u: jnp.stack([u[0] ** 2, u[1] ** 2]), 3,
                            log_input_density=_gaussian_log_density(mu), name="four-lines")
    r = np.sqrt(x)

    def start(label: int, n_chains: int, seed: int = 0) -> np.ndarray:
        s1, s2 = (1.0 if label // 2 else -1.0), (1.0 if label % 2 else -1.0)
        t = mu[2] + np.random.default_rng(seed).standard_normal(n_chains)
        return np.stack([np.full(n_chains, s1 * r[0]), np.full(n_chains, s2 * r[1]), t], axis=1)

    return DisconnectedExample("four-lines", model, x, four_lines_component, four_lines_weights(x, mu),
                               (flip_first, flip_second), start)


# ---------------------------------------------------------------------------------------------------------------------
# hyperbola x = u1 u2 with a non-isometric symmetry
# ---------------------------------------------------------------------------------------------------------------------
def hyperbola_weights(x_obs: float, mu) -> np.ndarray:
    """``(w_-, w_+)`` of the branches ``u1 < 0`` (label 0) and ``u1 > 0`` (label 1) of ``u1 u2 = x > 0``:
    ``w_± ∝ ∫_{±t > 0} N(t; mu1, 1) N(x / t; mu2, 1) / |t| dt`` (adaptive quadrature, relative error ~1e-10)."""
    from scipy import integrate

    def density(t):
        return np.exp(-0.5 * (t - mu[0]) ** 2 - 0.5 * (x_obs / t - mu[1]) ** 2) / abs(t)

    plus, _ = integrate.quad(density, 0.0, np.inf, limit=400, epsabs=0, epsrel=1e-11)
    minus, _ = integrate.quad(density, -np.inf, 0.0, limit=400, epsabs=0, epsrel=1e-11)
    return np.array([minus, plus]) / (minus + plus)


def hyperbola_swap(k: float = 2.0):
    """``s_k(u) = (-k u2, -u1 / k)``: ``s_k(s_k(u)) = u`` and ``(-k u2)(-u1 / k) = u1 u2``; it maps the branch
    ``u1 > 0`` onto ``u1 < 0``. Not an isometry unless ``k = 1``."""
    k = float(k)

    def swap(u):
        return jnp.stack([-k * u[1], -u[0] / k])

    return swap


def hyperbola(x_obs: float = 1.0, mu=(0.6, 0.3), k: float = 2.0) -> DisconnectedExample:
    """``u ~ N(mu, I_2)``, ``x = u1 u2``: two branches, symmetry :func:`hyperbola_swap` (non-isometric)."""
    mu = np.asarray(mu, dtype=np.float64)
    if mu.shape != (2,) or x_obs <= 0:
        raise ValueError("hyperbola needs mu of shape (2,) and x_obs > 0")
    model = GenerativeModel(lambda u: jnp.atleast_1d(u[0] * u[1]), 2, log_input_density=_gaussian_log_density(mu),
                            name="hyperbola")

    def start(label: int, n_chains: int, seed: int = 0) -> np.ndarray:
        t = np.exp(0.3 * np.random.default_rng(seed).standard_normal(n_chains)) * (1.0 if label == 1 else -1.0)
        return np.stack([t, x_obs / t], axis=1)

    return DisconnectedExample("hyperbola", model, np.array([float(x_obs)]), two_lines_component,
                               hyperbola_weights(x_obs, mu), (hyperbola_swap(k),), start)


# ---------------------------------------------------------------------------------------------------------------------
# (c) a simulator with a squared parameter: y_i = theta1 + theta2 e_i
# ---------------------------------------------------------------------------------------------------------------------
def gaussian_scale_weights(y, prior_mean=(0.0, 0.5), n_grid: int = 1601) -> np.ndarray:
    """``(w_-, w_+)`` of the components ``theta2 < 0`` (label 0) and ``theta2 > 0`` (label 1): the posterior masses
    ``∫∫ N(theta; m, I) prod_i N(y_i; theta1, theta2^2) dtheta`` over each half-plane, by the midpoint rule on a
    ``n_grid x n_grid`` grid over ``[m1 - 10, m1 + 10] x [0, 10]`` for each half (the integrand is smooth and
    vanishes at ``theta2 = 0`` when the ``y_i`` differ; relative error far below 1e-6)."""
    y = np.asarray(y, dtype=np.float64)
    m = np.asarray(prior_mean, dtype=np.float64)
    h1, h2 = 20.0 / n_grid, 10.0 / n_grid
    t1 = m[0] - 10.0 + h1 * (np.arange(n_grid) + 0.5)
    a = h2 * (np.arange(n_grid) + 0.5)  # |theta2|
    r2 = np.sum((y[None, :] - t1[:, None]) ** 2, axis=1)  # (n1,)
    log_lik = -0.5 * r2[:, None] / a[None, :] ** 2 - y.size * np.log(a)[None, :]  # (n1, n2)
    log_prior1 = -0.5 * (t1 - m[0]) ** 2
    out = []
    for sign in (-1.0, 1.0):
        log_f = log_lik + log_prior1[:, None] - 0.5 * (sign * a[None, :] - m[1]) ** 2
        out.append(log_f)
    top = max(np.max(f) for f in out)
    mass = np.array([np.sum(np.exp(f - top)) for f in out])
    return mass / mass.sum()


def gaussian_scale_component(u: Array) -> Array:
    """0 on ``theta2 < 0``, 1 on ``theta2 > 0``."""
    return (u[1] > 0).astype(jnp.int32)


def gaussian_scale_flip(u: Array) -> Array:
    """``(theta1, theta2, e) -> (theta1, -theta2, -e)``: ``theta1 + theta2 e`` is unchanged (an isometry)."""
    return jnp.concatenate([u[:1], -u[1:]])


#: Observations of :func:`gaussian_scale`: ``0.3 + 1.2 * numpy.random.default_rng(16).standard_normal(6)`` rounded to
#: 3 decimals (fixed here).
GAUSSIAN_SCALE_Y = (-0.414, 1.057, 1.547, 1.537, 2.481, -0.162)


def gaussian_scale(y=GAUSSIAN_SCALE_Y, prior_mean=(0.0, 0.5)) -> DisconnectedExample:
    """Example (c): ``theta ~ N(m, I_2)``, ``y_i = theta1 + theta2 e_i``; the sign of ``theta2`` is not identified
    by the data, only by the prior (``m2 != 0`` makes the two components unequal)."""
    y = np.asarray(y, dtype=np.float64)
    m = np.asarray(prior_mean, dtype=np.float64)
    if y.ndim != 1 or y.size < 2 or m.shape != (2,):
        raise ValueError("gaussian_scale needs at least 2 observations y (1-D) and prior_mean of shape (2,)")
    n = y.size
    mean = np.concatenate([m, np.zeros(n)])
    model = GenerativeModel(lambda u: u[0] + u[1] * u[2:], n + 2, log_input_density=_gaussian_log_density(mean),
                            latents=lambda u: u[:2], parameter_inputs=2, name="gaussian-scale",
                            latent_names=("theta1", "theta2"))

    def start(label: int, n_chains: int, seed: int = 0) -> np.ndarray:
        rng = np.random.default_rng(seed)
        theta1 = np.mean(y) + 0.3 * rng.standard_normal(n_chains)
        theta2 = np.std(y) * np.exp(0.2 * rng.standard_normal(n_chains)) * (1.0 if label == 1 else -1.0)
        e = (y[None, :] - theta1[:, None]) / theta2[:, None]
        return np.concatenate([theta1[:, None], theta2[:, None], e], axis=1)

    return DisconnectedExample("gaussian-scale", model, y, gaussian_scale_component,
                               gaussian_scale_weights(y, m), (gaussian_scale_flip,), start)


EXAMPLES = {"two-lines": two_lines, "four-lines": four_lines, "hyperbola": hyperbola,
            "gaussian-scale": gaussian_scale}
"""Constructors of the examples by name (default settings)."""
