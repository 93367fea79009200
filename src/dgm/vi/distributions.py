r"""Reparameterisable Normal, Gamma, Beta and Dirichlet distributions on top of ``jax.random``.

All distributions share one interface so that a VAE can swap its latent family:

* ``rsample(key, sample_shape=()) -> z`` of shape ``sample_shape + batch_shape + event_shape``, differentiable in the
  parameters;
* ``sample(key, sample_shape=())``: the same draws with gradients stopped;
* ``log_prob(z)`` of shape ``sample_shape + batch_shape``; ``mean()``; ``batch_shape``, ``event_shape``.

Distributions are equinox modules (pytrees): differentiate with respect to the object itself
(``jax.grad(lambda d: loss(d.rsample(key)))(dist)``) or build it inside the differentiated function.
:class:`dgm.vi.von_mises.VonMises` has the same interface.

Gradients are *not* re-derived here.  ``jax.random.gamma`` (and ``loggamma``, ``beta``, ``dirichlet`` built on it)
already differentiates its samples with respect to the shape parameter by the implicit rule of Figurnov et al.
(2018), eq. 6, ``dz/dalpha = -(dP(alpha, z)/dalpha) / q(z)`` with ``P`` the regularised lower incomplete gamma
function, computed by the primitive ``lax.random_gamma_grad``.  We draw with ``jax.random`` (same values) and attach
that same primitive's derivative through a ``custom_jvp`` evaluated as one vectorised call: on CPU,
``jax.random.gamma``'s own JVP maps ``random_gamma_grad`` over the entries one at a time (``lax.map``), ~14x slower
for 10^5 draws.  The tests check that the gradients equal ``jax.random``'s own.  The other parameters enter through
explicit transformations:

* Gamma(alpha, rate): ``z = G / rate``, ``G ~ Gamma(alpha, 1)`` (scale reparameterisation).
* Beta(a, b): ``z = G_a / (G_a + G_b)`` from ``jax.random.beta``'s log-Gamma draws.  This is the paper's
  construction for Beta (section 3, "Beta and Dirichlet": via Gamma variables), so ``dz/da = z (1 - z) dlog G_a/da``
  with the Gamma implicit gradient.  It is a valid reparameterisation (unbiased gradients of expectations) but, given
  ``z``, it still depends on ``G_a + G_b``; it equals the Beta-CDF implicit gradient ``-(dI_z(a,b)/da) / q(z)`` only
  in conditional expectation given ``z``.  The test-suite checks it pointwise against the Gamma-CDF reference and
  in expectation against exact derivatives.
* Dirichlet(alpha): ``z = softmax(log G)``, ``log G_k ~ LogGamma(alpha_k)`` (as ``jax.random.dirichlet``).

Invalid parameters (non-positive, NaN or infinite concentration/rate) raise ``ValueError`` when concrete.  Under
``jit``/``grad`` no check is possible: ``log_prob`` then returns NaN; samples are whatever ``jax.random`` returns
(NaN for NaN parameters).  Float64 requires ``jax.enable_x64(True)`` (as a context manager) around the calls.
Note: in float64, ``Gamma(alpha)`` draws underflow to exactly 0 with probability about ``2e-308^alpha/Gamma(1+alpha)``
(~1e-3 at ``alpha = 0.01``); such draws get a zero or non-finite gradient and ``log_prob = inf``.
"""

from __future__ import annotations

import abc
import math
from typing import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.special import betainc, betaln, gammainc, gammaln

Array = jax.Array

__all__ = ["Distribution", "Normal", "Gamma", "Beta", "Dirichlet", "gamma_rsample", "loggamma_rsample",
           "check_positive", "float_dtype"]


def float_dtype(*args):
    """Floating dtype of the promoted ``args`` (default float dtype when they are all integer)."""
    dt = jnp.result_type(*args)
    if jnp.issubdtype(dt, jnp.inexact):
        return dt
    return jnp.result_type(float)


