"""Windowed warm-up of a diagonal mass matrix on the manifold's draws (with the step size's dual averaging).

Stan's schedule, from BlackJAX (``blackjax.adaptation.staged_adaptation.build_schedule``): a fast initial buffer
(step size only), slow windows doubling in size in which each chain's draws of ``u`` on the manifold feed BlackJAX's
Welford estimator (``blackjax.adaptation.mass_matrix.mass_matrix_adaptation``, diagonal, with Stan's regularisation
towards ``1e-3 I``), and a final fast buffer. At the end of each slow window the chain's inverse mass matrix becomes
the window's estimate, the state is re-expressed under it (``Method.set_inverse_mass``: the point is recomputed in the
new scaled coordinates, :mod:`dgm.kernels.metric`) and dual averaging restarts from the current step size, as
BlackJAX's ``window_adaptation`` does. Each chain adapts its own metric and step size, like the driver's step size.
:func:`dgm.sample` runs this inside its compiled chunks for methods with ``set_inverse_mass`` when it adapts the
step size (``metric="diagonal"``); nothing here is specific to a kernel.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.adaptation.mass_matrix import mass_matrix_adaptation
from blackjax.adaptation.staged_adaptation import build_schedule
from blackjax.adaptation.step_size import dual_averaging_adaptation

_MM_INIT, _MM_UPDATE, _MM_FINAL = mass_matrix_adaptation(is_diagonal_matrix=True)


def warmup_schedule(n_warmup: int) -> np.ndarray:
    """``(n_warmup, 2)`` booleans per warm-up iteration: in a slow (metric) window; at the end of a slow window."""
    if n_warmup <= 0:
        return np.zeros((0, 2), bool)
    schedule = np.asarray(build_schedule(n_warmup)).reshape(n_warmup, 2)
    return np.stack([schedule[:, 0] == 1, schedule[:, 1] == 1], axis=1)


def initial_metric_state(n_chains: int, dim: int):
    """BlackJAX's mass-matrix adaptation state (identity ``M^{-1}``, empty Welford accumulator) for each chain."""
    return jax.vmap(lambda _: _MM_INIT(dim))(jnp.arange(n_chains))


ACCEPTANCE_RESOLUTION = 2.0 ** -20
"""Dual averaging sees acceptance probabilities rounded to multiples of this (:func:`acceptance_on_grid`)."""


def acceptance_on_grid(acceptance):
    """``acceptance`` rounded to a multiple of :data:`ACCEPTANCE_RESOLUTION` (``2**-20``), as dual averaging sees it.

    Programs holding different numbers of chains (a one-device ``vmap`` of 16 chains, four devices of 4, a
    ``lax.map`` of one) are compiled differently, and XLA's SIMD lanes and scalar loops round transcendental
    functions apart in the last bit (1e-13 measured in an acceptance probability). With a fixed step that stays at
    rounding level; dual averaging feeds every acceptance probability back into the step size and the chaotic
    trajectories amplify the difference to order 1 within 50 warm-up iterations (issue 21). On the grid the step
    sizes are bit-identical on every layout unless a difference straddles a grid point (about 1e-13 * 2**20 = 1e-7
    per update); the grid is far finer than the Monte Carlo noise dual averaging averages out."""
    return jnp.round(acceptance / ACCEPTANCE_RESOLUTION) * ACCEPTANCE_RESOLUTION


def metric_window_step(method, reexpress, states, da_state, mm_state, window):
    """One warm-up iteration's metric work, after the transition and the dual-averaging update.

    ``method``: the :class:`dgm.kernels.base.Method` (its ``position`` and ``target_acceptance``);
    ``window = (in_slow_window, at_window_end)`` (already off when not adapting); ``reexpress(states, inverse_mass)``
    is ``method.set_inverse_mass`` mapped over chains. Returns ``(states, da_state, mm_state)``."""
    in_slow, at_end = window[0], window[1]
    da_init, _, da_final = dual_averaging_adaptation(method.target_acceptance)
    positions = jax.vmap(method.position)(states)
    mm_state = jax.lax.cond(in_slow, lambda m: jax.vmap(_MM_UPDATE)(m, positions), lambda m: m, mm_state)

    def end_window(carry):
        states, da_state, mm_state = carry
        mm_state = jax.vmap(_MM_FINAL)(mm_state)
        states = reexpress(states, mm_state.inverse_mass_matrix)
        return states, jax.vmap(da_init)(jax.vmap(da_final)(da_state)), mm_state

    return jax.lax.cond(at_end, end_window, lambda c: c, (states, da_state, mm_state))
