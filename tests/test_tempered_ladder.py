"""The self-adapting ladder of ``chmc-tempered``, the mode-mixing warning and the float32-constant warning (issue 23).

* Component weights where the default ladder must adapt: ``x = u1^2 - a^2 = 0`` (two lines ``u1 = ±a``, default top
  scale ``RMS(x) -> 1``, while the relaxation joins the lines only for ``sigma`` of order ``a^2 = 6.25``); every chain
  starts on the lighter line. With the adaptation the fraction of level-0 draws on each line is within 4 MCSE of the
  exact weight. Checked by hand (``adapt_ladder=False``, same settings): every draw stays on the starting line,
  P(lighter line) = 1 against 0.223 exact, hundreds of MCSE away -- and the mode-mixing warning fires there.
* The schedule: equal barrier increments between the new levels, ``ceil(2 Lambda)`` levels, the top raised.
* The mode-mixing diagnostic: infinite R-hat for chains that never cross (whatever their acceptance), near 1 for
  mixing chains; the warning fires on a connected but bimodal manifold where constrained HMC stays in its mode
  (one component, every path joined), and stays silent on connected unimodal runs (linear-Gaussian, curve, sphere).
* A generator closing over a float32 array warns; a float64 one does not.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dgm
from dgm.mixing import MIXING_RHAT, basin_indicator, effective_sample_size, mode_mixing
from dgm.kernels.tempered import adapted_schedule, tempering_summary
from dgm.models import disconnected
from helpers import assert_mean_within

A = 2.5  # half the distance between the lines
MU = (0.25, 0.0)


def shifted_lines():
    """``u ~ N(MU, I_2)``, ``x = u1^2 - A^2 = 0``: lines ``u1 = ±A``, ``|J J^T|^{1/2} = 2A`` on both, so
    ``w_± ∝ exp(-(±A - mu1)^2 / 2)`` (0.777, 0.223 for label 1 (``+A``), 0)."""
    mu = np.asarray(MU)
    model = dgm.GenerativeModel(lambda u: jnp.atleast_1d(u[0] ** 2 - A**2), 2,
                                log_input_density=lambda u: -0.5 * jnp.sum((u - jnp.asarray(mu, u.dtype)) ** 2),
                                name="shifted-lines")
    log_w = -0.5 * (np.array([-A, A]) - mu[0]) ** 2
    weights = np.exp(log_w - log_w.max())

    def component_of(u):
        return (u[0] > 0).astype(jnp.int32)

    def start(label, n_chains, seed=0):
        t = mu[1] + np.random.default_rng(seed).standard_normal(n_chains)
        return np.stack([np.full(n_chains, A if label else -A), t], axis=1)

    return disconnected.DisconnectedExample("shifted-lines", model, np.array([0.0]), component_of,
                                            weights / weights.sum(), (), start)


def run_shifted_lines(**options):
    example = shifted_lines()
    return example, dgm.sample(example.model, example.x_obs, method="chmc-tempered", n_chains=4, n_warmup=500,
                               n_samples=1000, initial_positions=example.start(0, 4, 0), seed=3, progress=False,
                               **options)


@pytest.mark.slow
def test_adapted_ladder_gets_the_weights_where_the_default_top_is_far_too_low():
    example, result = run_shifted_lines()
    labels = np.asarray(jax.vmap(jax.vmap(example.component_of))(jnp.asarray(result.inputs)))
    for k, weight in enumerate(example.weights):
        assert_mean_within((labels == k).astype(float), weight, label=f"P(line {k})")
    settings = result.settings
    assert settings["adapt_ladder"] is True
    assert settings["initial_noise_scales"][-1] == pytest.approx(1.0)  # the default: RMS(x) = 0 -> 1
    assert settings["noise_scales"][-1] >= 4.0  # raised (doubling) until the top level mixed
    assert settings["n_levels"] == len(settings["noise_scales"]) >= 2
    assert np.all(np.diff(settings["noise_scales"]) > 0)
    assert min(settings["round_trips"]) > 0
    assert settings["barrier"] > 0
    summary = tempering_summary(result)
    assert summary["noise_scales"] == settings["noise_scales"]
    assert len(summary["swap_acceptance"]) == settings["n_levels"]
    assert not result.mixing.disagree
    assert "tempering (adapted ladder)" in result.tempering_summary_line()


def test_schedule_equalises_the_barrier_and_sizes_the_ladder(x64):
    capacity = 8
    sigmas = jnp.concatenate([jnp.zeros(1), jnp.asarray([0.1, 0.2, 0.4, 0.8, 1.6]), jnp.full(3, 1.6)])
    rejection = jnp.asarray([0.1, 0.6, 0.1, 0.1, 0.3, 0, 0, 0])
    new, levels, barrier = adapted_schedule(sigmas, jnp.int32(5), rejection, jnp.asarray(False), capacity)
    assert float(barrier) == pytest.approx(1.2)
    assert int(levels) == 3  # ceil(2 * 1.2)
    new = np.asarray(new)
    assert new[0] == 0 and new[3] == pytest.approx(1.6) and np.all(new[4:] == new[3])
    # the barrier, piecewise linear in log sigma through the knots (virtual level 0 one spacing below sigma_1)
    t = np.log(np.asarray(sigmas[1:6]))
    knots_t = np.concatenate([[t[0] - (t[-1] - t[0]) / 4], t])
    knots_lambda = np.concatenate([[0], np.cumsum(np.asarray(rejection[:5]))])
    at_new = np.interp(np.log(new[1:4]), knots_t, knots_lambda)
    np.testing.assert_allclose(at_new, [0.4, 0.8, 1.2], atol=1e-9)  # equal steps of Lambda / 3
    raised, levels_raised, _ = adapted_schedule(sigmas, jnp.int32(5), rejection, jnp.asarray(True), capacity)
    assert float(raised[int(levels_raised)]) == pytest.approx(3.2)
    assert int(levels_raised) >= int(levels)


# -- the mode-mixing diagnostic --------------------------------------------------------------------------------------
def test_mixing_report_sees_chains_that_never_cross_and_passes_mixing_ones():
    rng = np.random.default_rng(0)
    stuck = rng.standard_normal((4, 300, 2)) * 0.3
    stuck[:2, :, 0] += 3.0  # two chains in one mode, two in the other; every draw "accepted"
    report = mode_mixing(stuck)
    assert report.rhat > 10 and report.disagree
    assert sorted(np.round(report.basin_fractions)) == [0, 0, 1, 1]
    modes = np.where(rng.random((4, 300)) < 0.5, 3.0, 0.0)  # the same two modes, visited by every chain
    mixing = rng.standard_normal((4, 300, 2)) * 0.3
    mixing[..., 0] += modes
    report = mode_mixing(mixing)
    assert report.rhat < 1.05 and not report.disagree
    assert report.ess == pytest.approx(1200, rel=0.2)
    assert mode_mixing(stuck[:1]) is None  # one chain: nothing to compare
    assert basin_indicator(mixing).shape == (4, 300)
    ar = np.zeros((2, 2000))  # AR(1), phi = 0.9: ESS = N (1 - phi) / (1 + phi)
    noise = rng.standard_normal((2, 2000))
    for i in range(1, 2000):
        ar[:, i] = 0.9 * ar[:, i - 1] + noise[:, i]
    assert effective_sample_size(ar) == pytest.approx(4000 * 0.1 / 1.9, rel=0.3)


def bimodal_line():
    """``x = u1 = 0``: the line ``u1 = 0`` (one component), ``rho`` a mixture of N(±4, 0.3^2) in ``u2``."""
    def log_density(u):
        return -0.5 * u[0] ** 2 + jnp.logaddexp(-0.5 * ((u[1] - 4.0) / 0.3) ** 2, -0.5 * ((u[1] + 4.0) / 0.3) ** 2)

    return dgm.GenerativeModel(lambda u: u[:1], 2, log_input_density=log_density, name="bimodal-line")


def test_mixing_warning_fires_on_a_connected_manifold_whose_modes_chmc_does_not_cross():
    starts = np.array([[0.0, 4.0], [0.0, 4.1], [0.0, 3.9], [0.0, -4.0]])
    with pytest.warns(RuntimeWarning, match="do not mix between modes") as caught:
        result = dgm.sample(bimodal_line(), np.array([0.0]), n_chains=4, n_warmup=100, n_samples=200, seed=0,
                            initial_positions=starts, progress=False)
    assert result.components.n_components == 1  # the component check cannot see it: the line is connected
    assert result.mixing.rhat > MIXING_RHAT
    assert "method='chmc-tempered'" in str(caught[-1].message)


def quiet_run(model, x, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        return dgm.sample(model, x, n_chains=4, n_warmup=200, n_samples=300, seed=1, progress=False, **options)


@pytest.mark.slow
def test_mixing_warning_is_silent_on_connected_examples():
    from test_chmc_exact import X_CURVE, curve_model

    linear = dgm.GenerativeModel(lambda u: jnp.atleast_1d(u[0] + 2.0 * u[1] - u[2]), 3, name="linear-gaussian")
    sphere = dgm.GenerativeModel(lambda u: jnp.atleast_1d(jnp.sum(u**2)), 3, name="sphere")
    for model, x in ((linear, np.array([1.0])), (curve_model(), np.array([X_CURVE])), (sphere, np.array([4.0]))):
        result = quiet_run(model, x)
        assert not result.mixing.disagree, (model.name, result.mixing.describe())


# -- float32 constants -----------------------------------------------------------------------------------------------
def test_a_generator_closing_over_float32_constants_warns():
    with jax.enable_x64(False):
        matrix = jnp.asarray(np.array([[1.0, 1 / 3, 0.1]]))  # float32: built with 64-bit mode off
    assert matrix.dtype == jnp.float32
    model = dgm.GenerativeModel(lambda u: matrix @ u, 3, name="float32-matrix")
    with pytest.warns(UserWarning, match=r"float32\[1, 3\] closed-over constant.*float64"), dgm.float64():
        model.validate_observation(np.array([10.0]))
    assert model.check_precision()  # found, and remembered (no second trace)
    exact = np.array([[1.0, 1 / 3, 0.1]])
    clean = dgm.GenerativeModel(lambda u: jnp.asarray(exact) @ u, 3)
    with warnings.catch_warnings(), dgm.float64():
        warnings.simplefilter("error")
        clean.validate_observation(np.array([10.0]))
    assert clean.check_precision() == []


# -- declared symmetries ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_tempering_applies_declared_symmetries_at_level_zero():
    """``chmc-tempered`` with the two lines' reflection declared: exact symmetry moves at level 0 on top of the ladder
    (previously refused with a warning); weights still within 4 MCSE, the moves recorded and accepted."""
    example = disconnected.two_lines()
    model = dgm.GenerativeModel(example.model.generator, 2, log_input_density=example.model.log_input_density,
                                symmetries=example.symmetries, name="two-lines-symmetric")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        result = dgm.sample(model, example.x_obs, method="chmc-tempered", n_chains=4, n_warmup=200, n_samples=500,
                            initial_positions=example.start(1, 4, 0), seed=2, progress=False)
    counts = result.symmetry_counts()
    assert abs(counts[0]["proposed"] - 1000) <= 6 * np.sqrt(500) and counts[0]["accepted"] > 0.2 * counts[0]["proposed"]
    labels = np.asarray(jax.vmap(jax.vmap(example.component_of))(jnp.asarray(result.inputs)))
    for k, weight in enumerate(example.weights):
        assert_mean_within((labels == k).astype(float), weight, label=f"P(line {k})")
    assert result.settings["symmetries"] and result.settings["round_trips"]
