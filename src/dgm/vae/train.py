r"""Training a VAE: Adam (optax) on minus the ELBO or the IWAE bound, shuffled minibatches, early stopping.

Each epoch draws a fresh permutation of the training set and takes ``floor(n / batch_size)`` jitted steps
(``eqx.filter_jit``; one step = one minibatch, loss ``-mean_i L(x_i)`` with ``L`` from :mod:`dgm.vae.objectives`).
After every epoch the same objective is evaluated on the validation set with a *fixed* key (so epochs compare like
for like); the parameters with the best validation objective are kept, and training stops after ``patience``
epochs without improvement.  Training runs in the parameters' dtype, float32 by default.
"""

from __future__ import annotations

import sys
import time
from typing import NamedTuple, Optional, Union

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from dgm.vae.config import VAEConfig
from dgm.vae.networks import VAE
from dgm.vae.objectives import check_data, objective_fn

__all__ = ["TrainHistory", "TrainingBar", "adam_epoch", "train", "evaluate"]


class TrainHistory(NamedTuple):
    """Per-epoch averages of the training objective (over the epoch's minibatches, per example) and the validation
    objective (per example), the best epoch (0-based, whose parameters are returned), whether training stopped
    early, and the wall-clock seconds (compilation included)."""

    train_objective: np.ndarray
    valid_objective: np.ndarray
    best_epoch: int
    stopped_early: bool
    seconds: float
    objective: str
    k: int


class TrainingBar:
    """A tqdm bar over training steps, fed from inside the compiled epoch by ``jax.debug.callback``."""

    def __init__(self, total: int, description: str, enabled: bool):
        self.enabled, self.total, self.description = bool(enabled) and total > 0, total, description
        self.bar, self.every, self.n_steps, self.objective, self.valid = None, 1, 1, "", ""

    def open(self, n_steps: int, objective: str):
        self.n_steps, self.every, self.objective = n_steps, max(1, n_steps // 10), objective
        if self.enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, desc=self.description, unit="step", file=sys.stderr, leave=True)

    def report(self, epoch, i, total):
        if self.bar is not None:
            done = int(epoch) * self.n_steps + int(i) + 1
            self.bar.update(done - self.bar.n)
            running = -float(total) / (int(i) + 1)
            self.bar.set_postfix_str(f"epoch {int(epoch) + 1}, train {self.objective} {running:.2f}" + self.valid,
                                     refresh=False)

    def validation(self, value, best, best_epoch):
        self.valid = f", valid {value:.2f} (best {best:.2f} @ epoch {best_epoch + 1})"

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _positive_int(name, v):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")
    return int(v)


def evaluate(vae, x, *, objective: str = "elbo", k: int = 1, seed: int = 0, batch_size: int = 500) -> float:
    """Average objective per example over ``x`` (``(n, data_dim)``) with a fixed ``seed`` (the validation objective
    of :func:`train`)."""
    fn = objective_fn(objective)
    xs = check_data(x, vae.config.data_dim, "x", vae.config.likelihood, vae.log_sigma.dtype)
    return float(_evaluate(vae, jnp.asarray(xs), validation_key(seed), fn, k, batch_size))


def validation_key(seed: int):
    """The fixed key of the validation objective: ``evaluate(vae, valid_x, seed=seed)`` reproduces the values in
    ``train(..., seed=seed)``'s history."""
    return jax.random.fold_in(jax.random.key(seed), 0x7A11D)


def _evaluate(vae, xs, key, fn, k, batch_size):
    n = xs.shape[0]
    bs = min(batch_size, n)
    total = 0.0
    for i, start in enumerate(range(0, n, bs)):
        total += float(_eval_batch(vae, xs[start:start + bs], jax.random.fold_in(key, i), fn, k))
    return total / n


@eqx.filter_jit
def _eval_batch(vae, x, key, fn, k):
    return jnp.sum(fn(vae, x, key, k))


