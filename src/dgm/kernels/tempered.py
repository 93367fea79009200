"""Constrained HMC tempered over noise scales: exact moves between the components of ``{u : g(u) = x_obs}``.

Constrained HMC (Algorithm 1) moves continuously on the manifold ``M``, so it never leaves the connected component
where it starts. This kernel runs, inside one chain, a *ladder* ``0 = sigma_0 < sigma_1 < ... < sigma_L`` of
targets on the lifted manifolds ``M_sigma = {(u, eta) : g(u) + sigma eta = x_obs}`` (:mod:`dgm.geometry.lifted`):

* level 0: ``rho(u) |J J^T|^{-1/2} dH(u)`` on ``M`` (paper, eq. 16) times ``N(eta; 0, I_m)``: its ``u``-marginal
  is the exact posterior, and only level 0 is recorded as draws;
* level ``l >= 1``: the noisy relaxation ``pi_l(u) ∝ rho(u) N(x_obs; g(u), sigma_l^2 I)`` on ``R^n`` (as the
  ``u``-marginal of its lifted manifold), which connects the components once ``sigma_l`` is large enough and tends
  to the level-0 target as ``sigma_l -> 0`` (coarea formula);

and targets their product ``prod_l pi_l``, so the level-0 draws are exactly ``pi_0``-distributed (asymptotically in
the Newton tolerance, as Algorithm 1 itself). One transition of the chain is, in order:

1. **Within levels**: one constrained-HMC transition (:func:`dgm.kernels.chmc.build_kernel`, unchanged) on every
   level (one after another on CPU, ``vmap``-ed on accelerators), ``sigma`` as data. Each leaves its own ``pi_l``
   invariant. On the lifted manifold the step size need not shrink as ``sigma -> 0`` (Au, Graham & Thiery 2023),
   but at large ``sigma`` the relaxation is stiffer than the manifold, so each noisy level has its own step size,
   adapted during the warm-up and fixed afterwards (see :func:`build_kernel`); level 0's is the driver's.
2. **Refresh** ``eta_0 ~ N(0, I_m)``: an exact Gibbs step (at ``sigma = 0`` ``eta`` is independent of ``u``).
3. **Swaps** between adjacent levels, the disjoint pairs ``(l, l+1)`` with ``l`` of the iteration's parity
   (deterministic even-odd swaps, Syed et al. 2022; each pair swap is a Metropolis-Hastings move reversible w.r.t.
   the product, so their composition leaves it invariant):

   * ``l >= 1``: the ordinary parallel-tempering swap of ``u_l`` and ``u_{l+1}``: accept with probability
     ``min(1, pi_l(u_{l+1}) pi_{l+1}(u_l) / (pi_l(u_l) pi_{l+1}(u_{l+1})))``
     ``= min(1, exp((r_l - r_{l+1}) (1/(2 sigma_l^2) - 1/(2 sigma_{l+1}^2))))``, ``r = |g(u) - x_obs|^2``
     (``rho`` cancels).
   * ``l = 0``, the dimension-changing swap (reversible jump, Green 1995). Level 0 holds ``(u, eta)`` on
     ``M x R^m`` (dimension ``n``), level 1 holds ``v`` in ``R^n``. With ``T(u, eta) = u - sigma_1 N(u) eta``
     (:mod:`dgm.geometry.normal_map`) and ``S`` its inverse computed by Newton from ``v``, propose
     ``((u', eta'), v') = (S(v), T(u, eta))``. The map ``Psi((u, eta), v) = (S(v), T(u, eta))`` is an involution
     on ``D x T(D)``, ``D = {(u, eta) : S(T(u, eta)) = (u, eta)}`` (checked: the inverse of the proposal must return
     the current ``u`` within ``reverse_check_tol``, else reject; ``S(v)`` must converge, else reject), and the
     Metropolis-Hastings ratio of a deterministic involution (Green 1995; Tierney 1998) w.r.t. the reference measure
     ``H^d(du) x d eta`` on level 0 and ``dv`` on level 1 is

         alpha = min(1, [p0(u', eta') p1(v')] / [p0(u, eta) p1(v)] * |det DT(u, eta)| / |det DT(u', eta')|)

     with ``p0(u, eta) = rho(u) |J(u) J(u)^T|^{-1/2} N(eta; 0, I)`` and ``p1(v) = rho(v) N(x_obs; g(v), sigma_1^2 I)``
     (the Jacobian of ``Psi`` is ``|det DT(u, eta)| |det DS(v)| = |det DT(u, eta)| / |det DT(S(v))|``).

   **Normalising constants cancel**: every ratio holds each level's density once above and once below the line
   (``p0`` at the new and the old level-0 state, ``p1`` likewise), so the unknown constants ``Z_0`` (the evidence,
   ``∫ rho |JJ^T|^{-1/2} dH``) and ``Z_l`` never appear -- as in any parallel-tempering swap, and unlike simulated
   tempering, which would need them. The ``(2 pi)^{-m/2}`` of ``N(eta)`` and the ``sigma_1^{m}`` inside both
   ``|det DT|`` cancel the same way; the code keeps them for clarity.

   As ``sigma_1 -> 0``, ``v' -> u``, ``p1(v') |det DT(u, eta)| -> sigma_1^m p0(u, eta)`` (``|det DT| -> sigma_1^m
   |JJ^T|^{-1/2}`` and ``N(x_obs; g(v'), sigma_1^2) -> sigma_1^{-m} N(eta)``), so the jump is accepted with
   probability -> 1: the ladder joins the manifold continuously.

**Exactness rests on**: invariance of each level under constrained HMC (Algorithm 1; the lifted manifold carries the
relaxation exactly by the graph-chart identity of :mod:`dgm.geometry.lifted`); the Metropolis-Hastings theorem for
deterministic involutions on a state space with densities w.r.t. a product of Hausdorff measures (Green 1995,
Tierney 1998) together with the reversibility check of Zappa, Holmes-Cerfon & Goodman (2018) that makes the computed
inverse a true inverse; and invariance of a product under exchanges between its factors (parallel tempering,
Geyer 1991). Nothing is estimated: no component masses, no normalising constants. The Newton tolerance ``tol``
enters exactly as in Algorithm 1 (asymptotic exactness as ``tol -> 0``). Related: Wang & Han (2026,
arXiv:2604.22055) couple a constrained chain with a relaxation in a tubular neighbourhood by replica exchange.

**The ladder adapts itself in the warm-up** (``adapt_ladder=True``, the default; :func:`build_kernel`'s ``adapt``,
which the driver calls between warm-up chunks with all chains' states). Each chunk is a *round* (Syed,
Bouchard-Côté, Deligiannidis & Doucet, JRSS B 2022, "Non-reversible parallel tempering", arXiv:1905.02939, section 5;
Pigeons.jl is its reference implementation). The swaps above are already their non-reversible deterministic even-odd
(DEO) scheme. During a round each chain records the rejection probability ``1 - alpha`` of every attempted swap;
pooled over chains, the mean rejection ``r_l`` of pair ``(l, l+1)`` estimates the *communication barrier* between the
two levels, ``r_l ≈ Lambda(sigma_{l+1}) - Lambda(sigma_l)`` (their section 5.1), and ``Lambda = sum_l r_l`` is the
global barrier, which sets the round-trip rate ``1 / (2 + 2 Lambda)`` an optimal ladder reaches (their Theorem 3).
After the round (:func:`adapted_schedule`):

* the levels move to equal increments of the cumulative barrier (``Lambda`` interpolated linearly in
  ``log sigma`` and inverted), which equalises the swap rejections between neighbours -- their optimal schedule;
* their number becomes ``ceil(2 Lambda)`` (each pair's rejection about 1/2 or less), between 2 and the capacity
  ``max_levels`` (idle slots do not move or swap);
* the top scale doubles while the top level does not move freely between components: the R-hat across chains of
  the top level's ``(u, u^2)`` exceeds :data:`TOP_RHAT` (each round restarts every chain's top level from
  ``N(0, I)``, dispersed starts that a top stuck in one component cannot reconcile), or a replica's state at the top
  is still correlated (:data:`VISIT_CORRELATION`) with its state at its previous visit -- a round trip that does not
  renew the state cannot carry level 0 to another component. (Syed et al. fix the top at the prior; here the top is a
  noise scale, and the manifold's own scale decides how large it must be.)

Everything the adaptation changes is a warm-up matter: the sampling phase runs the final ladder as a fixed kernel, so
the draws are exact for it. The states record the sampling phase's round trips (a replica going from level 0 to the
top and back, tracked through the swaps: the index process) and rejections; :func:`describe_ladder` puts the final
ladder, the round trips and the barrier in ``Result.settings``. With ``adapt_ladder=False`` the ladder stays as
given (or the default).

Costs per transition: ``L + 1`` constrained-HMC trajectories in ``n + m`` dimensions, ``L + 1`` factorisations
after the swaps, and on even iterations two Newton solves of the ``(n + m)``-dimensional system of the inverse map
(dense, second derivatives of ``g`` by autodiff) and two ``n x n`` determinants. Dense geometry only.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from blackjax.adaptation.step_size import DualAveragingAdaptationState, dual_averaging_adaptation

from dgm.geometry.base import ManifoldPoint
from dgm.geometry.lifted import lift, lifted_geometry, lifted_log_density
from dgm.geometry.normal_map import invert_normal_map, log_abs_det_normal_map, normal_map
from dgm.initialise import find_points_on_manifold
from dgm.integrator import FAILURE_NAMES, NEWTON_NOT_CONVERGED, NON_FINITE, NOT_REVERSIBLE, OK, IntegratorSettings
from dgm.kernels import chmc
from dgm.kernels.symmetry import DEFAULT_SYMMETRY_PROBABILITY
from dgm.kernels.base import Method
from dgm.model import GenerativeModel
from dgm.precision import require_float64

Array = jax.Array


class LadderStatistics(NamedTuple):
    """What one chain's ladder has seen since the last adaptation (a *round*, Syed et al. 2022, section 5.3):

    ``rejection`` / ``attempts`` (``(L,)``): summed swap rejection probabilities ``1 - alpha`` and attempts per pair;
    ``replica`` (``(L + 1,)``): the label of the replica (the index process) each level holds; ``direction`` (per
    replica): ``+1`` when its last extreme level was 0, ``-1`` when it was the top, ``0`` neither yet;
    ``round_trips``: replicas that went from level 0 to the top and back to level 0; ``top_sum`` / ``top_sum_sq``
    / ``top_count``: sums of the features ``(u, u^2)`` of the top level's ``u`` (and of their squares) from
    iteration ``burn_until`` on, for the top level's R-hat across chains; ``round_start``: the round's first
    iteration; ``barrier``, ``top_rhat``: the global barrier ``Lambda`` and the top level's R-hat measured at the
    last adaptation (``nan`` before); ``top_replica``: the replica at the top after the last transition,
    ``visit_features`` (``(L + 1, 2 n)``, per replica): its features when it was last at the top, ``visited``
    whether it has been, ``visit_sums`` (``(6, 2 n)``): sums of ``x, y, xy, x^2, y^2`` and the count over the
    replicas' returns to the top, ``x`` the features when the replica left the top, ``y`` when it came back: their
    correlation (:func:`visit_correlation`, ``visit_correlation`` at the last adaptation) says how much of the top
    state survives a round trip through the ladder."""

    rejection: Array
    attempts: Array
    replica: Array
    direction: Array
    round_trips: Array
    top_sum: Array
    top_sum_sq: Array
    top_count: Array
    round_start: Array
    burn_until: Array
    barrier: Array
    top_rhat: Array
    top_replica: Array
    visit_features: Array
    visited: Array
    visit_sums: Array
    visit_correlation: Array


class TemperedState(NamedTuple):
    """The ladder of one chain: ``points.position`` is ``(L + 1, n + m)``, the lifted point ``(u, eta)`` of each
    level slot (level 0 first); ``sigmas`` (``(L + 1,)``, ``sigmas[0] = 0``) the noise scales, of which levels
    ``0..n_levels`` are in use (``L`` is the ladder's capacity; the slots above ``n_levels`` are idle: they neither
    move nor swap); ``iteration`` counts transitions (its parity selects the swap pairs); ``level_steps`` is the
    dual-averaging state of the step sizes of levels ``1..L`` (BlackJAX, one per level); ``ladder`` the
    statistics of the current round (:class:`LadderStatistics`)."""

    points: ManifoldPoint
    iteration: Array
    level_steps: DualAveragingAdaptationState
    sigmas: Array
    n_levels: Array
    ladder: LadderStatistics

    @property
    def position(self) -> Array:
        return self.points.position[0]


class TemperedInfo(NamedTuple):
    acceptance_rate: Array  # level 0's constrained-HMC acceptance probability
    is_accepted: Array
    failure: Array  # level 0's failure code (dgm.integrator.FAILURE_NAMES)
    newton_iterations: Array
    num_integration_steps: Array
    energy: Array
    level_acceptance_rate: Array  # (L + 1,)
    level_step_size: Array  # (L + 1,) the step size each level used
    level_failure: Array  # (L + 1,)
    swap_attempted: Array  # (L,) pair (l, l + 1) attempted this iteration
    swap_acceptance_rate: Array  # (L,) min(1, ratio), 0 when not attempted or invalid
    swap_accepted: Array  # (L,)
    jump_failure: Array  # failure code of the dimension-changing swap (0: none or not attempted)
    noise_scales: Array  # (L + 1,) the ladder in use (sigma_0 = 0; slots above n_levels idle)
    n_levels: Array  # noisy levels in use
    round_trips: Array  # round trips completed in the current round (cumulative; reset at each adaptation)


TOP_RHAT = 1.05
"""The top noise scale is raised while the R-hat across chains of the top level's ``(u, u^2)`` exceeds this ..."""
VISIT_CORRELATION = 0.5
"""... or while the correlation of the top level's ``(u, u^2)`` between a replica's consecutive visits to the top
exceeds this (max over features): a top that barely moves a replica before it leaves again does not renew level 0's
state, however well it mixes over a whole round."""
TOP_GROWTH = 2.0
"""Factor by which an adaptation raises the top noise scale."""
MAX_TOP_GROWTH = 1e3
"""The top noise scale is never raised beyond this multiple of the initial one."""
MIN_REJECTION = 1e-3
"""Floor of the estimated rejection of a pair, so that the cumulative barrier is strictly increasing."""


