"""``method="chmc-tempered"``: exact moves between the components of a disconnected manifold (issue 16, part 3).

* Component weights: on ``x = u1^2`` (two lines), ``x = (u1^2, u2^2)`` (four lines of unequal mass) and
  ``x = u1^3 - 3 u1`` (three lines whose ``|J J^T|`` differ, so the weights depend on the ``|J J^T|^{-1/2}`` factor
  and on the jump's Jacobian), every chain started in the *same* component, the fraction of level-0 draws in each
  component is within 4 Monte-Carlo standard errors (ArviZ, ESS-based) of the exact weight.
* The law within a component is unchanged: the 1-D quadrature check of the core (``test_chmc_exact``) on a curved
  manifold, with every swap and jump on.
* The dimension-changing map: its log-Jacobian equals autodiff of the map in a chart of the manifold, and Newton
  inverts it.
* Bad ladders are clear errors.

Checked by hand with ``tests/tempered_broken_science.py`` (settings of the tests): with the jump's Jacobian dropped
the cubic-lines weights are off by 5.2 MCSE and the curve's ``E[u2^2]`` by 13.8 MCSE (also a test below); with
``|J J^T|^{-1/2}`` dropped at level 0 the cubic-lines weights are off by 4.05 MCSE (a narrow margin) and the curve's
``E[u2^2]`` by 23.8. The two- and four-lines examples cannot detect either (``|J J^T|`` is the same on every line
and the lines are flat), hence the cubic lines.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dgm
from conftest import mcse
from dgm.geometry.normal_map import invert_normal_map, log_abs_det_normal_map, normal_map
from dgm.kernels.tempered import DEFAULT_MAX_LEVELS, check_noise_scales, default_noise_scales, tempering_summary
from dgm.models import disconnected
from helpers import assert_mean_within
from test_chmc_exact import X_CURVE, assert_curve_matches_quadrature, curve_model

METHOD = "chmc-tempered"
CUBIC_ROOTS = np.array([-np.sqrt(3.0), 0.0, np.sqrt(3.0)])


def cubic_lines(mu=(0.5, 0.0)) -> disconnected.DisconnectedExample:
    """``u ~ N(mu, I_2)``, ``x = u1^3 - 3 u1 = 0``: the lines ``u1 = -sqrt(3), 0, sqrt(3)`` with
    ``|J J^T|^{1/2} = |3 u1^2 - 3| = 6, 3, 6``, so ``w_k ∝ N(r_k; mu1, 1) / |g'(r_k)|``
    (default ``(0.036, 0.762, 0.202)``; without the determinant they would be ``(0.058, 0.617, 0.326)``)."""
    mu = np.asarray(mu, dtype=np.float64)
    model = dgm.GenerativeModel(lambda u: jnp.atleast_1d(u[0] ** 3 - 3.0 * u[0]), 2,
                                log_input_density=lambda u: -0.5 * jnp.sum((u - jnp.asarray(mu)) ** 2),
                                name="cubic-lines")
    log_w = -0.5 * (CUBIC_ROOTS - mu[0]) ** 2 - np.log(np.abs(3.0 * CUBIC_ROOTS**2 - 3.0))
    weights = np.exp(log_w - log_w.max())

    def component_of(u):
        return (u[0] > -0.9).astype(jnp.int32) + (u[0] > 0.9).astype(jnp.int32)

    def start(label, n_chains, seed=0):
        t = mu[1] + np.random.default_rng(seed).standard_normal(n_chains)
        return np.stack([np.full(n_chains, CUBIC_ROOTS[label]), t], axis=1)

    return disconnected.DisconnectedExample("cubic-lines", model, np.array([0.0]), component_of,
                                            weights / weights.sum(), (), start)


def sample_from_one_component(example, label, n_samples=1000, seed=1, **options):
    return dgm.sample(example.model, example.x_obs, method=METHOD, n_chains=4, n_warmup=300, n_samples=n_samples,
                      initial_positions=example.start(label, 4, 0), seed=seed, progress=False, **options)


def component_labels(example, result):
    return np.asarray(jax.vmap(jax.vmap(example.component_of))(jnp.asarray(result.inputs)))


def assert_component_weights(example, result):
    labels = component_labels(example, result)
    for k, weight in enumerate(example.weights):
        assert_mean_within((labels == k).astype(float), weight, label=f"{example.name}: P(component {k})")


@pytest.mark.slow
def test_two_lines_weights_from_one_component():
    example = disconnected.two_lines()
    result = sample_from_one_component(example, label=1)
    assert result.inputs.shape == (4, 1000, 2)  # level 0 only
    assert result.max_residual < 1e-8
    assert_component_weights(example, result)
    labels = component_labels(example, result)
    assert all(len(np.unique(chain)) == 2 for chain in labels)  # every chain crossed
    # within each line, u2 ~ N(mu2 = 0, 1) exactly
    u2 = result.inputs[..., 1]
    assert_mean_within(u2, 0.0, label="E[u2]")
    assert_mean_within(u2**2, 1.0, label="E[u2^2]")
    summary = tempering_summary(result)
    assert result.settings["initial_noise_scales"] == pytest.approx(np.asarray(default_noise_scales(example.x_obs)))
    assert summary["noise_scales"] == result.settings["noise_scales"]  # the adapted ladder (tests/test_tempered_ladder)
    assert len(summary["swap_acceptance"]) == len(summary["noise_scales"])
    assert summary["swap_acceptance"][0] > 0.3  # the dimension-changing swap, as the others after equalising
    assert sum(summary["jump_failures"].values()) < 0.01 * sum(summary["swaps_attempted"])
    assert np.asarray(result.stats["level_step_size"]).shape == (4, 1000, DEFAULT_MAX_LEVELS + 1)


@pytest.mark.slow
def test_four_lines_weights_from_one_component():
    example = disconnected.four_lines()
    result = sample_from_one_component(example, label=0)
    assert_component_weights(example, result)


@pytest.mark.slow
def test_cubic_lines_weights_need_the_determinant_and_the_jump_jacobian():
    """A ladder reaching past the default (``x = 0``: top scale 1) to ``sigma = 3``, where the relaxation crosses the
    humps of ``u1^3 - 3 u1`` easily: the weights mix fast enough to tell the broken variants apart."""
    example = cubic_lines()
    result = sample_from_one_component(example, label=2, n_samples=2000, noise_scales=(0.05, 0.15, 0.45, 1.2, 3.0))
    assert_component_weights(example, result)


@pytest.mark.slow
def test_within_component_law_unchanged_on_a_curve():
    result = dgm.sample(curve_model(), np.array([X_CURVE]), method=METHOD, n_chains=4, n_warmup=300,
                        n_samples=1500, seed=5, progress=False)
    assert_curve_matches_quadrature(result)


@pytest.mark.slow
def test_dropping_the_jump_jacobian_is_detectably_wrong(monkeypatch):
    """The curve check above can fail: without ``log|det DT|`` in the jump's ratio, E[u2^2] moves > 8 MCSE away
    (by hand: 13.8 MCSE; ``tests/tempered_broken_science.py`` breaks the determinant too)."""
    import dgm.kernels.tempered as tempered
    from test_chmc_exact import curve_moment

    monkeypatch.setattr(tempered, "log_abs_det_normal_map", lambda generator, u, eta, sigma: jnp.zeros((), u.dtype))
    result = dgm.sample(curve_model(), np.array([X_CURVE]), method=METHOD, n_chains=4, n_warmup=300,
                        n_samples=1500, seed=5, progress=False)
    t = result.inputs[..., 1]
    assert abs(np.mean(t**2) - curve_moment(lambda s: s**2)) > 8 * mcse(t**2)


# -- the dimension-changing map --------------------------------------------------------------------------------------
def hyperbola_chart(t):
    return jnp.array([t, 1.0 / t])


def circle_chart(theta):  # |u|^2 = 2, u3 = 1: a unit circle in R^3 (m = 2)
    return jnp.array([jnp.cos(theta), jnp.sin(theta), 1.0])


def sphere_chart(angles):  # |u|^2 = 4 in R^3 (d = 2)
    a, b = angles
    return 2.0 * jnp.array([jnp.sin(a) * jnp.cos(b), jnp.sin(a) * jnp.sin(b), jnp.cos(a)])


CASES = [  # NumPy values: made float64 inside the test (x64 fixture)
    ("hyperbola", lambda u: jnp.atleast_1d(u[0] * u[1]), hyperbola_chart, 0.7, [0.4]),
    ("hyperbola-", lambda u: jnp.atleast_1d(u[0] * u[1]), hyperbola_chart, -1.3, [-1.1]),
    ("circle", lambda u: jnp.stack([jnp.sum(u**2), u[2]]), circle_chart, 0.4, [0.3, -0.5]),
    ("sphere", lambda u: jnp.atleast_1d(jnp.sum(u**2)), sphere_chart, [0.9, 2.0], [0.8]),
]


@pytest.mark.parametrize("name, generator, chart, t, eta", CASES, ids=[c[0] for c in CASES])
def test_jump_jacobian_equals_autodiff_in_a_chart(x64, name, generator, chart, t, eta):
    """``log|det DT|`` w.r.t. ``H^d x Lebesgue``: the Jacobian of ``(t, eta) -> T(chart(t), eta)`` divided by the
    chart's volume element ``sqrt(det(Dc^T Dc))``; and Newton inverts ``T`` from ``v`` alone."""
    sigma = 0.3
    shape = np.shape(t)
    t, eta = jnp.asarray(t, jnp.float64), jnp.asarray(eta, jnp.float64)
    d = t.size

    def in_chart(w):
        return normal_map(generator, chart(w[:d].reshape(shape)), w[d:], sigma)

    @jax.jit
    def check(t, eta):
        w = jnp.concatenate([jnp.atleast_1d(t), eta])
        chart_jacobian = jax.jacfwd(lambda s: chart(s.reshape(shape)))(jnp.atleast_1d(t))
        expected = (jnp.linalg.slogdet(jax.jacfwd(in_chart)(w))[1]
                    - 0.5 * jnp.linalg.slogdet(chart_jacobian.T @ chart_jacobian)[1])
        u = chart(t)
        got = log_abs_det_normal_map(generator, u, eta, sigma)
        return expected, got, u, invert_normal_map(generator, generator(u), in_chart(w), sigma, 1e-11, 50)

    expected, got, u, inverse = check(t, eta)
    assert float(got) == pytest.approx(float(expected), abs=1e-10)
    assert bool(inverse.converged)
    np.testing.assert_allclose(inverse.position, u, atol=1e-9)
    np.testing.assert_allclose(inverse.eta, eta, atol=1e-8)


