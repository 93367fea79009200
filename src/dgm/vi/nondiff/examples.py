"""Example ``if``-branching models (Lee, Yu & Yang 2018, NeurIPS; slides in /work/shared/papers).

* :func:`slides_example`: the slides' one-liner ``z ~ N(0,1); if z > 0 observe N(3,1) at 0 else observe N(-2,1)
  at 0``, i.e. ``p(z, x=0) = [z > 0] N(z|0,1) N(0|3,1) + [z <= 0] N(z|0,1) N(0|-2,1)``.
* :func:`tilted_2d_example`: a 2-D model with a tilted hyperplane and a nested ``if`` on a second one.
* :func:`sms_changepoint`: the text-message change-point model of Davidson-Pilon's "Bayesian Methods for Hackers"
  (ch. 1), one ``if`` per day (the paper's ``textmsg`` benchmark).
* :func:`thermostat`: a thermostat-controlled temperature process, a sequential model with two nested ``if``\\ s
  per time step (the paper's ``temperature`` benchmark is of this kind; this instance is simulated).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln

from dgm.vi.nondiff.program import PiecewiseModel, from_pieces

__all__ = ["SMS_COUNTS", "slides_example", "tilted_2d_example", "sms_changepoint", "thermostat", "normal_logpdf"]

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)

# Daily counts of text messages received, 74 days; Cameron Davidson-Pilon, "Probabilistic Programming and Bayesian
# Methods for Hackers", Chapter 1 (Chapter1_Introduction/data/txtdata.csv), embedded literally (no network access).
SMS_COUNTS = np.array(
    [13, 24, 8, 24, 7, 35, 14, 11, 15, 11, 22, 22, 11, 57, 11, 19, 29, 6, 19, 12, 22, 12, 18, 72, 32, 9, 7, 13,
     19, 23, 27, 20, 6, 17, 13, 10, 14, 6, 16, 15, 7, 2, 15, 15, 19, 70, 49, 7, 53, 22, 21, 31, 19, 11, 18, 20,
     12, 35, 17, 23, 17, 4, 2, 31, 30, 13, 27, 0, 39, 37, 5, 14, 13, 22],
    dtype=np.float64,
)  # fmt: skip
assert SMS_COUNTS.shape == (74,)


def normal_logpdf(x, mean, std):
    """``log N(x; mean, std^2)``."""
    r = (x - mean) / std
    return -0.5 * r * r - jnp.log(std) - _HALF_LOG_2PI


def slides_example() -> PiecewiseModel:
    """Slides' program; latent ``z`` (d=1), one hyperplane ``z = 0``; branch ``+`` is ``z > 0``."""

    def log_joint(z, s):
        prior = normal_logpdf(z[0], 0.0, 1.0)
        return prior + jnp.where(s[0], normal_logpdf(0.0, 3.0, 1.0), normal_logpdf(0.0, -2.0, 1.0))

    return PiecewiseModel([[1.0]], [0.0], log_joint, name="slides", latent_names=("z",))


# tilted 2-D example: unit normals n1 (tilted) and n2 (perpendicular to n1)
TILTED_NORMALS = np.array([[0.8, -0.6], [0.6, 0.8]])
TILTED_OFFSETS = np.array([0.3, -0.4])


def tilted_2d_example() -> PiecewiseModel:
    """``z ~ N(0, I_2)``; ``if 0.8 z1 - 0.6 z2 + 0.3 > 0: observe N(z1 + z2, 1) at 1``
    ``elif 0.6 z1 + 0.8 z2 - 0.4 > 0: observe N(z1 - 2, 0.7^2) at 1`` ``else: observe N(2 z2, 1.5^2) at -0.5``.
    The second test runs only in the ``else`` branch (nested), so the log joint jumps across only half of ``H_2``."""

    def prior(z):
        return jnp.sum(normal_logpdf(z, 0.0, 1.0))

    pieces = [
        ("+.", lambda z: prior(z) + normal_logpdf(1.0, z[0] + z[1], 1.0)),
        ("-+", lambda z: prior(z) + normal_logpdf(1.0, z[0] - 2.0, 0.7)),
        ("--", lambda z: prior(z) + normal_logpdf(-0.5, 2.0 * z[1], 1.5)),
    ]
    return from_pieces(TILTED_NORMALS, TILTED_OFFSETS, pieces, name="tilted2d", latent_names=("z1", "z2"))