def pooled_rejection(ladder: LadderStatistics, n_levels) -> Array:
    """Mean swap rejection probability per pair over the chains (``ladder`` with a leading chain axis), floored at
    :data:`MIN_REJECTION` on the pairs in use and 0 on the idle ones."""
    attempts = jnp.sum(ladder.attempts, axis=0)
    rate = jnp.sum(ladder.rejection, axis=0) / jnp.maximum(attempts, 1)
    in_use = jnp.arange(rate.shape[0]) < n_levels
    return jnp.where(in_use, jnp.clip(jnp.where(attempts > 0, rate, 0.5), MIN_REJECTION, 1.0), 0.0)


def top_level_rhat(ladder: LadderStatistics) -> Array:
    """Gelman-Rubin R-hat (BDA3 eq. 11.4, whole chains) of the top level's ``(u, u^2)`` across chains (max over
    features) from the round's sums; ``nan`` with one chain or fewer than 4 counted draws."""
    count = ladder.top_count[:, None]
    mean = ladder.top_sum / jnp.maximum(count, 1)
    var = (ladder.top_sum_sq - count * mean**2) / jnp.maximum(count - 1, 1)
    n_chains, n = mean.shape[0], jnp.min(ladder.top_count)
    within = jnp.mean(var, axis=0)
    between = jnp.var(mean, axis=0, ddof=1) if n_chains > 1 else jnp.zeros_like(within)
    tiny = 1e-20 * (1.0 + jnp.max(jnp.abs(mean), axis=0)) ** 2
    pooled = (n - 1) / jnp.maximum(n, 1) * within + between
    rhat = jnp.where(within > tiny, jnp.sqrt(pooled / jnp.where(within > tiny, within, 1.0)),
                     jnp.where(between > tiny, jnp.inf, 1.0))
    return jnp.where((n_chains > 1) & (n >= 4), jnp.max(rhat), jnp.nan)


