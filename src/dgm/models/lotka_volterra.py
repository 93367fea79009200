"""Stochastic Lotka–Volterra predator–prey model (paper, section 6, eqs. 14–15).

The SDEs

    dx1 = (z1 x1 - z2 x1 x2) dt + dn1,        dx2 = (-z3 x2 + z4 x1 x2) dt + dn2

are discretised with Euler–Maruyama (time step ``dt``, ``n_steps`` steps, ``x^(0) = x0``). The generator inputs are
``u = (u1, u2)`` with ``u1`` (4 entries) generating the parameters ``z = exp(-2 + u1)`` (log-normal priors
``z_i ~ logN(-2, 1)``) and ``u2`` (``2 n_steps`` entries) the standard-normal increments of the noise, ordered prey,
predator interleaved per step, exactly as the observed vector
``x = [x1^(1), x2^(1), ..., x1^(n), x2^(n)]``.

Two step rules are provided:

* ``step="semi-implicit"`` (default): the prey is updated first and the *updated* prey is used in the predator's
  update. This is what the original experiment's code did, and what reproduces its observations (see
  ``/work/shared/DATA.md``).
* ``step="explicit"``: the textbook Euler–Maruyama step (the old prey in both updates).

Because every step is affine in the noise and the noise enters additively with a unit-diagonal triangular Jacobian,
the noise ``u2`` that reproduces a given trajectory is available in closed form for any ``u1``
(:func:`inputs_from_trajectory`); the model's exact initialiser uses it. The same fact gives the exact posterior of
``u1`` given the full trajectory (:func:`exact_log_posterior`): ``log p(u1 | x) = log N(u1; 0, I) - |u2(u1, x)|^2 / 2 +
const`` -- a 4-D density usable as ground truth for the samplers.
"""

from __future__ import annotations

from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dgm.model import GenerativeModel

Array = jax.Array

#: Parameters ``z = (z1, z2, z3, z4)`` used to simulate the original experiment's observations.
TRUE_PARAMETERS = (0.4, 0.005, 0.05, 0.001)
#: Seed of ``numpy.random.RandomState`` used for the original experiment's noise.
DATA_SEED = 1234
N_PARAMETERS = 4
PRIOR_LOG_MEAN = -2.0
PRIOR_LOG_STD = 1.0
_STEPS = ("semi-implicit", "explicit")


def _check_step(step: str) -> str:
    if step not in _STEPS:
        raise ValueError(f"step must be one of {_STEPS}, got {step!r}")
    return step


def parameters_from_inputs(u1: Array) -> Array:
    """``z = exp(-2 + u1)`` (log-normal prior ``logN(-2, 1)`` for standard-normal ``u1``)."""
    return jnp.exp(PRIOR_LOG_MEAN + PRIOR_LOG_STD * u1)


def inputs_from_parameters(z: Array) -> Array:
    """Inverse of :func:`parameters_from_inputs`."""
    return (jnp.log(z) - PRIOR_LOG_MEAN) / PRIOR_LOG_STD


def _drifts(z, x1, x2):
    return z[0] * x1 - z[1] * x1 * x2, -z[2] * x2 + z[3] * x1 * x2


def simulate(
    z: Array,
    noise: Array,
    *,
    dt: float = 1.0,
    x0: Sequence[float] = (100.0, 100.0),
    step: str = "semi-implicit",
) -> Array:
    """Simulate the populations; returns the ``(n_steps, 2)`` array of (prey, predator) after each step.

    ``noise`` has ``2 * n_steps`` standard-normal entries (prey, predator interleaved per step); it is scaled by
    ``sqrt(dt)``. Jittable, differentiable, follows the dtype of its inputs.
    """
    _check_step(step)
    z = jnp.asarray(z)
    noise = jnp.asarray(noise)
    dtype = jnp.result_type(z.dtype, noise.dtype)
    noise = noise.reshape(-1, 2).astype(dtype)

    def body(x_prev, v):
        x_next = transition(x_prev, z, v, dt=dt, step=step)
        return x_next, x_next

    _, xs = jax.lax.scan(body, jnp.asarray(x0, dtype), noise)
    return xs


def transition(x_prev: Array, z: Array, v: Array, *, dt: float = 1.0, step: str = "semi-implicit") -> Array:
    """One Euler-Maruyama step ``x_t = f(x_{t-1}, z, v_t)`` (the Markov step used by the structured geometry).

    ``semi-implicit``: the prey is updated first and the updated prey enters the predator's update.
    """
    semi = _check_step(step) == "semi-implicit"
    sdt = jnp.sqrt(jnp.asarray(dt, x_prev.dtype))
    x1, x2 = x_prev[0], x_prev[1]
    x1n = x1 + dt * (z[0] * x1 - z[1] * x1 * x2) + sdt * v[0]
    xp = x1n if semi else x1
    x2n = x2 + dt * (-z[2] * x2 + z[3] * xp * x2) + sdt * v[1]
    return jnp.stack([x1n, x2n])


