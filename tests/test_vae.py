"""dgm.vae objectives against exact answers.

* On a linear-Gaussian VAE (linear decoder, Gaussian likelihood) ``p(x) = N(x; b, W W^T + sigma^2 I)`` exactly.  With
  orthogonal decoder columns the exact posterior is a diagonal Gaussian the encoder can represent: then every
  importance weight equals ``p(x)`` (a zero-variance check of every log-density term), and with a mismatched encoder
  the importance-sampled estimate converges to ``p(x)`` within Monte-Carlo error.
* A trained linear VAE reaches the probabilistic-PCA maximum likelihood (Tipping & Bishop 1999, eq. 4 at the ML
  solution eqs. 7-8).
* ELBO <= IWAE(K) <= log p(x) (Burda et al. 2016, Theorem 1) on a small nonlinear VAE, with stated MC slack.
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dgm.vae as V
from dgm.vae import latents
from dgm.vae.networks import VAE

N_SE = 4.0  # tolerance in Monte-Carlo standard errors


def linear_config(data_dim=5, latent_dim=2, sigma=0.4, **kw):
    return V.VAEConfig(data_dim=data_dim, latent_dim=latent_dim, hidden=(), decoder_hidden=(),
                       output_activation="identity", sigma=sigma, **kw)


def exact_log_marginal(vae, x):
    """``log N(x; b, W W^T + sigma^2 I)`` in float64 (numpy), ``x`` of shape ``(n, D)``."""
    layer = vae.decoder.layers[0]
    w, b = np.asarray(layer.weight, np.float64), np.asarray(layer.bias, np.float64)
    cov = w @ w.T + float(vae.output_sigma) ** 2 * np.eye(len(b))
    chol = np.linalg.cholesky(cov)
    r = np.linalg.solve(chol, (np.asarray(x, np.float64) - b).T)
    return -0.5 * np.sum(r * r, 0) - np.sum(np.log(np.diag(chol))) - 0.5 * len(b) * math.log(2 * math.pi)


def with_orthogonal_decoder(vae, key):
    """Replace the decoder weight by one with orthogonal columns of different lengths."""
    d_out, d_in = vae.decoder.layers[0].weight.shape
    q, _ = jnp.linalg.qr(jax.random.normal(key, (d_out, d_in)))
    w = q * jnp.linspace(1.5, 0.7, d_in)
    return eqx.tree_at(lambda m: m.decoder.layers[0].weight, vae, w.astype(vae.log_sigma.dtype))


def with_posterior_encoder(vae, scale_factor=1.0, mean_shift=0.0):
    """Set the linear encoder to the exact posterior ``N(M^-1 W^T (x - b), sigma^2 M^-1)``, ``M = W^T W + sigma^2 I``
    (diagonal for orthogonal columns), optionally with scales multiplied by ``scale_factor`` and means shifted."""
    layer = vae.decoder.layers[0]
    w, b = np.asarray(layer.weight, np.float64), np.asarray(layer.bias, np.float64)
    s2 = float(vae.output_sigma) ** 2
    m = np.diag(w.T @ w) + s2
    mean_weight = w.T / m[:, None]
    mean_bias = -mean_weight @ b + mean_shift
    std = np.sqrt(s2 / m) * scale_factor - vae.config.min_scale
    d = len(m)
    weight = np.concatenate([mean_weight, np.zeros((d, len(b)))])
    bias = np.concatenate([mean_bias, np.log(np.expm1(std))])
    dt = vae.log_sigma.dtype
    vae = eqx.tree_at(lambda v: v.encoder.layers[0].weight, vae, jnp.asarray(weight, dt))
    return eqx.tree_at(lambda v: v.encoder.layers[0].bias, vae, jnp.asarray(bias, dt))


def linear_vae(seed=0, scale_factor=1.0, mean_shift=0.0):
    cfg = linear_config()
    key = jax.random.key(seed)
    vae = VAE(cfg, key=key).astype(jnp.float64)
    vae = with_orthogonal_decoder(vae, jax.random.fold_in(key, 1))
    return with_posterior_encoder(vae, scale_factor, mean_shift)


def data_from(vae, n, seed):
    _, x = vae.sample(jax.random.key(seed), n)
    return np.asarray(x)


def max_weight_error(vae, x, k=64):
    """``max |log w_k - log p(x)|`` over examples and draws."""
    lw = jax.vmap(lambda xi, i: V.log_weights(vae, xi, jax.random.key(i), k))(jnp.asarray(x), jnp.arange(len(x)))
    return float(np.max(np.abs(np.asarray(lw) - exact_log_marginal(vae, x)[:, None])))


def test_exact_posterior_gives_constant_weights_equal_to_marginal(x64):
    vae = linear_vae()
    x = data_from(vae, 8, seed=3)
    assert max_weight_error(vae, x) < 1e-9
    # and the estimator returns it for any k
    est = V.log_likelihood(vae, x, k=7, chunk_size=3, batch_size=3)
    np.testing.assert_allclose(est, exact_log_marginal(vae, x), atol=1e-9)


def test_exact_posterior_check_fails_when_a_log_det_is_perturbed(x64, monkeypatch):
    """The check above has teeth: drop 1% of the Gaussian likelihood's log-normaliser (its log sigma term), or
    perturb the encoder's log-density, and the weights stop matching the exact marginal."""
    vae = linear_vae()
    x = data_from(vae, 8, seed=3)
    original = VAE.log_likelihood_given

    def perturbed(self, x, z):
        return original(self, x, z) + 0.01 * self.config.data_dim * jnp.log(self.output_sigma)

    monkeypatch.setattr(VAE, "log_likelihood_given", perturbed)
    assert max_weight_error(vae, x) > 1e-3
    monkeypatch.setattr(VAE, "log_likelihood_given", original)
    original_lp = latents.Normal.log_prob
    monkeypatch.setattr(latents.Normal, "log_prob", lambda self, z: original_lp(self, z) - 0.01 * jnp.log(self.scale))
    assert max_weight_error(vae, x) > 1e-3