def visit_correlation(ladder: LadderStatistics) -> Array:
    """Pooled correlation (max over the features ``(u, u^2)``, chains pooled: leading axis) between a replica's
    features when it left the top and when it next reached it; ``nan`` with fewer than 8 returns."""
    sums = jnp.sum(ladder.visit_sums, axis=0)  # (6, 2n)
    count = sums[5, 0]
    mx, my = sums[0] / jnp.maximum(count, 1), sums[1] / jnp.maximum(count, 1)
    cov = sums[2] / jnp.maximum(count, 1) - mx * my
    vx = sums[3] / jnp.maximum(count, 1) - mx**2
    vy = sums[4] / jnp.maximum(count, 1) - my**2
    scale = jnp.sqrt(jnp.maximum(vx * vy, 0.0))
    corr = jnp.where(scale > 1e-300, cov / jnp.where(scale > 1e-300, scale, 1.0), 1.0)
    return jnp.where(count >= 8, jnp.max(corr), jnp.nan)


def _visit_correlation_host(visit_sums) -> float:
    """:func:`visit_correlation` in NumPy (for reports outside 64-bit mode)."""
    sums = np.sum(np.asarray(visit_sums, np.float64), axis=0)
    count = sums[5, 0]
    if count < 8:
        return float("nan")
    mx, my = sums[0] / count, sums[1] / count
    cov, vx, vy = sums[2] / count - mx * my, sums[3] / count - mx**2, sums[4] / count - my**2
    scale = np.sqrt(np.maximum(vx * vy, 0.0))
    return float(np.max(np.where(scale > 1e-300, cov / np.where(scale > 1e-300, scale, 1.0), 1.0)))