def sms_changepoint(counts=SMS_COUNTS) -> PiecewiseModel:
    """Change-point model for count data (Bayesian Methods for Hackers, ch. 1)::

        lambda_1, lambda_2 ~ Exponential(alpha), alpha = 1 / mean(counts)
        tau ~ Uniform(0, T)
        for day i = 0..T-1:  if tau > i: C_i ~ Poisson(lambda_1) else: C_i ~ Poisson(lambda_2)

    Latents on R^3: ``z = (log lambda_1, log lambda_2, u)`` with ``tau = T sigmoid(u)`` (priors transformed with
    their Jacobians: ``log alpha + z - alpha e^z`` and the logistic density ``sigmoid(u) sigmoid(-u)``). Since the
    transform is monotone, ``tau > i  <=>  u - logit(i/T) > 0``: ``T - 1`` axis-aligned hyperplanes (day 0 is
    always before the change), i.e. a step change point whose likelihood jumps at every hyperplane.
    """
    counts = np.asarray(counts, dtype=np.float64)
    num_days = counts.shape[0]
    days = np.arange(1, num_days)
    normals = np.zeros((num_days - 1, 3))
    normals[:, 2] = 1.0
    offsets = -np.log(days / (num_days - days))  # -logit(i/T)
    log_alpha = -math.log(counts.mean())

    def log_joint(z, s):
        c = jnp.asarray(counts, z.dtype)
        prior = jnp.sum(log_alpha + z[:2] - jnp.exp(log_alpha + z[:2]))
        prior = prior + jax.nn.log_sigmoid(z[2]) + jax.nn.log_sigmoid(-z[2])
        before = jnp.concatenate([jnp.ones((1,), bool), s])  # day i uses lambda_1 iff tau > i
        log_lam = jnp.where(before, z[0], z[1])
        return prior + jnp.sum(c * log_lam - jnp.exp(log_lam) - gammaln(c + 1.0))

    return PiecewiseModel(
        normals, offsets, log_joint, name="sms-changepoint", latent_names=("log_lambda1", "log_lambda2", "logit_tau")
    )


def thermostat(
    num_steps: int = 40,
    seed: int = 0,
    *,
    initial: float = 20.5,
    low: float = 19.0,
    high: float = 22.0,
    heat: float = 1.5,
    cool: float = 1.5,
    drift: float = 0.3,
    process_std: float = 0.5,
    obs_std: float = 1.0,
):
    """Thermostat-controlled room temperature, observed through a noisy sensor (data simulated with ``seed``)::

        x_0 = initial (known)
        for t = 1..T:
            if x_{t-1} < low:     u = +heat      # heater on
            elif x_{t-1} > high:  u = -cool      # air conditioning on
            else:                 u = -drift     # heat loss
            x_t ~ N(x_{t-1} + u, process_std^2);  y_t ~ N(x_t, obs_std^2)

    Latents ``z = (x_1, ..., x_T)``; the tests on ``x_1..x_{T-1}`` give ``2 (T - 1)`` axis-aligned hyperplanes
    ``low - x_t > 0`` and ``x_t - high > 0`` (the second nested in the first's ``else``).

    Returns ``(model, data)`` with ``data = {"x": true temperatures, "y": observations}``.
    """
    rng = np.random.default_rng(seed)

    def control(x):
        return np.where(x < low, heat, np.where(x > high, -cool, -drift))

    x = np.empty(num_steps)
    prev = initial
    for t in range(num_steps):
        prev = prev + control(prev) + process_std * rng.standard_normal()
        x[t] = prev
    y = x + obs_std * rng.standard_normal(num_steps)

    normals = np.zeros((2 * (num_steps - 1), num_steps))
    offsets = np.zeros(2 * (num_steps - 1))
    for t in range(num_steps - 1):
        normals[2 * t, t], offsets[2 * t] = -1.0, low  # heater:  low - x_t > 0
        normals[2 * t + 1, t], offsets[2 * t + 1] = 1.0, -high  # AC:  x_t - high > 0
    u0 = float(control(initial))

    def log_joint(z, s):
        s = s.reshape(num_steps - 1, 2)
        u = jnp.where(s[:, 0], heat, jnp.where(s[:, 1], -cool, -drift))
        mean = jnp.concatenate([jnp.full((1,), initial + u0, z.dtype), z[:-1] + u])
        lp = jnp.sum(normal_logpdf(z, mean, process_std))
        return lp + jnp.sum(normal_logpdf(jnp.asarray(y, z.dtype), z, obs_std))

    model = PiecewiseModel(
        normals, offsets, log_joint, name="thermostat", latent_names=tuple(f"x{t + 1}" for t in range(num_steps))
    )
    return model, {"x": x, "y": y}
