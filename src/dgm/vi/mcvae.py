r"""Monte Carlo VAE bounds: annealed importance sampling with Langevin (L-MCVAE) and Metropolis-adjusted annealed
(A-MCVAE) transitions (Thin, Kotelevskii, Doucet, Durmus, Moulines & Panov, ICML 2021, arXiv:2106.15921).

Setting (the paper's section 2): a target ``gamma(z) = p(x, z)`` with ``Z = p(x)``, an initial density ``q_0(z) =
N(mu, diag sigma^2)`` (the encoder's ``q(z | x)``; reparameterised ``z_0 = mu + sigma * eps_0``), the annealing
path ``gamma_k = q_0^{1 - beta_k} gamma^{beta_k}`` with ``beta_k = k / (K + 1)``, ``k = 0..K+1`` (linear, as the
authors' code), and ``K`` Markov transitions ``M_k`` targeting ``pi_k = gamma_k / Z_k``, ``k = 1..K``.  Both bounds
are ``E[log w] <= log Z`` with ``E[w] = Z`` (sequential importance sampling on the path space, the paper's eq. for
the SIS/AIS ELBO); ``log mean_j w_j`` is an importance-sampling estimate of ``log p(x)``.

**L-MCVAE** (:func:`langevin_log_weight`; the paper's section 3, "Langevin Monte Carlo VAE").  ``M_k`` is the
unadjusted Langevin (ULA) kernel ``z_k = z_{k-1} + h_k grad log pi_k(z_{k-1}) + sqrt(2 h_k) eps_k`` and the backward
kernel is the same ULA kernel run from ``z_k`` (``L_{k-1}(z_k, z_{k-1}) = M_k(z_k, z_{k-1})``; ULA is nearly
``pi_k``-reversible).  The SIS weight is::

    log w = log gamma(z_K) - log q_0(z_0) + sum_k [ log M_k(z_k, z_{k-1}) - log M_k(z_{k-1}, z_k) ]
          = log gamma(z_K) - log q_0(z_0) + sum_k ( |eps_k|^2 - |eps'_k|^2 ) / 2,
    eps'_k = (z_{k-1} - z_k - h_k grad log pi_k(z_k)) / sqrt(2 h_k),

a smooth function of ``(eps_0, eps_{1:K})`` and of all parameters: the gradient is plain reparameterisation
(through ``grad log pi_k``, i.e. second derivatives of the model; JAX does them).

**A-MCVAE** (:func:`annealed_log_weight`; the paper's section 3, "Annealed Importance Sampling VAE").  ``M_k`` is
MALA targeting ``pi_k`` (Langevin proposal, MH accept/reject, ``pi_k``-reversible) and the backward kernels are the
reversals of the ``M_k``, which gives Neal's AIS weight::

    log w = sum_{k=0}^{K} (beta_{k+1} - beta_k) [ log gamma(z_k) - log q_0(z_k) ].

Given the decisions ``a_{1:K}`` (``a_k = 1{u_k <= alpha_k}``), every ``z_k`` is a smooth function of the Gaussian
noises, so (the paper's gradient estimator for A-MCVAE) ``grad E[log w] = E[ grad log w |_(a fixed) + (log w - b)
grad sum_k log P(a_k | z_{k-1}, eps_k) ]``: reparameterisation plus a score-function term for the accept/reject
decisions, with a control variate ``b`` (the authors use a moving average of ``log w``; :func:`surrogate_bound`
takes any ``b`` that does not depend on the decisions -- the benchmark rows use ``log gamma(z_0) - log q_0(z_0)``,
computed before the first decision).  Non-finite proposals (NaN target) are rejections, counted.

Step sizes ``h_k`` are parameters (``log_step``, one per transition), learnt with everything else by maximising
the bound (the authors adapt them to a target acceptance rate instead).  Written by hand: no JAX library has
these bounds; the MALA transition is written out (rather than ``blackjax.mala``) because the bound needs the
decision's log-probability and the pathwise dependence on the parameters, which BlackJAX's kernel does not expose.
Everything is one ``lax.scan`` over the ``K`` transitions per draw; float32 by default, float64 if the inputs are.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from dgm.vi.metflow import acceptance_log_probs, check_steps, surrogate

__all__ = ["MCVAEKernel", "MCVAEInfo", "annealing_schedule", "langevin_log_weight", "annealed_log_weight",
           "log_weight", "surrogate_bound", "KINDS"]

KINDS = ("langevin", "annealed")
_LOG_2PI = math.log(2.0 * math.pi)


def annealing_schedule(n_steps: int, dtype=jnp.float32):
    """``beta_0..beta_{K+1}`` = ``0, 1/(K+1), ..., 1`` (linear; ``K = n_steps``)."""
    n_steps = check_steps("K", n_steps)
    return jnp.linspace(0.0, 1.0, n_steps + 2, dtype=dtype)


class MCVAEKernel(eqx.Module):
    """The transitions' parameters: ``log_step`` (``(K,)``, ``h_k = exp(log_step_k)``) and the kind, one of
    :data:`KINDS` (``"langevin"``: L-MCVAE, ``"annealed"``: A-MCVAE)."""

    log_step: jax.Array
    kind: str = eqx.field(static=True)

    def __init__(self, n_steps: int, step_size=0.01, kind: str = "langevin", dtype=jnp.float32):
        n_steps = check_steps("K (number of transitions)", n_steps)
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        step = np.asarray(step_size, dtype=np.float64)
        if not np.all(np.isfinite(step)) or np.any(step <= 0):
            raise ValueError(f"step sizes must be finite and > 0, got {step_size!r}")
        self.log_step = jnp.broadcast_to(jnp.log(jnp.asarray(step, dtype)), (n_steps,))
        self.kind = kind

    @property
    def n_steps(self) -> int:
        return self.log_step.shape[0]


class MCVAEInfo(NamedTuple):
    """One draw: ``z_K``, the decisions' log-probability (0 for L-MCVAE), acceptances and non-finite steps."""

    position: jax.Array
    score: jax.Array
    n_accepted: jax.Array
    n_nonfinite: jax.Array


