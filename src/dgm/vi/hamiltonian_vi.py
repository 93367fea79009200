r"""The Hamiltonian importance-sampling flow as a standalone variational family for a fixed target.

``HamiltonianVI(dim, n_steps, tempering=...)``: ``q0 = N(loc, diag(scale^2))`` (learnt) followed by the HIS flow of
:mod:`dgm.vi.hamiltonian_flow` on ``log_density(z)`` (Caterini, Doucet & Sejdinovic 2018, Algorithm 1 with ``q0``
and the flow parameters optimised).  Like the other VI families it draws reparameterised samples
(``sample(log_density, key, n)``, differentiable in every parameter); unlike them its density is exact only on the
extended space ``(z, rho)`` (``FlowOutput.log_q``), the marginal of ``z`` being intractable, so it needs the target
to draw and offers, instead of ``log_prob(z)``:

* ``elbo(log_density, key, n)``: ``mean_j log w_j`` (the extended-space ELBO, ``<= log Z`` in expectation);
* ``log_evidence(log_density, key, n)``: ``log mean_j w_j``, the importance-sampling estimate of
  ``log Z = log int exp(log_density)``.

:func:`fit` maximises the ELBO with Adam (optax), ``lax.scan`` over iterations in chunks, a tqdm bar.
"""

from __future__ import annotations

import math
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.scipy.special import logsumexp

from dgm.vi.distributions import Normal
from dgm.vi import hamiltonian_flow as hf

__all__ = ["HamiltonianVI", "fit"]


class HamiltonianVI(eqx.Module):
    """``q0 = N(loc, diag(exp(log_scale)^2))`` + a :class:`~dgm.vi.hamiltonian_flow.HamiltonianFlow`."""

    loc: jax.Array
    log_scale: jax.Array
    flow: hf.HamiltonianFlow

    def __init__(self, dim: int, n_steps: int, *, tempering: str = "none", loc=0.0, scale: float = 1.0,
                 step_size=0.05, max_step: float = 0.5, beta0: float = 0.25, dtype=jnp.float32):
        self.flow = hf.HamiltonianFlow(dim, n_steps, tempering=tempering, step_size=step_size, max_step=max_step,
                                       beta0=beta0, dtype=dtype)
        if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a finite positive number, got {scale!r}")
        self.loc = jnp.broadcast_to(jnp.asarray(loc, dtype), (dim,))
        self.log_scale = jnp.full((dim,), math.log(scale), dtype)

    def initial(self) -> Normal:
        return Normal(self.loc, jnp.exp(self.log_scale))

    def sample(self, log_density, key, n: int) -> hf.FlowOutput:
        """``n`` reparameterised draws through the flow (a :class:`~dgm.vi.hamiltonian_flow.FlowOutput`)."""
        return hf.sample(self.flow, log_density, self.initial(), key, n)

    def elbo(self, log_density, key, n: int):
        return jnp.mean(self.sample(log_density, key, n).log_weight)

    def log_evidence(self, log_density, key, n: int):
        lw = self.sample(log_density, key, n).log_weight
        return logsumexp(lw) - math.log(n)


def check_target(log_density, family: HamiltonianVI) -> None:
    """Refuse a target that is not finite with a finite gradient at ``q0``'s mean (NaN data, wrong shapes)."""
    try:
        value, grad = jax.value_and_grad(log_density)(family.loc)
    except Exception as err:
        raise ValueError(f"log_density cannot be evaluated at a point of shape {family.loc.shape}: "
                         f"{type(err).__name__}: {err}") from None
    if jnp.shape(value) != ():
        raise ValueError(f"log_density must return a scalar, got shape {jnp.shape(value)}")
    if not (np.isfinite(float(value)) and np.all(np.isfinite(np.asarray(grad)))):
        raise ValueError(f"log_density or its gradient is not finite at the initial mean (value {float(value)}); "
                         "check the data for NaN")


def fit(family: HamiltonianVI, log_density, *, steps: int = 1000, samples: int = 16, learning_rate: float = 1e-2,
        seed: int = 0, chunk: int = 100, progress: bool = True):
    """Maximise ``family.elbo(log_density, ., samples)`` with Adam for ``steps`` iterations; returns ``(family,
    elbo_trace)`` (the per-iteration ELBO estimates, numpy)."""
    for name, v in (("steps", steps), ("samples", samples), ("chunk", chunk)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    check_target(log_density, family)
    optimiser = optax.adam(learning_rate)
    params, static = eqx.partition(family, eqx.is_inexact_array)
    opt_state = optimiser.init(params)
    root = jax.random.key(seed)

    def loss(p, key):
        return -eqx.combine(p, static).elbo(log_density, key, samples)

    @jax.jit
    def run(params, opt_state, start):
        def body(carry, i):
            params, opt_state = carry
            value, grads = jax.value_and_grad(loss)(params, jax.random.fold_in(root, i))
            updates, opt_state = optimiser.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), -value

        (params, opt_state), trace = lax.scan(body, (params, opt_state), start + jnp.arange(chunk))
        return params, opt_state, trace

    from tqdm.auto import tqdm

    traces = []
    with tqdm(total=steps, desc="Hamiltonian VI", disable=not progress, file=sys.stderr) as bar:
        for start in range(0, steps, chunk):
            params, opt_state, trace = run(params, opt_state, start)
            traces.append(np.asarray(trace))
            bar.update(min(chunk, steps - start))
            bar.set_postfix_str(f"ELBO {float(np.mean(traces[-1])):.3f}", refresh=False)
    trace = np.concatenate(traces)[:steps]
    if not np.all(np.isfinite(trace)):
        raise FloatingPointError("the ELBO became non-finite during fit; lower learning_rate or the step sizes")
    return eqx.combine(params, static), trace