def check_positive(name: str, value, allow_zero: bool = False) -> None:
    """Raise ``ValueError`` if a *concrete* ``value`` has an entry that is NaN, infinite, negative (or zero unless
    ``allow_zero``).  Traced values (under ``jit``/``grad``/``vmap``) are not checked."""
    if isinstance(value, jax.core.Tracer):
        return
    try:
        v = np.asarray(value)
    except Exception:  # pragma: no cover - exotic array types
        return
    if v.dtype == object or not np.issubdtype(v.dtype, np.number):
        raise TypeError(f"{name} must be numeric, got dtype {v.dtype}")
    ok = np.isfinite(v) & ((v >= 0) if allow_zero else (v > 0))
    if not np.all(ok):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {bound}; got {v if v.size <= 8 else v[~ok][:8]}")


# ----------------------------------------------------------------------------------------------------------------------
# jax.random's implicit Gamma gradient, attached in one vectorised call
# ----------------------------------------------------------------------------------------------------------------------
@jax.custom_jvp
def _attach_gamma(z, alpha):
    """``z`` (a ``Gamma(alpha, 1)`` draw, ``alpha`` broadcast to its shape) with ``dz = random_gamma_grad(alpha, z)
    dalpha`` (paper, eq. 6)."""
    return z


@_attach_gamma.defjvp
def _attach_gamma_jvp(primals, tangents):
    z, alpha = primals
    return z, lax.random_gamma_grad(alpha, z) * tangents[1]


@jax.custom_jvp
def _attach_loggamma(log_z, alpha):
    """``log z`` of a ``Gamma(alpha, 1)`` draw with ``d log z = random_gamma_grad(alpha, z) / z dalpha``; ``z`` that
    underflows is replaced by the smallest normal number, as ``jax.random.loggamma`` does."""
    return log_z


@_attach_loggamma.defjvp
def _attach_loggamma_jvp(primals, tangents):
    log_z, alpha = primals
    z = jnp.exp(log_z)
    z = jnp.where(z == 0, jnp.finfo(z.dtype).tiny, z)
    return log_z, lax.random_gamma_grad(alpha, z) / z * tangents[1]


@jax.custom_jvp
def _sigmoid(x):
    return jax.nn.sigmoid(x)


@_sigmoid.defjvp
def _sigmoid_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    return jax.nn.sigmoid(x), jax.nn.sigmoid(x) * jax.nn.sigmoid(-x) * dx


def gamma_rsample(key, alpha, shape, dtype) -> Array:
    """``jax.random.gamma(key, alpha, shape)`` with the same implicit gradient, evaluated vectorised."""
    a = jnp.broadcast_to(jnp.asarray(alpha, dtype), shape)
    z = jax.random.gamma(key, lax.stop_gradient(a), shape, dtype=dtype)
    return _attach_gamma(lax.stop_gradient(z), a)


def loggamma_rsample(key, alpha, shape, dtype) -> Array:
    """``jax.random.loggamma(key, alpha, shape)`` with the same implicit gradient, evaluated vectorised."""
    a = jnp.broadcast_to(jnp.asarray(alpha, dtype), shape)
    lz = jax.random.loggamma(key, lax.stop_gradient(a), shape, dtype=dtype)
    return _attach_loggamma(lax.stop_gradient(lz), a)


class Distribution(eqx.Module):
    """Common interface (module docstring)."""

    @property
    @abc.abstractmethod
    def batch_shape(self) -> tuple:
        ...

    @property
    @abc.abstractmethod
    def event_shape(self) -> tuple:
        ...

    @abc.abstractmethod
    def rsample(self, key, sample_shape: Sequence[int] = ()) -> Array:
        """Reparameterised draws of shape ``sample_shape + batch_shape + event_shape``."""

    @abc.abstractmethod
    def log_prob(self, x) -> Array:
        """Log-density of ``x`` (shape ``... + event_shape``), shape ``...``."""

    def sample(self, key, sample_shape: Sequence[int] = ()) -> Array:
        """Draws without gradients."""
        return lax.stop_gradient(self.rsample(key, sample_shape))

    def _shape(self, sample_shape) -> tuple:
        return tuple(sample_shape) + tuple(self.batch_shape)


