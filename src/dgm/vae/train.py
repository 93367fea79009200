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

from dgm.vae.config import VAEConfig
from dgm.vae.networks import VAE
from dgm.vae.objectives import check_data, objective_fn

__all__ = ["TrainHistory", "train", "evaluate"]


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


def _positive_int(name, v):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")
    return int(v)


def evaluate(vae, x, *, objective: str = "elbo", k: int = 1, seed: int = 0, batch_size: int = 500) -> float:
    """Average objective per example over ``x`` (``(n, data_dim)``) with a fixed ``seed``."""
    fn = objective_fn(objective)
    xs = check_data(x, vae.config.data_dim, "x", vae.config.likelihood)
    return float(_evaluate(vae, jnp.asarray(xs), jax.random.key(seed), fn, k, batch_size))


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
    * ``progress``: a tqdm bar over epochs showing the running training objective and the validation objective.
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
    init_key, shuffle_key, step_key, valid_key = jax.random.split(key, 4)
    if isinstance(config_or_vae, VAEConfig):
        vae = VAE(config_or_vae, key=init_key)
    elif isinstance(config_or_vae, VAE):
        vae = config_or_vae
    else:
        raise TypeError(f"train needs a VAEConfig or a VAE, got {type(config_or_vae).__name__}")
    cfg = vae.config
    xs = jnp.asarray(check_data(train_x, cfg.data_dim, "train_x", cfg.likelihood))
    xv = None if valid_x is None else jnp.asarray(check_data(valid_x, cfg.data_dim, "valid_x", cfg.likelihood))
    n = xs.shape[0]
    bs = min(batch_size, n)
    n_steps = n // bs

    optimiser = optax.adam(learning_rate)
    opt_state = optimiser.init(eqx.filter(vae, eqx.is_inexact_array))

    def loss(model, xb, key):
        return -jnp.mean(fn(model, xb, key, k))

    @eqx.filter_jit
    def step(model, opt_state, xb, key):
        value, grads = eqx.filter_value_and_grad(loss)(model, xb, key)
        updates, opt_state = optimiser.update(grads, opt_state, eqx.filter(model, eqx.is_inexact_array))
        model = eqx.apply_updates(model, updates)
        return model, opt_state, value

    @jax.jit
    def shuffled(key):
        return xs[jax.random.permutation(key, n)[: n_steps * bs]].reshape(n_steps, bs, -1)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs, desc=f"VAE ({objective}{'' if k == 1 else f', k={k}'})", unit="epoch",
                   file=sys.stderr, leave=True)
    train_hist, valid_hist = [], []
    best, best_value, best_epoch, since_best, stopped = vae, -np.inf, -1, 0, False
    t0 = time.perf_counter()
    try:
        for epoch in range(epochs):
            batches = shuffled(jax.random.fold_in(shuffle_key, epoch))
            epoch_key = jax.random.fold_in(step_key, epoch)
            total = jnp.zeros(())
            for i in range(n_steps):
                vae, opt_state, value = step(vae, opt_state, batches[i], jax.random.fold_in(epoch_key, i))
                total = total + value
                if bar is not None and (i + 1) % max(1, n_steps // 10) == 0:
                    bar.set_postfix_str(f"train {objective} {-float(total) / (i + 1):.2f}")
            train_value = -float(total) / n_steps
            if not np.isfinite(train_value):
                raise FloatingPointError(f"the training objective became {train_value} in epoch {epoch}; lower the "
                                         "learning rate or check the data")
            train_hist.append(train_value)
            if xv is not None:
                value = _evaluate(vae, xv, valid_key, fn, k, 500)
                valid_hist.append(value)
                if value > best_value:
                    best, best_value, best_epoch, since_best = vae, value, epoch, 0
                else:
                    since_best += 1
            else:
                best, best_epoch = vae, epoch
            if bar is not None:
                bar.update(1)
                msg = f"train {objective} {train_value:.2f}"
                if valid_hist:
                    msg += f", valid {valid_hist[-1]:.2f} (best {best_value:.2f} @ {best_epoch + 1})"
                bar.set_postfix_str(msg)
            if patience is not None and xv is not None and since_best >= patience:
                stopped = True
                break
    finally:
        if bar is not None:
            bar.close()
    history = TrainHistory(np.asarray(train_hist), np.asarray(valid_hist), best_epoch, stopped,
                           time.perf_counter() - t0, objective, k)
    return best, history
