r"""MetFlow: Metropolis-Hastings kernels whose proposals are normalizing flows, as a variational family
(Thin, Kotelevskii, Denain, Grinsztajn, Durmus, Panov & Moulines, ICML 2020, arXiv:2002.12253).

**The kernel** (the paper's section 3, "MetFlow"; deterministic-proposal MH, its section 2.2).  ``T`` is an
invertible map (here a RealNVP coupling flow, :func:`realnvp`), optionally conditioned on a "pseudo-random" noise
``e ~ N(0, I_m)`` (``noise_dim = m``; ``m = 0``: unconditioned).  One transition from ``x``::

    v ~ Uniform{-1, +1}  (direction),   e ~ N(0, I_m),   y = T_e(x) if v = +1 else T_e^{-1}(x),
    log r = log pi(y) - log pi(x) + log |det dT_{e,v}/dx (x)|,      alpha = r / (1 + r)  (Barker; or min(1, r)),
    u ~ Uniform(0, 1)   (the auxiliary uniform),   a = 1{u <= alpha},   x' = y if a else x.

Because ``T_{e,-1} = T_{e,+1}^{-1}`` and ``v`` is symmetric, ``pi(x) alpha_v(x) = pi(T_v x) |J_{T_v}(x)|
alpha_{-v}(T_v x)`` and the kernel is ``pi``-reversible (the paper's deterministic-proposal MH condition) for either acceptance function; Barker's is the
default because it keeps ``E[w] = Z`` exact (:func:`acceptance_log_probs`).  A
non-finite ``log r`` (NaN target, overflowing flow) is a rejection, counted in :class:`KernelInfo`.  Without the
noise (``m = 0``) a chain of these kernels alone only visits the orbit ``{T^n(x_0)}``: invariant, not ergodic (as an
MCMC sampler it is meant to be mixed with other kernels, or given the noise); as a variational family that does not
matter -- ``q_0`` supplies the spread.

**The variational family** (paper section 2.1, "our approach" and its Proposition giving the density).  ``x_0 ~
q_0`` and ``K`` kernels; given the directions/noises ``(v, e)_{1:K}`` and the decisions ``a_{1:K}``, ``x_K`` is a
*deterministic invertible* function of ``x_0`` (a composition of ``T``'s, ``T^{-1}``'s and identities), so the
joint density of ``(x_K, a_{1:K})`` given ``(v, e)_{1:K}`` is, by change of variables::

    q_K(x_K, a | v, e) = q_0(x_0) prod_k |J_{T_{e_k, v_k}}(x_{k-1})|^{-a_k}
                                  prod_k alpha_k^{a_k} (1 - alpha_k)^{1 - a_k},

and the marginal of ``x_K`` is a mixture of ``2^K`` flow-based distributions.  With the extended target
``pi~(x_K) m(a) prod mu(v_k) N(e_k)``, ``m`` any distribution on ``{0,1}^K`` (uniform, ``m(a) = 2^-K``, in the
authors' code; here optionally ``prod_k Bernoulli(sigmoid(l_k))`` with learnt logits, :func:`log_decision_prior`),
the auxiliary ELBO (the paper's ``L_aux``) is ``E[log w]`` with the log-weight (:func:`log_weight`)::

    log w = log pi~(x_K) + log m(a) - log q_0(x_0) + sum_k a_k log |J_k| - sum_k log P(a_k | x_{k-1}, v_k, e_k),

``E[w] = Z`` (so ``E[log w] <= log Z`` and ``log mean w`` is an importance-sampling estimate of ``log Z``) -- no
reverse kernel is needed.

**The gradient** (paper section 2.3): ``x_0 = mu + sigma * eps`` is reparameterised and every ``x_k`` is a smooth
function of ``x_0`` and the flow parameters at fixed decisions; the decisions are Bernoulli(``alpha_k``) and
contribute a score-function term::

    grad E[log w] = E[ grad log w |_(a fixed)  +  (log w - b) grad sum_k log P(a_k | ...) ],

with a baseline ``b`` (any quantity not depending on the decisions; :func:`surrogate` uses the batch mean).
:func:`surrogate` returns a scalar whose value is ``log w`` and whose autodiff gradient is that estimator.

Everything runs in ``lax.scan`` over the ``K`` kernels and is ``vmap``-ped over draws; float32 by default, float64
when the inputs and parameters are (``with dgm.float64():`` and :func:`astype`).  The coupling layers are
``flowjax``'s (:class:`flowjax.bijections.Coupling` with an :class:`~flowjax.bijections.Affine` transformer,
i.e. RealNVP, Dinh et al. 2017); the MH-with-flow kernel, the path density and the estimator are written here (no
library has them).
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import paramax
from jax import lax

__all__ = ["realnvp", "MetFlow", "MetFlowState", "KernelInfo", "PathInfo", "init", "build_kernel", "flow_step",
           "path", "log_decision_prior", "acceptance_log_probs", "ACCEPTANCES", "log_weight", "flow_log_weight", "surrogate", "astype", "check_steps", "LOG2"]

LOG2 = math.log(2.0)
_LOG_2PI = math.log(2.0 * math.pi)


def check_steps(name: str, k) -> int:
    """``k`` as a positive int, or a ``ValueError`` naming ``name``."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {k!r}")
    return int(k)


