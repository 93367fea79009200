"""Pseudo-marginal slice sampling for ABC (Murray & Graham 2016; paper, section 6).

The target is the ABC joint ``pi(u) ∝ rho(u) k_eps(x̄; g(u))`` over all inputs ``u = (u1, u2)`` (``u1``: the first
``model.parameter_inputs`` entries, generating the parameters; ``u2``: the noise). Each transition makes two
elliptical slice sampling updates (Murray, Adams & MacKay 2010) -- first of ``u1`` with ``u2`` fixed, then of ``u2``
with ``u1`` fixed -- using BlackJAX's kernel (:mod:`blackjax.mcmc.elliptical_slice`) with the ``N(0, I)`` prior of the
inputs and the ABC kernel as the "likelihood":

* ``kernel="uniform"``: log-likelihood 0 inside the ball ``‖g(u) − x̄‖₂ < ε`` and −inf outside. The slice always
  contains the current point, so the shrinking bracket ends inside the ball.
* ``kernel="gaussian"``: log-likelihood ``−‖g(u) − x̄‖² / (2ε²)`` (``N(x̄ | g(u), ε² I)`` up to a constant).

Models whose ``log_input_density`` is not the default standard normal are handled by folding the density ratio
``log rho(u) + ‖u‖²/2`` into the likelihood (exact, but efficient only when ``rho`` is close to ``N(0, I)``); pass
``non_standard_inputs="error"`` to refuse them instead.

A state whose log-likelihood is −inf (started outside the ball) would make BlackJAX's shrinkage loop run forever;
instead such a chain accepts the first point on each ellipse (a move under the ``N(0, I)`` prior) until it enters the
support, after which the updates are ordinary elliptical slice moves. Initial positions from the method's
``initial_positions`` are always inside the support.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
from blackjax.mcmc import elliptical_slice

from dgm.kernels.abc import (
    check_epsilon,
    check_kernel,
    abc_distance,
    abc_initial_positions,
    abc_log_kernel,
    has_standard_normal_inputs,
)
from dgm.kernels.base import KERNEL_LABELS, Method
from dgm.model import GenerativeModel, standard_normal_log_density

Array = jax.Array

__all__ = ["PMSliceState", "PMSliceInfo", "pm_slice_loglikelihood", "pm_slice_init", "pm_slice_kernel",
           "pm_slice_method"]


class PMSliceState(NamedTuple):
    position: Array  # u = (u1, u2)
    loglikelihood: Array  # log k_eps(x̄; g(u)) (+ input-density correction, if any)


class PMSliceInfo(NamedTuple):
    acceptance_rate: Array  # always 1 (slice samplers always move)
    is_accepted: Array  # always True
    n_evaluations: Array  # generator evaluations in this transition (both updates, + 1 if recording distances)
    subiter_u1: Array  # proposals made by the u1 update (1 + number of bracket shrinkages)
    subiter_u2: Array  # proposals made by the u2 update
    distance: Array  # distance of the new state (NaN unless record_distance)


def pm_slice_loglikelihood(
    model: GenerativeModel, x_obs, epsilon: float, kernel: str = "uniform", non_standard_inputs: str = "fold"
) -> Callable[[Array], tuple[Array, Array]]:
    """``u -> (log-likelihood relative to N(0, I), distance)`` for the elliptical slice updates."""
    epsilon = check_epsilon(epsilon)
    check_kernel(kernel)
    distance_fn = abc_distance(model, x_obs)
    if has_standard_normal_inputs(model):
        correction = None
    elif non_standard_inputs == "fold":
        log_rho = model.log_input_density

        def correction(u):
            return log_rho(u) - standard_normal_log_density(u)

    elif non_standard_inputs == "error":
        raise ValueError(
            f"model {model.name!r} has a non-standard-normal input density; elliptical slice sampling assumes "
            "u ~ N(0, I) (use non_standard_inputs='fold' to fold the density ratio into the likelihood)"
        )
    else:
        raise ValueError(f"non_standard_inputs must be 'fold' or 'error', got {non_standard_inputs!r}")

    def loglik(u):
        d = distance_fn(u)
        ll = abc_log_kernel(d, epsilon, kernel)
        if correction is not None:
            ll = ll + correction(u)
        return jnp.where(jnp.isnan(ll), -jnp.inf, ll), d

    return loglik


def pm_slice_init(position: Array, loglik) -> PMSliceState:
    ll, _ = loglik(position)
    return PMSliceState(position, ll)


def _ess_block(key, value, current_ll, full_from, loglik):
    """One BlackJAX elliptical slice update of a block ``value`` (prior N(0, I)), other inputs fixed.

    ``full_from(value) -> u``. Returns ``(new_value, new_ll, new_distance, subiter)``.
    """
    dtype = value.dtype
    sentinel = jnp.finfo(dtype).min  # most negative finite: marks "outside the support" while escaping
    stuck = current_ll == -jnp.inf

    def logdensity(v):
        ll, _ = loglik(full_from(v))
        # a chain outside the support (ll = -inf) accepts the first proposal: map -inf to a finite sentinel
        return jnp.where(stuck & (ll == -jnp.inf), sentinel, ll)

    kernel = elliptical_slice.build_kernel(jnp.ones(value.shape, dtype), jnp.zeros(value.shape, dtype))
    state, info = kernel(key, elliptical_slice.EllipSliceState(value, current_ll), logdensity)
    new_ll = jnp.where(state.logdensity == sentinel, -jnp.inf, state.logdensity)
    return state.position, new_ll, info.subiter


def pm_slice_kernel(
    model: GenerativeModel, loglik, record_distance: bool = False
) -> Callable[[Array, PMSliceState], tuple[PMSliceState, PMSliceInfo]]:
    """One pseudo-marginal slice transition ``(key, state) -> (state, info)``: ESS on ``u1``, then on ``u2``.

    With ``record_distance`` the new state's distance ``‖g(u) − x̄‖₂`` is recomputed (one more generator evaluation)
    and reported in ``info.distance``.
    """
    p = model.parameter_inputs
    distance_only = lambda u: loglik(u)[1]  # noqa: E731

    def step(key, state):
        k1, k2 = jax.random.split(key)
        u = state.position
        u1, u2 = u[:p], u[p:]
        u1, ll, n1 = _ess_block(k1, u1, state.loglikelihood, lambda v: jnp.concatenate([v, u2]), loglik)
        if u2.shape[0] > 0:
            u2, ll, n2 = _ess_block(k2, u2, ll, lambda v: jnp.concatenate([u1, v]), loglik)
        else:
            n2 = jnp.zeros((), jnp.int32)
        new_u = jnp.concatenate([u1, u2])
        n1, n2 = jnp.asarray(n1, jnp.int32), jnp.asarray(n2, jnp.int32)
        if record_distance:
            d, n_extra = distance_only(new_u), 1
        else:
            d, n_extra = jnp.full((), jnp.nan, u.dtype), 0
        new_state = PMSliceState(new_u, ll)
        info = PMSliceInfo(
            acceptance_rate=jnp.ones((), u.dtype),
            is_accepted=jnp.ones((), bool),
            n_evaluations=n1 + n2 + n_extra,
            subiter_u1=n1,
            subiter_u2=n2,
            distance=d,
        )
        return new_state, info

    return step


def pm_slice_method(
    model: GenerativeModel,
    x_obs,
    *,
    epsilon: float,
    kernel: str = "uniform",
    non_standard_inputs: str = "fold",
    record_distance: bool = False,
    n_search: int = 100_000,
    sample_inputs: Optional[Callable[[Array], Array]] = None,
) -> Method:
    """Pseudo-marginal (alternating elliptical) slice sampling as a :class:`~dgm.kernels.base.Method`.

    Name ``"abc-slice"`` (uniform kernel) or ``"abc-slice-gaussian"``. No step size (``initial_step_size=None``).
    Initial positions: ``model.init`` (an exact point on the manifold, distance 0) when the model has one, else the
    closest of ``n_search`` prior draws, which for the uniform kernel must lie inside the ball (a ``ValueError``
    names the best distance found otherwise). Stats per draw: ``acceptance_rate`` (1.0), ``is_accepted`` (True),
    ``n_evaluations`` (generator evaluations), ``subiter_u1``, ``subiter_u2`` and, with ``record_distance=True``
    (costs one more generator evaluation per transition), ``distance``.
    """
    epsilon = check_epsilon(epsilon)
    check_kernel(kernel)
    loglik = pm_slice_loglikelihood(model, x_obs, epsilon, kernel, non_standard_inputs)
    kernel_step = pm_slice_kernel(model, loglik, record_distance)

    def initial_positions(key, n_chains):
        return abc_initial_positions(
            model, x_obs, key, n_chains, epsilon=epsilon, kernel=kernel, n_search=n_search,
            sample_inputs=sample_inputs,
        )

    def stats(info):
        out = {
            "acceptance_rate": info.acceptance_rate,
            "is_accepted": info.is_accepted,
            "n_evaluations": info.n_evaluations,
            "subiter_u1": info.subiter_u1,
            "subiter_u2": info.subiter_u2,
        }
        if record_distance:
            out["distance"] = info.distance
        return out

    return Method(
        name="abc-slice" if kernel == "uniform" else "abc-slice-gaussian",
        initial_positions=initial_positions,
        init=lambda position: pm_slice_init(position, loglik),
        step=lambda key, state, step_size=None: kernel_step(key, state),
        position=lambda state: state.position,
        acceptance=lambda info: info.acceptance_rate,
        stats=stats,
        initial_step_size=None,
        target_acceptance=0.8,
        epsilon=epsilon,
        kernel=KERNEL_LABELS[kernel],
    )
