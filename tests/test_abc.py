"""Tests for the ABC baselines: rejection, ABC-MCMC and pseudo-marginal slice sampling."""

import functools

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from dgm.kernels.abc import abc_initial_positions, abc_mcmc_method, abc_rejection
from dgm.kernels.base import Method
from dgm.kernels.pm_slice import pm_slice_method
from dgm.model import GenerativeModel
from dgm.models import lotka_volterra as lv

# ---------------------------------------------------------------------------------------------------------------
# test models with exact ABC posteriors
# ---------------------------------------------------------------------------------------------------------------
A = np.array([[1.0, 0.5], [-0.3, 0.8]])
B = 0.5 * np.array([[1.0, 0.0, 0.3], [0.0, 1.0, -0.2]])
X_LIN = np.array([0.7, -0.4])
EPS_LIN = 0.5


def linear_model(with_init=True):
    """x = A u1 + B u2, u ~ N(0, I_5); with a Gaussian kernel the ABC posterior of u1 is Gaussian."""

    def generator(u):
        return jnp.asarray(A, u.dtype) @ u[:2] + jnp.asarray(B, u.dtype) @ u[2:]

    def init(key, x_obs):  # exact: u2 = B^+ (x - A u1)
        u1 = jax.random.normal(key, (2,), jnp.asarray(x_obs).dtype)
        u2 = jnp.linalg.pinv(jnp.asarray(B, u1.dtype)) @ (x_obs - jnp.asarray(A, u1.dtype) @ u1)
        return jnp.concatenate([u1, u2])

    return GenerativeModel(generator, 5, init=init if with_init else None, parameter_inputs=2, name="linear")


def linear_posterior():
    s = B @ B.T + EPS_LIN**2 * np.eye(2)
    prec = np.eye(2) + A.T @ np.linalg.solve(s, A)
    cov = np.linalg.inv(prec)
    return cov @ A.T @ np.linalg.solve(s, X_LIN), cov


X_1D, EPS_1D, SIGMA_1D = 1.0, 0.3, 0.5


def one_d_model(**kw):
    """x = u1 + 0.5 u2; with the uniform kernel p(u1 | x̄) ∝ φ(u1) P(|u1 + 0.5 u2 − x̄| < ε)."""
    return GenerativeModel(lambda u: u[:1] + SIGMA_1D * u[1:], 2, parameter_inputs=1, name="one-d", **kw)


def one_d_posterior():
    def dens(t):
        return stats.norm.pdf(t) * (
            stats.norm.cdf((X_1D + EPS_1D - t) / SIGMA_1D) - stats.norm.cdf((X_1D - EPS_1D - t) / SIGMA_1D)
        )

    z = integrate.quad(dens, -10, 10)[0]
    m = integrate.quad(lambda t: t * dens(t), -10, 10)[0] / z
    v = integrate.quad(lambda t: (t - m) ** 2 * dens(t), -10, 10)[0] / z
    return np.array([m]), np.array([[v]])


# ---------------------------------------------------------------------------------------------------------------
# a minimal driver (vmap over chains inside lax.scan)
# ---------------------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _compiled_run(method, n_chains, n_iter):
    @jax.jit
    def go(states, key, step_size):
        def body(s, k):
            s, info = jax.vmap(method.step, (0, 0, None))(jax.random.split(k, n_chains), s, step_size)
            return s, (jax.vmap(method.position)(s), jax.vmap(method.stats)(info))

        return jax.lax.scan(body, states, jax.random.split(key, n_iter))[1]

    return go


def run_chains(method: Method, seed, n_chains, n_iter, step_size=None, positions=None):
    key = jax.random.PRNGKey(seed)
    k_init, k_run = jax.random.split(key)
    if positions is None:
        positions = method.initial_positions(k_init, n_chains)
    states = jax.vmap(method.init)(jnp.asarray(positions))
    step_size = jnp.asarray(1.0 if step_size is None else step_size, jnp.asarray(positions).dtype)
    pos, st = _compiled_run(method, n_chains, n_iter)(states, k_run, step_size)
    return np.swapaxes(np.asarray(pos), 0, 1), jax.tree.map(lambda a: np.swapaxes(np.asarray(a), 0, 1), st)


def assert_moments(samples, mean, cov, n_se=4.0):
    """samples (chain, draw, d): means and second central moments within n_se Monte Carlo standard errors."""
    d = samples.shape[-1]
    fs = {f"mean[{i}]": (samples[..., i], mean[i]) for i in range(d)}
    for i in range(d):
        for j in range(i, d):
            f = (samples[..., i] - mean[i]) * (samples[..., j] - mean[j])
            fs[f"cov[{i},{j}]"] = (f, cov[i, j])
    for name, (f, truth) in fs.items():
        ess = float(az.ess(f))
        mcse = f.std() / np.sqrt(ess)
        assert ess > 100, (name, ess)
        assert abs(f.mean() - truth) < n_se * mcse, (name, f.mean(), truth, mcse, ess)