def _is_estimate_and_se(vae, x, k, seed):
    """Importance-sampled log p(x) with its delta-method standard error ``sd(w) / (sqrt(k) mean(w))``."""
    lw = np.asarray(jax.vmap(lambda xi, i: V.log_weights(vae, xi, jax.random.fold_in(jax.random.key(seed), i), k))(
        jnp.asarray(x), jnp.arange(len(x))), np.float64)
    m = lw.max(1, keepdims=True)
    w = np.exp(lw - m)
    est = np.log(w.mean(1)) + m[:, 0]
    se = w.std(1) / (math.sqrt(k) * w.mean(1))
    return est, se


@pytest.mark.parametrize("scale_factor, mean_shift", [(1.4, 0.0), (1.2, 0.3)])
def test_importance_sampled_log_likelihood_converges_to_exact(x64, scale_factor, mean_shift):
    """A mismatched (wider, shifted) encoder: the K = 20000 estimate is within 4 delta-method s.e. (plus the
    estimator's O(1/K) downward bias, far smaller) of the exact marginal; K = 2 is visibly biased down on average."""
    vae = linear_vae(scale_factor=scale_factor, mean_shift=mean_shift)
    x = data_from(vae, 6, seed=5)
    exact = exact_log_marginal(vae, x)
    est = V.log_likelihood(vae, x, k=20000, seed=1, batch_size=4, chunk_size=2500)
    _, se = _is_estimate_and_se(vae, x, 20000, seed=2)
    assert np.all(se < 0.05)
    assert np.all(np.abs(est - exact) <= N_SE * se + 1e-9), (est - exact, se)
    small = V.log_likelihood(vae, x, k=2, seed=1)
    assert np.mean(small - exact) < -N_SE * np.mean(se)


def test_log_likelihood_reproducible_and_independent_of_batching():
    cfg = V.VAEConfig(data_dim=6, latent_dim=2, hidden=(8,))
    vae = VAE(cfg, key=jax.random.key(0))
    x = np.random.default_rng(0).uniform(size=(7, 6))
    a = V.log_likelihood(vae, x, k=50, seed=3, batch_size=7, chunk_size=50)
    b = V.log_likelihood(vae, x, k=50, seed=3, batch_size=2, chunk_size=50)
    assert a.dtype == np.float64 and a.shape == (7,)
    np.testing.assert_array_equal(a, b)
    c = V.log_likelihood(vae, x, k=50, seed=4, batch_size=7, chunk_size=50)
    assert not np.allclose(a, c)