def _q0_logpdf_grad(z, loc, scale):
    r = (z - loc) / scale
    return (-0.5 * jnp.sum(r * r) - jnp.sum(jnp.log(scale)) - 0.5 * z.shape[-1] * _LOG_2PI), -r / scale


def _draw_z0(key, loc, scale):
    eps = jax.random.normal(key, jnp.shape(loc), jnp.result_type(loc))
    return loc + scale * eps


def langevin_log_weight(log_joint: Callable, loc, scale, kernel: MCVAEKernel, key):
    """L-MCVAE: ``(log w, MCVAEInfo, log gamma(z_0) - log q_0(z_0))`` for one draw (module docstring);
    ``log_joint(z) = log gamma(z)``, ``q_0 = N(loc, diag scale^2)``."""
    k0, k1 = jax.random.split(key)
    betas = annealing_schedule(kernel.n_steps, jnp.result_type(loc))
    z0 = _draw_z0(k0, loc, scale)
    lp0, gp0 = jax.value_and_grad(log_joint)(z0)
    lq0, gq0 = _q0_logpdf_grad(z0, loc, scale)

    def body(carry, inputs):
        z, gp, gq, acc = carry
        key, beta, log_h = inputs
        h = jnp.exp(log_h)
        eps = jax.random.normal(key, z.shape, z.dtype)
        z_new = z + h * ((1 - beta) * gq + beta * gp) + jnp.sqrt(2 * h) * eps
        lp, gp_new = jax.value_and_grad(log_joint)(z_new)
        _, gq_new = _q0_logpdf_grad(z_new, loc, scale)
        eps_back = (z - z_new - h * ((1 - beta) * gq_new + beta * gp_new)) / jnp.sqrt(2 * h)
        acc = acc + 0.5 * (jnp.sum(eps * eps) - jnp.sum(eps_back * eps_back))
        return (z_new, gp_new, gq_new, acc), lp

    zero = jnp.zeros((), z0.dtype)
    (zk, _, _, acc), lps = lax.scan(body, (z0, gp0, gq0, zero),
                                    (jax.random.split(k1, kernel.n_steps), betas[1:-1], kernel.log_step))
    lp_k = lps[-1]
    log_w = lp_k - lq0 + acc
    bad = jnp.sum(~jnp.isfinite(lps)).astype(jnp.int32)
    return log_w, MCVAEInfo(zk, zero, jnp.asarray(kernel.n_steps, jnp.int32), bad), (lp0 - lq0)


