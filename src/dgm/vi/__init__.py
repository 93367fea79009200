"""Variational methods for latent-variable models.

* :mod:`dgm.vi.implicit` — implicit reparameterisation gradients (Figurnov, Mohamed & Mnih 2018) for any
  distribution with a differentiable CDF, and the multivariate standardisation form;
* :mod:`dgm.vi.von_mises` — the von Mises distribution with gradients in location and concentration;
* :mod:`dgm.vi.distributions` — Gamma, Beta, Dirichlet over ``jax.random`` with one interface (``rsample``,
  ``log_prob``);
* :mod:`dgm.vi.nondiff` — unbiased reparameterisation gradients for ``if``-branching models (Lee, Yu & Yang 2018);
* :mod:`dgm.vi.metflow` — MetFlow (Thin et al. 2020): MH kernels with normalizing-flow proposals as a variational
  family, its auxiliary ELBO and gradient estimator; :mod:`dgm.vi.target_fit` fits it (and a plain RealNVP, a
  mean-field Gaussian) to a fixed unnormalised target;
* :mod:`dgm.vi.mcvae` — the Monte Carlo VAE bounds (Thin et al. 2021): annealed Langevin (L-MCVAE) and annealed
  MALA / AIS (A-MCVAE), with their gradient estimators.

Submodules are imported on demand (``from dgm.vi.von_mises import VonMises``) to keep ``import dgm`` light.
"""
