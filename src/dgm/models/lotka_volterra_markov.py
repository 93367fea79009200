"""Back-compatible names: :func:`dgm.models.lotka_volterra.lotka_volterra` now declares its Markov structure itself.

``lotka_volterra_markov(...)`` is ``lotka_volterra(..., structured=True)`` and ``transition`` is the one-step map.
"""

from __future__ import annotations

from dgm.models.lotka_volterra import lotka_volterra, transition


def lotka_volterra_markov(*args, **kwargs):
    """Lotka–Volterra with Markov structure (the default of :func:`~dgm.models.lotka_volterra.lotka_volterra`)."""
    kwargs["structured"] = True
    return lotka_volterra(*args, **kwargs)


__all__ = ["lotka_volterra_markov", "transition"]