def test_jump_jacobian_at_eta_zero_is_sigma_to_the_m_over_root_gram(x64):
    generator = lambda u: jnp.stack([jnp.sum(u**2), u[2]])
    u, sigma = circle_chart(jnp.asarray(1.1, jnp.float64)), 0.2
    jac = jax.jacfwd(generator)(u)
    expected = 2 * np.log(sigma) - 0.5 * np.linalg.slogdet(np.asarray(jac @ jac.T))[1]
    got = jax.jit(lambda u: log_abs_det_normal_map(generator, u, jnp.zeros(2), sigma))(u)
    assert float(got) == pytest.approx(expected, abs=1e-12)


# -- the ladder ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scales, message", [
    ((0.5, 0.2), "strictly increasing"),
    ((0.1, 0.1), "strictly increasing"),
    ((0.0, 0.3), "> 0"),
    ((-0.1, 0.3), "> 0"),
    ((0.1, float("nan")), "finite"),
    ((), "non-empty"),
    ("abc", "numbers"),
])
def test_bad_ladder_is_a_clear_error(scales, message):
    example = disconnected.two_lines()
    with pytest.raises(ValueError, match=message):
        dgm.sample(example.model, example.x_obs, method=METHOD, noise_scales=scales, n_chains=1, n_warmup=1,
                   n_samples=1, initial_positions=example.start(1, 1), progress=False)


def test_default_ladder_scales_with_the_observation_and_is_geometric(x64):
    scales = np.asarray(default_noise_scales(np.array([3.0, -4.0])))  # RMS = sqrt(12.5)
    assert scales[-1] == pytest.approx(np.sqrt(12.5))
    assert scales[0] == pytest.approx(0.05 * np.sqrt(12.5))
    ratios = scales[1:] / scales[:-1]
    np.testing.assert_allclose(ratios, ratios[0])
    assert ratios[0] <= 1 + 2 / np.sqrt(2) + 1e-12
    assert np.asarray(default_noise_scales(np.zeros(1)))[-1] == pytest.approx(1.0)  # x = 0: unit scale
    assert check_noise_scales([0.1, 1]) == (0.1, 1.0)