def adapted_schedule(sigmas: Array, n_levels, rejection: Array, raise_top, capacity: int):
    """The next ladder ``(sigmas', n_levels', Lambda)`` from the pooled rejection ``r_l`` of the pairs in use
    (Syed, Bouchard-Côté, Deligiannidis & Doucet 2022, section 5: the rejection of a pair estimates the
    communication barrier between its levels, ``r(s, s') ≈ Lambda(s') - Lambda(s)``, and the optimal schedule puts
    the levels at equal increments of the cumulative barrier ``Lambda``).

    Coordinate: ``t = log sigma`` for the noisy levels, where the barrier density of the relaxation is flat near
    the manifold (``|g - x|^2 ~ sigma^2 chi^2_m`` under ``pi_sigma``, so ``Lambda`` grows like ``log sigma``).
    Level 0 (``sigma = 0``, ``t = -inf``) is joined to level 1 by the dimension-changing swap, whose rejection falls
    as ``sigma_1 -> 0``: its barrier ``r_0`` is placed on a virtual segment one mean spacing below ``t_1``, so that
    equalising moves ``sigma_1`` down while the jump is the bottleneck, up while it is not. ``Lambda`` is
    interpolated linearly between the knots ``(t_l, r_0 + ... + r_{l-1})`` and inverted at ``Lambda j / K'``,
    ``j = 1..K'``. ``raise_top``: the top is first moved to ``TOP_GROWTH sigma_K``, the barrier extrapolated there
    with the top pair's density (conservative: the density falls as the relaxation tends to the prior). The number of
    noisy levels is ``K' = ceil(2 Lambda)`` (so each pair's rejection is about 1/2 or less), between 2 and
    ``capacity``. Idle slots above ``K'`` take the top scale."""
    slots = jnp.arange(capacity + 1)
    in_use = (slots >= 1) & (slots <= n_levels)
    t = jnp.log(jnp.where(in_use, sigmas, 1.0))
    t_top = t[n_levels]
    spacing = jnp.where(n_levels > 1, (t_top - t[1]) / jnp.maximum(n_levels - 1, 1), jnp.log(TOP_GROWTH))
    # knots (t_l, Lambda_l), l = 0 (virtual) .. capacity; beyond n_levels strictly increasing continuations
    cumulative = jnp.concatenate([jnp.zeros((1,), rejection.dtype), jnp.cumsum(rejection)])
    barrier = cumulative[n_levels]
    growth = jnp.where(raise_top, jnp.log(TOP_GROWTH), 0.0)
    beyond = jnp.maximum(slots - n_levels, 0).astype(t.dtype)
    knots_t = jnp.where(slots == 0, t[1] - spacing,
                        jnp.where(slots <= n_levels, t, t_top + growth * jnp.minimum(beyond, 1.0) + 1e-9 * beyond))
    top_density = rejection[n_levels - 1] / jnp.maximum(t_top - knots_t[n_levels - 1], 1e-12)
    new_barrier = barrier + top_density * growth
    knots_lambda = jnp.where(slots <= n_levels, cumulative[jnp.minimum(slots, n_levels)],
                             new_barrier * jnp.minimum(beyond, 1.0) + barrier * (1 - jnp.minimum(beyond, 1.0))
                             + 1e-12 * beyond)
    new_levels = jnp.clip(jnp.ceil(2.0 * new_barrier), 2, capacity).astype(jnp.int32)
    targets = new_barrier * jnp.minimum(slots, new_levels) / new_levels
    new_t = jnp.interp(targets, knots_lambda, knots_t)
    new_t = new_t.at[new_levels].set(t_top + growth)
    new_t = jnp.where(slots > new_levels, t_top + growth, new_t)
    new_sigmas = jnp.where(slots == 0, 0.0, jnp.exp(new_t))
    return new_sigmas, new_levels, barrier


