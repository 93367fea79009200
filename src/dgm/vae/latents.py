r"""Latent families of a VAE: the encoder's distribution ``q(z | x)``, the prior ``p(z)`` and how ``z`` enters the
decoder, for each of :data:`dgm.vae.config.LATENTS`.

======================  ==========================================  ==========================  ====================
family                  ``q(z | x)`` from encoder outputs ``a``     prior ``p(z)``              decoder input
======================  ==========================================  ==========================  ====================
``gaussian``            ``N(a_1, softplus(a_2)^2)`` per coordinate  ``N(0, I)``                 ``z``
``von_mises``           ``VonMises(atan2(a_1, a_2), softplus(a_3))`` uniform on ``[-pi, pi)^d`` ``(cos z, sin z)``
``gamma``               ``Gamma(softplus(a_1), softplus(a_2))``     ``Gamma(c_0, r_0)``         ``z``
``dirichlet``           ``Dirichlet(softplus(a))``                  ``Dirichlet(c_0 1)``        ``z``
======================  ==========================================  ==========================  ====================

(``softplus`` plus the config's ``min_scale``.)  Only the Gaussian has a classic location-scale reparameterisation;
the others are reparameterised by implicit differentiation (Figurnov, Mohamed & Mnih 2018, eq. 6) through
:class:`dgm.vi.von_mises.VonMises` and :mod:`dgm.vi.distributions` (Gamma, Dirichlet), so the ELBO's gradient needs no
score function.  A von Mises latent is fed to the decoder as ``(cos z, sin z)`` so the decoder is periodic in every
angle: the latent space *is* a torus.  The Gaussian family is :class:`dgm.vi.distributions.Normal` (re-exported
here).
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp

from dgm.vi.distributions import Dirichlet, Distribution, Gamma, Normal
from dgm.vi.von_mises import VonMises

__all__ = ["Normal", "UniformTorus", "encoder_output_dim", "posterior", "prior", "decoder_input_dim", "decoder_input",
           "log_prob", "rsample"]

_LOG_2PI = math.log(2.0 * math.pi)


class UniformTorus(Distribution):
    """Uniform distribution on the circle, one angle per entry of ``shape``: density ``(2 pi)^-1`` per coordinate;
    draws in ``[-pi, pi)``."""

    shape: tuple = eqx.field(static=True)

    def __init__(self, shape):
        self.shape = tuple(shape)

    @property
    def batch_shape(self):
        return self.shape

    @property
    def event_shape(self):
        return ()

    def rsample(self, key, sample_shape=()):
        return jax.random.uniform(key, self._shape(sample_shape), minval=-math.pi, maxval=math.pi)

    def log_prob(self, x):
        """``-log(2 pi)`` per coordinate for every finite angle (angles are points on the circle, as for
        :class:`dgm.vi.von_mises.VonMises`, whose density is periodic too)."""
        x = jnp.asarray(x)
        return jnp.where(jnp.isfinite(x), -_LOG_2PI, jnp.nan).astype(jnp.result_type(float, x.dtype))


def encoder_output_dim(config) -> int:
    """Number of encoder outputs needed to parameterise ``q(z | x)``."""
    per = {"gaussian": 2, "von_mises": 3, "gamma": 2, "dirichlet": 1}[config.latent]
    return per * config.latent_dim


def posterior(config, a) -> Distribution:
    """``q(z | x)`` from the encoder's raw outputs ``a`` (shape ``(encoder_output_dim,)``; table in the module
    docstring)."""
    d, floor = config.latent_dim, config.min_scale
    pos = lambda v: jax.nn.softplus(v) + floor  # noqa: E731
    if config.latent == "gaussian":
        return Normal(a[:d], pos(a[d:]))
    if config.latent == "von_mises":
        return VonMises(jnp.arctan2(a[:d], a[d:2 * d]), pos(a[2 * d:]))
    if config.latent == "gamma":
        return Gamma(pos(a[:d]), pos(a[d:]))
    return Dirichlet(pos(a))


def prior(config, dtype=jnp.float32) -> Distribution:
    """``p(z)`` (module docstring)."""
    d = config.latent_dim
    if config.latent == "gaussian":
        return Normal(jnp.zeros(d, dtype), jnp.ones(d, dtype))
    if config.latent == "von_mises":
        return UniformTorus((d,))
    if config.latent == "gamma":
        return Gamma(jnp.full(d, config.prior_concentration, dtype), jnp.full(d, config.prior_rate, dtype))
    return Dirichlet(jnp.full(d, config.prior_concentration, dtype))


def rsample(dist: Distribution, key, sample_shape=()) -> jax.Array:
    """Reparameterised draws; Gamma and Dirichlet draws that underflow to exactly 0 (possible for small
    concentrations, see :mod:`dgm.vi.distributions`) are raised to the smallest normal number so that ``log z`` and
    the log-densities stay finite (the gradient is unchanged wherever no clamping happens)."""
    z = dist.rsample(key, sample_shape)
    if isinstance(dist, (Gamma, Dirichlet)):
        z = jnp.maximum(z, jnp.finfo(z.dtype).tiny)
    return z


def log_prob(dist: Distribution, z) -> jax.Array:
    """Joint log-density of a latent vector: sums the per-coordinate families over the last axis (a Dirichlet's
    ``log_prob`` is already joint over its event axis)."""
    lp = dist.log_prob(z)
    return lp if dist.event_shape else jnp.sum(lp, axis=-1)


def decoder_input_dim(config) -> int:
    return 2 * config.latent_dim if config.latent == "von_mises" else config.latent_dim


def decoder_input(config, z) -> jax.Array:
    """What the decoder sees: ``(cos z, sin z)`` for angles (periodic decoder), ``z`` otherwise."""
    if config.latent == "von_mises":
        return jnp.concatenate([jnp.cos(z), jnp.sin(z)], axis=-1)
    return z
