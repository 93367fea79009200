"""Forward or reverse mode for a Jacobian, by its shape.

``jax.jacfwd`` of ``f : R^n -> R^m`` costs ``n`` Jacobian-vector products (JVPs, batched by ``vmap``) and
``jax.jacrev`` ``m`` vector-Jacobian products (VJPs); a VJP column costs about :data:`REVERSE_COST` JVP columns. The
rule (``mode="auto"``): reverse mode when ``REVERSE_COST * m < n``, forward mode otherwise. The geometries also
differentiate the Jacobian once more (the log-det gradient, eq. 20), which ``benchmarks/chmc_step_profile.py`` times
for both modes.
"""

from __future__ import annotations

import jax

JACOBIAN_MODES = ("auto", "forward", "reverse")
REVERSE_COST = 1.1
"""A VJP column in units of a JVP column. 1.1: on the pose generator (83 inputs, 72 outputs) the VJP of the
reverse-mode Jacobian measured 0.9x that of the forward-mode one (``benchmarks/chmc_step_profile.py``), and the
dense Lotka-Volterra geometry (104 inputs, 100 outputs) keeps the forward mode it was tuned with."""


def check_jacobian_mode(mode: str) -> str:
    if mode not in JACOBIAN_MODES:
        raise ValueError(f"jacobian_mode must be one of {JACOBIAN_MODES}, got {mode!r}")
    return mode


def resolve_jacobian_mode(mode: str, *, n_inputs: int, n_outputs: int) -> str:
    """``"forward"`` or ``"reverse"``: ``mode`` itself unless it is ``"auto"`` (then the rule of the module)."""
    check_jacobian_mode(mode)
    if mode != "auto":
        return mode
    return "reverse" if REVERSE_COST * n_outputs < n_inputs else "forward"


def jacobian_transform(mode: str, *, n_inputs: int, n_outputs: int):
    """``jax.jacfwd`` or ``jax.jacrev`` by :func:`resolve_jacobian_mode`."""
    return jax.jacrev if resolve_jacobian_mode(mode, n_inputs=n_inputs, n_outputs=n_outputs) == "reverse" else \
        jax.jacfwd
