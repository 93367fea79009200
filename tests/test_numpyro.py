"""dgm.from_numpyro: NumPyro programs as generative models (dgm.interop.numpyro).

Statistical checks are within 4 Monte-Carlo standard errors (ArviZ's MCSE, autocorrelation-aware) and seeded; each
comment says how the check was seen to fail when the science is wrong.
"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.contrib.control_flow import scan
from scipy import stats

import dgm
from conftest import mcse
from dgm.geometry.structured import StructuredGeometry
from dgm.methods import make_geometry


# -- models ----------------------------------------------------------------------------------------------------------
def regression(X, y=None):
    beta = numpyro.sample("beta", dist.Normal(0.0, 1.0).expand([X.shape[1]]).to_event(1))
    sigma = numpyro.sample("sigma", dist.LogNormal(-1.0, 0.5))
    with numpyro.plate("N", X.shape[0]):
        numpyro.sample("y", dist.Normal(X @ beta, sigma), obs=y)


def random_walk(T):
    """x_t = x_{t-1} + theta + 0.1 eps_t, x_0 = 0: a simulator observed through its noiseless path."""
    theta = numpyro.sample("theta", dist.Normal(0.0, 1.0))

    def step(x_prev, _):
        eps = numpyro.sample("eps", dist.Normal(0.0, 1.0))
        x = x_prev + theta + 0.1 * eps
        return x, x

    _, path = scan(step, jnp.zeros(()), None, length=T)
    numpyro.deterministic("x", path)


def _regression_data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(12, 2))
    return X, X @ np.array([1.0, -0.5]) + 0.3 * rng.normal(size=12)


def _mcse_sd(draws):
    import arviz as az

    return float(az.mcse(np.asarray(draws, dtype=float), method="sd"))


# -- (a) agreement with NumPyro's NUTS -------------------------------------------------------------------------------
@pytest.mark.slow
def test_regression_agrees_with_numpyro_nuts():
    """Every posterior mean and sd of dgm (constrained HMC on the noise of the NumPyro program) and of NumPyro's NUTS
    agree within 4 combined MCSE.

    Checked by hand to fail when the site transform is wrong: with the observation's value ``loc + 1.5 scale n``
    instead of ``loc + scale n`` (patched ``value_from_noise``), sigma's mean is 29 combined MCSE off and its sd 5.5
    (measured with 1000 draws per chain).
    """
    X, y = _regression_data()
    model = dgm.from_numpyro(regression, X, y, observed="y")
    result = dgm.sample(model, {"y": y}, n_chains=2, n_warmup=300, n_samples=800, seed=1, progress=False)
    with dgm.float64():
        mcmc = numpyro.infer.MCMC(numpyro.infer.NUTS(regression), num_warmup=300, num_samples=800, num_chains=2,
                                  progress_bar=False, chain_method="sequential")
        mcmc.run(jax.random.key(2), X, y)
    nuts = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
    posterior = result.to_arviz()["posterior"]
    pairs = {"beta[0]": (posterior["beta"].values[..., 0], nuts["beta"][..., 0]),
             "beta[1]": (posterior["beta"].values[..., 1], nuts["beta"][..., 1]),
             "sigma": (posterior["sigma"].values, nuts["sigma"])}
    for name, (a, b) in pairs.items():
        distance = abs(np.mean(a) - np.mean(b)) / np.hypot(mcse(a), mcse(b))
        assert distance < 4, f"{name} mean: dgm {np.mean(a):.4f} vs NUTS {np.mean(b):.4f} ({distance:.1f} MCSE)"
        distance = abs(np.std(a) - np.std(b)) / np.hypot(_mcse_sd(a), _mcse_sd(b))
        assert distance < 4, f"{name} sd: dgm {np.std(a):.4f} vs NUTS {np.std(b):.4f} ({distance:.1f} MCSE)"


def test_regression_model_layout():
    """Inputs, latents, outputs and the independent-observation structure of the regression, exactly."""
    X, y = _regression_data()
    model = dgm.from_numpyro(regression, X, y, observed="y")
    assert model.input_dim == 3 + 12 and model.parameter_inputs == 3
    assert model.latent_sites == (("beta", (2,)), ("sigma", ())) and model.observed_sites == (("y", (12,)),)
    assert model.latent_names == ("beta[0]", "beta[1]", "sigma")
    with dgm.float64():
        u = jax.random.normal(jax.random.key(0), (model.input_dim,), jnp.float64)
        beta, sigma = u[:2], np.exp(-1.0 + 0.5 * u[2])  # Normal(0, 1) and LogNormal(-1, 0.5) from their noise
        np.testing.assert_allclose(model.latents(u), np.r_[beta, sigma], rtol=1e-12)
        np.testing.assert_allclose(model.generator(u), X @ beta + sigma * u[3:], rtol=1e-12)  # y = loc + scale n
        assert isinstance(make_geometry(model, jnp.asarray(y)), StructuredGeometry)
        assert model.structure.independent and model.structure.n_steps == 12
        np.testing.assert_array_equal(model.validate_observation({"y": y}), y)
    with pytest.raises(ValueError, match="names sites"):
        model.validate_observation({"x": y})
    with pytest.raises(ValueError, match="shape"):
        model.validate_observation({"y": y[:3]})
    dense = dgm.from_numpyro(regression, X, y, observed="y", structure="dense")
    assert dense.structure is None


# -- (b) exact posterior of a simulator conditioned on its noiseless path --------------------------------------------
def test_random_walk_exact_posterior_with_markov_structure(tmp_path):
    """theta | x is N(m, s^2) with 1/s^2 = 1 + T / 0.01 and m = s^2 sum_t (x_t - x_{t-1}) / 0.01 (the increments are
    i.i.d. N(theta, 0.1^2), and g is linear in u so |J J^T| is constant); dgm's mean and variance of theta are within
    4 MCSE of them, and the linear-time Markov geometry is the one used.

    Checked by hand to fail when the science is wrong: with every Normal site's value ``loc + 1.5 scale n`` (patched
    ``value_from_noise``; the increments' noise sd becomes 0.15) the variance is 8.2 MCSE off (the mean, which that
    change hardly moves, 1.3 MCSE).
    """
    T = 20
    model = dgm.from_numpyro(random_walk, T)
    assert model.observed_sites == (("x", (T,)),) and model.latent_sites == (("theta", ()), ("eps", (T,)))
    x_obs = np.cumsum(0.7 + 0.1 * np.random.default_rng(3).normal(size=T))
    with dgm.float64():
        assert isinstance(make_geometry(model, jnp.asarray(x_obs)), StructuredGeometry)
    assert model.structure is not None and not model.structure.independent
    result = dgm.sample(model, x_obs, n_chains=2, n_warmup=200, n_samples=600, seed=4, progress=False)
    precision = 1.0 + T / 0.01
    m, s2 = np.sum(np.diff(x_obs, prepend=0.0)) / 0.01 / precision, 1.0 / precision
    theta = result.to_arviz()["posterior"]["theta"].values
    assert abs(theta.mean() - m) < 4 * mcse(theta), (theta.mean(), m, mcse(theta))
    square = (theta - m) ** 2
    assert abs(square.mean() - s2) < 4 * mcse(square), (square.mean(), s2, mcse(square))
    # one posterior variable per site, NumPyro's names and shapes; round trip through a file
    tree = result.to_arviz()
    assert tree["posterior"]["eps"].shape == (2, 600, T)
    np.testing.assert_allclose(tree["observed_data"]["x"].values, x_obs)
    assert tree["unconstrained_posterior"]["u"].shape == (2, 600, T + 1)
    result.save(tmp_path / "walk.nc")
    loaded = dgm.load(tmp_path / "walk.nc")
    np.testing.assert_array_equal(loaded.latents, result.latents)
    np.testing.assert_array_equal(loaded.x_obs, result.x_obs)
    assert list(result.summary().index) == ["theta"] + [f"eps[{t}]" for t in range(T)]


# -- (c) inverse-CDF sites -------------------------------------------------------------------------------------------
def icdf_sites():
    numpyro.sample("gamma", dist.Gamma(2.5, 1.5))
    numpyro.sample("beta", dist.Beta(2.0, 3.0))
    numpyro.sample("student", dist.StudentT(4.0, 1.0, 2.0))
    numpyro.sample("half_cauchy", dist.HalfCauchy(0.5))
    numpyro.deterministic("x", jnp.zeros(1))


def test_inverse_cdf_sites_reproduce_their_distributions():
    """Under the prior (u ~ N(0, I)) each icdf(Phi(u)) site has its distribution: KS test at n = 4000, p > 0.001 each.

    The same draws reject a neighbouring wrong distribution (KS p < 1e-6): the test has the power to fail when a
    rule is off by that much.
    """
    model = dgm.from_numpyro(icdf_sites)
    assert model.input_dim == 4
    with dgm.float64():
        u = jax.random.normal(jax.random.key(5), (4000, model.input_dim), jnp.float64)
        z = np.asarray(jax.jit(jax.vmap(model.latents))(u))
    exact = {"gamma": stats.gamma(2.5, scale=1 / 1.5), "beta": stats.beta(2.0, 3.0),
             "student": stats.t(4.0, loc=1.0, scale=2.0), "half_cauchy": stats.halfcauchy(scale=0.5)}
    wrong = {"gamma": stats.gamma(2.5, scale=1 / 1.35), "beta": stats.beta(2.0, 2.6),
             "student": stats.t(4.0, loc=1.0, scale=2.4), "half_cauchy": stats.halfcauchy(scale=0.4)}
    for k, name in enumerate(exact):
        assert stats.kstest(z[:, k], exact[name].cdf).pvalue > 1e-3, name  # 4 tests: 0.4% false alarms
        assert stats.kstest(z[:, k], wrong[name].cdf).pvalue < 1e-6, name


@pytest.mark.slow
def test_inverse_cdf_sites_are_differentiable():
    """Constrained HMC needs d(site)/du: jax.grad through NumPyro's icdf (TensorFlow Probability's JAX substrate for
    Gamma, Beta, StudentT) equals central finite differences, and is positive (icdf o Phi is increasing). Slow only
    because XLA compiles the derivatives of the inverse incomplete gamma / beta functions for ~30 s."""
    model = dgm.from_numpyro(icdf_sites)
    with dgm.float64():
        u = jnp.asarray([0.3, -0.7, 1.1, 0.2])
        grad = np.asarray(jax.jit(jax.jacfwd(model.latents))(u)).diagonal()
        h = 1e-5
        central = (np.asarray(model.latents(u + h)) - np.asarray(model.latents(u - h))) / (2 * h)
    np.testing.assert_allclose(grad, central, rtol=1e-6)
    assert np.all(grad > 0)


# -- (d) bad models ---------------------------------------------------------------------------------------------------
def _discrete():
    numpyro.sample("k", dist.Poisson(3.0))
    numpyro.sample("x", dist.Normal(0.0, 1.0))


def _dirichlet():
    p = numpyro.sample("p", dist.Dirichlet(jnp.ones(3)))
    numpyro.deterministic("x", p[:1])


def _subsampled():
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    with numpyro.plate("N", 100, subsample_size=10):
        numpyro.sample("x", dist.Normal(mu, 1.0))


def _branching():
    a = numpyro.sample("a", dist.Normal(0.0, 1.0))
    if a > 0:
        numpyro.sample("b", dist.Normal(0.0, 1.0))
    numpyro.deterministic("x", a[None])


_calls = []


def _changing():
    _calls.append(1)
    numpyro.sample("a", dist.Normal(0.0, 1.0).expand([1 + len(_calls) % 2]))
    numpyro.sample("x", dist.Normal(0.0, 1.0))


def _unlisted(y=1.0):
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)
    numpyro.deterministic("x", mu[None])


@pytest.mark.parametrize("model, kwargs, message", [
    (_discrete, {}, "site 'k' is discrete"),
    (_dirichlet, {}, "site 'p' .*Dirichlet.* no standard-normal reparameterisation and no inverse CDF"),
    (_subsampled, {}, "site 'x' is in plate 'N' subsampled"),
    (_branching, {}, "control flow depends on the random values"),
    (_changing, {}, "sites change from one run to the next"),
    (_unlisted, {}, "site 'y' has obs= but is not in observed"),
    (regression, {"observed": "z"}, "observed site 'z' is not a site"),
    (random_walk, {"observed": "x", "structure": "independent"}, "structure='independent' does not apply"),
    (random_walk, {"observed": "x", "structure": "bogus"}, "structure must be one of"),
])
def test_bad_models_raise_clear_errors(model, kwargs, message):
    args = {regression: _regression_data(), random_walk: (5,)}.get(model, ())
    with pytest.raises(ValueError, match=message):
        dgm.from_numpyro(model, *args, **kwargs)
