"""MetVAE / L-MCVAE / A-MCVAE objectives of a VAE (dgm.vae.mcmc_objectives) on a linear-Gaussian VAE, where
``p(x) = N(x; b, W W^T + sigma^2 I)`` exactly: each method's importance weights have ``E[w] = p(x)`` (so ``log mean
w`` is within 4 delta-method standard errors of ``log p(x)``), its bound is below ``log p(x)``, and its training
gradient is finite for the VAE and the transitions' own parameters.  (Checked by hand that it can fail: adding
0.3 nats to MetVAE's log-weights puts the two examples' estimates at +0.38 and +0.22 nats, 5.7 and 2.3 standard
errors: the resolution of this check is about 0.3 nats.)
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgm.vae import mcmc_objectives as mo
from dgm.vae.networks import VAE
from test_vae import exact_log_marginal, linear_config

N_SE = 4.0


@pytest.fixture(scope="module")
def linear_vae():
    cfg = linear_config(data_dim=5, latent_dim=2, sigma=0.4)
    vae = VAE(cfg, key=jax.random.key(0))
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 5)), jnp.float32)
    return cfg, vae, x, exact_log_marginal(vae, np.asarray(x))


METHODS = {
    "metvae": (lambda cfg: mo.metvae_extra(cfg, 2, jax.random.key(1), n_layers=2, width=8), mo.metvae_bound,
               mo.metvae_log_weights),
    "lmcvae": (lambda cfg: mo.mcvae_extra(cfg, 2, "langevin", 0.02), mo.mcvae_bound, mo.mcvae_log_weights),
    "amcvae": (lambda cfg: mo.mcvae_extra(cfg, 2, "annealed", 0.05), mo.mcvae_bound, mo.mcvae_log_weights),
}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_weights_unbiased_bound_below_and_gradients_finite(name, linear_vae):
    cfg, vae, x, exact = linear_vae
    make_extra, bound, log_weights = METHODS[name]
    extra = make_extra(cfg)

    @eqx.filter_jit
    def run(vae, extra, x, key):
        lw = jax.vmap(lambda xi, k: log_weights(vae, extra, xi, k, 3000))(x, jax.random.split(key, x.shape[0]))
        grads = eqx.filter_grad(lambda ve: -jnp.mean(bound(ve[0], ve[1], x, key)))((vae, extra))
        return lw, grads

    lw, grads = run(vae, extra, x, jax.random.key(3))
    lw = np.asarray(lw, np.float64)
    w = np.exp(lw - exact[:, None])  # w / p(x), per example
    se = w.std(1) / (w.mean(1) * math.sqrt(w.shape[1]))  # delta method: se of log mean w
    estimate = np.log(w.mean(1))  # log mean w - log p(x)
    assert np.all(np.abs(estimate) <= N_SE * se), (name, estimate, se)
    assert np.all(lw.mean(1) < exact), (name, lw.mean(1), exact)
    leaves = [g for g in jax.tree_util.tree_leaves(grads) if eqx.is_inexact_array(g)]
    assert leaves and all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    assert any(float(jnp.max(jnp.abs(g))) > 0 for g in jax.tree_util.tree_leaves(eqx.filter(grads[1], eqx.is_inexact_array)))


def test_non_gaussian_latent_refused():
    cfg = linear_config(data_dim=5, latent_dim=2, sigma=0.4, latent="von_mises")
    with pytest.raises(ValueError, match="Gaussian latent"):
        mo.metvae_extra(cfg, 2, jax.random.key(0))
    with pytest.raises(ValueError, match="Gaussian latent"):
        mo.mcvae_extra(cfg, 2, "langevin")
    with pytest.raises(ValueError, match="K"):
        mo.mcvae_extra(linear_config(), 0, "annealed")
