"""Variational auto-encoders (equinox + optax), with Gaussian and implicitly reparameterised latents.

* :class:`VAEConfig` (:mod:`dgm.vae.config`) — architecture, JSON round trip;
* :class:`VAE` (:mod:`dgm.vae.networks`) — MLP encoder/decoder, Gaussian (fixed or learnt sigma) or Bernoulli
  likelihood; ``decoder_mean(h)``, ``output_sigma``;
* latent families (:mod:`dgm.vae.latents`) — Gaussian, von Mises (torus), Gamma, Dirichlet, the last three by
  implicit reparameterisation gradients (Figurnov et al. 2018);
* :func:`elbo`, :func:`iwae`, :func:`log_likelihood` (:mod:`dgm.vae.objectives`) — ELBO, IWAE bound and the
  importance-sampled log p(x) with float64 accumulation;
* :func:`train` (:mod:`dgm.vae.train`) — Adam, shuffled minibatches, validation early stopping, progress bar;
* training objectives by name (:mod:`dgm.vae.registry`: ``vae``, ``iwaeK``, ``hvaeK``, ``lmcvaeK``, ...) and
  :func:`dgm.vae.objective_training.train_objective`, which trains any of them like for like;
* :func:`save` / :func:`load` (:mod:`dgm.vae.checkpoint`) — equinox leaves + hyper-parameter JSON, checked.

Training runs in float32 by default; log-likelihoods are accumulated in float64.
"""

from dgm.vae.checkpoint import CheckpointError, load, read_metadata, save
from dgm.vae.config import VAEConfig
from dgm.vae.networks import VAE
from dgm.vae.objectives import elbo, iwae, log_likelihood, log_weights
from dgm.vae.train import TrainHistory, evaluate, train

# The built-in training objectives register themselves with dgm.vae.registry when imported; importing them here
# makes make_objective("hvae5") / ("lmcvae5") work whatever the caller imported first.
from dgm.vae import hvae as _registers_hvae  # noqa: E402,F401  (hvaeK, hvaeK-t, hvaeK-free)
from dgm.vae import mcmc_objectives as _registers_mcmc  # noqa: E402,F401  (metvae[K], lmcvaeK, amcvaeK)

__all__ = ["VAEConfig", "VAE", "train", "evaluate", "TrainHistory", "save", "load", "read_metadata",
           "CheckpointError", "elbo", "iwae", "log_likelihood", "log_weights"]
