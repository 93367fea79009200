r"""The Hamiltonian VAE (Caterini, Doucet & Sejdinovic 2018, Algorithm 2): the VAE's encoder ``q(z | x)`` is the
initial density ``q0`` of a Hamiltonian importance-sampling flow (:mod:`dgm.vi.hamiltonian_flow`) whose target is
the model's own ``log p(x, z) = log p(x | z) + log p(z)``.

Per example, one draw: ``z_0 ~ q(z | x)``, ``gamma_0 ~ N(0, I)``, ``K`` leapfrog steps (learnt per-dimension step
sizes, shared by all data -- the flow is amortised through ``q0`` and the target) with tempering, and

    log w = log p(x, z_K) + log N(rho_K; 0, I) - log q(z_0 | x) - log N(gamma_0; 0, I),

whose expectation is the HVAE ELBO (the bound trained) and whose exponential is an unbiased estimate of ``p(x)``
(the importance weights of the test log-likelihood).  Gradients reach the decoder both through ``log p(x, z_K)``
and through the leapfrog steps (``grad_z log p(x, z)``), the encoder through ``z_0`` and the flow through its step
sizes and temperatures -- all by reparameterisation.

Registers ``hvaeK`` (no tempering), ``hvaeK-t`` (the paper's fixed quadratic schedule, ``beta_0`` learnt) and
``hvaeK-free`` (every temperature learnt) with :mod:`dgm.vae.registry`.  Gaussian latents only (the leapfrog moves
``z`` in ``R^d``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dgm.vae import latents
from dgm.vae.registry import Objective, register_objective
from dgm.vi import hamiltonian_flow as hf

__all__ = ["hvae_log_weights", "hvae_bound", "make_flow", "HVAE_STEP_SIZE", "HVAE_BETA0"]

HVAE_STEP_SIZE = 0.05  # initial leapfrog step size per dimension (learnt; at most max_step = 0.5)
HVAE_BETA0 = 0.5  # initial inverse temperature of the tempered variants (learnt)


def make_flow(config, n_steps: int, tempering: str = "none") -> hf.HamiltonianFlow:
    """A :class:`~dgm.vi.hamiltonian_flow.HamiltonianFlow` over the VAE's latent space (Gaussian latents only)."""
    if config.latent != "gaussian":
        raise ValueError(f"the Hamiltonian VAE needs Gaussian latents (z in R^d); this config has {config.latent!r}")
    return hf.HamiltonianFlow(config.latent_dim, n_steps, tempering=tempering, step_size=HVAE_STEP_SIZE,
                              beta0=HVAE_BETA0)


def hvae_log_weights(vae, flow, x, key, k: int = 1):
    """``k`` HVAE importance log-weights for one example ``x`` of shape ``(data_dim,)`` -> ``(k,)``
    (module docstring)."""
    q0 = vae.encode(x)

    def log_joint(z):
        return vae.log_likelihood_given(x, z) + vae.log_prior(z)

    k_z, k_g = jax.random.split(key)
    z0 = latents.rsample(q0, k_z, (k,))
    gamma0 = jax.random.normal(k_g, z0.shape, z0.dtype)
    log_q0 = latents.log_prob(q0, z0)
    return jax.vmap(lambda a, b, c: hf.log_weight(flow, log_joint, a, b, c).log_weight)(z0, gamma0, log_q0)


def hvae_bound(vae, flow, x, key):
    """Per-example HVAE ELBO estimates (one draw each) for a minibatch ``x`` of shape ``(n, data_dim)``."""
    keys = jax.random.split(key, x.shape[0])
    return jax.vmap(lambda xi, ki: hvae_log_weights(vae, flow, xi, ki, 1)[0])(x, keys)


_TEMPERING = {"": "none", "-t": "fixed", "-free": "free"}
_DESCRIPTION = {"none": "no tempering", "fixed": "fixed quadratic tempering", "free": "free tempering"}


def _make_hvae(groups, config, key):
    k = int(groups["k"])
    tempering = _TEMPERING[groups["temper"] or ""]
    flow = make_flow(config, k, tempering)
    return Objective(f"hvae{k}", flow, hvae_bound, hvae_log_weights,
                     f"HVAE: K={k} leapfrog steps, {_DESCRIPTION[tempering]}")


register_objective(r"hvae(?P<k>\d+)(?P<temper>-t|-free)?", _make_hvae, example="hvae5-t",
                   help="Hamiltonian VAE with K leapfrog steps (Caterini et al. 2018); '-t': the paper's fixed "
                        "quadratic tempering (beta_0 learnt), '-free': every temperature learnt, none: no tempering")
