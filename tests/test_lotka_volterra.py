"""Tests for the stochastic Lotka–Volterra model (paper section 6, /work/shared/DATA.md)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgm.models import lotka_volterra as lv


def _true_inputs():
    noise = np.random.RandomState(lv.DATA_SEED).normal(size=100)
    return jnp.concatenate([lv.inputs_from_parameters(jnp.asarray(lv.TRUE_PARAMETERS)), jnp.asarray(noise)])


def test_default_observations_reproduce_data_md():
    x = lv.default_observations()
    assert x.shape == (100,) and x.dtype == np.float64
    np.testing.assert_allclose(x[0:8:2], [90.4714, 81.5650, 70.3265, 61.0494], atol=5e-5)
    np.testing.assert_allclose(x[1:8:2], [102.8562, 105.7902, 108.8277, 109.3936], atol=5e-5)


def test_explicit_step_differs():
    xs, xe = lv.default_observations(), lv.default_observations("explicit")
    assert xs[0] == xe[0]  # the prey's first update is the same
    assert abs(xs[1] - xe[1]) > 1e-3
    assert np.max(np.abs(xs - xe)) > 1.0
    with pytest.raises(ValueError, match="step"):
        lv.lotka_volterra(step="implicit")


@pytest.mark.parametrize("step", ["semi-implicit", "explicit"])
def test_jitted_generator_matches_host_recipe_float64(step):
    with jax.enable_x64(True):
        model = lv.lotka_volterra(step=step)
        assert model.input_dim == 104 and model.parameter_inputs == 4
        u = _true_inputs()
        x = jax.jit(model.generator)(u)
        assert x.dtype == jnp.float64 and x.shape == (100,)
        np.testing.assert_allclose(np.asarray(x), lv.default_observations(step), rtol=0, atol=1e-10)
        np.testing.assert_allclose(model.latents(u), lv.TRUE_PARAMETERS, rtol=1e-12)
        traj = lv.trajectory(u, step=step)
        assert traj.shape == (51, 2)
        np.testing.assert_allclose(traj[0], [100.0, 100.0])
        np.testing.assert_allclose(traj[1:].reshape(-1), x, rtol=0, atol=1e-12)
        assert model.validate_observation(lv.default_observations(step)).shape == (100,)


@pytest.mark.parametrize("step", ["semi-implicit", "explicit"])
def test_exact_initialiser_residual(step):
    with jax.enable_x64(True):
        model = lv.lotka_volterra(step=step)
        x_obs = jnp.asarray(lv.default_observations(step))
        init = jax.jit(model.init)
        us = [init(jax.random.key(k), x_obs) for k in range(8)]
        for u in us:
            assert u.dtype == jnp.float64 and u.shape == (104,)
            assert float(jnp.max(jnp.abs(model.generator(u) - x_obs))) < 1e-10
            assert np.all(np.asarray(model.latents(u)) > 0)
        assert len({float(u[0]) for u in us}) == 8  # different keys, different starting points
        # the closed-form solve works for any moderate u1 (far from the posterior, e.g. at the prior mean, the
        # solved noise is huge and rounding errors are amplified along the trajectory)
        u1 = lv.inputs_from_parameters(jnp.asarray(lv.TRUE_PARAMETERS)) + 1.0
        u = lv.inputs_from_trajectory(u1, x_obs, step=step)
        assert float(jnp.max(jnp.abs(model.generator(u) - x_obs))) < 1e-10


@pytest.mark.parametrize("step", ["semi-implicit", "explicit"])
@pytest.mark.parametrize("dt", [1.0, 0.5])
def test_noise_jacobian_determinant_is_constant(step, dt):
    """The assumption behind :func:`lv.exact_log_posterior`: for fixed u1 the map u2 -> x is a bijection whose Jacobian
    determinant |dx/du2| does not depend on u (it is dt^n: unit-diagonal triangular up to the sqrt(dt) noise scale),
    so p(u1 | x) ∝ N(u1) N(u2(u1, x)) exactly. Checked directly at random points, on and off the data manifold."""
    with jax.enable_x64(True):
        n_steps = 10
        rng = np.random.RandomState(7)
        z_true = np.asarray(lv.inputs_from_parameters(jnp.asarray(lv.TRUE_PARAMETERS)))

        @jax.jit
        def log_det_noise_jacobian(u):
            u1, u2 = u[:4], u[4:]
            jac = jax.jacfwd(lambda w: lv.generator_fn(jnp.concatenate([u1, w]), dt=dt, step=step))(u2)
            sign, log_det = jnp.linalg.slogdet(jac)
            return sign, log_det, jac

        for _ in range(6):
            u = jnp.asarray(np.concatenate([z_true + 0.5 * rng.normal(size=4), rng.normal(size=2 * n_steps)]))
            sign, log_det, jac = log_det_noise_jacobian(u)
            assert float(sign) == 1.0
            np.testing.assert_allclose(float(log_det), n_steps * np.log(dt), rtol=0, atol=1e-10)
            # and why: lower triangular with sqrt(dt) on the diagonal
            np.testing.assert_array_equal(np.triu(np.asarray(jac), 1), 0.0)
            np.testing.assert_allclose(np.diag(np.asarray(jac)), np.sqrt(dt), rtol=1e-14)


def test_exact_log_posterior_is_the_change_of_variables_density():
    """log p(u1 | x) = log N(u1) + log N(u2(u1, x)) - log|det dx/du2| + const, with the determinant taken from the
    generator's Jacobian at each point (not assumed): differences between points match exact_log_posterior."""
    with jax.enable_x64(True):
        x_obs = jnp.asarray(lv.default_observations())
        z_true = lv.inputs_from_parameters(jnp.asarray(lv.TRUE_PARAMETERS))
        rng = np.random.RandomState(3)

        @jax.jit
        def reference(u1):
            u = lv.inputs_from_trajectory(u1, x_obs)
            jac = jax.jacfwd(lambda w: lv.generator_fn(jnp.concatenate([u1, w])))(u[4:])
            return -0.5 * jnp.sum(u * u) - jnp.linalg.slogdet(jac)[1]

        points = [z_true + 0.05 * jnp.asarray(rng.normal(size=4)) for _ in range(5)]
        exact = np.array([float(lv.exact_log_posterior(p, x_obs)) for p in points])
        ref = np.array([float(reference(p)) for p in points])
        np.testing.assert_allclose(exact - exact[0], ref - ref[0], rtol=1e-10, atol=1e-8)
        # the posterior mode is close to the true parameters
        mean, cov = lv.least_squares_parameters(x_obs)
        assert np.all(np.abs(np.asarray(mean) - lv.TRUE_PARAMETERS) < 4 * np.sqrt(np.diag(np.asarray(cov))))


def test_float32_default_runs_under_jit():
    model = lv.lotka_volterra()
    u = jax.jit(model.init)(jax.random.key(0), jnp.asarray(lv.default_observations(), jnp.float32))
    x = jax.jit(model.generator)(u)
    assert x.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(x)))
    np.testing.assert_allclose(np.asarray(x), lv.default_observations(), rtol=1e-4)


def test_custom_observations_shape_checked():
    with pytest.raises(ValueError, match="shape"):
        lv.lotka_volterra(np.zeros(10))
    model = lv.lotka_volterra(n_steps=5)
    assert model.input_dim == 14
    assert model.output_shape() == (10,)