def train(config_or_vae: Union[VAEConfig, VAE], train_x, valid_x=None, *, epochs: int = 50, batch_size: int = 100,
          learning_rate: float = 1e-3, objective: str = "elbo", k: int = 1, patience: Optional[int] = 10,
          seed: int = 0, progress: bool = True):
    """Fit a VAE; returns ``(vae, history)`` (:class:`TrainHistory`).

    * ``config_or_vae``: a :class:`VAEConfig` (a VAE is initialised from ``seed``) or a VAE to continue training.
    * ``train_x``, ``valid_x``: ``(n, data_dim)`` arrays (``valid_x=None``: no early stopping, the last epoch's
      parameters are returned).
    * ``objective``: ``"elbo"`` (with ``k`` draws averaged) or ``"iwae"`` (the ``k``-sample bound).
    * ``patience``: epochs without validation improvement before stopping (``None``: never stop early).
    * ``seed``: initialisation (for a config), minibatch order, the draws of ``z`` and the fixed validation draws.
    * ``progress``: a tqdm bar over the training steps showing the epoch's running objective (updated from inside the
      compiled epoch about ten times per epoch) and the latest and best validation objective.
    """
    epochs = _positive_int("epochs", epochs)
    batch_size = _positive_int("batch_size", batch_size)
    k = _positive_int("k", k)
    if patience is not None:
        patience = _positive_int("patience", patience)
    if not (np.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"learning_rate must be a finite positive number, got {learning_rate!r}")
    fn = objective_fn(objective)
    key = jax.random.key(seed)
    init_key, shuffle_key, step_key = jax.random.split(key, 3)
    valid_key = validation_key(seed)
    if isinstance(config_or_vae, VAEConfig):
        vae = VAE(config_or_vae, key=init_key)
    elif isinstance(config_or_vae, VAE):
        vae = config_or_vae
    else:
        raise TypeError(f"train needs a VAEConfig or a VAE, got {type(config_or_vae).__name__}")
    cfg = vae.config
    dtype = vae.log_sigma.dtype
    xs = jnp.asarray(check_data(train_x, cfg.data_dim, "train_x", cfg.likelihood, dtype))
    xv = None if valid_x is None else jnp.asarray(check_data(valid_x, cfg.data_dim, "valid_x", cfg.likelihood, dtype))
    n = xs.shape[0]
    bs = min(batch_size, n)
    n_steps = n // bs

    optimiser = optax.adam(learning_rate)
    params, static = eqx.partition(vae, eqx.is_inexact_array)
    opt_state = optimiser.init(params)
    bar = TrainingBar(epochs * n_steps, f"VAE ({objective}{'' if k == 1 else f', k={k}'})", progress)

    def loss(params, xb, key):
        return -jnp.mean(fn(eqx.combine(params, static), xb, key, k))

    run_epoch = adam_epoch(loss, optimiser, n, bs, shuffle_key, step_key, bar)

    train_hist, valid_hist = [], []
    best, best_value, best_epoch, since_best, stopped = vae, -np.inf, -1, 0, False
    t0 = time.perf_counter()
    bar.open(n_steps, objective)
    try:
        for epoch in range(epochs):
            params, opt_state, value = run_epoch(params, opt_state, xs, epoch)
            train_value = float(value)
            if not np.isfinite(train_value):
                raise FloatingPointError(f"the training objective became {train_value} in epoch {epoch + 1}; lower "
                                         "the learning rate or check the data")
            train_hist.append(train_value)
            vae = eqx.combine(params, static)
            if xv is not None:
                valid_value = _evaluate(vae, xv, valid_key, fn, k, 500)
                valid_hist.append(valid_value)
                if valid_value > best_value:
                    best, best_value, best_epoch, since_best = vae, valid_value, epoch, 0
                else:
                    since_best += 1
                bar.validation(valid_value, best_value, best_epoch)
            else:
                best, best_epoch = vae, epoch
            if patience is not None and xv is not None and since_best >= patience:
                stopped = True
                break
    finally:
        bar.close()
    history = TrainHistory(np.asarray(train_hist), np.asarray(valid_hist), best_epoch, stopped,
                           time.perf_counter() - t0, objective, k)
    return best, history


def adam_epoch(loss, optimiser, n: int, batch_size: int, shuffle_key, step_key, bar: "TrainingBar"):
    """The compiled training epoch: ``run_epoch(params, opt_state, xs, epoch) -> (params, opt_state, mean objective)``,
    ``floor(n / batch_size)`` optimiser steps on ``loss(params, xb, key)`` over the permutation
    ``permutation(fold_in(shuffle_key, epoch), n)`` of the ``n`` rows of ``xs``, minibatch ``i`` drawing its noise
    from ``fold_in(fold_in(step_key, epoch), i)``, all in one ``lax.scan``; the running objective goes to ``bar``
    about ten times an epoch. Shared by :func:`train` and :func:`dgm.vae.objective_training.train_objective`."""
    n_steps = n // batch_size

    @jax.jit
    def run_epoch(params, opt_state, xs, epoch):
        perm = jax.random.permutation(jax.random.fold_in(shuffle_key, epoch), n)
        epoch_key = jax.random.fold_in(step_key, epoch)

        def body(carry, i):
            params, opt_state, total = carry
            xb = xs[lax.dynamic_slice_in_dim(perm, i * batch_size, batch_size)]
            value, grads = jax.value_and_grad(loss)(params, xb, jax.random.fold_in(epoch_key, i))
            updates, opt_state = optimiser.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            total = total + value
            if bar.enabled:  # running objective to the bar about ten times an epoch
                due = ((i + 1) % bar.every == 0) | (i == n_steps - 1)
                lax.cond(due, lambda: jax.debug.callback(bar.report, epoch, i, total), lambda: None)
            return (params, opt_state, total), None

        (params, opt_state, total), _ = lax.scan(body, (params, opt_state, jnp.zeros((), xs.dtype)),
                                                 jnp.arange(n_steps))
        return params, opt_state, -total / n_steps

    return run_epoch
