r"""MCMC inside the VAE objective: MetVAE (Thin et al. 2020) and the Monte Carlo VAEs L-MCVAE / A-MCVAE (Thin et al.
2021), as rows of ``dgm vae-benchmark`` (registered here: ``metvae[K]``, ``lmcvaeK``, ``amcvaeK``).

For one example ``x`` the target is the VAE's joint ``gamma(z) = log p(x | z) + log p(z)`` (``Z = p(x)``) and the
initial density is the encoder's Gaussian ``q(z | x)`` (amortised); the transitions are

* ``metvaeK`` -- ``K`` MetFlow kernels (:mod:`dgm.vi.metflow`: a RealNVP proposal on the latent space shared by all
  examples, direction variable, Barker acceptance, learnt decision law), trained with the model and encoder by the
  auxiliary ELBO and its estimator (reparameterisation + score term for the decisions);
* ``lmcvaeK`` -- ``K`` annealed unadjusted-Langevin steps with ULA backward kernels (:func:`dgm.vi.mcvae.
  langevin_log_weight`), plain reparameterisation;
* ``amcvaeK`` -- ``K`` annealed MALA steps with AIS weights (:func:`dgm.vi.mcvae.annealed_log_weight`), with the
  decisions' score term.

Each has ``bound(vae, extra, x, key) -> (n,)`` (values: the per-example bound estimates ``log w``; gradients: the
method's estimator, the score terms' control variate being ``log gamma(z_0) - log q(z_0 | x)``, computed before any
decision) and ``log_weights(vae, extra, x, key, k) -> (k,)`` (``k`` independent ``log w`` with ``E[w] = p(x)``; the
test log-likelihood is ``log mean w`` over many draws).  ``extra`` holds the transitions' own parameters (the flow
and decision logits; the step sizes), trained with the VAE.  Only a Gaussian latent is supported (the transitions
move ``z`` in ``R^d``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from dgm.vae.registry import Objective, register_objective
from dgm.vi import mcvae
from dgm.vi import metflow as mf

__all__ = ["metvae_extra", "metvae_log_weight", "metvae_bound", "metvae_log_weights",
           "mcvae_extra", "mcvae_bound", "mcvae_log_weights", "check_gaussian_latent"]


def check_gaussian_latent(config, what: str):
    if config.latent != "gaussian":
        raise ValueError(f"{what} moves the latent code in R^d and needs a Gaussian latent, got {config.latent!r}")


def _joint(vae, x):
    return lambda z: vae.log_likelihood_given(x, z) + vae.log_prior(z)


# -- MetVAE ---------------------------------------------------------------------------------------------------------------
def metvae_extra(config, n_steps: int, key, *, n_layers: int = 4, width: int = 64):
    """The MetVAE transitions' parameters: a RealNVP on the ``latent_dim``-dimensional code and ``K`` decision
    logits, in the VAE's dtype (float32)."""
    check_gaussian_latent(config, "MetVAE")
    n_steps = mf.check_steps("MetVAE K", n_steps)
    flow = mf.realnvp(key, config.latent_dim, n_layers=n_layers, width=width)
    return (mf.MetFlow(flow), jnp.zeros(n_steps, jnp.float32))


def metvae_log_weight(vae, extra, x, key):
    """``(log w, score, baseline)`` for one example and one draw (module docstring)."""
    metflow, logits = extra
    q = vae.encode(x)
    k0, k1 = jax.random.split(key)
    z0 = q.rsample(k0)
    log_q0 = jnp.sum(q.log_prob(z0))
    joint = _joint(vae, x)
    log_w, score, info = mf.log_weight(metflow, joint, z0, log_q0, k1, logits.shape[0], logits)
    baseline = joint(z0) - log_q0
    return log_w, score, baseline


def metvae_bound(vae, extra, x, key):
    keys = jax.random.split(key, x.shape[0])

    def one(xi, ki):
        log_w, score, baseline = metvae_log_weight(vae, extra, xi, ki)
        return mf.surrogate(log_w, score, lax.stop_gradient(baseline))

    return jax.vmap(one)(x, keys)


def metvae_log_weights(vae, extra, x, key, k):
    return jax.vmap(lambda kk: metvae_log_weight(vae, extra, x, kk)[0])(jax.random.split(key, k))


# -- L-MCVAE / A-MCVAE ------------------------------------------------------------------------------------------------------
def mcvae_extra(config, n_steps: int, kind: str, step_size: float = 0.005):
    """The transitions' parameters: ``K`` learnt step sizes (initially ``step_size``)."""
    check_gaussian_latent(config, "L-MCVAE" if kind == "langevin" else "A-MCVAE")
    return mcvae.MCVAEKernel(n_steps, step_size, kind)


def _encoder_gaussian(vae, x):
    q = vae.encode(x)
    return q.loc, q.scale


def mcvae_bound(vae, extra, x, key):
    keys = jax.random.split(key, x.shape[0])

    def one(xi, ki):
        loc, scale = _encoder_gaussian(vae, xi)
        return mcvae.surrogate_bound(_joint(vae, xi), loc, scale, extra, ki)

    return jax.vmap(one)(x, keys)


def mcvae_log_weights(vae, extra, x, key, k):
    loc, scale = _encoder_gaussian(vae, x)
    joint = _joint(vae, x)
    return jax.vmap(lambda kk: mcvae.log_weight(joint, loc, scale, extra, kk)[0])(jax.random.split(key, k))


# -- benchmark rows ---------------------------------------------------------------------------------------------------------
METVAE_DEFAULT_K = 5


def _make_metvae(groups, config, key):
    k = int(groups["k"] or METVAE_DEFAULT_K)
    return Objective(f"metvae{k}", metvae_extra(config, k, key), metvae_bound, metvae_log_weights,
                     f"MetVAE: K={k} MetFlow kernels (RealNVP proposals, Barker)")


def _make_mcvae(groups, config, key):
    k = int(groups["k"])
    kind = "langevin" if groups["kind"] == "l" else "annealed"
    label = "L-MCVAE: K={k} annealed ULA steps" if kind == "langevin" else "A-MCVAE: K={k} annealed MALA steps (AIS)"
    return Objective(f"{groups['kind']}mcvae{k}", mcvae_extra(config, k, kind), mcvae_bound, mcvae_log_weights,
                     label.format(k=k))


register_objective(r"metvae(?P<k>\d*)", _make_metvae, example="metvae5",
                   help=f"MetVAE with K MetFlow kernels (Thin et al. 2020; 'metvae' = K={METVAE_DEFAULT_K})")
register_objective(r"(?P<kind>[la])mcvae(?P<k>\d+)", _make_mcvae, example="lmcvae5",
                   help="Monte Carlo VAE with K transitions (Thin et al. 2021): 'l' = Langevin (L-MCVAE), "
                        "'a' = annealed MALA / AIS (A-MCVAE), e.g. lmcvae10, amcvae5")
