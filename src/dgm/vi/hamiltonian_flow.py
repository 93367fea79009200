r"""Hamiltonian importance sampling (HIS) as a normalizing flow with tempering (Caterini, Doucet & Sejdinovic 2018).

The flow acts on the extended space ``(z, rho)`` of position and momentum, ``d = dim z``.  For a target
``pi(z)`` known up to a constant (``log_target(z) = log p(x, z)`` in a VAE, any ``log_density(z)`` standalone) and
an initial density ``q0(z)``, one draw is (the paper's Algorithm 1, "HIS"; Algorithm 2 trains it inside a VAE)::

    z_0 ~ q0,   gamma_0 ~ N(0, I_d),   rho_0 = gamma_0 / sqrt(beta_0)            (rho_0 ~ N(0, beta_0^{-1} I))
    for k = 1..K:                                   (one leapfrog step on H = -log pi(z) + |rho|^2 / 2, then cooling)
        rho_half = rho_{k-1} + (eps/2) * grad log pi(z_{k-1})
        z_k      = z_{k-1}   +  eps    * rho_half
        rho'_k   = rho_half  + (eps/2) * grad log pi(z_k)
        rho_k    = sqrt(beta_{k-1} / beta_k) * rho'_k                               (tempering, beta_K = 1)

with a learnable step size ``eps`` per dimension (``eps = max_step * sigmoid(theta)``, as the authors' code).
Leapfrog is volume preserving, so the Jacobian of the whole map ``(z_0, rho_0) -> (z_K, rho_K)`` is that of the
cooling alone, ``prod_k (beta_{k-1}/beta_k)^{d/2} = beta_0^{d/2}``, and the flow's output has the *exact* density
(change of variables)::

    log q_K(z_K, rho_K) = log q0(z_0) + log N(rho_0; 0, beta_0^{-1} I) - (d/2) log beta_0
                        = log q0(z_0) + log N(gamma_0; 0, I).                                (:func:`log_density`)

The paper's extended-space ELBO (the Hamiltonian ELBO: the optimal reverse kernels make the auxiliary target
``pi(z_K) N(rho_K; 0, I)``, so no reverse kernel is learnt) is estimated by the importance log-weight

    log w = log pi(z_K) + log N(rho_K; 0, I) - log q0(z_0) - log N(gamma_0; 0, I)          (:func:`log_weight`)

``E[w] = p(x)`` (an unbiased estimator: every draw is a deterministic, invertible function of ``(z_0, gamma_0)``),
so ``E[log w] <= log p(x)`` and ``log mean_j w_j`` over many draws is an importance-sampling estimate of
``log p(x)``.  The whole draw is a reparameterised function of ``(z_0, gamma_0)``, differentiable in the target's
parameters (the model), in ``q0``'s (the encoder) and in the flow's (step sizes, temperatures) -- gradients flow
through ``grad log pi`` (second derivatives of the target; JAX does this).

Tempering (the paper's tempered HIS; Algorithm 1 is the fixed-schedule case), one of :data:`TEMPERINGS`:

* ``"none"``: ``beta_k = 1`` for all ``k``;
* ``"fixed"``: the paper's quadratic schedule ``1/sqrt(beta_k) = (1 - 1/sqrt(beta_0)) k^2/K^2 + 1/sqrt(beta_0)``
  with only the initial inverse temperature ``beta_0 in (0, 1)`` learnt (``1/sqrt(beta_0) = 1 + exp(tau)``);
* ``"free"``: every ratio ``alpha_k = sqrt(beta_{k-1}/beta_k) = sigmoid(a_k) in (0, 1)`` is learnt
  (``beta_0 = prod_k alpha_k^2``).

Written by hand: HIS/HVAE is in no JAX library we use (BlackJAX's HMC has an accept step and no tempering or flow
density).  Everything runs in ``lax.scan`` over the ``K`` steps; one gradient of ``log pi`` per step (the gradient at
``z_k`` is carried to step ``k + 1``), ``K + 1`` in all.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = ["TEMPERINGS", "HamiltonianFlow", "FlowOutput", "forward", "log_density", "log_weight", "sample"]

TEMPERINGS = ("none", "fixed", "free")
_LOG_2PI = math.log(2.0 * math.pi)


def _std_normal_logpdf(v):
    return -0.5 * jnp.sum(v * v, axis=-1) - 0.5 * v.shape[-1] * _LOG_2PI


def _check_positive_int(name, v):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    return int(v)


class HamiltonianFlow(eqx.Module):
    """The flow's learnable parameters: per-dimension step sizes and the tempering schedule.

    ``HamiltonianFlow(dim, n_steps, tempering="none", step_size=0.01, max_step=0.5, beta0=0.25)``:

    * ``n_steps`` = ``K >= 1`` leapfrog + cooling steps; ``tempering`` in :data:`TEMPERINGS`;
    * ``step_size``: initial ``eps`` (a scalar or ``(dim,)`` array) in ``(0, max_step)``;
    * ``beta0``: initial inverse temperature in ``(0, 1)`` for ``"fixed"`` / ``"free"`` (ignored for ``"none"``); for
      ``"free"`` the ratios start on the fixed schedule's values.
    """

    step_logit: jax.Array
    temper_param: jax.Array
    n_steps: int = eqx.field(static=True)
    tempering: str = eqx.field(static=True)
    max_step: float = eqx.field(static=True)

    def __init__(self, dim: int, n_steps: int, *, tempering: str = "none", step_size=0.01, max_step: float = 0.5,
                 beta0: float = 0.25, dtype=jnp.float32):
        dim = _check_positive_int("dim", dim)
        self.n_steps = _check_positive_int("n_steps (K)", n_steps)
        if tempering not in TEMPERINGS:
            raise ValueError(f"tempering must be one of {TEMPERINGS}, got {tempering!r}")
        self.tempering = tempering
        if not (isinstance(max_step, (int, float)) and math.isfinite(max_step) and max_step > 0):
            raise ValueError(f"max_step must be a finite positive number, got {max_step!r}")
        self.max_step = float(max_step)
        eps = np.broadcast_to(np.asarray(step_size, np.float64), (dim,))
        if not np.all(np.isfinite(eps)) or np.any(eps <= 0) or np.any(eps >= max_step):
            raise ValueError(f"step sizes must lie in (0, max_step={max_step}); got {np.asarray(step_size)}")
        self.step_logit = jnp.asarray(np.log(eps / (max_step - eps)), dtype)
        if tempering == "none":
            self.temper_param = jnp.zeros((0,), dtype)
            return
        if not (isinstance(beta0, (int, float)) and math.isfinite(beta0) and 0 < beta0 < 1):
            raise ValueError(f"beta0 (initial inverse temperature) must lie in (0, 1), got {beta0!r}")
        s0 = 1.0 / math.sqrt(beta0)
        if tempering == "fixed":
            self.temper_param = jnp.asarray(math.log(s0 - 1.0), dtype)
        else:
            alpha = np.exp(np.diff(np.log(_quadratic_schedule(s0, self.n_steps))))  # s_k / s_{k-1} in (0, 1)
            alpha = np.clip(alpha, 1e-6, 1 - 1e-6)
            self.temper_param = jnp.asarray(np.log(alpha / (1 - alpha)), dtype)

    @property
    def dim(self) -> int:
        return self.step_logit.shape[-1]

    def step_sizes(self):
        """``eps``, shape ``(dim,)``, in ``(0, max_step)``."""
        return self.max_step * jax.nn.sigmoid(self.step_logit)

    def log_momentum_factors(self):
        """``log alpha_k = (1/2) log(beta_{k-1} / beta_k)``, ``k = 1..K`` (all ``<= 0``; zeros without tempering)."""
        K = self.n_steps
        if self.tempering == "none":
            return jnp.zeros((K,), self.step_logit.dtype)
        if self.tempering == "fixed":
            s0 = 1.0 + jnp.exp(self.temper_param)
            k = jnp.arange(K + 1, dtype=self.step_logit.dtype)
            s = 1.0 + (s0 - 1.0) * (1.0 - (k / K) ** 2)  # 1/sqrt(beta_k): the paper's quadratic schedule
            return jnp.log(s[1:]) - jnp.log(s[:-1])
        return jax.nn.log_sigmoid(self.temper_param)

    def log_beta0(self):
        """``log beta_0 = 2 sum_k log alpha_k`` (``beta_K = 1``)."""
        return 2.0 * jnp.sum(self.log_momentum_factors())

    def log_det_jacobian(self):
        """``log |det d(z_K, rho_K) / d(z_0, rho_0)| = d sum_k log alpha_k = (d/2) log beta_0`` (leapfrog has unit
        Jacobian; each cooling multiplies ``d`` momenta by ``alpha_k``)."""
        return self.dim * jnp.sum(self.log_momentum_factors())


def _quadratic_schedule(s0: float, K: int) -> np.ndarray:
    k = np.arange(K + 1, dtype=np.float64)
    return 1.0 + (s0 - 1.0) * (1.0 - (k / K) ** 2)


class FlowOutput(NamedTuple):
    """One draw: the flow's output ``(z, rho)`` = ``(z_K, rho_K)``, its start ``(z0, gamma0)``, the importance
    log-weight ``log w`` and the flow's exact log-density ``log q_K(z_K, rho_K)``."""

    z: jax.Array
    rho: jax.Array
    z0: jax.Array
    gamma0: jax.Array
    log_weight: jax.Array
    log_q: jax.Array


