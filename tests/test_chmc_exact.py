"""Constrained HMC against exact conditionals (linear-Gaussian) and 1-D quadrature (nonlinear curve)."""

import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate

import dgm
from helpers import assert_mean_within

A = np.array([[1.0, 2.0, 0.5, -0.3, 0.0], [0.3, -1.0, 1.0, 0.0, 0.7]])
X_LINEAR = np.array([1.0, -0.5])


def linear_model():
    return dgm.GenerativeModel(lambda u: jnp.asarray(A) @ u, A.shape[1], name="linear")


def exact_linear_conditional():
    gram = A @ A.T
    mean = A.T @ np.linalg.solve(gram, X_LINEAR)
    cov = np.eye(A.shape[1]) - A.T @ np.linalg.solve(gram, A)
    return mean, cov


def assert_linear_conditional_moments(result):
    """On the manifold, every draw; means and all second moments within 4 MCSE of the exact Gaussian conditional."""
    mean, cov = exact_linear_conditional()
    u = result.inputs
    assert result.max_residual < 1e-8
    for i in range(A.shape[1]):
        assert_mean_within(u[..., i], mean[i], label=f"E[u{i}]")
        for j in range(i, A.shape[1]):
            assert_mean_within(u[..., i] * u[..., j], cov[i, j] + mean[i] * mean[j], label=f"E[u{i} u{j}]")


@pytest.mark.parametrize("projection", ["quasi-newton", "newton"])
def test_linear_gaussian_conditional_moments(projection):
    result = dgm.sample(linear_model(), X_LINEAR, n_chains=4, n_warmup=300, n_samples=1000, seed=3,
                        projection=projection, progress=False)
    assert_linear_conditional_moments(result)
    rhat_ok = (result.summary("u")["r_hat"] < 1.05).all()
    assert rhat_ok


X_CURVE = 1.0


def curve_model():
    # x = u1 + u2^3: the conditional of t = u2 is p(t) ∝ N(x - t^3; 0, 1) N(t; 0, 1) (coarea formula; the
    # |J J^T|^{-1/2} factor of the target cancels the arc-length element of the curve).
    return dgm.GenerativeModel(lambda u: jnp.atleast_1d(u[0] + u[1] ** 3), 2, name="cubic-curve")


def curve_moment(f, lo=-6.0, hi=6.0):
    density = lambda t: np.exp(-0.5 * (X_CURVE - t**3) ** 2 - 0.5 * t**2)
    z, _ = integrate.quad(density, -6, 6, limit=200)
    value, _ = integrate.quad(lambda t: f(t) * density(t), max(lo, -6.0), min(hi, 6.0), limit=200)
    return value / z


def test_nonlinear_curve_matches_quadrature():
    result = dgm.sample(curve_model(), np.array([X_CURVE]), n_chains=4, n_warmup=300, n_samples=1500, seed=5,
                        n_steps=(2, 6), progress=False)
    assert_curve_matches_quadrature(result)


def assert_curve_matches_quadrature(result):
    """Moments of u1, u2 and 6 histogram bins of u2 within 4 MCSE of 1-D quadrature on the curve u1 + u2^3 = x."""
    t = result.inputs[..., 1]
    assert result.max_residual < 1e-8
    assert_mean_within(t, curve_moment(lambda s: s), label="E[u2]")
    assert_mean_within(t**2, curve_moment(lambda s: s**2), label="E[u2^2]")
    assert_mean_within(result.inputs[..., 0], curve_moment(lambda s: X_CURVE - s**3), label="E[u1]")
    edges = np.array([-np.inf, -0.5, 0.0, 0.3, 0.6, 0.9, np.inf])
    for lo, hi in zip(edges[:-1], edges[1:]):
        indicator = ((t > lo) & (t <= hi)).astype(float)
        assert_mean_within(indicator, curve_moment(lambda s: 1.0, lo, hi), label=f"P({lo}<u2<={hi})")


def test_dropping_the_determinant_is_detectably_wrong():
    """Sanity check that the tests above can fail: without |JJ^T|^{-1/2} the moments move far away."""
    model = curve_model()
    wrong_density = lambda u: -0.5 * jnp.sum(u**2) + 0.5 * jnp.log(1.0 + 9.0 * u[1] ** 4)
    wrong = dgm.GenerativeModel(model.generator, 2, log_input_density=wrong_density)
    result = dgm.sample(wrong, np.array([X_CURVE]), n_chains=4, n_warmup=300, n_samples=1000, seed=5,
                        n_steps=(2, 6), progress=False)
    t = result.inputs[..., 1]
    from conftest import mcse

    exact = curve_moment(lambda s: s**2)
    assert abs(np.mean(t**2) - exact) > 8 * mcse(t**2)


def test_hmc_baseline_on_noisy_linear_model():
    sigma = 0.5
    result = dgm.sample(linear_model(), X_LINEAR, method="hmc", noise_scale=sigma, n_chains=4, n_warmup=300,
                        n_samples=1000, seed=2, progress=False)
    precision = np.eye(A.shape[1]) + A.T @ A / sigma**2
    mean = np.linalg.solve(precision, A.T @ X_LINEAR / sigma**2)
    for i in range(A.shape[1]):
        assert_mean_within(result.inputs[..., i], mean[i], label=f"E[u{i}] (hmc)")
    assert result.epsilon == sigma


def test_nuts_baseline_runs_through_the_same_driver():
    result = dgm.sample(linear_model(), X_LINEAR, method="nuts", noise_scale=0.5, n_chains=2, n_warmup=100,
                        n_samples=200, seed=0, progress=False)
    assert result.inputs.shape == (2, 200, A.shape[1])
    assert 0.5 < result.acceptance_rate <= 1.0


def test_hmc_baseline_starts_from_prior_draws_when_the_observation_is_off_the_manifold():
    # |u|^2 = -1 has no solution, but the noisy relaxation is a proper density: HMC still runs (with a warning).
    model = dgm.GenerativeModel(lambda u: jnp.atleast_1d(jnp.sum(u**2)), 3)
    with pytest.warns(UserWarning, match="standard-normal draws"):
        result = dgm.sample(model, np.array([-1.0]), method="hmc", noise_scale=1.0, n_chains=2, n_warmup=50,
                            n_samples=50, progress=False)
    assert np.all(np.isfinite(result.inputs))
