"""Windowed warm-up: step size (dual averaging) and a diagonal mass matrix adapted on the manifold's draws.

Stan's schedule, from BlackJAX (``blackjax.adaptation.staged_adaptation.build_schedule``): a fast initial buffer
(step size only), slow windows doubling in size in which each chain's draws of ``u`` on the manifold feed BlackJAX's
Welford estimator (``blackjax.adaptation.mass_matrix.mass_matrix_adaptation``, diagonal, with Stan's regularisation
towards ``1e-3 I``), and a final fast buffer. At the end of each slow window the chain's inverse mass matrix becomes
the window's estimate, the state is re-expressed under it (``Method.set_inverse_mass``: the point is recomputed in the
new scaled coordinates, :mod:`dgm.kernels.metric`) and dual averaging restarts from the current step size (as
BlackJAX's ``window_adaptation`` does). Each chain adapts its own metric and step size, like the driver's plain
warm-up. Used by :func:`dgm.sample` for methods with ``set_inverse_mass`` when the step size is adapted; the
signature is that of the driver's ``_phase``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.adaptation.mass_matrix import mass_matrix_adaptation
from blackjax.adaptation.staged_adaptation import build_schedule
from blackjax.adaptation.step_size import dual_averaging_adaptation

from dgm.driver import _over_chains
from dgm.kernels.base import Method


def windowed_phase(method: Method, n_chains: int, n_iterations: int, adapt: bool, record: bool, progress,
                   chain_method: str = "vectorized", thin: int = 1):
    """A jittable ``(states, key, step_sizes) -> (states, step_sizes, outputs)`` warm-up adapting step size and
    diagonal metric (``outputs["inverse_mass"]``: each chain's final ``diag M^{-1}``)."""
    if method.set_inverse_mass is None:
        raise ValueError(f"method {method.name!r} has no adaptable metric")
    if not adapt or record or thin != 1:
        raise ValueError("windowed_phase is the adapting warm-up: adapt=True, record=False, thin=1")
    schedule = np.asarray(build_schedule(n_iterations)).reshape(n_iterations, 2)
    slow, window_end = jnp.asarray(schedule[:, 0] == 1), jnp.asarray(schedule[:, 1] == 1)
    da_init, da_update, da_final = dual_averaging_adaptation(method.target_acceptance)
    mm_init, mm_update, mm_final = mass_matrix_adaptation(is_diagonal_matrix=True)
    step_chains = _over_chains(method.step, chain_method)
    reexpress = _over_chains(method.set_inverse_mass, chain_method)

    def run(states, key, step_sizes):
        dim = jax.vmap(method.position)(states).shape[-1]
        da_state = jax.vmap(da_init)(step_sizes)
        mm_state = jax.vmap(lambda _: mm_init(dim))(jnp.arange(n_chains))

        def end_window(carry):
            states, da_state, mm_state = carry
            mm_state = jax.vmap(mm_final)(mm_state)
            states = reexpress(states, mm_state.inverse_mass_matrix)
            return states, jax.vmap(da_init)(jax.vmap(da_final)(da_state)), mm_state

        def body(carry, xs):
            states, da_state, mm_state = carry
            iteration, key, is_slow, is_end = xs
            current = jnp.exp(da_state.log_step_size)
            states, infos = step_chains(jax.random.split(key, n_chains), states, current)
            acceptance = jnp.nan_to_num(jax.vmap(method.acceptance)(infos), nan=0.0)
            da_state = jax.vmap(da_update)(da_state, acceptance)
            positions = jax.vmap(method.position)(states)
            mm_state = jax.lax.cond(is_slow, lambda m: jax.vmap(mm_update)(m, positions), lambda m: m, mm_state)
            states, da_state, mm_state = jax.lax.cond(is_end, end_window, lambda c: c, (states, da_state, mm_state))
            out = {"stats": jax.vmap(method.stats)(infos)}
            out["stats"]["step_size"] = current
            progress.tick(iteration, n_iterations)
            return (states, da_state, mm_state), out

        xs = (jnp.arange(n_iterations), jax.random.split(key, n_iterations), slow, window_end)
        (states, da_state, mm_state), outputs = jax.lax.scan(body, (states, da_state, mm_state), xs)
        outputs["inverse_mass"] = mm_state.inverse_mass_matrix
        return states, jax.vmap(da_final)(da_state), outputs

    return run