def _split(u: Array) -> tuple[Array, Array]:
    return u[:N_PARAMETERS], u[N_PARAMETERS:]


def generator_fn(u: Array, *, dt: float = 1.0, x0=(100.0, 100.0), step: str = "semi-implicit") -> Array:
    """``x = g(u)``: the flattened observed populations ``[x1^(1), x2^(1), ..., x1^(n), x2^(n)]``."""
    u1, u2 = _split(u)
    return simulate(parameters_from_inputs(u1), u2, dt=dt, x0=x0, step=step).reshape(-1)


def trajectory(u: Array, *, dt: float = 1.0, x0=(100.0, 100.0), step: str = "semi-implicit") -> Array:
    """Full populations for plotting: ``(n_steps + 1, 2)`` array starting with ``x0``."""
    u1, u2 = _split(u)
    xs = simulate(parameters_from_inputs(u1), u2, dt=dt, x0=x0, step=step)
    return jnp.concatenate([jnp.asarray(x0, xs.dtype)[None], xs], axis=0)


def _noise_design(x_obs: Array, dt: float, x0, step: str) -> tuple[Array, Array]:
    """The noise is affine in ``z``: ``u2(z) = (b - A z) / sqrt(dt)``; returns ``(A, b)`` (shapes (2n, 4), (2n,))."""
    semi = _check_step(step) == "semi-implicit"
    x = jnp.asarray(x_obs).reshape(-1, 2)
    prev = jnp.concatenate([jnp.asarray(x0, x.dtype)[None], x[:-1]], axis=0)
    x1p, x2p = prev[:, 0], prev[:, 1]
    x1u = x[:, 0] if semi else x1p
    zeros = jnp.zeros_like(x1p)
    # prey:     x1 - x1p = dt (z1 x1p - z2 x1p x2p) + sqrt(dt) n1
    # predator: x2 - x2p = dt (-z3 x2p + z4 x1u x2p) + sqrt(dt) n2
    a_prey = jnp.stack([x1p, -x1p * x2p, zeros, zeros], axis=-1)
    a_pred = jnp.stack([zeros, zeros, -x2p, x1u * x2p], axis=-1)
    a = dt * jnp.stack([a_prey, a_pred], axis=1).reshape(-1, N_PARAMETERS)
    b = (x - prev).reshape(-1)
    return a, b


def noise_from_trajectory(
    z: Array, x_obs: Array, *, dt: float = 1.0, x0=(100.0, 100.0), step: str = "semi-implicit"
) -> Array:
    """The noise ``u2`` with ``simulate(z, u2) == x_obs`` (closed form; exact up to rounding)."""
    a, b = _noise_design(x_obs, dt, x0, step)
    return (b - a @ jnp.asarray(z, a.dtype)) / jnp.sqrt(jnp.asarray(dt, a.dtype))


def inputs_from_trajectory(
    u1: Array, x_obs: Array, *, dt: float = 1.0, x0=(100.0, 100.0), step: str = "semi-implicit"
) -> Array:
    """The full input vector ``u = (u1, u2)`` on the manifold ``g(u) = x_obs`` for the given ``u1``."""
    u2 = noise_from_trajectory(parameters_from_inputs(u1), x_obs, dt=dt, x0=x0, step=step)
    return jnp.concatenate([jnp.asarray(u1, u2.dtype), u2])


def exact_log_posterior(
    u1: Array, x_obs: Array, *, dt: float = 1.0, x0=(100.0, 100.0), step: str = "semi-implicit"
) -> Array:
    """Exact ``log p(u1 | x = x_obs)`` up to a constant (a 4-D density; ground truth for samplers).

    Given ``u1`` the map ``u2 -> x`` is a bijection with constant Jacobian determinant ``dt^n``, so
    ``p(u1 | x) ∝ N(u1; 0, I) N(u2(u1, x); 0, I)``.
    """
    u = inputs_from_trajectory(u1, x_obs, dt=dt, x0=x0, step=step)
    return -0.5 * jnp.sum(u * u)


def least_squares_parameters(
    x_obs: Array, *, dt: float = 1.0, x0=(100.0, 100.0), step: str = "semi-implicit"
) -> tuple[Array, Array]:
    """Mean and covariance of the Gaussian likelihood of ``z`` given the trajectory (least squares ``min |u2(z)|``)."""
    a, b = _noise_design(x_obs, dt, x0, step)
    a = a / jnp.sqrt(jnp.asarray(dt, a.dtype))
    b = b / jnp.sqrt(jnp.asarray(dt, a.dtype))
    precision = a.T @ a
    mean = jnp.linalg.solve(precision, a.T @ b)
    return mean, jnp.linalg.inv(precision)


