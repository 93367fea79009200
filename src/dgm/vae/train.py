r"""Training a VAE: Adam (optax) on minus the ELBO or the IWAE bound, shuffled minibatches, early stopping.

Each epoch draws a fresh permutation of the training set and takes ``floor(n / batch_size)`` optimiser steps (one
step = one minibatch, loss ``-mean_i L(x_i)`` with ``L`` from :mod:`dgm.vae.objectives` or any registered bound),
all inside one compiled ``lax.scan`` over the device-resident training set (or a few, ``steps_per_call``), so the
host never feeds minibatches. After every epoch the same objective is evaluated on the validation set with a
*fixed* key (so epochs compare like for like); the parameters with the best validation objective are kept, and
training stops after ``patience`` epochs without improvement, after ``epochs``, or when a time budget (optimiser
steps only, compilation excluded) is spent. Optional: dynamic binarisation of every minibatch, and a checkpoint
file written atomically after every epoch from which a killed run resumes bit-identically. Training runs in the
parameters' dtype, float32 by default; a tqdm bar shows the epoch's running bound and the validation bound.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import NamedTuple, Optional, Union

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from dgm.vae.config import VAEConfig
from dgm.vae.networks import VAE
from dgm.pytree_checkpoint import check_settings, load_state, save_state
from dgm.vae.objectives import check_data, objective_fn

__all__ = ["TrainHistory", "TrainingBar", "train", "train_bound", "evaluate", "validation_key", "adam_steps",
           "adam_epoch"]


class TrainHistory(NamedTuple):
    """Per-epoch averages of the training objective (over the epoch's minibatches, per example) and the validation
    objective (per example), the best epoch (0-based, whose parameters are returned), whether training stopped
    early, and the wall-clock seconds (compilation included); then the seconds of optimiser steps per epoch on the
    budget clock, the optimiser steps taken, whether the time budget ended training, the compilation seconds and the
    budget (``None``: none) with its clock."""

    train_objective: np.ndarray
    valid_objective: np.ndarray
    best_epoch: int
    stopped_early: bool
    seconds: float
    objective: str
    k: int
    epoch_seconds: np.ndarray = np.zeros(0)
    steps: int = 0
    stopped_by_budget: bool = False
    compile_seconds: float = 0.0
    budget_seconds: Optional[float] = None
    budget_clock: str = "cpu"


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
          seed: int = 0, progress: bool = True, binarise: bool = False, budget_seconds: Optional[float] = None,
          budget_clock: str = "cpu", steps_per_call: Optional[int] = None, checkpoint=None):
    """Fit a VAE; returns ``(vae, history)`` (:class:`TrainHistory`).

    * ``config_or_vae``: a :class:`VAEConfig` (a VAE is initialised from ``seed``) or a VAE to continue training.
    * ``train_x``, ``valid_x``: ``(n, data_dim)`` arrays (``valid_x=None``: no early stopping, the last epoch's
      parameters are returned).
    * ``objective``: ``"elbo"`` (with ``k`` draws averaged) or ``"iwae"`` (the ``k``-sample bound).
    * ``patience``: epochs without validation improvement before stopping (``None``: never stop early).
    * ``seed``: initialisation (for a config), minibatch order, the draws of ``z`` and the fixed validation draws.
    * ``progress``: a tqdm bar over the training steps showing the epoch's running objective (updated from inside the
      compiled epoch about ten times per epoch) and the latest and best validation objective.
    * ``binarise``: dynamic binarisation -- ``train_x`` holds intensities in ``[0, 1]`` and every minibatch is a
      fresh Bernoulli draw of them (Burda et al. 2016; ``valid_x`` is used as given: binarise it once).
    * ``budget_seconds`` / ``budget_clock``: stop once the optimiser steps have used this many seconds of ``"cpu"``
      (this process's CPU time; with dgm's single-threaded XLA it is the work done, whatever else runs on the
      machine) or ``"wall"`` time; compilation and validation are not counted (:func:`train_bound`).
    * ``steps_per_call``: optimiser steps per compiled call (default: a whole epoch); smaller calls stop a budget
      more precisely.
    * ``checkpoint``: a file (``.npz``) holding the whole training state, written atomically after every epoch; a
      later call with the same settings resumes from it (bit-identical to an uninterrupted run) or, when it is
      finished, returns its result at once.
    """
    if objective not in ("elbo", "iwae"):
        objective_fn(objective)  # the error message
    k = _positive_int("k", k)
    fn = objective_fn(objective)
    init_key = jax.random.split(jax.random.key(seed), 3)[0]
    if isinstance(config_or_vae, VAEConfig):
        vae = VAE(config_or_vae, key=init_key)
    elif isinstance(config_or_vae, VAE):
        vae = config_or_vae
    else:
        raise TypeError(f"train needs a VAEConfig or a VAE, got {type(config_or_vae).__name__}")
    cfg = vae.config
    dtype = vae.log_sigma.dtype
    xs = check_data(train_x, cfg.data_dim, "train_x", "bernoulli" if binarise else cfg.likelihood, dtype)
    xv = None if valid_x is None else check_data(valid_x, cfg.data_dim, "valid_x", cfg.likelihood, dtype)
    if binarise and cfg.likelihood != "bernoulli":
        raise ValueError("binarise=True draws 0/1 pixels: it needs a Bernoulli likelihood")

    def bound(model, xb, key):
        return fn(model, xb, key, k)

    settings = dict(config=cfg.to_dict(), objective=objective, k=k,
                    initial="config" if isinstance(config_or_vae, VAEConfig) else "given VAE")
    best, history = train_bound(bound, vae, xs, xv, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                                patience=patience, seed=seed, progress=progress, binarise=binarise,
                                budget_seconds=budget_seconds, budget_clock=budget_clock,
                                steps_per_call=steps_per_call, checkpoint=checkpoint, settings=settings,
                                description=f"VAE ({objective}{'' if k == 1 else f', k={k}'})",
                                objective_name=objective)
    return best, history._replace(objective=objective, k=k)


CHECKPOINT_FORMAT = "dgm.vae.train/1"
_CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}


def train_bound(bound, model, train_x, valid_x=None, *, epochs: int = 50, batch_size: int = 100,
                learning_rate: float = 1e-3, patience: Optional[int] = 10, seed: int = 0, progress: bool = True,
                binarise: bool = False, budget_seconds: Optional[float] = None, budget_clock: str = "cpu",
                steps_per_call: Optional[int] = None, checkpoint=None, settings: Optional[dict] = None,
                description: str = "training", objective_name: str = "bound", valid_batch_size: int = 500):
    """Maximise ``mean bound(model, xb, key)`` over minibatches with Adam: the training loop of :func:`train` and of
    ``dgm vae-benchmark`` (every registered objective). Returns ``(best model, TrainHistory)``.

    ``model`` is any equinox pytree (a VAE, or a ``(VAE, extra)`` pair); its inexact arrays are trained.
    ``bound(model, xb, key) -> (n,)`` per-example lower bounds for a minibatch ``xb``; the validation objective is the
    same bound averaged over ``valid_x`` with the fixed key :func:`validation_key` ``(seed)`` and decides the best
    epoch and early stopping. Randomness: ``_, shuffle, steps = split(key(seed), 3)``; epoch ``e`` visits the rows in
    the order ``permutation(fold_in(shuffle, e), n)``, its step ``i`` draws from ``fold_in(fold_in(steps, e), i)``
    (and, with ``binarise``, its pixels from ``fold_in(fold_in(binarise_key, e), i)``), so neither
    ``steps_per_call`` nor a resume from ``checkpoint`` changes any number.

    The epoch runs as ``lax.scan`` over its steps on the device-resident training set (a minibatch is a gather of
    ``batch_size`` rows); the functions are compiled ahead of time, so the ``budget_seconds`` (on ``budget_clock``)
    counts optimiser steps only. ``settings``: extra entries a checkpoint must match (the architecture, the
    objective). Other options as :func:`train`.
    """
    epochs = _positive_int("epochs", epochs)
    batch_size = _positive_int("batch_size", batch_size)
    if patience is not None:
        patience = _positive_int("patience", patience)
    if not (np.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"learning_rate must be a finite positive number, got {learning_rate!r}")
    if budget_seconds is not None and not (np.isfinite(budget_seconds) and budget_seconds > 0):
        raise ValueError(f"budget_seconds must be a finite positive number, got {budget_seconds!r}")
    if budget_clock not in _CLOCKS:
        raise ValueError(f"budget_clock must be one of {sorted(_CLOCKS)}, got {budget_clock!r}")
    clock = _CLOCKS[budget_clock]
    xs = jnp.asarray(train_x)
    xv = None if valid_x is None else jnp.asarray(valid_x)
    n = int(xs.shape[0])
    bs = min(batch_size, n)
    n_steps = n // bs
    per_call = n_steps if steps_per_call is None else min(_positive_int("steps_per_call", steps_per_call), n_steps)
    _, shuffle_key, step_key = jax.random.split(jax.random.key(seed), 3)
    binarise_key = jax.random.fold_in(jax.random.key(seed), 0xB1) if binarise else None
    valid_key = validation_key(seed)

    optimiser = optax.adam(learning_rate)
    params, static = eqx.partition(model, eqx.is_inexact_array)
    opt_state = optimiser.init(params)
    bar = TrainingBar(epochs * n_steps, description, progress)

    def loss(params, xb, key):
        return -jnp.mean(bound(eqx.combine(params, static), xb, key))

    run_steps = adam_steps(loss, optimiser, n, bs, shuffle_key, step_key, bar, binarise_key=binarise_key)
    run_settings = dict(settings or {}, batch_size=bs, learning_rate=float(learning_rate), patience=patience, seed=seed,
                        binarise=bool(binarise), n_train=n, n_valid=None if xv is None else int(xv.shape[0]),
                        dtype=str(xs.dtype))

    state = dict(epoch=0, step=0, total=0.0, train=[], valid=[], epoch_seconds=[], best_value=-np.inf, best_epoch=-1,
                 since_best=0, stopped_early=False, used=0.0, steps_done=0)
    best_params = params
    path = None if checkpoint is None else Path(checkpoint)
    if path is not None and path.exists():
        like = jax.tree_util.tree_leaves((params, opt_state, params))
        saved = load_state(path, format=CHECKPOINT_FORMAT, like=like)
        check_settings(path, saved["meta"]["settings"], run_settings)
        treedef = jax.tree_util.tree_structure((params, opt_state, params))
        leaves = [jnp.asarray(v) for v in saved["leaves"]]
        params, opt_state, best_params = jax.tree_util.tree_unflatten(treedef, leaves)
        state.update(saved["meta"]["state"])

    def save():
        if path is not None:
            save_state(path, jax.tree_util.tree_leaves((params, opt_state, best_params)),
                       dict(settings=run_settings, state=state), format=CHECKPOINT_FORMAT)

    t0 = time.perf_counter()
    compiled, compile_seconds = {}, 0.0

    def call(length, epoch, first, total):
        nonlocal compile_seconds
        if length not in compiled:
            c0 = time.perf_counter()
            compiled[length] = jax.jit(run_steps, static_argnums=5).lower(
                params, opt_state, xs, jnp.int32(0), jnp.int32(0), length, jnp.zeros((), xs.dtype)).compile()
            compile_seconds += time.perf_counter() - c0
        return compiled[length](params, opt_state, xs, jnp.int32(epoch), jnp.int32(first), total)

    def out_of_budget():
        return budget_seconds is not None and state["used"] >= budget_seconds

    bar.open(n_steps, objective_name)
    try:
        while state["epoch"] < epochs and not state["stopped_early"] and not out_of_budget():
            epoch = state["epoch"]
            total = jnp.asarray(state["total"], xs.dtype)
            epoch_used = 0.0
            if state["step"] > 0:  # an epoch cut short by a budget, resumed with a larger one: replace its entries
                state["train"].pop()
                epoch_used = state["epoch_seconds"].pop()
                if xv is not None:
                    state["valid"].pop()
            while state["step"] < n_steps and not out_of_budget():
                length = min(per_call, n_steps - state["step"])
                c_start = clock()
                params, opt_state, total = call(length, epoch, state["step"], total)
                total.block_until_ready()
                spent = clock() - c_start
                state["used"] += spent
                epoch_used += spent
                state["step"] += length
                state["steps_done"] += length
            state["total"] = float(total)
            train_value = -state["total"] / state["step"]
            if not np.isfinite(train_value):
                raise FloatingPointError(f"{description}: the training objective became {train_value} in epoch "
                                         f"{epoch + 1}; lower the learning rate or check the data")
            state["train"].append(train_value)
            state["epoch_seconds"].append(epoch_used)
            current = eqx.combine(params, static)
            if xv is not None:
                value = _evaluate_bound(bound, current, xv, valid_key, valid_batch_size)
                state["valid"].append(value)
                if value > state["best_value"]:
                    state["best_value"], state["best_epoch"], state["since_best"] = value, epoch, 0
                    best_params = params
                else:
                    state["since_best"] += 1
                bar.validation(value, state["best_value"], state["best_epoch"])
                if patience is not None and state["since_best"] >= patience:
                    state["stopped_early"] = True
            else:
                state["best_epoch"], best_params = epoch, params
            if state["step"] >= n_steps:  # a whole epoch: the next one starts afresh
                state["epoch"], state["step"], state["total"] = epoch + 1, 0, 0.0
            save()
    finally:
        bar.close()
    history = TrainHistory(np.asarray(state["train"]), np.asarray(state["valid"]), int(state["best_epoch"]),
                           bool(state["stopped_early"]), time.perf_counter() - t0, objective_name, 1,
                           epoch_seconds=np.asarray(state["epoch_seconds"]), steps=int(state["steps_done"]),
                           stopped_by_budget=bool(out_of_budget()), compile_seconds=compile_seconds,
                           budget_seconds=budget_seconds, budget_clock=budget_clock)
    return eqx.combine(best_params, static), history


def _evaluate_bound(bound, model, xv, key, batch_size):
    n = xv.shape[0]
    bs = min(batch_size, n)
    total = 0.0
    for i, start in enumerate(range(0, n, bs)):
        total += float(_bound_batch_sum(bound, model, xv[start:start + bs], jax.random.fold_in(key, i)))
    return total / n


@eqx.filter_jit
def _bound_batch_sum(bound, model, x, key):
    return jnp.sum(bound(model, x, key))


def adam_steps(loss, optimiser, n: int, batch_size: int, shuffle_key, step_key, bar: "TrainingBar", *,
               binarise_key=None):
    """``run_steps(params, opt_state, xs, epoch, first, length, total) -> (params, opt_state, total)``: optimiser
    steps ``first .. first + length - 1`` of epoch ``epoch`` in one ``lax.scan`` (``length`` static), adding each
    step's loss to ``total``. Step ``i`` takes the rows ``perm[i b : (i + 1) b]`` of the device-resident ``xs``,
    ``perm = permutation(fold_in(shuffle_key, epoch), n)``, draws its noise from ``fold_in(fold_in(step_key, epoch),
    i)`` and, with a ``binarise_key``, replaces the minibatch by Bernoulli draws of its intensities (dynamic
    binarisation). The running objective goes to ``bar`` about ten times an epoch."""
    n_steps = n // batch_size

    def run_steps(params, opt_state, xs, epoch, first, length, total):
        perm = jax.random.permutation(jax.random.fold_in(shuffle_key, epoch), n)
        epoch_key = jax.random.fold_in(step_key, epoch)

        def body(carry, i):
            params, opt_state, total = carry
            xb = xs[lax.dynamic_slice_in_dim(perm, i * batch_size, batch_size)]
            if binarise_key is not None:
                u = jax.random.uniform(jax.random.fold_in(jax.random.fold_in(binarise_key, epoch), i), xb.shape,
                                       xb.dtype)
                xb = (u < xb).astype(xb.dtype)
            value, grads = jax.value_and_grad(loss)(params, xb, jax.random.fold_in(epoch_key, i))
            updates, opt_state = optimiser.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            total = total + value
            if bar.enabled:  # running objective to the bar about ten times an epoch
                due = ((i + 1) % bar.every == 0) | (i == n_steps - 1)
                lax.cond(due, lambda: jax.debug.callback(bar.report, epoch, i, total), lambda: None)
            return (params, opt_state, total), None

        (params, opt_state, total), _ = lax.scan(body, (params, opt_state, total), first + jnp.arange(length))
        return params, opt_state, total

    return run_steps


def adam_epoch(loss, optimiser, n: int, batch_size: int, shuffle_key, step_key, bar: "TrainingBar", *,
               binarise_key=None):
    """The compiled training epoch: ``run_epoch(params, opt_state, xs, epoch) -> (params, opt_state, mean objective)``,
    all ``floor(n / batch_size)`` steps of :func:`adam_steps` in one ``lax.scan``. Shared by the benchmarks and
    :func:`dgm.vae.objective_training.build_epoch`."""
    n_steps = n // batch_size
    run_steps = adam_steps(loss, optimiser, n, batch_size, shuffle_key, step_key, bar, binarise_key=binarise_key)

    @jax.jit
    def run_epoch(params, opt_state, xs, epoch):
        params, opt_state, total = run_steps(params, opt_state, xs, epoch, 0, n_steps, jnp.zeros((), xs.dtype))
        return params, opt_state, -total / n_steps

    return run_epoch
