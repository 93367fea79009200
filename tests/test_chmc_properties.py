"""Invariants of the manifold operations and the integrator (hypothesis), and the potential's gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dgm.geometry.base import project_momentum
from dgm.geometry.dense import DenseGeometry
from dgm.integrator import OK, IntegratorSettings, integrate

TOL = 1e-9


def generator(u):
    return jnp.stack([
        u[0] + 0.3 * jnp.sin(u[1]) + 0.5 * u[2] ** 2,
        u[1] * u[3] + 0.1 * u[0] ** 3 + u[2],
    ])


def geometry_through(u0):
    x_obs = generator(u0)  # u0 lies on the manifold by construction
    return DenseGeometry(generator, x_obs)


seeds = st.integers(min_value=0, max_value=2**31 - 1)
common = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def draw(seed, n=4, scale=1.0):
    return jax.random.normal(jax.random.PRNGKey(seed), (n,), jnp.float64) * scale


@common
@given(seed=seeds, scale=st.floats(0.01, 0.3))
def test_position_projection_lands_on_manifold(seed, scale):
    with jax.enable_x64(True):
        u0 = draw(seed)
        geometry = geometry_through(u0)
        factor = geometry.factorise(u0)
        perturbed = u0 + draw(seed + 1, scale=scale)
        result = geometry.project_position(factor, perturbed, TOL, 100)
        if bool(result.converged):
            assert float(jnp.max(jnp.abs(geometry.constraint(result.position)))) <= TOL
            # the move is along range(J^T) of the starting factor: orthogonal to ker J
            move = result.position - perturbed
            tangent_part = project_momentum(geometry, factor, move)
            assert float(jnp.max(jnp.abs(tangent_part))) < 1e-10 * (1 + float(jnp.max(jnp.abs(move))))
        else:
            assert not bool(jnp.max(jnp.abs(geometry.constraint(result.position))) < TOL)


@common
@given(seed=seeds)
def test_momentum_projection_is_tangent_and_idempotent(seed):
    with jax.enable_x64(True):
        u0 = draw(seed)
        geometry = geometry_through(u0)
        factor = geometry.factorise(u0)
        p = project_momentum(geometry, factor, draw(seed + 7, scale=3.0))
        assert float(jnp.max(jnp.abs(factor.jacobian @ p))) < 1e-12 * (1 + float(jnp.max(jnp.abs(p))))
        np.testing.assert_allclose(project_momentum(geometry, factor, p), p, atol=1e-12)


_STEP_FNS = {}


def one_step_fn(n_inner):
    """A jitted single leapfrog step through the manifold of the point ``u0`` (compiled once per ``n_inner``)."""
    if n_inner not in _STEP_FNS:
        config = IntegratorSettings(n_inner=n_inner, tol=1e-11, max_newton=100, reverse_check_tol=1e-6)

        def step(u0, u, p, dt):
            geometry = geometry_through(u0)
            return integrate(geometry, geometry.point(u), p, dt, 1, config)

        _STEP_FNS[n_inner] = jax.jit(step)
    return _STEP_FNS[n_inner]


@common
@given(seed=seeds, dt=st.floats(0.01, 0.3), n_inner=st.integers(1, 3))
def test_integrator_step_is_reversible(seed, dt, n_inner):
    with jax.enable_x64(True):
        u0 = draw(seed)
        geometry = geometry_through(u0)
        step = one_step_fn(n_inner)
        p0 = project_momentum(geometry, geometry.factorise(u0), draw(seed + 3))
        forward = step(u0, u0, p0, dt)
        if int(forward.status) != OK:
            return  # a rejected step makes no reversibility claim
        backward = step(u0, forward.point.position, -forward.momentum, dt)
        if int(backward.status) != OK:
            return
        np.testing.assert_allclose(backward.point.position, u0, atol=1e-7)
        np.testing.assert_allclose(-backward.momentum, p0, atol=1e-6)


@pytest.mark.parametrize("log_det_gradient", ["vjp", "autodiff"])
def test_potential_gradient_matches_direct_autodiff(log_det_gradient):
    with jax.enable_x64(True):
        u0 = draw(11)
        geometry = DenseGeometry(generator, generator(u0), log_det_gradient=log_det_gradient)

        def potential(u):
            jac = jax.jacfwd(generator)(u)
            return 0.5 * jnp.sum(u**2) + 0.5 * jnp.linalg.slogdet(jac @ jac.T)[1]

        for seed in range(5):
            u = draw(100 + seed)
            point = geometry.point(u)
            np.testing.assert_allclose(point.potential, potential(u), rtol=1e-12)
            np.testing.assert_allclose(point.potential_grad, jax.grad(potential)(u), rtol=1e-10, atol=1e-12)


@jax.jit
def _both_projections(u0, start):
    """Quasi-Newton and full Newton PROJECTPOS from ``start`` with the factor of ``u0`` (on the manifold of ``u0``)."""
    x_obs = generator(u0)
    quasi = DenseGeometry(generator, x_obs)
    newton = DenseGeometry(generator, x_obs, projection="newton")
    factor = quasi.factorise(u0)
    return factor, quasi.project_position(factor, start, TOL, 100), newton.project_position(factor, start, TOL, 100)


def _tangent_start(seed, scale):
    u0 = draw(seed)
    geometry = geometry_through(u0)
    return u0, geometry, u0 + scale * project_momentum(geometry, geometry.factorise(u0), draw(seed + 1))


@common
@given(seed=seeds, scale=st.floats(0.05, 0.6))
def test_newton_projection_on_a_nonlinear_generator(seed, scale):
    """projection="newton" on a curved manifold (where it differs from quasi-Newton): it lands on the manifold, moves
    only along range(J_prev^T) (the rows of the previous point's Jacobian, as RATTLE's multiplier needs), needs no more
    iterations than quasi-Newton and finds the same point."""
    with jax.enable_x64(True):
        u0, geometry, start = _tangent_start(seed, scale)
        factor, quasi, newton = _both_projections(u0, start)
        if not bool(newton.converged):
            assert not float(newton.max_residual) < TOL
            return
        assert float(jnp.max(jnp.abs(geometry.constraint(newton.position)))) < TOL
        move = newton.position - start
        tangent_part = project_momentum(geometry, factor, move)  # (I - J^T (J J^T)^{-1} J) move
        assert float(jnp.max(jnp.abs(tangent_part))) < 1e-10 * (1 + float(jnp.max(jnp.abs(move))))
        if bool(quasi.converged):
            assert int(newton.iterations) <= int(quasi.iterations)
            np.testing.assert_allclose(newton.position, quasi.position, atol=1e-7)


def test_newton_projection_needs_fewer_iterations_than_quasi_newton():
    with jax.enable_x64(True):
        newton_iterations, quasi_iterations = [], []
        for seed in range(20):
            u0, _, start = _tangent_start(1000 + seed, 0.3)
            _, quasi, newton = _both_projections(u0, start)
            assert bool(quasi.converged) and bool(newton.converged)
            newton_iterations.append(int(newton.iterations))
            quasi_iterations.append(int(quasi.iterations))
        # quadratic vs linear convergence: every projection needs fewer iterations, about 3x fewer in total
        assert all(n < q for n, q in zip(newton_iterations, quasi_iterations)), (newton_iterations, quasi_iterations)
        assert 2 * sum(newton_iterations) < sum(quasi_iterations), (newton_iterations, quasi_iterations)
