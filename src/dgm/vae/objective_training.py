r"""Training any registered objective (:mod:`dgm.vae.registry`) like for like, and its validation bound.

Every objective trains the *same* VAE (one :class:`~dgm.vae.VAEConfig`, initialised from ``seed`` whatever the
objective) together with the objective's extra parameters, with Adam (``learning_rate``) on ``-mean bound`` over
shuffled minibatches for a fixed number of epochs (no early stopping: every objective gets the same budget).  The
validation bound is the average per-example bound over the validation set with a fixed key, so epochs and
objectives compare like for like.  Used by the ``dgm vae-benchmark`` experiment and the VAE benchmarks scripts.
"""

from __future__ import annotations

import time
from typing import Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from dgm.vae.config import VAEConfig
from dgm.vae.networks import VAE
from dgm.vae.objectives import check_data
from dgm.vae.registry import Objective
from dgm.vae.train import TrainingBar, adam_epoch

__all__ = ["build_epoch", "train_objective", "evaluate_bound", "positive_int"]


def positive_int(name: str, value) -> int:
    """``value`` as an ``int`` if it is a positive integer (not a bool); a ValueError naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


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
                learning_rate: float = 1e-3, seed: int = 0, bar: Optional[TrainingBar] = None):
    """The compiled training epoch shared by every objective: ``(run_epoch, params, opt_state, static)`` with
    ``run_epoch(params, opt_state, xs, epoch) -> (params, opt_state, mean training bound)`` -- ``floor(n /
    batch_size)`` Adam steps on ``-mean bound`` over a fresh permutation of the ``n`` rows of ``xs``, in one
    ``lax.scan``.  The VAE is initialised from ``seed`` (the same for every objective)."""
    batch_size = positive_int("batch_size", batch_size)
    if not (np.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"learning_rate must be a finite positive number, got {learning_rate!r}")
    init_key, shuffle_key, step_key = jax.random.split(jax.random.key(seed), 3)
    vae = VAE(config, key=init_key)
    bs = min(batch_size, n)
    optimiser = optax.adam(learning_rate)
    params, static = eqx.partition((vae, objective.extra), eqx.is_inexact_array)
    opt_state = optimiser.init(params)
    bound = objective.bound
    bar = bar if bar is not None else TrainingBar(0, "", False)

    def loss(params, xb, key):
        v, e = eqx.combine(params, static)
        return -jnp.mean(bound(v, e, xb, key))

    run_epoch = adam_epoch(loss, optimiser, n, bs, shuffle_key, step_key, bar)

    return run_epoch, params, opt_state, static


def train_objective(objective: Objective, config: VAEConfig, train_x, valid_x, *, epochs: int, batch_size: int = 100,
                    learning_rate: float = 1e-3, seed: int = 0, progress: bool = True):
    """Train a VAE (initialised from ``seed``; the same for every objective) and the objective's extra parameters
    jointly with Adam on ``-mean bound`` over shuffled minibatches for ``epochs`` epochs (no early stopping: every
    objective gets the same budget).  Returns ``(vae, extra, train_bound, valid_bound, epoch_seconds)``."""
    epochs = positive_int("epochs", epochs)
    xs = jnp.asarray(check_data(train_x, config.data_dim, "train_x", config.likelihood))
    xv = jnp.asarray(check_data(valid_x, config.data_dim, "valid_x", config.likelihood))
    n_steps = xs.shape[0] // min(positive_int("batch_size", batch_size), xs.shape[0])
    bar = TrainingBar(epochs * n_steps, f"{objective.name} (seed {seed})", progress)
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
