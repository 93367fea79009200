r"""The VAE as an equinox module: an MLP encoder for ``q(z | x)`` and an MLP decoder for ``p(x | z)``.

Model (Kingma & Welling 2014)::

    z ~ p(z),    x | z ~ N(mean(z), sigma^2 I)         (likelihood="gaussian")
                 x | z ~ Bernoulli(sigmoid(logits(z)))  (likelihood="bernoulli")

with ``mean = output_activation(decoder(z))`` and ``q(z | x)`` one of the families of :mod:`dgm.vae.latents`
parameterised by ``encoder(x)``.  Per example, no batch axis: batch with ``jax.vmap`` (the objectives do).

The MLP is written here because ``eqx.nn.MLP`` has one width for all hidden layers; ours takes a width per layer.
Parameters are float32 by default (``VAE.astype(jnp.float64)`` returns a float64 copy, e.g. to use the decoder inside
``dgm.float64()`` manifold work).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax

from dgm.vae import latents
from dgm.vae.config import VAEConfig

__all__ = ["MLP", "VAE", "activation_fn"]

_LOG_2PI = math.log(2.0 * math.pi)


def activation_fn(name: str):
    return {"tanh": jnp.tanh, "relu": jax.nn.relu, "softplus": jax.nn.softplus, "elu": jax.nn.elu,
            "gelu": jax.nn.gelu, "sigmoid": jax.nn.sigmoid, "silu": jax.nn.silu, "identity": lambda v: v}[name]


class MLP(eqx.Module):
    """``in_dim -> widths[0] -> ... -> widths[-1] -> out_dim``, ``activation`` between layers, linear output."""

    layers: tuple
    activation: str = eqx.field(static=True)

    def __init__(self, in_dim: int, widths: Sequence[int], out_dim: int, activation: str, *, key):
        sizes = [in_dim, *widths, out_dim]
        keys = jax.random.split(key, len(sizes) - 1)
        self.layers = tuple(eqx.nn.Linear(a, b, key=k) for a, b, k in zip(sizes[:-1], sizes[1:], keys))
        self.activation = activation

    def __call__(self, v):
        act = activation_fn(self.activation)
        for layer in self.layers[:-1]:
            v = act(layer(v))
        return self.layers[-1](v)


class VAE(eqx.Module):
    """A VAE built from a :class:`VAEConfig` and a PRNG key: ``VAE(config, key=jax.random.key(0))``.

    Public face (per example; ``vmap`` for batches):

    * ``encode(x) -> q(z | x)`` (a distribution with ``rsample``/``log_prob``), ``prior() -> p(z)``;
    * ``decoder_mean(h) -> (data_dim,)``: Gaussian pixel means / Bernoulli probabilities at latent ``h``;
    * ``output_sigma``: the Gaussian ``sigma`` (scalar array; gradient stopped unless ``learn_sigma``);
    * ``log_likelihood_given(x, z)``: ``log p(x | z)``; ``log_prior(z)``.
    """

    config: VAEConfig = eqx.field(static=True)
    encoder: MLP
    decoder: MLP
    log_sigma: jax.Array

    def __init__(self, config: VAEConfig, *, key):
        if not isinstance(config, VAEConfig):
            raise TypeError(f"VAE needs a dgm.vae.VAEConfig, got {type(config).__name__}")
        k_enc, k_dec = jax.random.split(key)
        self.config = config
        self.encoder = MLP(config.data_dim, config.hidden, latents.encoder_output_dim(config), config.activation,
                           key=k_enc)
        self.decoder = MLP(latents.decoder_input_dim(config), config.decoder_widths, config.data_dim,
                           config.activation, key=k_dec)
        self.log_sigma = jnp.asarray(math.log(config.sigma), jnp.float32)

    # -- encoder / prior -------------------------------------------------------------------------------------------
    def encode(self, x):
        """``q(z | x)`` for one example ``x`` of shape ``(data_dim,)``."""
        return latents.posterior(self.config, self.encoder(x))

    def prior(self):
        return latents.prior(self.config, self.log_sigma.dtype)

    def log_prior(self, z):
        return latents.log_prob(self.prior(), z)

    # -- decoder ---------------------------------------------------------------------------------------------------
    def decoder_output(self, h):
        """Raw decoder output at latent ``h``: pre-activation means (Gaussian) or logits (Bernoulli)."""
        h = jnp.asarray(h)
        if h.shape[-1:] != (self.config.latent_dim,):
            raise ValueError(f"latent code must have trailing dimension latent_dim={self.config.latent_dim}, "
                             f"got shape {h.shape}")
        return self.decoder(latents.decoder_input(self.config, h))

    def decoder_mean(self, h):
        """``E[x | z = h]``, shape ``(data_dim,)``: Gaussian pixel means or Bernoulli probabilities."""
        out = self.decoder_output(h)
        if self.config.likelihood == "bernoulli":
            return jax.nn.sigmoid(out)
        return activation_fn(self.config.output_activation)(out)

    @property
    def output_sigma(self):
        """Gaussian output noise standard deviation (a scalar float array)."""
        if self.config.likelihood != "gaussian":
            raise ValueError("output_sigma is defined for a Gaussian likelihood only; this VAE's is "
                             f"{self.config.likelihood!r}")
        log_sigma = self.log_sigma if self.config.learn_sigma else lax.stop_gradient(self.log_sigma)
        return jnp.exp(log_sigma)

    def log_likelihood_given(self, x, z):
        """``log p(x | z)`` summed over the ``data_dim`` entries."""
        if self.config.likelihood == "bernoulli":
            logits = self.decoder_output(z)
            return jnp.sum(x * logits - jax.nn.softplus(logits), axis=-1)
        mean = self.decoder_mean(z)
        log_sigma = self.log_sigma if self.config.learn_sigma else lax.stop_gradient(self.log_sigma)
        r = (x - mean) * jnp.exp(-log_sigma)
        return jnp.sum(-0.5 * r * r - log_sigma - 0.5 * _LOG_2PI, axis=-1)

    def sample(self, key, n: int):
        """``n`` draws ``(z, x)`` from the model: ``z ~ p(z)``, ``x ~ p(x | z)``."""
        k_z, k_x = jax.random.split(key)
        z = self.prior().sample(k_z, (n,))
        mean = jax.vmap(self.decoder_mean)(z)
        if self.config.likelihood == "bernoulli":
            return z, jax.random.bernoulli(k_x, mean).astype(mean.dtype)
        return z, mean + self.output_sigma * jax.random.normal(k_x, mean.shape, mean.dtype)

    def with_output_sigma(self, sigma: float) -> "VAE":
        """The same encoder and decoder with another fixed Gaussian output noise ``sigma`` (e.g. a decoder trained at
        one noise level used as a generator at another); the copy's config records the new ``sigma``."""
        if self.config.likelihood != "gaussian":
            raise ValueError("with_output_sigma needs a Gaussian likelihood; this VAE's is "
                             f"{self.config.likelihood!r}")
        fresh = VAE(dataclasses.replace(self.config, sigma=float(sigma), learn_sigma=False), key=jax.random.key(0))
        fresh = eqx.tree_at(lambda v: (v.encoder, v.decoder), fresh, (self.encoder, self.decoder))
        return eqx.tree_at(lambda v: v.log_sigma, fresh, jnp.asarray(math.log(sigma), self.log_sigma.dtype))

    def astype(self, dtype) -> "VAE":
        """A copy with every floating parameter cast to ``dtype`` (e.g. ``jnp.float64`` inside ``dgm.float64()``)."""
        return jax.tree_util.tree_map(
            lambda v: v.astype(dtype) if eqx.is_inexact_array(v) else v, self)