def annealed_log_weight(log_joint: Callable, loc, scale, kernel: MCVAEKernel, key):
    """A-MCVAE: ``(log w, MCVAEInfo, log gamma(z_0) - log q_0(z_0))`` for one draw (module docstring): MALA on
    each ``pi_k``, AIS weights."""
    k0, k1 = jax.random.split(key)
    betas = annealing_schedule(kernel.n_steps, jnp.result_type(loc))
    z0 = _draw_z0(k0, loc, scale)
    lp0, gp0 = jax.value_and_grad(log_joint)(z0)
    lq0, gq0 = _q0_logpdf_grad(z0, loc, scale)
    log_w0 = (betas[1] - betas[0]) * (lp0 - lq0)

    def body(carry, inputs):
        z, lp, gp, lq, gq, log_w, score, n_acc, n_bad = carry
        key, beta, beta_next, log_h = inputs
        h = jnp.exp(log_h)
        k_eps, k_u = jax.random.split(key)
        eps = jax.random.normal(k_eps, z.shape, z.dtype)
        g = (1 - beta) * gq + beta * gp
        y = z + h * g + jnp.sqrt(2 * h) * eps
        lp_y, gp_y = jax.value_and_grad(log_joint)(y)
        lq_y, gq_y = _q0_logpdf_grad(y, loc, scale)
        g_y = (1 - beta) * gq_y + beta * gp_y
        eps_back = (z - y - h * g_y) / jnp.sqrt(2 * h)
        log_r = ((1 - beta) * lq_y + beta * lp_y) - ((1 - beta) * lq + beta * lp) \
            + 0.5 * (jnp.sum(eps * eps) - jnp.sum(eps_back * eps_back))
        finite = jnp.isfinite(log_r) & jnp.all(jnp.isfinite(gp_y))
        log_alpha, log_reject = acceptance_log_probs(jnp.where(finite, log_r, -jnp.inf), "mh")
        accepted = jnp.log(jax.random.uniform(k_u, (), z.dtype)) < lax.stop_gradient(log_alpha)
        score = score + jnp.where(accepted, log_alpha, log_reject)
        pick = lambda new, old: jnp.where(accepted, new, old)  # noqa: E731
        z, lp, gp, lq, gq = pick(y, z), pick(lp_y, lp), pick(gp_y, gp), pick(lq_y, lq), pick(gq_y, gq)
        log_w = log_w + (beta_next - beta) * (lp - lq)
        return (z, lp, gp, lq, gq, log_w, score, n_acc + accepted, n_bad + (~finite)), None

    zero = jnp.zeros((), z0.dtype)
    izero = jnp.zeros((), jnp.int32)
    carry = (z0, lp0, gp0, lq0, gq0, log_w0, zero, izero, izero)
    inputs = (jax.random.split(k1, kernel.n_steps), betas[1:-1], betas[2:], kernel.log_step)
    (zk, _, _, _, _, log_w, score, n_acc, n_bad), _ = lax.scan(body, carry, inputs)
    return log_w, MCVAEInfo(zk, score, n_acc, n_bad), (lp0 - lq0)


def log_weight(log_joint: Callable, loc, scale, kernel: MCVAEKernel, key):
    """``(log w, MCVAEInfo, baseline)`` by the kernel's kind; ``baseline = log gamma(z_0) - log q_0(z_0)``, a
    control variate computed before any decision."""
    fn = langevin_log_weight if kernel.kind == "langevin" else annealed_log_weight
    return fn(log_joint, loc, scale, kernel, key)


def surrogate_bound(log_joint: Callable, loc, scale, kernel: MCVAEKernel, key):
    """A scalar whose value is ``log w`` and whose gradient is the paper's estimator (pure reparameterisation for
    L-MCVAE; plus the decisions' score term with control variate ``log gamma(z_0) - log q_0(z_0)`` for A-MCVAE)."""
    log_w, info, baseline = log_weight(log_joint, loc, scale, kernel, key)
    if kernel.kind == "langevin":
        return log_w
    return surrogate(log_w, info.score, lax.stop_gradient(baseline))
