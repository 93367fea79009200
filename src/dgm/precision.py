"""Float64 for manifold work, made explicit.

Newton projections converge on ``|g(u) - x_obs|_inf < tol`` with ``tol`` around ``1e-8``; in float32 (machine epsilon
``1.2e-7``) such a tolerance is unreachable, every projection fails and an adapting step size shrinks to nothing.
dgm therefore never runs manifold work in float32:

* :func:`dgm.sample` runs inside :func:`float64` (JAX's scoped ``enable_x64``), leaving the global flag untouched;
* the low-level kernels check their inputs with :func:`require_float64` and raise a clear error instead.
"""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp


@contextlib.contextmanager
def float64():
    """Scoped switch to 64-bit JAX arrays (``jax.enable_x64(True)``); the global setting is restored on exit."""
    with jax.enable_x64(True):
        yield


def require_float64(array, what: str = "position") -> None:
    """Raise ``TypeError`` unless ``array`` is float64 (checked on the abstract value, so it works under ``jit``)."""
    dtype = jnp.result_type(array)
    if dtype != jnp.float64:
        raise TypeError(
            f"constrained HMC needs float64 but the {what} has dtype {dtype}. Run inside `with dgm.float64():` "
            "(or enable jax_enable_x64) and pass float64 arrays; a 1e-8 projection tolerance is unreachable in float32."
        )
