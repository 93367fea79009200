"""Float64 for manifold work, made explicit.

Newton projections converge on ``|g(u) - x_obs|_inf < tol`` with ``tol`` around ``1e-8``; in float32 (machine epsilon
``1.2e-7``) such a tolerance is unreachable, every projection fails and an adapting step size shrinks to nothing.
dgm therefore never runs manifold work in float32:

* :func:`dgm.sample` runs inside :func:`float64` (JAX's scoped ``enable_x64``), leaving the global flag untouched;
* the low-level kernels check their inputs with :func:`require_float64` and raise a clear error instead;
* :func:`warn_if_low_precision` warns when a generator computes with float32 values all the same (arrays closed over
  that were built before 64-bit mode was on), found by inspecting the traced program.
"""

from __future__ import annotations

import contextlib

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np


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


LOW_PRECISION = ("float32", "float16", "bfloat16")


def _sub_jaxprs(eqn):
    for value in eqn.params.values():
        for item in (value if isinstance(value, (list, tuple)) else [value]):
            if isinstance(item, jax.extend.core.ClosedJaxpr):
                yield item.jaxpr
            elif isinstance(item, jax.extend.core.Jaxpr):
                yield item


def low_precision_constants(fn, input_dim: int) -> list[str]:
    """The float32 (or lower) values that ``fn`` computes with when called on a float64 ``u`` of length
    ``input_dim``: traced with :func:`jax.make_jaxpr` inside :func:`float64`, the closed-over constants of low
    precision (``constvars``) and low-precision literals, and the values cast *from* low precision
    (``convert_element_type``), in the program and its sub-programs (loops, conditionals, ``jit``). Each is described
    as ``"<dtype>[shape] <how>"``. Empty for a generator computing in float64 throughout."""
    with float64():
        closed = jax.make_jaxpr(fn)(jax.ShapeDtypeStruct((input_dim,), jnp.float64))
    found = []
    for var, value in zip(closed.jaxpr.constvars, closed.consts):
        dtype = str(getattr(value, "dtype", var.aval.dtype))
        if dtype in LOW_PRECISION:
            found.append(f"{dtype}{list(np.shape(value))} closed-over constant")

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            for var in eqn.invars:
                aval = getattr(var, "aval", None)
                if isinstance(var, jax.extend.core.Literal) and str(getattr(aval, "dtype", "")) in LOW_PRECISION:
                    found.append(f"{aval.dtype}{list(aval.shape)} literal in {eqn.primitive.name}")
            if eqn.primitive.name == "convert_element_type":
                source = str(eqn.invars[0].aval.dtype)
                target = str(eqn.params.get("new_dtype"))
                if source in LOW_PRECISION and target not in LOW_PRECISION:
                    found.append(f"{source}{list(eqn.invars[0].aval.shape)} cast to {target}")
            for sub in _sub_jaxprs(eqn):
                walk(sub)

    walk(closed.jaxpr)
    return list(dict.fromkeys(found))


def warn_if_low_precision(fn, input_dim: int, name: str = "generator", stacklevel: int = 3) -> list[str]:
    """``UserWarning`` (with the remedy) when ``fn`` computes with float32 values although sampling runs in float64
    (:func:`low_precision_constants`): typically arrays built with ``jnp`` before 64-bit mode was on and closed over,
    which makes dgm sample the float32-rounded function -- its constraint residual reads ``1e-13`` while that of the
    model meant is ``1e-8`` or worse. Returns what was found."""
    found = low_precision_constants(fn, input_dim)
    if found:
        import warnings

        shown = "; ".join(found[:5]) + (f"; and {len(found) - 5} more" if len(found) > 5 else "")
        warnings.warn(
            f"{name} computes with float32 values while dgm samples in float64 ({shown}): the manifold sampled is "
            "that of the float32-rounded function, not of the model meant (residuals below tol hold for the "
            "rounded one only). Build the arrays it closes over as float64: NumPy arrays (np.asarray(..., "
            "dtype=np.float64)), or jnp arrays created inside `with dgm.float64():` or after "
            "jax.config.update('jax_enable_x64', True); for float32 network weights, cast them with "
            ".astype(jnp.float64).",
            UserWarning,
            stacklevel=stacklevel,
        )
    return found
