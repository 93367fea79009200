"""The stochastic Lotka–Volterra model of :mod:`dgm.models.lotka_volterra` declared as a Markov generator.

Same generator, inputs, observations, latents and exact initialiser as
:func:`dgm.models.lotka_volterra.lotka_volterra` (everything is imported from there, nothing is copied), but built
with :func:`dgm.structure.markov_model`: state ``x_t = (prey, predator)`` (``D = 2``), per-step noise ``v_t`` (2
standard-normal entries), parameters ``z = exp(-2 + u1)`` (``L = 4``). :func:`dgm.sample` therefore uses the
linear-time :class:`~dgm.geometry.structured.StructuredGeometry` (``O(T)`` per step instead of ``O(T^3)``); pass
``geometry="dense"`` to compare.
"""

from __future__ import annotations

from typing import Optional, Sequence

import jax
import numpy as np

from dgm.model import GenerativeModel
from dgm.models import lotka_volterra as lv
from dgm.structure import markov_model

Array = jax.Array


def transition(x_prev: Array, z: Array, v: Array, *, dt: float = 1.0, step: str = "semi-implicit") -> Array:
    """One step ``x_t = f(x_{t-1}, z, v_t)`` of :func:`dgm.models.lotka_volterra.simulate` (same arithmetic)."""
    return lv.simulate(z, v, dt=dt, x0=(x_prev[0], x_prev[1]), step=step)[0]


def lotka_volterra_markov(
    observations: Optional[np.ndarray] = None,
    *,
    n_steps: int = 50,
    dt: float = 1.0,
    x0: Sequence[float] = (100.0, 100.0),
    step: str = "semi-implicit",
    init_spread: float = 1.0,
) -> GenerativeModel:
    """Lotka–Volterra with Markov structure; arguments as :func:`dgm.models.lotka_volterra.lotka_volterra`."""
    base = lv.lotka_volterra(observations, n_steps=n_steps, dt=dt, x0=x0, step=step, init_spread=init_spread)
    dt = float(dt)
    x0 = np.asarray([float(x0[0]), float(x0[1])])

    def step_fn(x_prev, z, v):
        return transition(x_prev, z, v, dt=dt, step=step)

    return markov_model(
        step_fn,
        x0,
        int(n_steps),
        lv.parameters_from_inputs,
        lv.N_PARAMETERS,
        latents=base.latents,
        init=base.init,
        name=f"{base.name}-markov",
    )