def realnvp(key, dim: int, *, n_layers: int = 4, width: int = 32, depth: int = 1, noise_dim: int = 0):
    """A RealNVP flow on ``R^dim`` (Dinh et al. 2017): ``n_layers`` affine coupling layers (flowjax's ``Coupling`` +
    ``Affine``), alternating which half is transformed (a ``Flip`` between layers), each conditioner an MLP of
    ``depth`` hidden layers of ``width`` units; conditioned on a ``noise_dim`` vector when ``noise_dim > 0``.
    For ``dim = 1`` the layers are plain affine maps conditioned on the noise (or constant)."""
    from flowjax.bijections import Affine, Chain, Coupling, Flip

    dim = check_steps("dim", dim)
    n_layers = check_steps("n_layers", n_layers)
    cond = None if noise_dim == 0 else int(noise_dim)
    if dim == 1:
        if cond is not None:
            raise ValueError("a 1-D RealNVP has nothing to couple; use noise_dim=0 (an Affine map) for dim=1")
        return Affine(jnp.zeros(1), jnp.ones(1))
    layers = []
    for i, k in enumerate(jax.random.split(key, n_layers)):
        if i:
            layers.append(Flip((dim,)))
        layers.append(Coupling(k, transformer=Affine(), untransformed_dim=dim // 2, dim=dim, cond_dim=cond,
                               nn_width=width, nn_depth=depth, nn_activation=jnp.tanh))
    return Chain(layers)


ACCEPTANCES = ("barker", "mh")


def acceptance_log_probs(log_r, acceptance: str = "barker"):
    """``(log alpha, log(1 - alpha))`` for the log acceptance ratio ``log_r`` (``-inf``: reject surely).

    * ``"barker"``: ``alpha = r / (1 + r)`` (Barker 1965; the authors' code's default for MetFlow).  Both decisions
      always have positive probability, so ``q_K`` charges every path the extended target charges and ``E[w] = Z``
      exactly (the importance-sampling estimate of ``log Z`` is consistent).
    * ``"mh"``: ``alpha = min(1, r)``.  A rejection is impossible where ``r >= 1`` while ``m(a)`` still gives such
      paths mass, so ``E[w] = Z P(support) < Z``: still a lower bound, but looser, and ``log mean w`` is biased down
      even as the number of draws grows.
    Both are ``pi``-reversible with an involutive proposal pair."""
    if acceptance == "barker":
        return -jax.nn.softplus(-log_r), -jax.nn.softplus(log_r)
    if acceptance == "mh":
        log_alpha = jnp.minimum(log_r, 0.0)
        return log_alpha, jnp.log(-jnp.expm1(jnp.minimum(log_alpha, -1e-30)))  # alpha = 1: a rejection never happens
    raise ValueError(f"acceptance must be one of {ACCEPTANCES}, got {acceptance!r}")


