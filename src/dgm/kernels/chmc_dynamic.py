"""Constrained HMC with dynamic integration time: a NUTS-style sampler on the manifold, BlackJAX style.

mici's ``DynamicMultinomialHMC`` run with dgm's constrained leapfrog step (:mod:`dgm.integrator`, Algorithm 1's
SIMDYN with one step at a time). A transition from ``u`` on the manifold:

1. ``p = PROJECTMOM(n)``, ``n ~ N(0, I)``; ``H(u, p) = phi(u) + p^T p / 2`` with ``phi = -log rho + 1/2 log|J J^T|``
   (eq. 16), so the target on the manifold is ``rho(u) |J J^T|^{-1/2}``, exactly as for the static kernel.
2. Tree doubling (Hoffman & Gelman 2014, Algorithm 3; Betancourt 2017): at depth ``j = 0, 1, ...`` a direction
   ``d = +-1`` is drawn and a subtree of ``2^j`` constrained leapfrog steps of size ``d * step_size`` is built from
   the trajectory's edge in that direction. A step with negative size is the time-reversed step (negate ``p``,
   step, negate ``p``: RATTLE and the geodesic projections are linear in ``p``).
3. Multinomial sampling of the next state: uniform progressive sampling inside a subtree, *biased progressive*
   sampling between the old trajectory and a new subtree (accept the subtree's candidate with probability
   ``min(1, W_new / W_old)``, ``W = sum exp(-H)``; Betancourt 2017, appendix A.3.2).
4. Termination: the generalised no-U-turn criterion on sums of momenta (Betancourt 2013, mici's
   ``riemannian_no_u_turn_criterion``): a (sub)trajectory from ``z-`` to ``z+`` with ``rho = sum_i p_i`` is turning
   when ``v-.rho <= 0`` or ``v+.rho <= 0`` (``v = M^{-1} p`` the velocities; momenta are tangent vectors at different
   points, and ``rho`` lives in the ambient space, so only these dot products are used). It is checked on every
   binary subtree as it completes and, for subtrees of depth >= 2, also on the two overlapping trees "left half +
   first state of the right half" and "last state of the left half + right half" (the extra checks of Stan >= 2.26
   and mici's ``do_extra_subtree_checks``). A subtree that turns inside is discarded, as in NUTS; a merged
   trajectory that turns stops the doubling with its candidate kept. ``max_tree_depth`` caps the doublings
   (at most ``2^max_tree_depth - 1`` steps).
5. Failures: a step whose Newton projection does not converge, that fails the reversibility check, that is not
   finite, or whose energy error exceeds ``max_delta_energy`` (a divergence) ends its subtree, which is discarded like
   a divergent subtree in NUTS; the code of that step is ``info.failure``
   (:data:`dgm.integrator.FAILURE_NAMES`). The candidate chosen from the trajectory built before it stands.

**Why detailed balance survives the reversibility check.** NUTS is reversible because every state of the final
trajectory, started with the matching direction sequence, rebuilds the same tree and makes the same stopping
decisions (Hoffman & Gelman 2014, section 3.1.1). For the constrained step this needs the step map to be an
involution (composed with momentum flip) on the set of states where it is defined: the projection is solved
numerically and may have several solutions or none, so a forward step ``z -> z'`` is accepted only when the reverse
projection from ``z'`` lands back on ``z`` (the check of Algorithm 1, Zappa et al. 2018, Lelievre et al. 2019). Then
every accepted step within the tree is a reversible pair: building from any state of the tree in the opposite
direction reproduces the same states, and a step that fails does so whichever tree state the build started from,
because it is always taken from the same edge state with the same step. Discarding the subtree containing a failed
step (instead of truncating it at the failure) keeps the set of candidate trajectories symmetric, exactly like NUTS's
divergence handling; a failed step never contributes a candidate. ``tests/test_chmc_dynamic.py`` checks the
resulting invariance of tree building as a property test, and the sampled distribution against exact conditionals.

**Why written here and not with BlackJAX's** ``blackjax.mcmc.trajectory`` **loop.** BlackJAX's
``dynamic_progressive_integration`` detects a divergence only from the energy and so cannot carry the failure reason
of a constrained step (Newton non-convergence, non-reversible), and its iterative U-turn termination
(``termination.iterative_uturn_numpyro``) does only the basic subtree checks, not the extra overlapping-subtree
checks, and uses ``rho = sum p - (p- + p+)/2``. BlackJAX's proposal pieces are reused (``Proposal``,
``progressive_biased_sampling``; ``progressive_uniform_sampling``'s rule, fed one batch of uniforms per transition
because a key per step, ``fold_in`` + ``bernoulli``, measured 16 of 27 us per step on a 10-input model) and its
``Trajectory`` type holds the kept trajectory. Written by hand: the two ``lax.while_loop`` levels (doublings; steps of one subtree; a subtree carries
only its newest leaf, the momentum of its first leaf and its momentum sum, not BlackJAX's full trajectory, because
selecting whole manifold points per step cost measurable time) and the checkpointed subtree U-turn checks (three
``(max_tree_depth + 1, d)`` arrays: for a subtree of ``2^k`` leaves completing at leaf ``n`` it needs the momentum and
the running momentum sum at its first leaf and at its midpoint, and the momentum at the end of its left half).

Acceptance statistic for dual averaging: the mean over all steps of the trajectory of ``min(1, exp(H0 - H_i))``
(Stan's), except that a trajectory cut by a failed step reports 0, as mici does and as dgm's static kernel does for a
failed trajectory, so that failures shrink the adapted step size.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
from blackjax.base import SamplingAlgorithm
from blackjax.mcmc.proposal import Proposal, progressive_biased_sampling
from blackjax.mcmc.trajectory import Trajectory

from dgm.geometry.base import Geometry, ManifoldPoint, project_momentum
from dgm.integrator import DIVERGENT, NON_FINITE, OK, IntegratorSettings, geodesic_drift, kick
from dgm.kernels.chmc import CHMCState, init

Array = jax.Array

__all__ = ["DynamicInfo", "Leaf", "TreeResult", "build_kernel", "build_tree", "init", "as_top_level_api"]


class Leaf(NamedTuple):
    """A state of the trajectory: the point (with its cached factor, potential, gradient) and the momentum."""

    point: ManifoldPoint
    momentum: Array


class DynamicInfo(NamedTuple):
    acceptance_rate: Array  # mean of min(1, exp(H0 - H_i)) over the trajectory; 0 when a failed step cut it
    is_accepted: Array  # the chain moved
    failure: Array  # 0 = none, else the dgm.integrator.FAILURE_NAMES code of the step that ended the trajectory
    newton_iterations: Array
    num_integration_steps: Array  # leapfrog steps, the failed one included
    tree_depth: Array  # doublings attempted
    is_turning: Array  # stopped by the no-U-turn criterion (not by max_tree_depth or a failure)
    energy: Array
    newton_refreshes: Array  # Newton refreshes of the Jacobian in stalled projections (dgm.geometry.base)


class TreeResult(NamedTuple):
    proposal: Proposal  # proposal.state is the chosen Leaf
    trajectory: Trajectory  # the kept trajectory in time order (rejected subtrees excluded)
    depth: Array
    failure: Array
    turning: Array
    num_steps: Array
    newton_iterations: Array
    newton_refreshes: Array


class _Checkpoints(NamedTuple):
    start_momentum: Array  # (K + 1, d): momentum at the first leaf of the latest block of 2^k leaves
    sum_before_start: Array  # (K + 1, d): running momentum sum just before that leaf
    end_momentum: Array  # (K + 1, d): momentum at the last leaf of the latest completed block of 2^k leaves


def _turning(velocity_a, velocity_b, rho):
    return (jnp.dot(velocity_a, rho) <= 0) | (jnp.dot(velocity_b, rho) <= 0)


def _select(flag, new, old):
    return jax.tree_util.tree_map(lambda a, b: jnp.where(flag, a, b), new, old)


def _progressive_uniform_sampling(uniform, proposal: Proposal, new: Proposal) -> Proposal:
    """BlackJAX's ``progressive_uniform_sampling`` (take ``new`` with probability ``w_new / (w + w_new)``) driven by a
    given uniform instead of a key."""
    take = uniform < jax.scipy.special.expit(new.weight - proposal.weight)
    weight = jnp.logaddexp(proposal.weight, new.weight)
    sum_log_p_accept = jnp.logaddexp(proposal.sum_log_p_accept, new.sum_log_p_accept)
    chosen = jax.lax.cond(take, lambda: new, lambda: proposal)
    return Proposal(chosen.state, chosen.energy, weight, sum_log_p_accept)


def _energy(leaf: Leaf, inverse_metric: Callable) -> Array:
    return leaf.point.potential + 0.5 * jnp.dot(leaf.momentum, inverse_metric(leaf.momentum))


def build_tree(
    geometry: Geometry,
    settings: IntegratorSettings,
    leaf: Leaf,
    step_size,
    key: Array,
    *,
    max_tree_depth: int = 10,
    max_delta_energy: float = 1000.0,
    directions: Optional[Array] = None,
) -> TreeResult:
    """Grow the NUTS tree from ``leaf`` (momentum in the tangent space) and choose the next state.

    ``directions`` (``(max_tree_depth,)`` of +-1) replaces the random directions (tests use it to rebuild a tree from
    another of its states).
    """
    inverse_metric = lambda p: p  # noqa: E731  (identity metric: velocities are momenta)
    K = int(max_tree_depth)
    d = leaf.momentum.shape[0]
    dtype = leaf.momentum.dtype
    energy0 = _energy(leaf, inverse_metric)
    levels = jnp.arange(K + 1)
    block = jnp.left_shift(1, levels)  # 2^k

    def leapfrog(leaf: Leaf, dt):
        p = kick(geometry, leaf.point, leaf.momentum, 0.5 * dt)
        new_point, p, status, its, refreshes = geodesic_drift(geometry, leaf.point, p, dt, settings)
        return Leaf(new_point, kick(geometry, new_point, p, 0.5 * dt)), status, its, refreshes

    def subtree(uniforms, offset, start: Leaf, depth, direction):
        """``2^depth`` steps from ``start`` (uniform progressive sampling); stops at a failure or an inner U-turn.

        Returns the proposal, the last leaf built (the new edge), the momentum of the first leaf built (the inner
        edge, needed only for the U-turn checks after merging), the momentum sum, the status and counters."""
        n_leaves = jnp.left_shift(1, depth)
        dt = direction * step_size
        zeros = jnp.zeros((K + 1, d), dtype)

        def cond(carry):
            n, *_, failure, turning, _, _ = carry
            return (n < n_leaves) & (failure == OK) & ~turning

        def body(carry):
            n, edge, first_momentum, proposal, total, checkpoints, _, _, newton, refreshes = carry
            new, status, its, ref = leapfrog(edge, dt)
            energy = _energy(new, inverse_metric)
            status = jnp.where((status == OK) & ~jnp.isfinite(energy), NON_FINITE, status)
            status = jnp.where((status == OK) & (energy - energy0 > max_delta_energy), DIVERGENT, status)
            energy = jnp.where(status == OK, energy, jnp.inf)
            delta = energy0 - energy
            # the placeholder proposal has weight -inf, so the first leaf is taken with probability 1
            proposal = _progressive_uniform_sampling(uniforms[offset + n], proposal,
                                                     Proposal(new, energy, delta, jnp.minimum(delta, 0.0)))
            first_momentum = jnp.where(n == 0, new.momentum, first_momentum)
            # U-turn checks of every block of 2^k leaves (k = 1..depth) completing at leaf n, with the extra checks
            before = total
            total = total + new.momentum
            starts = n % block == 0
            checkpoints = checkpoints._replace(
                start_momentum=jnp.where(starts[:, None], new.momentum, checkpoints.start_momentum),
                sum_before_start=jnp.where(starts[:, None], before, checkpoints.sum_before_start),
            )
            ends = (n + 1) % block == 0
            start_v = jax.vmap(inverse_metric)(checkpoints.start_momentum)
            end_v = jax.vmap(inverse_metric)(checkpoints.end_momentum)
            v = inverse_metric(new.momentum)
            s0, sm = checkpoints.sum_before_start[1:], checkpoints.sum_before_start[:-1]  # block start, midpoint
            whole = jax.vmap(_turning, (0, None, 0))(start_v[1:], v, total - s0)
            left_plus = jax.vmap(_turning)(start_v[1:], start_v[:-1], sm - s0 + checkpoints.start_momentum[:-1])
            plus_right = jax.vmap(_turning, (0, None, 0))(end_v[:-1], v, checkpoints.end_momentum[:-1] + total - sm)
            k = levels[1:]
            extra = (k >= 2) & (left_plus | plus_right)
            turning = jnp.any(ends[1:] & (k <= depth) & (whole | extra)) & (status == OK)
            checkpoints = checkpoints._replace(
                end_momentum=jnp.where(ends[:, None], new.momentum, checkpoints.end_momentum)
            )
            return (n + 1, new, first_momentum, proposal, total, checkpoints, status, turning, newton + its,
                    refreshes + ref)

        placeholder = Proposal(start, jnp.asarray(jnp.inf, dtype), jnp.asarray(-jnp.inf, dtype),
                               jnp.asarray(-jnp.inf, dtype))
        carry = (jnp.asarray(0, jnp.int32), start, start.momentum, placeholder, jnp.zeros(d, dtype),
                 _Checkpoints(zeros, zeros, zeros), jnp.asarray(OK, jnp.int32), jnp.asarray(False),
                 jnp.asarray(0, jnp.int32), jnp.asarray(0, jnp.int32))
        n, last, first_momentum, proposal, total, _, failure, turning, newton, refreshes = jax.lax.while_loop(
            cond, body, carry)
        return proposal, last, first_momentum, total, failure, turning, n, newton, refreshes

    def merged_turning(left_momenta, right_momenta, left_sum, right_sum, depth):
        """U-turn of the merged trajectory (left then right in time) and, from depth 1, the extra checks."""
        (a, b), (c, e) = left_momenta, right_momenta  # edge momenta of each half, in time order
        v = inverse_metric
        whole = _turning(v(a), v(e), left_sum + right_sum)
        left_plus = _turning(v(a), v(c), left_sum + c)
        plus_right = _turning(v(b), v(e), b + right_sum)
        return whole | ((depth >= 1) & (left_plus | plus_right))

    def cond(carry):
        depth, _, _, failure, turning, _, _, _ = carry
        return (depth < K) & (failure == OK) & ~turning

    def body(carry):
        depth, proposal, trajectory, _, _, steps, newton, refreshes = carry
        key_direction, key_proposal = jax.random.split(jax.random.fold_in(key, depth))
        if directions is None:
            direction = jnp.where(jax.random.bernoulli(key_direction), 1, -1)
        else:
            direction = jnp.asarray(directions)[depth]
        forward = direction > 0
        start = _select(forward, trajectory.rightmost_state, trajectory.leftmost_state)
        sub_proposal, last, first_momentum, sub_sum, failure, sub_turning, n, its, ref = subtree(
            uniforms, steps, start, depth, direction)
        valid = (failure == OK) & ~sub_turning
        kept = proposal._replace(sum_log_p_accept=jnp.logaddexp(proposal.sum_log_p_accept,
                                                                 sub_proposal.sum_log_p_accept))
        proposal = _select(valid, progressive_biased_sampling(key_proposal, proposal, sub_proposal), kept)
        old = (trajectory.leftmost_state.momentum, trajectory.rightmost_state.momentum)
        new_forward = (first_momentum, last.momentum)  # the subtree's edge momenta in time order
        new_backward = (last.momentum, first_momentum)
        turning_forward = merged_turning(old, new_forward, trajectory.momentum_sum, sub_sum, depth)
        turning_backward = merged_turning(new_backward, old, sub_sum, trajectory.momentum_sum, depth)
        turning = jnp.where(valid, jnp.where(forward, turning_forward, turning_backward), sub_turning)
        merged = Trajectory(_select(forward, trajectory.leftmost_state, last),
                            _select(forward, last, trajectory.rightmost_state),
                            trajectory.momentum_sum + sub_sum, trajectory.num_states + n)
        trajectory = _select(valid, merged, trajectory)
        return depth + 1, proposal, trajectory, failure, turning, steps + n, newton + its, refreshes + ref

    # one uniform per step of the whole transition, drawn at once (a key per step cost more than the step itself on
    # small models); step i of the transition uses uniforms[i]
    uniforms = jax.random.uniform(jax.random.fold_in(key, K), (2**K,), dtype)
    proposal = Proposal(leaf, energy0, jnp.zeros((), dtype), jnp.asarray(-jnp.inf, dtype))
    carry = (jnp.asarray(0, jnp.int32), proposal, Trajectory(leaf, leaf, leaf.momentum, 1),
             jnp.asarray(OK, jnp.int32), jnp.asarray(False), jnp.asarray(0, jnp.int32), jnp.asarray(0, jnp.int32),
             jnp.asarray(0, jnp.int32))
    depth, proposal, trajectory, failure, turning, steps, newton, refreshes = jax.lax.while_loop(cond, body, carry)
    return TreeResult(proposal, trajectory, depth, failure, turning, steps, newton, refreshes)


def build_kernel(geometry: Geometry, settings: IntegratorSettings = IntegratorSettings(), *,
                 max_tree_depth: int = 10, max_delta_energy: float = 1000.0):
    """Return ``step(key, state, step_size) -> (state, info)`` (state: :class:`dgm.kernels.chmc.CHMCState`)."""
    if int(max_tree_depth) < 1:
        raise ValueError(f"max_tree_depth must be >= 1, got {max_tree_depth!r}")
    if not max_delta_energy > 0:
        raise ValueError(f"max_delta_energy must be positive, got {max_delta_energy!r}")

    def step(key: Array, state: CHMCState, step_size) -> tuple[CHMCState, DynamicInfo]:
        key_momentum, key_tree = jax.random.split(key)
        point = state.point
        noise = jax.random.normal(key_momentum, point.position.shape, point.position.dtype)
        leaf = Leaf(point, project_momentum(geometry, point.factor, noise))
        tree = build_tree(geometry, settings, leaf, step_size, key_tree, max_tree_depth=max_tree_depth,
                          max_delta_energy=max_delta_energy)
        chosen = tree.proposal.state.point
        mean_accept = jnp.exp(tree.proposal.sum_log_p_accept) / jnp.maximum(tree.num_steps, 1)
        info = DynamicInfo(
            acceptance_rate=jnp.where(tree.failure == OK, mean_accept, 0.0),
            is_accepted=jnp.any(chosen.position != point.position),
            failure=tree.failure.astype(jnp.int32),
            newton_iterations=tree.newton_iterations,
            num_integration_steps=tree.num_steps,
            tree_depth=tree.depth,
            is_turning=tree.turning,
            energy=tree.proposal.energy,
            newton_refreshes=tree.newton_refreshes,
        )
        return CHMCState(chosen), info

    return step


def as_top_level_api(geometry: Geometry, step_size: float, *, max_tree_depth: int = 10,
                     max_delta_energy: float = 1000.0,
                     settings: IntegratorSettings = IntegratorSettings()) -> SamplingAlgorithm:
    """A ``blackjax.base.SamplingAlgorithm`` with a fixed step size (``init(position)``, ``step(key, state)``)."""
    kernel = build_kernel(geometry, settings, max_tree_depth=max_tree_depth, max_delta_energy=max_delta_energy)
    return SamplingAlgorithm(lambda position, *_: init(position, geometry),
                             lambda key, state: kernel(key, state, step_size))