def build_kernel(model: GenerativeModel, x_obs: Array, noise_scales,
                 settings: IntegratorSettings = IntegratorSettings(), n_steps=(4, 8), *,
                 projection: str = "quasi-newton", log_det_gradient: str = "vjp",
                 n_adapt: int = 0, initial_step_size: float = 0.1, target_acceptance: float = 0.8,
                 level_method: str = "auto", capacity: int | None = None):
    """``(init(u) -> state, step(key, state, step_size) -> (state, info), adapt(states, key) -> states)`` for the
    ladder ``(0, *noise_scales)`` (``noise_scales`` strictly increasing and positive: see
    :func:`check_noise_scales`), held in the state with room for ``capacity`` noisy levels (default: as many as
    given).

    ``step_size`` is level 0's (the driver adapts it on level 0's acceptance). Each noisy level has its own step
    size, which matters at large ``sigma`` where the relaxation is far from the manifold and the lifted geometry no
    longer absorbs the stiffness: dual averaging (BlackJAX) towards ``target_acceptance`` from
    ``initial_step_size`` during the first ``n_adapt`` transitions (the driver's warm-up), frozen at its averaged
    value afterwards, so the sampling phase runs a fixed kernel.

    ``adapt`` (all chains' states, chain axis first, host-called between warm-up chunks): at an iteration before
    ``n_adapt``, a new ladder from the round's pooled swap rejections (:func:`adapted_schedule`), with the top raised
    when the top level's R-hat across chains exceeds :data:`TOP_RHAT`; each level's ``u`` moves to the new level
    nearest in ``log sigma`` and the top level of every chain restarts from ``N(0, I)`` (dispersed starts, so that the
    next round's R-hat can see a top level that does not move between components); the level step sizes restart
    dual averaging. At or after ``n_adapt`` (the end of the warm-up) it only starts a new round (statistics reset),
    so the sampling phase's round trips and rejections are counted alone. Warm-up only: the sampling phase runs the
    fixed kernel, exact for the final ladder.

    ``level_method``: how the levels share the machine, as the driver's ``chain_method``: ``"vectorized"``
    (``vmap``), ``"sequential"`` (``lax.map``, one level after another: 15 % faster per transition on CPU for the
    2-D example, where lock-stepped loops over levels waste work; idle levels are skipped) or ``"auto"``
    (sequential on CPU)."""
    if level_method == "auto":
        level_method = "sequential" if jax.default_backend() == "cpu" else "vectorized"
    if level_method not in ("vectorized", "sequential"):
        raise ValueError(f"level_method must be 'auto', 'vectorized' or 'sequential', got {level_method!r}")

    def over_levels(fn):
        if level_method == "vectorized":
            return jax.vmap(fn)
        return lambda *args: jax.lax.map(lambda a: fn(*a), args)

    n = model.input_dim
    x_obs = jnp.asarray(x_obs)
    m = x_obs.shape[0]
    initial = jnp.asarray(noise_scales, x_obs.dtype)
    n_initial = initial.shape[0]
    capacity = n_initial if capacity is None else max(int(capacity), n_initial)
    initial_sigmas = jnp.concatenate([jnp.zeros((1,), x_obs.dtype), initial,
                                      jnp.full((capacity - n_initial,), initial[-1], x_obs.dtype)])
    initial_top = initial[-1]
    n_pairs = capacity
    generator = model.generator

    def geometry(sigma):
        return lifted_geometry(model, x_obs, sigma, projection=projection, log_det_gradient=log_det_gradient)

    def level_point(z, sigma):
        return geometry(sigma).point(z)

    da_init, da_update, da_final = dual_averaging_adaptation(target_acceptance)

    def level_step(key, point, sigma, step_size, active):
        def run(_):
            new, info = chmc.build_kernel(geometry(sigma), settings, n_steps)(key, chmc.CHMCState(point), step_size)
            return new.point, info

        def idle(_):
            info_like = jax.eval_shape(run, None)[1]
            return point, jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), info_like)

        return jax.lax.cond(active, run, idle, None)

    def new_round(ladder: LadderStatistics, iteration, burn_until, barrier, top_rhat, visit) -> LadderStatistics:
        dtype = x_obs.dtype
        return LadderStatistics(
            rejection=jnp.zeros((n_pairs,), dtype), attempts=jnp.zeros((n_pairs,), jnp.int32),
            replica=jnp.arange(n_pairs + 1, dtype=jnp.int32),
            direction=jnp.zeros((n_pairs + 1,), jnp.int32).at[0].set(1),
            round_trips=jnp.asarray(0, jnp.int32),
            top_sum=jnp.zeros((2 * n,), dtype), top_sum_sq=jnp.zeros((2 * n,), dtype),
            top_count=jnp.asarray(0.0, dtype), round_start=jnp.asarray(iteration, jnp.int32),
            burn_until=jnp.asarray(burn_until, jnp.int32), barrier=jnp.asarray(barrier, dtype),
            top_rhat=jnp.asarray(top_rhat, dtype), top_replica=jnp.asarray(-1, jnp.int32),
            visit_features=jnp.zeros((n_pairs + 1, 2 * n), dtype), visited=jnp.zeros((n_pairs + 1,), bool),
            visit_sums=jnp.zeros((6, 2 * n), dtype), visit_correlation=jnp.asarray(visit, dtype))

    def init(u: Array) -> TemperedState:
        require_float64(u)
        # u on M lifts to (u, 0) on every M_sigma
        z = jnp.broadcast_to(jnp.concatenate([u, jnp.zeros((m,), u.dtype)]), (n_pairs + 1, n + m))
        steps = jax.vmap(da_init)(jnp.full((n_pairs,), initial_step_size, u.dtype))
        ladder = new_round(None, 0, 0, jnp.nan, jnp.nan, jnp.nan)
        return TemperedState(jax.vmap(level_point)(z, initial_sigmas), jnp.asarray(0, jnp.int32), steps,
                             initial_sigmas, jnp.asarray(n_initial, jnp.int32), ladder)

    def log_p0(u, eta):  # log rho(u) - 1/2 log|J J^T| - |eta|^2 / 2: level 0's geometry, so the same code as CHMC
        return -geometry(jnp.zeros((), x_obs.dtype)).point(jnp.concatenate([u, eta])).potential

    def log_p1(v, sigma):  # log rho(v) - |g(v) - x_obs|^2 / (2 sigma_1^2)
        return lifted_log_density(model)(lift(model, x_obs, v, sigma))

    def jump(u, eta, v, sigma):
        """The dimension-changing swap of levels 0 and 1 (``sigma = sigma_1``): (log ratio, u', eta', v', code)."""
        v_new = normal_map(generator, u, eta, sigma)
        # S(v_new) must give back u (reversibility); S(v) is the proposal for level 0. One vmapped Newton solve
        # (one loop in the compiled program), and one vmapped log-determinant below.
        inverses = jax.vmap(lambda w: invert_normal_map(generator, x_obs, w, sigma, settings.tol,
                                                        settings.max_newton))(jnp.stack([v_new, v]))
        returns = jnp.max(jnp.abs(inverses.position[0] - u)) <= settings.reverse_check_tol
        u_new, eta_new = inverses.position[1], inverses.eta[1]
        log_det = jax.vmap(lambda a, b: log_abs_det_normal_map(generator, a, b, sigma))(
            jnp.stack([u, u_new]), jnp.stack([eta, eta_new]))
        log_ratio = (log_p0(u_new, eta_new) + log_p1(v_new, sigma) - log_p0(u, eta) - log_p1(v, sigma)
                     + log_det[0] - log_det[1])
        failure = jnp.where(
            ~jnp.all(inverses.converged), NEWTON_NOT_CONVERGED,
            jnp.where(~returns, NOT_REVERSIBLE, jnp.where(jnp.isfinite(log_ratio), OK, NON_FINITE)))
        log_ratio = jnp.where(failure == OK, log_ratio, -jnp.inf)
        return log_ratio, u_new, eta_new, v_new, failure.astype(jnp.int32)

    def no_jump(u, eta, v, sigma):
        return jnp.asarray(-jnp.inf, u.dtype), u, eta, v, jnp.asarray(OK, jnp.int32)

    def step(key: Array, state: TemperedState, step_size) -> tuple[TemperedState, TemperedInfo]:
        key_levels, key_eta, key_swap = jax.random.split(key, 3)
        sigmas, n_levels, ladder = state.sigmas, state.n_levels, state.ladder
        slots = jnp.arange(n_pairs + 1)
        level_active = slots <= n_levels
        # 1. constrained HMC on every level in use
        adapting = state.iteration < n_adapt
        noisy_steps = jnp.where(adapting, jnp.exp(state.level_steps.log_step_size),
                                jax.vmap(da_final)(state.level_steps))
        steps = jnp.concatenate([jnp.reshape(step_size, (1,)).astype(noisy_steps.dtype), noisy_steps])
        points, infos = over_levels(level_step)(jax.random.split(key_levels, n_pairs + 1), state.points, sigmas,
                                                steps, level_active)
        updated = jax.vmap(da_update)(state.level_steps, infos.acceptance_rate[1:])
        level_steps = jax.tree_util.tree_map(
            lambda new, old: jnp.where(adapting & level_active[1:], new, old), updated, state.level_steps)
        z = points.position
        u_levels = z[:, :n]
        # 2. exact Gibbs refresh of eta at level 0
        eta0 = jax.random.normal(key_eta, (m,), z.dtype)
        # 3. swaps of the pairs (l, l+1) in use with l of this iteration's parity
        parity = state.iteration % 2
        pairs = jnp.arange(n_pairs)
        attempted = ((pairs % 2) == parity) & (pairs < n_levels)
        r = jax.vmap(lambda u: jnp.sum((generator(u) - x_obs) ** 2))(u_levels)
        lo, hi = sigmas[:-1], sigmas[1:]
        safe_lo = jnp.where(lo > 0, lo, 1.0)  # pair 0 is the jump, computed below
        log_ratio = (r[:-1] - r[1:]) * (0.5 / safe_lo**2 - 0.5 / hi**2)
        jump_ratio, u_jump, eta_jump, v_jump, jump_failure = jax.lax.cond(
            parity == 0, jump, no_jump, u_levels[0], eta0, u_levels[1], sigmas[1])
        log_ratio = log_ratio.at[0].set(jump_ratio)
        log_ratio = jnp.where(attempted, log_ratio, -jnp.inf)
        uniforms = jax.random.uniform(key_swap, (n_pairs,), z.dtype)
        accepted = attempted & (jnp.log(uniforms) < log_ratio)
        # apply: swap u between accepted pairs (disjoint), then the jump's own states at levels 0 and 1
        moves = accepted.astype(jnp.int32)
        source = (slots + jnp.concatenate([moves, jnp.zeros((1,), jnp.int32)])
                  - jnp.concatenate([jnp.zeros((1,), jnp.int32), moves]))
        new_u = u_levels[source]
        new_u = new_u.at[0].set(jnp.where(accepted[0], u_jump, new_u[0]))
        new_u = new_u.at[1].set(jnp.where(accepted[0], v_jump, new_u[1]))
        new_eta0 = jnp.where(accepted[0], eta_jump, eta0)
        lifted = jax.vmap(lambda u, s: lift(model, x_obs, u, jnp.where(s > 0, s, 1.0)))(new_u, sigmas)
        new_z = lifted.at[0].set(jnp.concatenate([new_u[0], new_eta0]))
        changed = (source != slots).at[0].set(True)
        new_z = jnp.where(changed[:, None], new_z, z)  # unchanged levels keep their point exactly
        points = over_levels(lambda z_l, s, c, old: jax.lax.cond(c, lambda: level_point(z_l, s), lambda: old))(
            new_z, sigmas, changed, points)

        # 4. the round's statistics: rejections, the index process (round trips), the top level's features
        swap_rate = jnp.where(attempted, jnp.minimum(1.0, jnp.exp(log_ratio)), 0.0)
        replica = ladder.replica[source]
        bottom, top = replica[0], replica[n_levels]
        completed = ladder.direction[bottom] == -1
        direction = ladder.direction.at[bottom].set(1).at[top].set(-1)
        round_trips = ladder.round_trips + completed.astype(jnp.int32)
        u_top = new_u[n_levels]
        features = jnp.concatenate([u_top, u_top * u_top])
        counted = state.iteration >= ladder.burn_until
        arrived = (top != ladder.top_replica) & ladder.visited[top] & counted
        x_visit = ladder.visit_features[top]
        visit_terms = jnp.stack([x_visit, features, x_visit * features, x_visit**2, features**2,
                                 jnp.ones_like(features)])
        ladder = ladder._replace(
            top_replica=top, visit_features=ladder.visit_features.at[top].set(features),
            visited=ladder.visited.at[top].set(True),
            visit_sums=ladder.visit_sums + jnp.where(arrived, visit_terms, 0.0))
        ladder = ladder._replace(
            rejection=ladder.rejection + jnp.where(attempted, 1.0 - swap_rate, 0.0),
            attempts=ladder.attempts + attempted.astype(jnp.int32),
            replica=replica, direction=direction, round_trips=round_trips,
            top_sum=ladder.top_sum + jnp.where(counted, features, 0.0),
            top_sum_sq=ladder.top_sum_sq + jnp.where(counted, features * features, 0.0),
            top_count=ladder.top_count + counted.astype(ladder.top_count.dtype))
        info = TemperedInfo(
            acceptance_rate=infos.acceptance_rate[0],
            is_accepted=infos.is_accepted[0],
            failure=infos.failure[0],
            newton_iterations=infos.newton_iterations[0],
            num_integration_steps=infos.num_integration_steps[0],
            energy=infos.energy[0],
            level_acceptance_rate=infos.acceptance_rate,
            level_step_size=steps,
            level_failure=infos.failure,
            swap_attempted=attempted,
            swap_acceptance_rate=swap_rate,
            swap_accepted=accepted,
            jump_failure=jump_failure,
            noise_scales=sigmas,
            n_levels=n_levels,
            round_trips=round_trips,
        )
        return TemperedState(points, state.iteration + 1, level_steps, sigmas, n_levels, ladder), info

    def adapt(states: TemperedState, key: Array) -> TemperedState:
        """Between warm-up chunks, over all chains (leading axis): see the docstring above."""
        n_chains = states.iteration.shape[0]
        iteration = states.iteration[0]
        sigmas, n_levels = states.sigmas[0], states.n_levels[0]  # one ladder for all chains
        rejection = pooled_rejection(states.ladder, n_levels)
        rhat = top_level_rhat(states.ladder)
        renewal = visit_correlation(states.ladder)
        final = iteration >= n_adapt
        stuck_top = ((n_chains > 1) & (rhat > TOP_RHAT)) | (renewal > VISIT_CORRELATION)
        raise_top = (~final) & stuck_top & (sigmas[n_levels] * TOP_GROWTH <= MAX_TOP_GROWTH * initial_top)
        new_sigmas, new_levels, barrier = adapted_schedule(sigmas, n_levels, rejection, raise_top, capacity)
        new_sigmas = jnp.where(final, sigmas, new_sigmas)
        new_levels = jnp.where(final, n_levels, new_levels)
        round_length = iteration - states.ladder.round_start[0]
        ladder = jax.vmap(lambda _: new_round(None, iteration, jnp.where(final, iteration,
                                                                          iteration + round_length // 4),
                                              barrier, rhat, renewal))(jnp.arange(n_chains))
        # each new level takes the u (and the step size) of the old level in use nearest in log sigma
        slots = jnp.arange(n_pairs + 1)
        old_t = jnp.where((slots >= 1) & (slots <= n_levels), jnp.log(jnp.where(slots >= 1, sigmas, 1.0)), jnp.inf)
        new_t = jnp.log(jnp.where(slots >= 1, new_sigmas, 1.0))
        nearest = jnp.argmin(jnp.abs(new_t[:, None] - old_t[None, :]), axis=1)
        nearest = jnp.where(slots == 0, 0, nearest)
        source = jnp.where(final, slots, nearest)
        dispersed = jax.random.normal(key, (n_chains, n), sigmas.dtype)

        def one_chain(state, dispersed_u):
            u = state.points.position[source, :n]
            u = jnp.where(((slots == new_levels) & ~final)[:, None], dispersed_u[None, :], u)
            z = jax.vmap(lambda u_l, s: lift(model, x_obs, u_l, jnp.where(s > 0, s, 1.0)))(u, new_sigmas)
            z = z.at[0].set(state.points.position[0])
            points = jax.vmap(level_point)(z, new_sigmas)
            points = jax.tree_util.tree_map(lambda new, old: jnp.where(final, old, new), points, state.points)
            step_sizes = jnp.exp(state.level_steps.log_step_size)[jnp.maximum(source[1:] - 1, 0)]
            level_steps = jax.tree_util.tree_map(lambda new, old: jnp.where(final, old, new),
                                                 jax.vmap(da_init)(step_sizes), state.level_steps)
            return state._replace(points=points, level_steps=level_steps, sigmas=new_sigmas, n_levels=new_levels)

        states = jax.vmap(one_chain)(states, dispersed)
        return states._replace(ladder=ladder)

    return init, step, adapt


def describe_ladder(states: TemperedState) -> dict:
    """What ``Result.settings`` records of a tempered run from its final states (host arrays, chain axis first):
    the ladder in use (``noise_scales``, ``n_levels``), the sampling phase's ``round_trips`` per chain, its pooled
    swap ``rejection`` per pair and global communication barrier ``barrier`` (``Lambda``, their sum; Syed et al.
    2022), the expected round-trip rate ``1 / (2 + 2 Lambda)`` of an optimal non-reversible ladder, and the
    barrier and top-level R-hat at the last adaptation."""
    states = jax.tree_util.tree_map(np.asarray, states)
    n_levels = int(states.n_levels[0])
    ladder = states.ladder
    attempts = ladder.attempts.sum(axis=0)[:n_levels]  # as pooled_rejection, in NumPy (any precision mode)
    rejection = np.clip(ladder.rejection.sum(axis=0)[:n_levels] / np.maximum(attempts, 1), MIN_REJECTION, 1.0)
    barrier = float(np.sum(rejection)) if np.all(attempts > 0) else float("nan")
    return {
        "noise_scales": [float(s) for s in states.sigmas[0, 1:n_levels + 1]],
        "n_levels": n_levels,
        "round_trips": [int(c) for c in ladder.round_trips],
        "swap_rejection": [float(r) for r in rejection],
        "barrier": barrier,
        "barrier_at_adaptation": float(ladder.barrier[0]),
        "top_rhat_at_adaptation": float(ladder.top_rhat[0]),
        "top_visit_correlation_at_adaptation": float(ladder.visit_correlation[0]),
        "top_visit_correlation": float(_visit_correlation_host(ladder.visit_sums)),
    }


# ---------------------------------------------------------------------------------------------------------------------
# the ladder, the method, the swap report
# ---------------------------------------------------------------------------------------------------------------------
DEFAULT_LOWEST = 0.05
"""Default ``sigma_1 / sigma_L``: the lowest noisy level, relative to the highest."""


def check_noise_scales(noise_scales) -> tuple:
    """Validate a user ladder ``(sigma_1, ..., sigma_L)``: finite, positive, strictly increasing, ``L >= 1``
    (``sigma_0 = 0``, the manifold itself, is implicit). Returns it as a tuple of floats."""
    try:
        scales = np.asarray(noise_scales, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"noise_scales must be a sequence of numbers, got {noise_scales!r}") from None
    if scales.ndim != 1 or scales.size < 1:
        raise ValueError(f"noise_scales must be a non-empty 1-D sequence (sigma_1 < ... < sigma_L), got "
                         f"{noise_scales!r}")
    if not np.all(np.isfinite(scales)):
        raise ValueError(f"noise_scales must be finite, got {noise_scales!r}")
    if not np.all(scales > 0):
        raise ValueError(f"noise_scales must be > 0 (level 0, sigma = 0, is the manifold and is added itself), got "
                         f"{noise_scales!r}")
    if not np.all(np.diff(scales) > 0):
        raise ValueError(f"noise_scales must be strictly increasing, got {noise_scales!r}")
    return tuple(float(s) for s in scales)


def default_level_count(output_dim: int, lowest: float = DEFAULT_LOWEST) -> int:
    """Number of noisy levels of the default ladder: geometric from ``lowest * s`` to ``s`` with ratio at most
    ``1 + 2 / sqrt(m)`` between neighbours (neighbouring relaxations of ``m`` outputs overlap when the log-likelihood
    ``|g - x|^2 / (2 sigma^2) ~ chi^2_m / 2`` changes by O(1) between them), and at least 3."""
    ratio = 1.0 + 2.0 / np.sqrt(output_dim)
    return max(3, 1 + int(np.ceil(np.log(1.0 / lowest) / np.log(ratio))))


def default_noise_scales(x_obs, lowest: float = DEFAULT_LOWEST):
    """The default ladder from the observation scale ``s = RMS(x_obs)`` (1 if that is 0): ``sigma_L = s`` -- noise
    as large as the data, where the relaxation is broad enough to join the components --, ``sigma_1 = lowest * s``
    -- close enough to the manifold that the dimension-changing swap is accepted often --, geometric in between
    (:func:`default_level_count` levels). Works on concrete and traced ``x_obs`` (the count depends only on
    ``len(x_obs)``)."""
    x = jnp.asarray(x_obs)
    scale = jnp.sqrt(jnp.mean(x * x))
    scale = jnp.where(scale > 0, scale, 1.0)
    exponents = jnp.linspace(np.log(lowest), 0.0, default_level_count(x.shape[0], lowest))
    return scale * jnp.exp(exponents)


DEFAULT_MAX_LEVELS = 12
"""Default capacity of an adapted ladder (noisy levels); idle slots cost nothing on CPU (skipped)."""


def tempered_method(model: GenerativeModel, x_obs, *, noise_scales=None, step_size=None, n_steps=(4, 8), n_inner=1,
                    tol=1e-8, max_newton=50, reverse_check_tol=None, projection="quasi-newton",
                    log_det_gradient="vjp", target_acceptance=0.8, init_max_iterations=100, n_warmup=0,
                    adapt_ladder=True, max_levels=DEFAULT_MAX_LEVELS, symmetry_probability=DEFAULT_SYMMETRY_PROBABILITY) -> Method:
    """Constrained HMC tempered over ``noise_scales`` as a :class:`~dgm.kernels.base.Method` (``"chmc-tempered"``).

    ``noise_scales``: the starting ladder ``sigma_1 < ... < sigma_L`` of Gaussian output-noise scales
    (``sigma_0 = 0`` is added); default :func:`default_noise_scales`. ``adapt_ladder`` (default ``True``): during the
    warm-up the ladder adapts itself between the driver's chunks (:func:`build_kernel`'s ``adapt``): levels placed at
    equal steps of the estimated communication barrier, their number ``ceil(2 Lambda)`` (at most ``max_levels``),
    the top raised until the top level's chains agree; ``False`` keeps ``noise_scales`` as given. Each of the driver's
    warm-up chunks (``chunk_size``, default 100 iterations) is one round; the last one runs the final ladder (its
    step sizes settle), so the ladder adapts only when ``n_warmup > chunk_size`` -- the default 500 gives four
    rounds, each able to double the top scale. One driver chain is
    one ladder; only level 0 is recorded. Per-draw statistics beyond constrained HMC's (which are level 0's):
    ``level_acceptance_rate``, ``level_failure``, ``level_step_size``, ``noise_scales`` (capacity ``+ 1`` slots),
    ``swap_attempted``, ``swap_acceptance_rate``, ``swap_accepted`` (capacity pairs), ``jump_failure``,
    ``n_levels``, ``round_trips``; :func:`tempering_summary` condenses them, and ``Result.settings`` records the final
    ladder, the sampling phase's round trips and the barrier (:func:`describe_ladder`). The driver's step size is
    level 0's (adapted on level 0's acceptance); the noisy levels adapt their own during the first ``n_warmup``
    transitions (the driver passes its ``n_warmup``) and keep them fixed afterwards.

    Declared symmetries (``GenerativeModel(..., symmetries=...)``) add their exact moves
    (:mod:`dgm.kernels.symmetry`) to level 0 after each transition, with probability ``symmetry_probability``: a
    mixture of kernels that each leave level 0's factor of the product invariant.
    """
    if reverse_check_tol is None:
        reverse_check_tol = float(tol) ** 0.5
    settings = IntegratorSettings(int(n_inner), float(tol), int(max_newton), float(reverse_check_tol))
    if settings.n_inner < 1:
        raise ValueError(f"n_inner must be >= 1, got {n_inner!r}")
    if not isinstance(adapt_ladder, (bool, np.bool_)):
        raise ValueError(f"adapt_ladder must be True or False, got {adapt_ladder!r}")
    if isinstance(max_levels, bool) or not isinstance(max_levels, (int, np.integer)) or max_levels < 2:
        raise ValueError(f"max_levels must be an integer >= 2, got {max_levels!r}")
    scales = default_noise_scales(x_obs) if noise_scales is None else jnp.asarray(check_noise_scales(noise_scales))
    initial_step_size = 0.1 if step_size is None else float(step_size)
    init, step, adapt = build_kernel(model, x_obs, scales, settings, n_steps, projection=projection,
                                     log_det_gradient=log_det_gradient, n_adapt=int(n_warmup),
                                     initial_step_size=initial_step_size, target_acceptance=target_acceptance,
                                     capacity=int(max_levels) if adapt_ladder else None)
    n = model.input_dim

    structured = model.structure is not None and getattr(model.structure, "square", True)

    def initial_positions(key, n_chains):  # linear-time Gauss-Newton when the model declares structure
        return find_points_on_manifold(model, x_obs, key, n_chains, tol=tol, max_iterations=init_max_iterations,
                                       structured=structured)

    def log_density(state):  # the u-marginal at level 0: log rho(u) - 1/2 log|J J^T|
        eta = state.points.position[0, n:]
        return -state.points.potential[0] + 0.5 * jnp.sum(eta * eta)

    def relocate(state, u):  # level 0 at another point u of the manifold, eta_0 kept (for symmetry moves)
        z = jnp.concatenate([u, state.points.position[0, n:]])
        point = lifted_geometry(model, x_obs, jnp.zeros((), u.dtype), projection=projection,
                                log_det_gradient=log_det_gradient).point(z)
        points = jax.tree_util.tree_map(lambda all_, one: all_.at[0].set(one), state.points, point)
        return state._replace(points=points)

    recorded = {"adapt_ladder": bool(adapt_ladder)}
    if not isinstance(scales, jax.core.Tracer):
        recorded["initial_noise_scales"] = [float(s) for s in np.asarray(scales)]
        if not adapt_ladder:
            recorded["noise_scales"] = recorded["initial_noise_scales"]
    method = Method(
        name="chmc-tempered",
        initial_positions=initial_positions,
        init=init,
        step=step,
        position=lambda state: state.position[:n],
        acceptance=lambda info: info.acceptance_rate,
        stats=lambda info: info._asdict(),
        initial_step_size=initial_step_size,
        target_acceptance=target_acceptance,
        epsilon=0.0,
        kernel="exact",
        log_density=log_density,
        settings=recorded,
        relocate=relocate,
        warmup_hook=adapt if adapt_ladder else None,
        describe_states=describe_ladder,
    )
    if getattr(model, "symmetries", None) and symmetry_probability:
        from dgm.kernels.symmetry import with_symmetry_moves

        method = with_symmetry_moves(method, model.generator, x_obs, model.symmetries,
                                     probability=symmetry_probability, tol=settings.tol,
                                     reverse_check_tol=settings.reverse_check_tol)
    return method


def tempering_summary(result) -> dict:
    """Swap and level statistics of a ``"chmc-tempered"`` :class:`dgm.Result` (sampling phase, levels in use):
    ``noise_scales`` (the final ladder); ``swap_acceptance`` (per pair ``(l, l+1)``, mean acceptance probability over
    attempts); ``swaps_attempted``, ``swaps_accepted`` (counts per pair); ``jump_failures`` (the dimension-changing
    swap's rejections by reason); ``level_acceptance`` (mean constrained-HMC acceptance per level, level 0 first);
    ``round_trips`` (per chain), ``barrier`` (``Lambda``) and ``n_levels`` as in ``Result.settings``.

    Computed from the recorded transitions: with an even ``thin`` every recorded transition has the same parity, so
    only half the pairs appear as attempted (the kernel still runs them all); use an odd ``thin`` to see them all."""
    stats = result.stats
    n_levels = int(np.asarray(stats["n_levels"]).reshape(-1)[-1]) if "n_levels" in stats else None
    attempted = np.asarray(stats["swap_attempted"], dtype=bool)
    rate = np.asarray(stats["swap_acceptance_rate"], dtype=float)
    n_pairs = attempted.shape[-1] if n_levels is None else n_levels
    n_attempts = attempted.reshape(-1, attempted.shape[-1]).sum(axis=0)[:n_pairs]
    jump = np.asarray(stats["jump_failure"])
    level_acceptance = np.asarray(stats["level_acceptance_rate"])
    return {
        "noise_scales": result.settings.get("noise_scales"),
        "n_levels": n_pairs,
        "swap_acceptance": (rate.reshape(-1, rate.shape[-1]).sum(axis=0)[:n_pairs]
                            / np.maximum(n_attempts, 1)).tolist(),
        "swaps_attempted": n_attempts.tolist(),
        "swaps_accepted": np.asarray(stats["swap_accepted"]).reshape(-1, rate.shape[-1]).sum(axis=0)[
            :n_pairs].tolist(),
        "jump_failures": {name: int(np.sum(jump == code)) for code, name in FAILURE_NAMES.items()},
        "level_acceptance": level_acceptance.reshape(-1, level_acceptance.shape[-1]).mean(axis=0)[
            :n_pairs + 1].tolist(),
        "round_trips": result.settings.get("round_trips"),
        "barrier": result.settings.get("barrier"),
    }
