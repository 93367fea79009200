"""dgm.vi.batched_fit: vmapped ELBO maximisation in resumable chunks.

* exact answer: a concave quadratic "ELBO" per data set is maximised at each data set's own optimum;
* vmapping is exact: fitting two data sets together gives each one's lone fit (stochastic objective, same keys);
* a run killed after a chunk and resumed from its checkpoint is bit-identical to an uninterrupted one (this fails if
  the per-iteration keys restart at every chunk -- checked by hand by replacing ``first + arange`` with ``arange``);
* a checkpoint of other settings is refused.
"""

from __future__ import annotations

from unittest import mock

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dgm.pytree_checkpoint as pc
from dgm.errors import CheckpointError
from dgm.vi.batched_fit import fit_batched


class Params(eqx.Module):
    theta: jax.Array


def noisy_quadratic(model, target, key):
    """``-|theta - target|^2 / 2`` plus zero-mean noise in the gradient (a stochastic ELBO stand-in)."""
    eps = 0.1 * jax.random.normal(key, model.theta.shape)
    return -0.5 * jnp.sum((model.theta - target) ** 2) + jnp.sum(eps * model.theta)


def _setup(targets):
    n = targets.shape[0]
    params, static = eqx.partition(Params(jnp.zeros((n, targets.shape[1]))), eqx.is_inexact_array)
    keys = jax.random.split(jax.random.key(0), n)
    return params, static, keys


def test_each_data_set_reaches_its_own_optimum():
    targets = jnp.array([[1.0, -2.0], [3.0, 0.5], [-1.5, 4.0]])
    params, static, keys = _setup(targets)
    fit = fit_batched(lambda m, t, k: -0.5 * jnp.sum((m.theta - t) ** 2), params, static, targets, keys,
                      optimiser=optax.sgd(0.1), iterations=200, record_every=100,
                      record=lambda m: {"theta": m.theta})
    np.testing.assert_allclose(np.asarray(fit.params.theta), np.asarray(targets), atol=1e-6)
    assert fit.records["theta"].shape == (2, 3, 2) and list(fit.iterations) == [100, 200]


def test_vmapped_fit_equals_each_data_set_alone():
    targets = jnp.array([[1.0, -2.0], [3.0, 0.5]])
    params, static, keys = _setup(targets)
    kw = dict(optimiser=optax.rmsprop(1e-2), iterations=60, record_every=30)
    both = fit_batched(noisy_quadratic, params, static, targets, keys, **kw)
    for s in range(2):
        alone = fit_batched(noisy_quadratic, Params(params.theta[s:s + 1]), static, targets[s:s + 1], keys[s:s + 1],
                            **kw)
        np.testing.assert_allclose(np.asarray(alone.params.theta[0]), np.asarray(both.params.theta[s]), rtol=1e-6,
                                   atol=1e-6)


def test_resume_after_kill_is_bit_identical(tmp_path):
    targets = jnp.array([[1.0, -2.0], [3.0, 0.5]])
    params, static, keys = _setup(targets)
    kw = dict(optimiser=optax.rmsprop(1e-2), iterations=90, record_every=30, record=lambda m: {"theta": m.theta},
              settings={"what": "test"})
    reference = fit_batched(noisy_quadratic, params, static, targets, keys, **kw)
    path = tmp_path / "fit.npz"
    real, writes = pc.atomic_write, []

    def killed_after_first_chunk(p, data):
        real(p, data)
        writes.append(p)
        raise KeyboardInterrupt

    with mock.patch.object(pc, "atomic_write", killed_after_first_chunk), pytest.raises(KeyboardInterrupt):
        fit_batched(noisy_quadratic, params, static, targets, keys, checkpoint=path, **kw)
    resumed = fit_batched(noisy_quadratic, params, static, targets, keys, checkpoint=path, **kw)
    assert len(writes) == 1 and resumed.resumed_from == 30
    np.testing.assert_array_equal(np.asarray(resumed.params.theta), np.asarray(reference.params.theta))
    np.testing.assert_array_equal(resumed.records["theta"], reference.records["theta"])
    np.testing.assert_array_equal(resumed.elbo, reference.elbo)
    one_chunk = fit_batched(noisy_quadratic, params, static, targets, keys, **dict(kw, record_every=90))
    np.testing.assert_array_equal(np.asarray(resumed.params.theta), np.asarray(one_chunk.params.theta))
    again = fit_batched(noisy_quadratic, params, static, targets, keys, checkpoint=path, **kw)  # finished: loaded
    assert again.resumed_from == 90
    with pytest.raises(CheckpointError, match="settings differ: optimiser_rate"):
        fit_batched(noisy_quadratic, params, static, targets, keys, checkpoint=path,
                    **dict(kw, settings={"what": "test", "optimiser_rate": 2}))
