"""Approximate Bayesian Computation baselines (paper, section 2): ABC rejection and ABC-MCMC.

Both work on any :class:`~dgm.GenerativeModel`. The inputs are split as ``u = (u1, u2)`` with ``u1`` the first
``model.parameter_inputs`` entries (generating the parameters ``z``) and ``u2`` the rest (the per-observation noise).
The simulated outputs ``x = g(u)`` are compared with the observations ``x̄`` through a kernel of tolerance ``epsilon``:

* ``"uniform"``: the uniform ball ``k(x̄; x) ∝ I[‖x̄ − x‖₂ < ε]`` (log-kernel 0 inside, −inf outside);
* ``"gaussian"``: ``k(x̄; x) = N(x̄ | x, ε² I)`` (log-kernel ``−‖x̄ − x‖² / (2ε²)`` up to a constant).

Non-finite simulations (NaN / inf, e.g. an exploding simulator) count as infinitely far: never accepted.

* :func:`abc_rejection` draws ``u ~ N(0, I)`` in jitted, vectorised batches and keeps those within the ball.
* :func:`abc_mcmc_method` builds the ABC-MCMC chain of Marjoram et al. (2003) as a :class:`~dgm.kernels.base.Method`:
  a Gaussian random walk on ``u1``, a fresh ``u2 ~ N(0, I)`` at every proposal, and the Metropolis–Hastings ratio
  of eq. 5 (kernel ratio times prior ratio; with a standard-normal input density the ``u2`` terms cancel with the
  proposal's).

Shared helpers (:func:`abc_distance`, :func:`abc_log_kernel`, :func:`abc_initial_positions`) are also used by
:mod:`dgm.kernels.pm_slice`.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from dgm.kernels.base import KERNEL_LABELS, Method
from dgm.model import GenerativeModel, standard_normal_log_density

Array = jax.Array

KERNELS = ("uniform", "gaussian")

__all__ = [
    "KERNELS",
    "ABCRejectionResult",
    "ABCMCMCState",
    "ABCMCMCInfo",
    "abc_distance",
    "abc_log_kernel",
    "abc_rejection",
    "abc_initial_positions",
    "abc_mcmc_init",
    "abc_mcmc_kernel",
    "abc_mcmc_method",
]


# ---------------------------------------------------------------------------------------------------------------
# shared helpers
# ---------------------------------------------------------------------------------------------------------------
def check_kernel(kernel: str) -> str:
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    return kernel


def check_epsilon(epsilon) -> float:
    epsilon = float(epsilon)
    if not (epsilon > 0 and math.isfinite(epsilon)):
        raise ValueError(f"epsilon must be a positive finite number, got {epsilon!r}")
    return epsilon


def has_standard_normal_inputs(model: GenerativeModel) -> bool:
    """Whether ``model.log_input_density`` is the default standard normal."""
    return model.log_input_density is standard_normal_log_density


def abc_distance(model: GenerativeModel, x_obs) -> Callable[[Array], Array]:
    """``u -> ‖g(u) − x̄‖₂``, with ``+inf`` for non-finite simulations."""
    x_obs = jnp.asarray(x_obs)

    def distance(u):
        x = model.generator(u)
        d = jnp.sqrt(jnp.sum((x - x_obs.astype(x.dtype)) ** 2))
        return jnp.where(jnp.isfinite(d), d, jnp.inf)

    return distance


def abc_log_kernel(distance: Array, epsilon: float, kernel: str = "uniform") -> Array:
    """Log ABC kernel as a function of the distance ``‖g(u) − x̄‖₂`` (constants dropped); never NaN."""
    check_kernel(kernel)
    if kernel == "uniform":
        out = jnp.where(distance < epsilon, 0.0, -jnp.inf)
    else:
        out = -0.5 * (distance / epsilon) ** 2
    out = jnp.asarray(out, jnp.result_type(distance, jnp.float32))
    return jnp.where(jnp.isnan(out), -jnp.inf, out)


def _input_sampler(model: GenerativeModel, sample_inputs):
    if sample_inputs is not None:
        return sample_inputs
    if not has_standard_normal_inputs(model):
        raise ValueError(
            f"model {model.name!r} has a non-standard-normal input density; ABC rejection / prior search needs "
            "draws from it: pass sample_inputs=callable(key) -> u"
        )

    def sample(key):
        return jax.random.normal(key, (model.input_dim,), _float_dtype())

    return sample


def _float_dtype():
    return jnp.zeros(()).dtype  # float64 under jax.enable_x64, float32 otherwise


# ---------------------------------------------------------------------------------------------------------------
# ABC rejection
# ---------------------------------------------------------------------------------------------------------------
class ABCRejectionResult(NamedTuple):
    """Output of :func:`abc_rejection` (host NumPy arrays).

    Attributes:
      inputs: ``(n_accepted, input_dim)`` accepted inputs ``u``.
      latents: ``(n_accepted, ...)`` accepted latents ``model.latents(u)``.
      distances: ``(n_accepted,)`` their distances ``‖g(u) − x̄‖₂``.
      n_accepted: number of acceptances (0 is a valid result).
      acceptance_rate: ``n_accepted / n_simulations``.
      n_simulations: simulations used.
      epsilon: the tolerance.
      min_distance: the smallest distance seen over all simulations (``inf`` if none was finite).
      kernel: ``"uniform ball"`` (``epsilon`` is a radius; see :class:`dgm.kernels.base.Method`).
    """

    inputs: np.ndarray
    latents: np.ndarray
    distances: np.ndarray
    n_accepted: int
    acceptance_rate: float
    n_simulations: int
    epsilon: float
    min_distance: float
    kernel: str = KERNEL_LABELS["uniform"]


def abc_rejection(
    model: GenerativeModel,
    x_obs,
    epsilon: float,
    *,
    n_simulations: int,
    batch_size: int = 10_000,
    seed: int = 0,
    sample_inputs: Optional[Callable[[Array], Array]] = None,
) -> ABCRejectionResult:
    """ABC rejection with the uniform-ball kernel: keep the draws ``u ~ rho`` with ``‖g(u) − x̄‖₂ < epsilon``.

    Simulations run in jitted, vmapped batches of ``batch_size`` (the last one masked), batch ``b`` using the key
    ``fold_in(PRNGKey(seed), b)``, so the output depends only on ``seed``, ``n_simulations`` and ``batch_size``.
    ``sample_inputs(key) -> u`` is needed only when the model's input density is not standard normal.
    """
    epsilon = check_epsilon(epsilon)
    n_simulations, batch_size = int(n_simulations), int(batch_size)
    if n_simulations < 1 or batch_size < 1:
        raise ValueError("n_simulations and batch_size must be positive")
    batch_size = min(batch_size, n_simulations)
    sample = _input_sampler(model, sample_inputs)
    distance = abc_distance(model, x_obs)

    @jax.jit
    def batch(key, n_valid):
        u = jax.vmap(sample)(jax.random.split(key, batch_size))
        d = jax.vmap(distance)(u)
        d = jnp.where(jnp.arange(batch_size) < n_valid, d, jnp.inf)
        return u, d, d < epsilon, jnp.min(d)

    base = jax.random.PRNGKey(seed)
    kept_u, kept_d = [], []
    min_distance = np.inf
    n_batches = -(-n_simulations // batch_size)
    for b in range(n_batches):
        n_valid = min(batch_size, n_simulations - b * batch_size)
        u, d, acc, dmin = batch(jax.random.fold_in(base, b), n_valid)
        min_distance = min(min_distance, float(dmin))
        acc = np.asarray(acc)
        if acc.any():
            kept_u.append(np.asarray(u)[acc])
            kept_d.append(np.asarray(d)[acc])
    dtype = np.dtype(_float_dtype())
    inputs = np.concatenate(kept_u) if kept_u else np.zeros((0, model.input_dim), dtype)
    distances = np.concatenate(kept_d) if kept_d else np.zeros((0,), dtype)
    latent_shape = model.latent_shape()
    if len(inputs):
        latents = np.asarray(jax.jit(jax.vmap(model.latents))(jnp.asarray(inputs)))
    else:
        latents = np.zeros((0,) + latent_shape, dtype)
    n_acc = int(len(inputs))
    return ABCRejectionResult(
        inputs=inputs,
        latents=latents,
        distances=distances,
        n_accepted=n_acc,
        acceptance_rate=n_acc / n_simulations,
        n_simulations=n_simulations,
        epsilon=epsilon,
        min_distance=float(min_distance),
    )


# ---------------------------------------------------------------------------------------------------------------
# initial positions for ABC chains
# ---------------------------------------------------------------------------------------------------------------
def abc_initial_positions(
    model: GenerativeModel,
    x_obs,
    key: Array,
    n_chains: int,
    *,
    epsilon: float,
    kernel: str = "uniform",
    n_search: int = 100_000,
    batch_size: int = 10_000,
    sample_inputs: Optional[Callable[[Array], Array]] = None,
) -> Array:
    """Starting inputs ``(n_chains, input_dim)`` for ABC chains.

    If the model has an exact initialiser (``model.init``), it is used (one key per chain): those points lie on the
    manifold ``g(u) = x̄`` (distance ~0, inside any ball). Otherwise up to ``n_search`` prior draws are searched and the
    ``n_chains`` closest are returned; with the uniform kernel they must lie inside the ball, else a ``ValueError``
    names the best distance found.
    """
    check_kernel(kernel)
    epsilon = check_epsilon(epsilon)
    n_chains = int(n_chains)
    distance = jax.jit(abc_distance(model, x_obs))
    keys = jax.random.split(key, n_chains)
    if model.init is not None:
        init = jax.jit(model.init)
        x = jnp.asarray(x_obs)
        us = jnp.stack([init(k, x) for k in keys])
        ds = np.asarray(jax.vmap(distance)(us))
        if kernel == "gaussian" or np.all(ds < epsilon):
            return us
        bad = int(np.argmax(ds))
        raise ValueError(
            f"model.init of {model.name!r} returned a point at distance {ds[bad]:.3g} >= epsilon={epsilon:g} "
            f"(chain {bad}); an exact initialiser should give distance ~0"
        )
    sample = _input_sampler(model, sample_inputs)
    batch_size = min(int(batch_size), int(n_search))

    @jax.jit
    def batch(k):
        u = jax.vmap(sample)(jax.random.split(k, batch_size))
        return u, jax.vmap(distance)(u)

    best_u, best_d = None, None
    search_key = jax.random.fold_in(key, 1)
    for b in range(-(-int(n_search) // batch_size)):
        u, d = batch(jax.random.fold_in(search_key, b))
        cand_u = u if best_u is None else jnp.concatenate([best_u, u])
        cand_d = d if best_d is None else jnp.concatenate([best_d, d])
        order = jnp.argsort(cand_d)[:n_chains]
        best_u, best_d = cand_u[order], cand_d[order]
        if best_d.shape[0] == n_chains and kernel == "uniform" and float(best_d[-1]) < epsilon:
            break
    if best_d.shape[0] < n_chains:
        raise ValueError(f"n_search={n_search} prior draws are fewer than n_chains={n_chains}")
    if kernel == "uniform" and not float(best_d[-1]) < epsilon:
        n_in = int(jnp.sum(best_d < epsilon))
        raise ValueError(
            f"could not start {n_chains} ABC chains inside the ball of radius epsilon={epsilon:g} around the "
            f"observations for model {model.name!r}: best distance found in {n_search} prior draws was "
            f"{float(best_d[0]):.4g} ({n_in} inside). Increase epsilon or n_search, or give the model an exact "
            "initialiser (init)."
        )
    return best_u


# ---------------------------------------------------------------------------------------------------------------
# ABC-MCMC (Marjoram et al. 2003)
# ---------------------------------------------------------------------------------------------------------------
class ABCMCMCState(NamedTuple):
    position: Array  # u = (u1, u2)
    log_kernel: Array  # log k_eps(x̄; g(u))
    distance: Array  # ‖g(u) − x̄‖₂


class ABCMCMCInfo(NamedTuple):
    acceptance_rate: Array  # min(1, MH ratio), never NaN
    is_accepted: Array
    proposal_distance: Array  # distance of the proposed simulation
    distance: Array  # distance of the state after the transition


def abc_mcmc_init(position: Array, distance_fn, epsilon: float, kernel: str = "uniform") -> ABCMCMCState:
    d = distance_fn(position)
    return ABCMCMCState(position, abc_log_kernel(d, epsilon, kernel), d)


def abc_mcmc_kernel(
    model: GenerativeModel, distance_fn, epsilon: float, kernel: str = "uniform"
) -> Callable[[Array, ABCMCMCState, Array], tuple[ABCMCMCState, ABCMCMCInfo]]:
    """One ABC-MCMC transition ``(key, state, scale) -> (state, info)``; ``scale``: random-walk std of ``u1``
    (scalar or a vector of length ``parameter_inputs``)."""
    p = model.parameter_inputs
    standard = has_standard_normal_inputs(model)
    log_rho = model.log_input_density

    def step(key, state, scale):
        k_walk, k_noise, k_acc = jax.random.split(key, 3)
        u = state.position
        u1, u2 = u[:p], u[p:]
        u1_new = u1 + scale * jax.random.normal(k_walk, u1.shape, u.dtype)
        u2_new = jax.random.normal(k_noise, u2.shape, u.dtype)
        u_new = jnp.concatenate([u1_new, u2_new])
        d_new = distance_fn(u_new)
        lk_new = abc_log_kernel(d_new, epsilon, kernel)
        if standard:  # prior ratio on u1; the u2 prior cancels with its independence proposal
            log_prior = standard_normal_log_density(u1_new) - standard_normal_log_density(u1)
        else:
            log_prior = (log_rho(u_new) - log_rho(u)) + (
                standard_normal_log_density(u2) - standard_normal_log_density(u2_new)
            )
        log_ratio = lk_new - state.log_kernel + log_prior
        log_ratio = jnp.where(jnp.isnan(log_ratio), -jnp.inf, log_ratio)
        accept_prob = jnp.minimum(1.0, jnp.exp(jnp.minimum(log_ratio, 0.0)))
        is_accepted = jnp.log(jax.random.uniform(k_acc, (), u.dtype)) < log_ratio
        new_state = jax.tree.map(
            lambda a, b: jnp.where(is_accepted, a, b), ABCMCMCState(u_new, lk_new, d_new), state
        )
        return new_state, ABCMCMCInfo(accept_prob.astype(u.dtype), is_accepted, d_new, new_state.distance)

    return step


def abc_mcmc_method(
    model: GenerativeModel,
    x_obs,
    *,
    epsilon: float,
    proposal_scale=None,
    kernel: str = "uniform",
    adapt_step_size: bool = False,
    target_acceptance: float = 0.234,
    n_search: int = 100_000,
    sample_inputs: Optional[Callable[[Array], Array]] = None,
) -> Method:
    """ABC-MCMC (Marjoram et al. 2003; paper eq. 5) as a :class:`~dgm.kernels.base.Method` (name ``"abc-mcmc"``).

    Args:
      model, x_obs: the generative model and the observations ``x̄``.
      epsilon: kernel tolerance.
      proposal_scale: random-walk standard deviation on ``u1`` (scalar, or a vector of length
        ``model.parameter_inputs``); default ``0.1`` (the prior of ``u1`` has unit scale).
      kernel: ``"uniform"`` (ball, the paper's choice) or ``"gaussian"``.
      adapt_step_size: default ``False``: the random-walk scale stays ``proposal_scale`` and the driver's step size is
        ignored (``initial_step_size=None``). ABC-MCMC acceptance is bounded by the probability that a *fresh* ``u2``
        lands inside the ball, even for a zero-length walk step, so dual averaging towards ``target_acceptance`` can
        drive the step size to zero when that probability is below the target (it is on the Lotka–Volterra problem).
        With ``True`` the driver's step size multiplies ``proposal_scale / s0`` (``s0 = proposal_scale`` if scalar,
        else 1) and starts at ``s0``, aiming for ``target_acceptance`` (default 0.234, Roberts et al. 1997).
      n_search, sample_inputs: see :func:`abc_initial_positions` (used only when the model has no ``init``).

    Stats per draw: ``acceptance_rate`` (MH acceptance probability), ``is_accepted``, ``distance`` (of the current
    state) and ``proposal_distance``.
    """
    epsilon = check_epsilon(epsilon)
    check_kernel(kernel)
    if proposal_scale is None:
        proposal_scale = 0.1
    scale = np.asarray(proposal_scale, dtype=np.float64)
    if scale.ndim == 0:
        s0 = float(scale)
    elif scale.shape == (model.parameter_inputs,):
        s0 = 1.0
    else:
        raise ValueError(
            f"proposal_scale must be a scalar or have shape ({model.parameter_inputs},), got shape {scale.shape}"
        )
    if not (np.all(scale > 0) and np.all(np.isfinite(scale))):
        raise ValueError("proposal_scale must be positive and finite")
    base_scale = scale / s0
    distance_fn = abc_distance(model, x_obs)
    kernel_step = abc_mcmc_kernel(model, distance_fn, epsilon, kernel)

    def init(position):
        return abc_mcmc_init(position, distance_fn, epsilon, kernel)

    def step(key, state, step_size):
        dtype = state.position.dtype
        rw = jnp.asarray(base_scale, dtype)
        rw = rw * jnp.asarray(step_size, dtype) if adapt_step_size else rw * s0
        return kernel_step(key, state, rw)

    def initial_positions(key, n_chains):
        return abc_initial_positions(
            model, x_obs, key, n_chains, epsilon=epsilon, kernel=kernel, n_search=n_search,
            sample_inputs=sample_inputs,
        )

    return Method(
        name="abc-mcmc",
        initial_positions=initial_positions,
        init=init,
        step=step,
        position=lambda state: state.position,
        acceptance=lambda info: info.acceptance_rate,
        stats=lambda info: info._asdict(),  # acceptance_rate, is_accepted, proposal_distance, distance
        initial_step_size=s0 if adapt_step_size else None,
        target_acceptance=float(target_acceptance),
        epsilon=epsilon,
        kernel=KERNEL_LABELS[kernel],
    )