# ---------------------------------------------------------------------------------------------------------------
# ABC rejection
# ---------------------------------------------------------------------------------------------------------------
def test_rejection_huge_and_tiny_epsilon():
    with jax.enable_x64(True):
        model = linear_model()
        r = abc_rejection(model, X_LIN, 1e6, n_simulations=2500, batch_size=1000, seed=3)
        assert r.n_accepted == 2500 and r.acceptance_rate == 1.0 and r.n_simulations == 2500
        assert r.inputs.shape == (2500, 5) and r.latents.shape == (2500, 5) and r.distances.shape == (2500,)
        r = abc_rejection(model, X_LIN, 1e-9, n_simulations=2500, batch_size=1000, seed=3)
        assert r.n_accepted == 0 and r.acceptance_rate == 0.0
        assert r.inputs.shape == (0, 5) and r.latents.shape == (0, 5) and r.distances.shape == (0,)
        assert 0 < r.min_distance < np.inf


def test_rejection_matches_exact_uniform_posterior_and_is_deterministic():
    with jax.enable_x64(True):
        model = one_d_model()
        r = abc_rejection(model, [X_1D], EPS_1D, n_simulations=200_000, batch_size=50_000, seed=0)
        r2 = abc_rejection(model, [X_1D], EPS_1D, n_simulations=200_000, batch_size=50_000, seed=0)
        np.testing.assert_array_equal(r.inputs, r2.inputs)
        assert np.all(r.distances < EPS_1D)
        mean, cov = one_d_posterior()
        assert r.n_accepted > 1000
        assert_moments(r.inputs[None, :, :1], mean, cov)  # iid: ESS ~ n


def test_rejection_non_standard_inputs_needs_sampler():
    model = one_d_model(log_input_density=lambda u: -0.5 * jnp.sum(u**2))
    with pytest.raises(ValueError, match="sample_inputs"):
        abc_rejection(model, [X_1D], 1.0, n_simulations=10)
    r = abc_rejection(model, [X_1D], 100.0, n_simulations=10, sample_inputs=lambda k: jax.random.normal(k, (2,)))
    assert r.n_accepted == 10


# ---------------------------------------------------------------------------------------------------------------
# pseudo-marginal slice sampling
# ---------------------------------------------------------------------------------------------------------------
def test_pm_slice_gaussian_kernel_matches_exact_gaussian():
    with jax.enable_x64(True):
        method = pm_slice_method(linear_model(), X_LIN, epsilon=EPS_LIN, kernel="gaussian")
        assert method.initial_step_size is None and method.name == "abc-slice-gaussian"
        pos, st = run_chains(method, 0, n_chains=8, n_iter=2500)
        assert np.all(st["acceptance_rate"] == 1.0) and np.all(st["is_accepted"])
        assert np.all(st["n_evaluations"] >= 2)
        mean, cov = linear_posterior()
        assert_moments(pos[:, 250:, :2], mean, cov)


def test_pm_slice_uniform_kernel_matches_exact_and_stays_in_ball():
    with jax.enable_x64(True):
        method = pm_slice_method(one_d_model(), [X_1D], epsilon=EPS_1D, record_distance=True)
        pos, st = run_chains(method, 1, n_chains=8, n_iter=2500)
        assert np.all(st["distance"] < EPS_1D)
        mean, cov = one_d_posterior()
        assert_moments(pos[:, 250:, :1], mean, cov)


def test_pm_slice_escapes_from_outside_the_ball_without_hanging():
    with jax.enable_x64(True):
        method = pm_slice_method(one_d_model(), [X_1D], epsilon=EPS_1D, record_distance=True)
        start = jnp.array([[6.0, 6.0], [-5.0, 3.0]])
        pos, st = run_chains(method, 2, n_chains=2, n_iter=200, positions=start)
        assert np.all(np.isfinite(pos))
        assert np.all(st["distance"][:, -50:] < EPS_1D)