LOG_2PI = math.log(2.0 * math.pi)


class Normal(Distribution):
    """Diagonal Gaussian ``N(loc, scale^2)`` with the classic reparameterisation ``z = loc + scale * eps``."""

    loc: jax.Array
    scale: jax.Array

    def __init__(self, loc, scale):
        self.loc = jnp.asarray(loc)
        self.scale = jnp.asarray(scale)

    @property
    def batch_shape(self):
        return jnp.broadcast_shapes(jnp.shape(self.loc), jnp.shape(self.scale))

    @property
    def event_shape(self):
        return ()

    def rsample(self, key, sample_shape=()):
        shape = self._shape(sample_shape)
        eps = jax.random.normal(key, shape, dtype=jnp.result_type(self.loc, self.scale))
        return self.loc + self.scale * eps

    def log_prob(self, x):
        u = (x - self.loc) / self.scale
        return -0.5 * u * u - jnp.log(self.scale) - 0.5 * LOG_2PI

    def mean(self):
        return jnp.broadcast_to(self.loc, self.batch_shape)


class Gamma(Distribution):
    r"""``Gamma(concentration, rate)``: ``q(z) = rate^a z^{a-1} e^{-rate z} / Gamma(a)``, ``z > 0``.

    ``rsample`` is ``jax.random.gamma(key, a) / rate`` with ``jax.random``'s implicit gradient in ``a``
    (paper, eq. 6, with ``F = P(a, rate z)``).
    """

    concentration: Array
    rate: Array

    def __init__(self, concentration, rate=1.0):
        self.concentration = jnp.asarray(concentration)
        self.rate = jnp.asarray(rate)

    def __check_init__(self):
        check_positive("concentration", self.concentration)
        check_positive("rate", self.rate)

    @property
    def batch_shape(self):
        return jnp.broadcast_shapes(jnp.shape(self.concentration), jnp.shape(self.rate))

    @property
    def event_shape(self):
        return ()

    def _params(self):
        dt = float_dtype(self.concentration, self.rate)
        return self.concentration.astype(dt), self.rate.astype(dt), dt

    def rsample(self, key, sample_shape=()):
        a, rate, dt = self._params()
        shape = self._shape(sample_shape)
        return gamma_rsample(key, a, shape, dt) / rate

    def log_prob(self, x):
        a, rate, _ = self._params()
        x = jnp.asarray(x)
        lp = a * jnp.log(rate) + (a - 1.0) * jnp.log(x) - rate * x - gammaln(a)
        lp = jnp.where(x > 0, lp, -jnp.inf)
        return jnp.where((a > 0) & (rate > 0), lp, jnp.nan)

    def cdf(self, x):
        a, rate, _ = self._params()
        return gammainc(a, rate * jnp.maximum(jnp.asarray(x), 0.0))

    def mean(self):
        a, rate, _ = self._params()
        return a / rate


