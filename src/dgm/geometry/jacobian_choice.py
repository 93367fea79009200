"""Forward or reverse mode for a Jacobian, by its shape.

``jax.jacfwd`` of ``f : R^n -> R^m`` costs ``n`` Jacobian-vector products (JVPs, batched by ``vmap``) and
``jax.jacrev`` ``m`` vector-Jacobian products (VJPs). A VJP costs more than a JVP (it keeps the forward pass for the
backward one): :data:`REVERSE_COST` JVPs, measured on this project's generators (the pose generator, 83 inputs and
72 outputs, and the MNIST decoder, 50 inputs and 196 outputs: ``benchmarks/chmc_step_profile.py``). The rule
(``mode="auto"``): reverse mode when ``REVERSE_COST * m < n``, forward mode otherwise.
"""

from __future__ import annotations

import jax

JACOBIAN_MODES = ("auto", "forward", "reverse")
REVERSE_COST = 1.0
"""A VJP column in units of a JVP column, as the rule above uses it."""


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
