"""``dgm.sample_many``: many observations in one program, keys ``fold_in(seed, index)``.

What a result equals: observation ``i`` of ``sample_many(model, xs, seed=s, chain_method="sequential")`` is, bit for
bit, ``dgm.sample(model, xs[i], seed=jax.random.fold_in(jax.random.PRNGKey(s), i), chain_method="sequential")``
(same keys for initialisation, warm-up and sampling, same per-chain program), and a batch split into pieces with
``indices=`` is bit for bit the whole batch. (``"vectorized"`` agrees to rounding only: XLA's CPU kernels for different
batch sizes round a few operations differently.) Deriving keys from the position in the piece instead of
``indices`` makes the split test fail with differences of order 1 (checked by hand).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dgm
from dgm.runtime.batch import observation_keys

SETTINGS = dict(n_chains=2, n_warmup=20, n_samples=10, progress=False, chunk_size=16, chain_method="sequential")
XS = np.array([[0.7], [0.1], [-0.5], [1.3]])


def generator(u):
    return jnp.array([u[0] + u[1] ** 2 + 0.5 * u[2]])


MODEL = dgm.GenerativeModel(generator, 3, name="curved")


@pytest.fixture(scope="module")
def whole():
    with dgm.float64():
        return dgm.sample_many(MODEL, XS, seed=5, **SETTINGS)


def _same(a, b):
    np.testing.assert_array_equal(a.inputs, b.inputs)
    np.testing.assert_array_equal(a.step_size, b.step_size)
    for name in a.stats:
        np.testing.assert_array_equal(a.stats[name], b.stats[name])


def test_split_batch_equals_whole_batch(whole):
    with dgm.float64():
        first = dgm.sample_many(MODEL, XS[:2], seed=5, **SETTINGS)
        second = dgm.sample_many(MODEL, XS[2:], seed=5, indices=[2, 3], **SETTINGS)
    for a, b in zip(whole, first + second):
        assert a.settings["seed"] == b.settings["seed"]  # the observation's key, exactly
        _same(a, b)
    np.testing.assert_array_equal(observation_keys(5, [2, 3]), observation_keys(5, range(4))[2:])


def test_one_observation_equals_sample_with_the_folded_key(whole):
    i = 1
    with dgm.float64():
        single = dgm.sample(MODEL, XS[i], seed=jax.random.fold_in(jax.random.PRNGKey(5), i), **SETTINGS)
    assert single.settings["seed"] == whole[i].settings["seed"]
    _same(whole[i], single)
    assert np.ptp(whole[0].inputs[:, -1] - whole[1].inputs[:, -1]) > 0  # observations do differ


def test_results_are_one_posterior_per_observation(whole):
    assert len(whole) == len(XS)
    for i, result in enumerate(whole):
        assert result.inputs.shape == (2, 10, 3)
        assert result.settings["observation_index"] == i
        assert result.max_residual < 1e-8 * max(1.0, np.abs(XS[i]).max())  # tol * max(1, |x|_inf)
        np.testing.assert_array_equal(result.x_obs, XS[i])
        tree = result.to_arviz()
        assert dict(tree.posterior.sizes)["chain"] == 2 and dict(tree.posterior.sizes)["draw"] == 10
        with dgm.float64():  # every draw on its own observation's manifold
            x = np.asarray(jax.vmap(jax.vmap(generator))(jnp.asarray(result.inputs)))
        np.testing.assert_allclose(x[..., 0], XS[i, 0], atol=1e-8)


@pytest.mark.parametrize("batch, message", [
    (np.array([0.7, 0.1]), r"shape \(n_obs, 1\)"),  # no batch axis
    (np.zeros((3, 2)), r"shape \(n_obs, 1\)"),  # wrong output size
    (np.zeros((0, 1)), "n_obs >= 1"),
    (np.array([[0.1], [np.nan], [0.3]]), r"non-finite .* observation\(s\) \[1\]"),
])
def test_bad_batches_are_refused(batch, message):
    with pytest.raises(ValueError, match=message):
        dgm.sample_many(MODEL, batch, **SETTINGS)


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="distinct non-negative"):
        dgm.sample_many(MODEL, XS[:2], indices=[1, 1], **SETTINGS)
    with pytest.raises(ValueError, match="only used with sharded=True"):
        dgm.sample_many(MODEL, XS[:2], mesh=object(), **SETTINGS)
    with pytest.raises(ValueError, match="n_chains"):
        dgm.sample_many(MODEL, XS[:2], **dict(SETTINGS, n_chains=0))
