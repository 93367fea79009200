"""HMC / NUTS in a noisy relaxation of the generative model (thin layer over BlackJAX).

Replacing the constraint ``g(u) = x_obs`` by Gaussian output noise of scale ``sigma`` gives an explicit density on the
inputs (the paper's section 2, Gaussian ABC kernel ``k_eps``):

    log pi_sigma(u) = log rho(u) + log N(x_obs; g(u), sigma^2 I)

which BlackJAX's HMC / NUTS sample directly. ``sigma -> 0`` recovers the manifold target only in the limit; this is
the like-for-like baseline (and ABC-HMC with ``sigma = epsilon``).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import blackjax
import jax
import jax.numpy as jnp

from dgm.model import GenerativeModel

Array = jax.Array


def noisy_log_density(model: GenerativeModel, x_obs: Array, noise_scale: float) -> Callable[[Array], Array]:
    """``u -> log rho(u) + log N(x_obs; g(u), noise_scale^2 I)`` (up to a constant)."""
    if not noise_scale > 0:
        raise ValueError(f"noise_scale must be positive, got {noise_scale!r}")

    def log_density(u):
        residual = (model.generator(u) - x_obs) / noise_scale
        return model.log_input_density(u) - 0.5 * jnp.sum(residual**2)

    return log_density


class HMCStats(NamedTuple):
    acceptance_rate: Array
    is_accepted: Array
    is_divergent: Array
    num_integration_steps: Array


def build_step(log_density: Callable, *, algorithm: str = "hmc", n_steps=(4, 8), max_num_doublings: int = 10):
    """``step(key, state, step_size) -> (state, info)`` with an identity mass matrix.

    ``algorithm="hmc"``: ``N_s ~ U{lo..hi}`` leapfrog steps (BlackJAX ``hmc``); ``"nuts"``: BlackJAX ``nuts``.
    """
    if algorithm == "hmc":
        kernel = blackjax.hmc.build_kernel()
        lo, hi = int(n_steps[0]), int(n_steps[1])

        def step(key, state, step_size):
            key_n, key_step = jax.random.split(key)
            n = jax.random.randint(key_n, (), lo, hi + 1)
            inverse_mass = jnp.ones_like(state.position)
            return kernel(key_step, state, log_density, step_size, inverse_mass, n)

    elif algorithm == "nuts":
        kernel = blackjax.nuts.build_kernel()

        def step(key, state, step_size):
            inverse_mass = jnp.ones_like(state.position)
            return kernel(key, state, log_density, step_size, inverse_mass, max_num_doublings)

    else:
        raise ValueError(f"algorithm must be 'hmc' or 'nuts', got {algorithm!r}")
    return step


def init(position: Array, log_density: Callable):
    return blackjax.hmc.init(position, log_density)


def stats(info) -> dict:
    acceptance = jnp.nan_to_num(info.acceptance_rate, nan=0.0)
    return {
        "acceptance_rate": acceptance,
        # NUTS always moves to a point of its trajectory (multinomial sampling): no accept flag of its own.
        "is_accepted": jnp.asarray(getattr(info, "is_accepted", jnp.ones_like(acceptance, dtype=bool))),
        "is_divergent": jnp.asarray(info.is_divergent),
        "num_integration_steps": jnp.asarray(info.num_integration_steps),
    }