def forward(flow: HamiltonianFlow, log_target, z0, rho0):
    """The flow map ``(z_0, rho_0) -> (z_K, rho_K)`` (module docstring), one point of shape ``(dim,)``; returns
    ``(z_K, rho_K, log pi(z_K))``.  ``log_target(z) -> scalar``; ``vmap`` for many points."""
    eps = flow.step_sizes().astype(z0.dtype)
    value_and_grad = jax.value_and_grad(log_target)
    _, g0 = value_and_grad(z0)

    def step(carry, log_alpha):
        z, rho, g, _ = carry
        rho_half = rho + 0.5 * eps * g
        z = z + eps * rho_half
        value, g = value_and_grad(z)
        rho = (rho_half + 0.5 * eps * g) * jnp.exp(log_alpha).astype(z.dtype)
        return (z, rho, g, value), None

    init = (z0, rho0, g0, jnp.zeros((), g0.dtype))
    (z, rho, _, value), _ = lax.scan(step, init, flow.log_momentum_factors())
    return z, rho, value


def log_density(flow: HamiltonianFlow, z0, rho0, log_q0_z0):
    """Exact ``log q_K(z_K, rho_K)`` of the flow's output ``(z_K, rho_K) = forward(z_0, rho_0)`` by change of
    variables: ``log q0(z_0) + log N(rho_0; 0, beta_0^{-1} I) - log|det J|`` (module docstring)."""
    log_beta0 = flow.log_beta0()
    d = rho0.shape[-1]
    log_n_rho0 = -0.5 * jnp.exp(log_beta0) * jnp.sum(rho0 * rho0, -1) + 0.5 * d * (log_beta0 - _LOG_2PI)
    return log_q0_z0 + log_n_rho0 - flow.log_det_jacobian()