def default_observations(
    step: str = "semi-implicit", *, n_steps: int = 50, dt: float = 1.0, x0=(100.0, 100.0)
) -> np.ndarray:
    """The original experiment's observations (float64 NumPy array of length ``2 n_steps``), computed on the host.

    Noise ``numpy.random.RandomState(1234).normal(size=2 n_steps)``, ``z = TRUE_PARAMETERS``. With the default
    ``step="semi-implicit"`` this reproduces the published data; ``"explicit"`` gives the textbook variant.
    """
    semi = _check_step(step) == "semi-implicit"
    noise = np.random.RandomState(DATA_SEED).normal(size=2 * n_steps)
    z1, z2, z3, z4 = TRUE_PARAMETERS
    x1, x2 = float(x0[0]), float(x0[1])
    sdt = float(np.sqrt(dt))
    out = np.empty(2 * n_steps)
    for t in range(n_steps):
        x1n = x1 + dt * (z1 * x1 - z2 * x1 * x2) + sdt * noise[2 * t]
        xp = x1n if semi else x1
        x2 = x2 + dt * (-z3 * x2 + z4 * xp * x2) + sdt * noise[2 * t + 1]
        x1 = x1n
        out[2 * t], out[2 * t + 1] = x1, x2
    return out


def lotka_volterra(
    observations: Optional[np.ndarray] = None,
    *,
    n_steps: int = 50,
    dt: float = 1.0,
    x0: Sequence[float] = (100.0, 100.0),
    step: str = "semi-implicit",
    init_spread: float = 1.0,
    structured: bool = True,
) -> GenerativeModel:
    """The stochastic Lotka–Volterra :class:`~dgm.GenerativeModel` of section 6.

    With ``structured=True`` (default) the model is declared as a Markov generator (:mod:`dgm.structure`: state
    ``(prey, predator)``, two noise inputs per step, ``L = 4`` parameter inputs) so :func:`dgm.sample` uses the
    linear-time structured geometry; ``geometry="dense"`` in :func:`dgm.sample` (or ``structured=False``) gives the
    dense one.

    Args:
      observations: observed populations used by the model's exact initialiser when ``init`` is called with
        ``x_obs=None``; default :func:`default_observations` for the chosen ``step`` (only stored for convenience,
        the model's ``generator`` does not depend on it).
      n_steps, dt, x0, step: simulation settings (see module docstring).
      init_spread: scale of the spread of initial ``u1`` draws (see below).

    The model's ``init(key, x_obs)`` returns an exact point on the manifold ``g(u) = x_obs``: ``z`` is drawn from the
    Gaussian likelihood approximation ``N(z_ls, init_spread^2 C)`` of :func:`least_squares_parameters` (reflected to
    positive values), which puts chains near the posterior bulk so that the solved noise ``u2`` is moderate, and
    then ``u2`` is solved in closed form (:func:`inputs_from_trajectory`); ``g(u) - x_obs`` is at rounding level
    (about 1e-13 in float64). Use :func:`inputs_from_trajectory` directly for other choices of ``u1`` (e.g. prior
    draws; far from the posterior the solved noise is huge and rounding errors grow along the trajectory).
    """
    _check_step(step)
    n_steps = int(n_steps)
    dt = float(dt)
    x0 = (float(x0[0]), float(x0[1]))
    if observations is None:
        observations = default_observations(step, n_steps=n_steps, dt=dt, x0=x0)
    observations = np.asarray(observations, dtype=np.float64)
    if observations.shape != (2 * n_steps,):
        raise ValueError(f"observations must have shape ({2 * n_steps},), got {observations.shape}")
    kw = dict(dt=dt, x0=x0, step=step)

    def generator(u):
        return generator_fn(u, **kw)

    def latents(u):
        return parameters_from_inputs(u[:N_PARAMETERS])

    def init(key, x_obs=None):
        x = jnp.asarray(observations if x_obs is None else x_obs)
        dtype = jnp.result_type(x.dtype, jnp.float32)
        x = x.astype(dtype)
        mean, cov = least_squares_parameters(x, **kw)
        chol = jnp.linalg.cholesky(cov)
        z = mean + init_spread * chol @ jax.random.normal(key, (N_PARAMETERS,), dtype)
        z = jnp.maximum(jnp.abs(z), 1e-8)
        return inputs_from_trajectory(inputs_from_parameters(z), x, **kw)

    structure = None
    if structured:
        from dgm.structure import markov_structure

        structure = markov_structure(
            lambda x_prev, z, v: transition(x_prev, z, v, dt=dt, step=step),
            np.asarray(x0),
            n_steps,
            parameters_from_inputs,
            N_PARAMETERS,
        )
    return GenerativeModel(
        generator=generator,
        input_dim=N_PARAMETERS + 2 * n_steps,
        latents=latents,
        init=init,
        parameter_inputs=N_PARAMETERS,
        structure=structure,
        name=f"lotka-volterra-{step}",
        latent_names=("z1", "z2", "z3", "z4"),
    )