class MetFlow(eqx.Module):
    """MetFlow's trainable parts: the flow ``T`` (a flowjax bijection, e.g. :func:`realnvp`) shared by the ``K``
    kernels; static: the dimension of the pseudo-random noise it is conditioned on (0: none) and the acceptance
    function, one of :data:`ACCEPTANCES` (:func:`acceptance_log_probs`)."""

    flow: eqx.Module
    noise_dim: int = eqx.field(static=True, default=0)
    acceptance: str = eqx.field(static=True, default="barker")

    def __check_init__(self):
        if self.acceptance not in ACCEPTANCES:
            raise ValueError(f"acceptance must be one of {ACCEPTANCES}, got {self.acceptance!r}")
        if isinstance(self.noise_dim, bool) or not isinstance(self.noise_dim, int) or self.noise_dim < 0:
            raise ValueError(f"noise_dim must be an integer >= 0, got {self.noise_dim!r}")


def astype(tree, dtype):
    """``tree`` with every floating array cast to ``dtype`` (e.g. a float64 copy inside ``dgm.float64()``)."""
    return jax.tree_util.tree_map(lambda v: v.astype(dtype) if eqx.is_inexact_array(v) else v, tree)


# -- one kernel ------------------------------------------------------------------------------------------------------
class MetFlowState(NamedTuple):
    """BlackJAX-style state of the kernel alone: the position and ``log pi~`` there."""

    position: jax.Array
    log_density: jax.Array


class KernelInfo(NamedTuple):
    """One transition: the decision ``a``, its log-probability ``log P(a | x, v, e)``, ``log |det|`` of the applied
    map (0 when rejected), the acceptance probability and whether the proposal was non-finite (a rejection)."""

    accepted: jax.Array
    log_prob_decision: jax.Array
    log_det: jax.Array
    acceptance_probability: jax.Array
    nonfinite: jax.Array


def init(position, log_target: Callable) -> MetFlowState:
    position = jnp.asarray(position)
    return MetFlowState(position, log_target(position))


def _propose(metflow: MetFlow, x, direction, noise):
    """``(T_{e,v}(x), log |det|)`` for ``v = direction`` in ``{+1, -1}``: both branches evaluated, one selected (so
    the choice is jit/vmap-friendly; the flows here are cheap next to the target)."""
    flow = paramax.unwrap(metflow.flow)
    cond = None if metflow.noise_dim == 0 else noise
    y_f, ld_f = flow.transform_and_log_det(x, cond)
    y_b, ld_b = flow.inverse_and_log_det(x, cond)
    forward = direction > 0
    return jnp.where(forward, y_f, y_b), jnp.where(forward, ld_f, ld_b)


def flow_step(metflow: MetFlow, log_target: Callable, key, state: MetFlowState, *, wrong_ratio: bool = False):
    """One MetFlow transition (module docstring) -> ``(new state, KernelInfo)``.

    ``wrong_ratio=True`` (a Python or traced bool) leaves the Jacobian out of the acceptance ratio: a deliberately
    wrong kernel, used by the tests to show that the invariance check can fail."""
    k_dir, k_noise, k_u = jax.random.split(key, 3)
    x, log_px = state.position, state.log_density
    dtype = x.dtype
    direction = jnp.where(jax.random.bernoulli(k_dir), 1, -1)
    noise = jax.random.normal(k_noise, (max(metflow.noise_dim, 1),), dtype)[: metflow.noise_dim]
    y, log_det = _propose(metflow, x, direction, noise)
    log_py = log_target(y)
    log_r = log_py - log_px + jnp.where(wrong_ratio, 0.0, log_det)
    finite = jnp.isfinite(log_r) & jnp.all(jnp.isfinite(y))
    log_r = jnp.where(finite, log_r, -jnp.inf)
    log_alpha, log_reject = acceptance_log_probs(log_r, metflow.acceptance)
    log_u = jnp.log(jax.random.uniform(k_u, (), dtype))
    accepted = log_u < lax.stop_gradient(log_alpha)
    log_prob = jnp.where(accepted, log_alpha, log_reject)
    safe_y = jnp.where(finite, y, x)  # keep NaNs out of both branches (and out of the gradient)
    new_x = jnp.where(accepted, safe_y, x)
    new_log_p = jnp.where(accepted, jnp.where(finite, log_py, log_px), log_px)
    info = KernelInfo(accepted, log_prob, jnp.where(accepted, jnp.where(finite, log_det, 0.0), 0.0),
                      jnp.exp(log_alpha), ~finite)
    return MetFlowState(new_x, new_log_p), info