def log_weight(flow: HamiltonianFlow, log_target, z0, gamma0, log_q0_z0) -> FlowOutput:
    """One draw of the extended-space importance weight from ``z_0`` (a reparameterised draw of ``q0`` with
    ``log q0(z_0) = log_q0_z0``) and ``gamma_0 ~ N(0, I)``:
    ``log w = log pi(z_K) + log N(rho_K; 0, I) - log q_K(z_K, rho_K)`` (module docstring; ``E log w`` is the HVAE
    ELBO, ``E w = p(x)``)."""
    rho0 = gamma0 * jnp.exp(-0.5 * flow.log_beta0()).astype(gamma0.dtype)
    z, rho, log_pi = forward(flow, log_target, z0, rho0)
    log_q = log_density(flow, z0, rho0, log_q0_z0)
    return FlowOutput(z, rho, z0, gamma0, log_pi + _std_normal_logpdf(rho) - log_q, log_q)


def sample(flow: HamiltonianFlow, log_target, q0, key, n: int) -> FlowOutput:
    """``n`` draws through the flow from ``q0`` (anything with ``rsample(key, (n,))`` and ``log_prob``, e.g.
    :class:`dgm.vi.distributions.Normal`); fields of the :class:`FlowOutput` have a leading axis ``n``."""
    n = _check_positive_int("n", n)
    k_z, k_g = jax.random.split(key)
    z0 = q0.rsample(k_z, (n,))
    gamma0 = jax.random.normal(k_g, z0.shape, z0.dtype)
    log_q0 = q0.log_prob(z0)
    if log_q0.ndim > 1:  # a per-coordinate log_prob: sum over the event
        log_q0 = jnp.sum(log_q0, axis=-1)
    return jax.vmap(lambda a, b, c: log_weight(flow, log_target, a, b, c))(z0, gamma0, log_q0)