def test_bounds_are_ordered():
    """ELBO <= IWAE(10) <= IWAE(100) <= log p(x) (K = 20000) per example on a small nonlinear VAE with a poor
    encoder, each "<=" allowing 4 combined standard errors; the gaps must also be resolved (> 4 s.e.)."""
    cfg = V.VAEConfig(data_dim=8, latent_dim=2, hidden=(16,), sigma=0.3, output_activation="identity")
    vae = VAE(cfg, key=jax.random.key(1))
    x = np.asarray(vae.sample(jax.random.key(2), 4)[1])
    xj = jnp.asarray(x)
    n_rep = 400

    def replicated(k, seed):
        keys = jax.random.split(jax.random.key(seed), n_rep)
        vals = np.asarray(jax.vmap(lambda key: V.iwae(vae, xj, key, k))(keys), np.float64)  # (n_rep, n)
        return vals.mean(0), vals.std(0) / math.sqrt(n_rep)

    elbo, elbo_se = replicated(1, 10)
    iw10, iw10_se = replicated(10, 11)
    iw100, iw100_se = replicated(100, 12)
    logp = V.log_likelihood(vae, x, k=20000, seed=13)
    _, logp_se = _is_estimate_and_se(vae, x, 20000, seed=14)
    chain = [(elbo, elbo_se), (iw10, iw10_se), (iw100, iw100_se), (logp, logp_se)]
    for (lo, lo_se), (hi, hi_se) in zip(chain[:-1], chain[1:]):
        slack = N_SE * np.sqrt(lo_se ** 2 + hi_se ** 2)
        assert np.all(lo <= hi + slack), (lo, hi, slack)
    # the first gap is real for every example
    assert np.all(iw10 - elbo > N_SE * np.sqrt(elbo_se ** 2 + iw10_se ** 2))


@pytest.mark.slow
def test_trained_linear_vae_recovers_probabilistic_pca():
    """A linear VAE (diagonal Gaussian encoder, learnt sigma) trained by the ELBO on pPCA data reaches the pPCA
    maximum log-likelihood (Tipping & Bishop 1999: ``-(1/2)(D log 2pi + sum_{j<=q} log lambda_j + (D - q) log
    sigma^2_ML + D)`` per example, ``sigma^2_ML`` the mean discarded eigenvalue of the sample covariance) within
    0.01 nats per example (the ML is an upper bound on the training set); its importance-sampled log-likelihood
    equals its closed-form one within 4 s.e. (Lucas et al. 2019 show the linear VAE's ELBO optimum is the pPCA
    solution.)"""
    rng = np.random.default_rng(0)
    d_data, d_lat, n = 6, 2, 2000
    w = rng.normal(size=(d_data, d_lat))
    x = (rng.normal(size=(n, d_lat)) @ w.T + rng.normal(size=d_data) + 0.3 * rng.normal(size=(n, d_data)))
    xc = x - x.mean(0)
    lam = np.sort(np.linalg.eigvalsh(xc.T @ xc / n))[::-1]
    ppca = -0.5 * (d_data * math.log(2 * math.pi) + np.log(lam[:d_lat]).sum()
                   + (d_data - d_lat) * math.log(lam[d_lat:].mean()) + d_data)
    cfg = linear_config(data_dim=d_data, latent_dim=d_lat, sigma=1.0, learn_sigma=True)
    vae, history = V.train(cfg, x, None, epochs=100, batch_size=100, learning_rate=1e-2, progress=False, seed=0)
    exact = exact_log_marginal(vae, x).mean()
    assert ppca - 0.01 <= exact <= ppca + 1e-6, (exact, ppca)
    assert history.train_objective[-1] <= exact + 0.05  # the ELBO is below the likelihood (MC noise in the ELBO)
    est, se = _is_estimate_and_se(vae, x[:20].astype(np.float32), 2000, seed=3)
    assert np.all(np.abs(est - exact_log_marginal(vae, x[:20])) <= N_SE * se + 1e-4)


def test_bad_inputs():
    cfg = V.VAEConfig(data_dim=4, latent_dim=2, hidden=(8,))
    vae = VAE(cfg, key=jax.random.key(0))
    with pytest.raises(ValueError, match="shape"):
        V.log_likelihood(vae, np.zeros((3, 5)), k=2)
    with pytest.raises(ValueError, match="NaN"):
        V.log_likelihood(vae, np.full((3, 4), np.nan), k=2)
    with pytest.raises(ValueError, match="k must be"):
        V.log_likelihood(vae, np.zeros((3, 4)), k=0)
    with pytest.raises(ValueError, match="trailing dimension"):
        vae.decoder_mean(jnp.zeros(3))
    bern = VAE(V.VAEConfig(data_dim=4, latent_dim=2, likelihood="bernoulli"), key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        V.log_likelihood(bern, np.full((2, 4), 2.0), k=2)
    with pytest.raises(ValueError, match="Gaussian likelihood only"):
        bern.output_sigma