class Beta(Distribution):
    r"""``Beta(concentration1 = a, concentration0 = b)``: ``q(z) = z^{a-1} (1-z)^{b-1} / B(a, b)`` on ``(0, 1)``.

    ``rsample`` is ``jax.random.beta`` (``G_a / (G_a + G_b)`` with the Gamma implicit gradients; module docstring).
    """

    concentration1: Array
    concentration0: Array

    def __init__(self, concentration1, concentration0):
        self.concentration1 = jnp.asarray(concentration1)
        self.concentration0 = jnp.asarray(concentration0)

    def __check_init__(self):
        check_positive("concentration1", self.concentration1)
        check_positive("concentration0", self.concentration0)

    @property
    def batch_shape(self):
        return jnp.broadcast_shapes(jnp.shape(self.concentration1), jnp.shape(self.concentration0))

    @property
    def event_shape(self):
        return ()

    def _params(self):
        dt = float_dtype(self.concentration1, self.concentration0)
        return self.concentration1.astype(dt), self.concentration0.astype(dt), dt

    def rsample(self, key, sample_shape=()):
        a, b, dt = self._params()
        shape = self._shape(sample_shape)
        # jax.random.beta's draws (same key split, log-Gammas), z = G_a/(G_a+G_b) = sigmoid(log G_a - log G_b):
        # equal to jax.random.beta's value up to rounding; the sigmoid's derivative is taken as
        # sigmoid(x) sigmoid(-x), which keeps dz/da accurate where z rounds to 1 (there 1 - z = 0 in floating point
        # and the quotient rule, as in jax.random.beta, returns 0).
        key_a, key_b = jax.random.split(key)
        log_ga = loggamma_rsample(key_a, a, shape, dt)
        log_gb = loggamma_rsample(key_b, b, shape, dt)
        return _sigmoid(log_ga - log_gb)

    def log_prob(self, x):
        a, b, _ = self._params()
        x = jnp.asarray(x)
        lp = (a - 1.0) * jnp.log(x) + (b - 1.0) * jnp.log1p(-x) - betaln(a, b)
        lp = jnp.where((x > 0) & (x < 1), lp, -jnp.inf)
        return jnp.where((a > 0) & (b > 0), lp, jnp.nan)

    def cdf(self, x):
        """``I_x(a, b)`` (``jax.scipy.special.betainc``: differentiable in ``x`` only)."""
        a, b, _ = self._params()
        return betainc(a, b, jnp.clip(jnp.asarray(x), 0.0, 1.0))

    def mean(self):
        a, b, _ = self._params()
        return a / (a + b)


class Dirichlet(Distribution):
    r"""``Dirichlet(concentration)`` on the simplex, ``concentration`` of shape ``batch + (K,)``:
    ``q(z) = Gamma(alpha_0) / prod_k Gamma(alpha_k) prod_k z_k^{alpha_k - 1}``, ``alpha_0 = sum_k alpha_k``.

    ``rsample`` is ``jax.random.dirichlet`` (``softmax`` of log-Gamma draws with their implicit gradients).
    """

    concentration: Array

    def __init__(self, concentration):
        self.concentration = jnp.asarray(concentration)
        if self.concentration.ndim < 1:
            raise ValueError("Dirichlet concentration must have at least one dimension (the event dimension K)")

    def __check_init__(self):
        check_positive("concentration", self.concentration)

    @property
    def batch_shape(self):
        return tuple(jnp.shape(self.concentration)[:-1])

    @property
    def event_shape(self):
        return tuple(jnp.shape(self.concentration)[-1:])

    def _alpha(self):
        dt = float_dtype(self.concentration)
        return self.concentration.astype(dt), dt

    def rsample(self, key, sample_shape=()):
        alpha, dt = self._alpha()
        shape = self._shape(sample_shape)
        # exactly jax.random.dirichlet's computation (softmax of log-Gammas), with the vectorised gradient
        return jax.nn.softmax(loggamma_rsample(key, alpha, shape + self.event_shape, dt), axis=-1)

    def log_prob(self, x):
        alpha, _ = self._alpha()
        x = jnp.asarray(x)
        norm = gammaln(jnp.sum(alpha, -1)) - jnp.sum(gammaln(alpha), -1)
        lp = jnp.sum(jnp.where(alpha == 1.0, 0.0, (alpha - 1.0) * jnp.log(x)), -1) + norm
        inside = jnp.all(x > 0, -1) & (jnp.abs(jnp.sum(x, -1) - 1.0) < 1e3 * jnp.finfo(x.dtype).eps)
        lp = jnp.where(inside, lp, -jnp.inf)
        return jnp.where(jnp.all(alpha > 0, -1), lp, jnp.nan)

    def mean(self):
        alpha, _ = self._alpha()
        return alpha / jnp.sum(alpha, -1, keepdims=True)