def test_pm_slice_deterministic_and_nonstandard_inputs():
    with jax.enable_x64(True):
        method = pm_slice_method(linear_model(), X_LIN, epsilon=EPS_LIN)
        a, _ = run_chains(method, 5, n_chains=2, n_iter=50)
        b, _ = run_chains(method, 5, n_chains=2, n_iter=50)
        np.testing.assert_array_equal(a, b)
        model = one_d_model(log_input_density=lambda u: -0.5 * jnp.sum(u**2))
        with pytest.raises(ValueError, match="non-standard"):
            pm_slice_method(model, [X_1D], epsilon=EPS_1D, non_standard_inputs="error")
        sample = lambda k: jax.random.normal(k, (2,), jnp.float64)  # noqa: E731
        # the folded correction log rho(u) + |u|^2/2 is exactly 0 here
        method = pm_slice_method(model, [X_1D], epsilon=EPS_1D, sample_inputs=sample)
        pos, _ = run_chains(method, 3, n_chains=2, n_iter=20)
        assert np.all(np.isfinite(pos))


def test_initial_positions_error_names_best_distance():
    model = one_d_model()
    with pytest.raises(ValueError, match="best distance found"):
        abc_initial_positions(model, [X_1D], jax.random.PRNGKey(0), 4, epsilon=1e-9, n_search=1000)
    u = abc_initial_positions(model, [X_1D], jax.random.PRNGKey(0), 4, epsilon=0.5, n_search=1000)
    assert u.shape == (4, 2)
    assert np.all(np.abs(np.asarray(u[:, 0] + SIGMA_1D * u[:, 1]) - X_1D) < 0.5)


# ---------------------------------------------------------------------------------------------------------------
# ABC-MCMC
# ---------------------------------------------------------------------------------------------------------------
def test_abc_mcmc_uniform_matches_exact_posterior():
    with jax.enable_x64(True):
        method = abc_mcmc_method(one_d_model(), [X_1D], epsilon=EPS_1D, proposal_scale=1.0)
        assert method.initial_step_size is None and method.name == "abc-mcmc"
        pos, st = run_chains(method, 0, n_chains=8, n_iter=5000)
        acc = st["is_accepted"].mean()
        assert 0.05 < acc < 0.9
        assert np.all((st["acceptance_rate"] >= 0) & (st["acceptance_rate"] <= 1))
        assert np.all(st["distance"] < EPS_1D)
        mean, cov = one_d_posterior()
        assert_moments(pos[:, 500:, :1], mean, cov)


def test_abc_mcmc_gaussian_kernel_matches_exact_gaussian():
    with jax.enable_x64(True):
        method = abc_mcmc_method(linear_model(), X_LIN, epsilon=EPS_LIN, kernel="gaussian", proposal_scale=0.8)
        pos, _ = run_chains(method, 4, n_chains=8, n_iter=5000)
        mean, cov = linear_posterior()
        assert_moments(pos[:, 500:, :2], mean, cov)


def test_abc_mcmc_adaptive_step_size_and_determinism():
    with jax.enable_x64(True):
        method = abc_mcmc_method(one_d_model(), [X_1D], epsilon=EPS_1D, proposal_scale=0.5, adapt_step_size=True)
        assert method.initial_step_size == 0.5 and method.target_acceptance == 0.234
        a, sa = run_chains(method, 7, n_chains=2, n_iter=100, step_size=0.5)
        b, sb = run_chains(method, 7, n_chains=2, n_iter=100, step_size=0.5)
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(sa["is_accepted"], sb["is_accepted"])
        c, _ = run_chains(method, 7, n_chains=2, n_iter=100, step_size=1e-12)  # step size is used
        assert np.max(np.abs(c[:, :, 0] - c[:, :1, 0])) < 1e-9
        with pytest.raises(ValueError, match="proposal_scale"):
            abc_mcmc_method(one_d_model(), [X_1D], epsilon=EPS_1D, proposal_scale=[1.0, 2.0])
        with pytest.raises(ValueError, match="kernel"):
            abc_mcmc_method(one_d_model(), [X_1D], epsilon=EPS_1D, kernel="box")


# ---------------------------------------------------------------------------------------------------------------
# Lotka–Volterra smoke tests
# ---------------------------------------------------------------------------------------------------------------
def test_lotka_volterra_abc_methods_run():
    with jax.enable_x64(True):
        model = lv.lotka_volterra()
        x = lv.default_observations()
        method = pm_slice_method(model, x, epsilon=10.0, record_distance=True)
        pos, st = run_chains(method, 0, n_chains=2, n_iter=30)
        assert pos.shape == (2, 30, 104) and np.all(st["distance"] < 10.0)
        method = abc_mcmc_method(model, x, epsilon=100.0, proposal_scale=0.01)
        pos, st = run_chains(method, 0, n_chains=2, n_iter=30)
        assert np.all(np.isfinite(pos)) and np.all(st["distance"] < 100.0)
        r = abc_rejection(model, x, 100.0, n_simulations=2000, batch_size=1000)
        assert r.n_accepted == 0 and r.min_distance > 100.0