def build_kernel(metflow: MetFlow, log_target: Callable, *, wrong_ratio: bool = False):
    """``step(key, state) -> (state, info)``: the MetFlow kernel as a plain MCMC kernel (BlackJAX style)."""

    def step(key, state):
        return flow_step(metflow, log_target, key, state, wrong_ratio=wrong_ratio)

    return step


# -- K kernels from q_0: the variational family ---------------------------------------------------------------------
class PathInfo(NamedTuple):
    """One draw through the ``K`` kernels: ``x_K`` and ``log pi~(x_K)``; sums over the kernels of ``log |det|`` of
    the applied maps and of ``log P(decisions)``; the decisions ``a_{1:K}`` (bool, ``(K,)``) and the number of
    non-finite proposals."""

    position: jax.Array
    log_target: jax.Array
    sum_log_det: jax.Array
    sum_log_prob_decisions: jax.Array
    accepted: jax.Array
    n_nonfinite: jax.Array


def path(metflow: MetFlow, log_target: Callable, x0, key, n_steps: int) -> PathInfo:
    """Apply ``n_steps`` MetFlow kernels to ``x0`` in one ``lax.scan``; returns the :class:`PathInfo`."""
    n_steps = check_steps("n_steps (K)", n_steps)
    state = init(x0, log_target)
    dtype = state.position.dtype

    def body(carry, k):
        state, sld, slp, nbad = carry
        state, info = flow_step(metflow, log_target, k, state)
        return (state, sld + info.log_det, slp + info.log_prob_decision, nbad + info.nonfinite), info.accepted

    zero = jnp.zeros((), dtype)
    (state, sld, slp, nbad), accepted = lax.scan(body, (state, zero, zero, jnp.zeros((), jnp.int32)),
                                                 jax.random.split(key, n_steps))
    return PathInfo(state.position, state.log_density, sld, slp, accepted, nbad)


def log_decision_prior(accepted, decision_logits=None):
    """``log m(a_{1:K})`` of the extended target: ``m = prod_k Bernoulli(sigmoid(l_k))`` with logits ``l``
    (``None``: all zero, the uniform ``m(a) = 2^-K`` of the authors' code).  Any ``m`` gives a valid bound; the
    best one is the law of the decisions given ``x_K``, so learnt logits can only tighten it."""
    if decision_logits is None:
        return -accepted.shape[0] * LOG2
    return jnp.sum(jnp.where(accepted, jax.nn.log_sigmoid(decision_logits), jax.nn.log_sigmoid(-decision_logits)))


def log_weight(metflow: MetFlow, log_target: Callable, x0, log_q0_x0, key, n_steps: int, decision_logits=None):
    """``(log w, sum_k log P(a_k | ...), PathInfo)`` for one draw ``x0 ~ q_0`` with ``log q_0(x0) = log_q0_x0``:
    the auxiliary-ELBO log-weight of the module docstring (``E[w] = Z``), with ``log m(a)`` from
    :func:`log_decision_prior`."""
    info = path(metflow, log_target, x0, key, n_steps)
    log_w = (info.log_target + log_decision_prior(info.accepted, decision_logits) - log_q0_x0 + info.sum_log_det
             - info.sum_log_prob_decisions)
    return log_w, info.sum_log_prob_decisions, info


def flow_log_weight(flow, log_target: Callable, x0, log_q0_x0):
    """The plain normalizing-flow log-weight ``log pi~(T(x0)) - log q_0(x0) + log |det dT/dx (x0)|`` and ``T(x0)``
    (Rezende & Mohamed 2015, eq. 6 for the flow density) -- the baseline of equal parameter count."""
    y, log_det = paramax.unwrap(flow).transform_and_log_det(x0)
    return log_target(y) - log_q0_x0 + log_det, y


def surrogate(log_w, score, baseline):
    """A scalar per draw whose value is ``log w`` and whose gradient is the MetFlow / A-MCVAE estimator
    ``grad log w + (log w - b) grad score`` (``score = sum_k log P(a_k | ...)``, ``b = baseline``, both held fixed:
    the paper's REINFORCE term for the accept/reject decisions with a control variate)."""
    return log_w + lax.stop_gradient(log_w - baseline) * (score - lax.stop_gradient(score))
