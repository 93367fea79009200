"""Constrained HMC with dynamic integration time (``method="chmc-dynamic"``): the exact checks of the static kernel,
the invariance of tree building (hypothesis), failures counted by reason, and the BlackJAX-style API."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import dgm
from dgm.geometry.base import project_momentum
from dgm.integrator import OK, IntegratorSettings, integrate
from dgm.kernels import chmc_dynamic
from test_chmc_exact import (
    X_CURVE, X_LINEAR, assert_curve_matches_quadrature, assert_linear_conditional_moments, curve_model, curve_moment,
    linear_model,
)
from test_chmc_properties import draw, geometry_through

METHOD = "chmc-dynamic"


def test_linear_gaussian_conditional_moments():
    result = dgm.sample(linear_model(), X_LINEAR, method=METHOD, n_chains=4, n_warmup=300, n_samples=1000, seed=3,
                        progress=False)
    assert_linear_conditional_moments(result)
    assert set(result.stats) >= {"tree_depth", "n_steps", "failure", "is_turning", "step_size", "diverging", "lp"}


def test_nonlinear_curve_matches_quadrature():
    result = dgm.sample(curve_model(), np.array([X_CURVE]), method=METHOD, n_chains=4, n_warmup=300,
                        n_samples=1500, seed=5, progress=False)
    assert_curve_matches_quadrature(result)


def test_dropping_the_determinant_is_detectably_wrong():
    """The checks above can fail: without |JJ^T|^{-1/2} the dynamic kernel's E[u2^2] is far from the quadrature."""
    model = curve_model()
    wrong_density = lambda u: -0.5 * jnp.sum(u**2) + 0.5 * jnp.log(1.0 + 9.0 * u[1] ** 4)
    wrong = dgm.GenerativeModel(model.generator, 2, log_input_density=wrong_density)
    result = dgm.sample(wrong, np.array([X_CURVE]), method=METHOD, n_chains=4, n_warmup=300, n_samples=1000, seed=5,
                        progress=False)
    t = result.inputs[..., 1]
    from conftest import mcse

    assert abs(np.mean(t**2) - curve_moment(lambda s: s**2)) > 8 * mcse(t**2)


# -- tree building is invariant: every state of the final tree rebuilds the same tree ------------------------------
MAX_DEPTH = 6
CONFIG = IntegratorSettings(n_inner=1, tol=1e-11, max_newton=100, reverse_check_tol=1e-6)
_TREE_FN = {}


def tree_fn():
    """Jitted ``(u0, u, p, dt, directions) -> TreeResult`` on the manifold through ``u0`` (compiled once)."""
    if "tree" not in _TREE_FN:

        def tree(u0, u, p, dt, directions):
            geometry = geometry_through(u0)
            leaf = chmc_dynamic.Leaf(geometry.point(u), p)
            return chmc_dynamic.build_tree(geometry, CONFIG, leaf, dt, jax.random.PRNGKey(0),
                                           max_tree_depth=MAX_DEPTH, directions=directions)

        def walk(u0, u, p, dt, n):
            geometry = geometry_through(u0)
            return integrate(geometry, geometry.point(u), p, dt, n, CONFIG)

        _TREE_FN["tree"] = jax.jit(tree)
        _TREE_FN["walk"] = jax.jit(walk)
    return _TREE_FN["tree"], _TREE_FN["walk"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), dt=st.floats(0.05, 0.6), pick=st.floats(0.0, 1.0))
def test_every_state_of_the_tree_rebuilds_the_same_tree(seed, dt, pick):
    """NUTS's reversibility (Hoffman & Gelman 2014, 3.1.1) on the manifold: started from any state ``z_i`` of the
    kept trajectory with the matching directions (bit ``j`` of ``i`` set: doubling ``j`` goes backwards), the tree
    has the same extent, depth, and the same stopping reason (U-turn, failure or maximum depth)."""
    with jax.enable_x64(True):
        tree, walk = tree_fn()
        u0 = draw(seed)
        geometry = geometry_through(u0)
        p0 = project_momentum(geometry, geometry.factorise(u0), draw(seed + 1))
        directions = np.where(np.asarray(jax.random.bernoulli(jax.random.PRNGKey(seed + 2), 0.5, (MAX_DEPTH,))),
                              1, -1)
        first = tree(u0, u0, p0, dt, jnp.asarray(directions))
        size = int(first.trajectory.num_states)
        kept = size.bit_length() - 1  # doublings merged into the kept trajectory
        assert size == 2**kept
        i = min(int(pick * size), size - 1)
        left = first.trajectory.leftmost_state
        if i:
            start = walk(u0, left.point.position, left.momentum, dt, i)
            assume(int(start.status) == OK)
            u_i, p_i = start.point.position, start.momentum
        else:
            u_i, p_i = left.point.position, left.momentum
        again_directions = directions.copy()
        again_directions[:kept] = [-1 if (i >> j) & 1 else 1 for j in range(kept)]
        again = tree(u0, u_i, p_i, dt, jnp.asarray(again_directions))
        assert int(again.trajectory.num_states) == size
        assert int(again.depth) == int(first.depth)
        assert int(again.failure) == int(first.failure)
        assert bool(again.turning) == bool(first.turning)
        for a, b in ((again.trajectory.leftmost_state, first.trajectory.leftmost_state),
                     (again.trajectory.rightmost_state, first.trajectory.rightmost_state)):
            np.testing.assert_allclose(a.point.position, b.point.position, atol=1e-6)
            np.testing.assert_allclose(a.momentum, b.momentum, atol=1e-5)


# -- behaviour ----------------------------------------------------------------------------------------------------
def test_failures_end_the_tree_and_are_counted_by_reason():
    # NaN generator beyond u2 > 0.8: steps entering it fail (counted), draws never go there.
    def generator(u):
        return jnp.atleast_1d(u[0] + u[1] + jnp.where(u[2] > 0.8, jnp.nan, 0.0))

    model = dgm.GenerativeModel(generator, 3)
    result = dgm.sample(model, np.array([0.5]), method=METHOD, n_warmup=50, n_samples=200, step_size=0.5, seed=0,
                        progress=False)
    counts = result.rejection_counts()
    assert sum(counts.values()) > 0
    assert np.all(np.isfinite(result.inputs))
    assert np.all(result.inputs[..., 2] <= 0.8)
    failed = result.stats["failure"] != OK
    assert np.all(result.stats["acceptance_rate"][failed] == 0.0)


def test_max_tree_depth_caps_the_steps_and_blackjax_api():
    with dgm.float64():
        geometry = geometry_through(draw(3))
        algorithm = chmc_dynamic.as_top_level_api(geometry, 0.01, max_tree_depth=3)
        state = algorithm.init(draw(3))
        step = jax.jit(algorithm.step)
        for k in range(5):
            state, info = step(jax.random.PRNGKey(k), state)
            assert int(info.num_integration_steps) <= 2**3 - 1
            assert int(info.tree_depth) <= 3
        assert float(jnp.max(jnp.abs(geometry.constraint(state.position)))) < 1e-8
    with pytest.raises(ValueError, match="max_tree_depth"):
        chmc_dynamic.build_kernel(geometry, max_tree_depth=0)
