"""Simulation-based calibration (:mod:`dgm.diagnostics.sbc`).

The statistical test: constrained HMC on a linear-Gaussian model (``x = u0 + u1 + u2``, ``u ~ N(0, I)``) passes SBC
(every latent's ECDF inside its 99 % simultaneous band, chi2 p-values above 0.01/3), and the same sampler on a model
whose ``log_input_density`` is ``N(0, 2^2)`` while the prior sampler draws ``N(0, 1)`` fails it (posteriors too
wide: ranks pile up in the middle). False-alarm rate of the passing check: at most ~3 % (3 latents x 1 % bands, plus
the Bonferroni chi2 at 1 %); the run is seeded, so the outcome is fixed.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dgm
from dgm.diagnostics import sbc
from dgm.diagnostics.sbc import rank_statistics, thinned_draws

SETTINGS = dict(n_chains=2, n_warmup=100, n_samples=100, n_bins=10, envelope_prob=0.99, progress=False, seed=1)


def _model(scale):
    return dgm.GenerativeModel(lambda u: jnp.array([u[0] + u[1] + u[2]]), 3, name=f"linear-gaussian-{scale}",
                               log_input_density=lambda u: -0.5 * jnp.sum(u * u) / scale**2)


def _prior(key):
    return jax.random.normal(key, (3,), jnp.float64)


def test_sbc_passes_for_the_right_target_and_fails_for_a_wrong_one(tmp_path):
    right = sbc(_model(1.0), _prior, 100, figure=tmp_path / "sbc.png", **SETTINGS)
    assert right.ranks.shape == (100, 3) and right.ranks.min() >= 0 and right.ranks.max() <= right.n_ranks
    assert (right.n_ranks + 1) % 10 == 0 and right.n_ranks >= 9
    assert np.all(right.thinning >= 1)
    assert right.passed, right.summary()
    assert (tmp_path / "sbc.png").stat().st_size > 10_000
    wrong = sbc(_model(2.0), _prior, 100, **SETTINGS)
    assert not wrong.passed, wrong.summary()
    assert not np.all(wrong.ecdf_inside) and wrong.chi2_pvalue.min() < 1e-3, wrong.summary()


def test_rank_statistics_exact():
    ranks = np.repeat(np.arange(20), 3)[:, None]  # 60 ranks in 0..19, uniform: 6 per bin of 2 ranks
    statistic, p_value = rank_statistics(ranks, 19, 10)
    assert statistic[0] == 0.0 and p_value[0] == 1.0
    ranks = np.array([[0], [0], [0], [19]])  # bins: 3 in bin 0, 1 in bin 9; expected 0.4 each
    statistic, _ = rank_statistics(ranks, 19, 10)
    np.testing.assert_allclose(statistic, [(3 - 0.4) ** 2 / 0.4 + (1 - 0.4) ** 2 / 0.4 + 8 * 0.4])
    with pytest.raises(ValueError, match="multiple of n_bins"):
        rank_statistics(ranks, 20, 10)


def test_thinned_draws_exact():
    draws = np.arange(2 * 10).reshape(2, 10)  # chain 0: 0..9, chain 1: 10..19
    np.testing.assert_array_equal(thinned_draws(draws, 4, 3), [6, 16, 9, 19])
    with pytest.raises(ValueError, match="leave 6 < 7"):
        thinned_draws(draws, 7, 3)


def test_sbc_bad_input():
    with pytest.raises(ValueError, match="n_replications"):
        sbc(_model(1.0), _prior, 1)
    with pytest.raises(ValueError, match="pass prior_sampler"):
        sbc(_model(1.0), None, 10)
