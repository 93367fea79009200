"""Disconnected manifolds (issue 16, parts 1-2): declared symmetries as exact MH moves, and detection of the
components the chains occupy.

Statistical checks: the fraction of draws in each component (and within-component moments) within 4 Monte-Carlo
standard errors (ArviZ's ESS-based MCSE, :func:`conftest.mcse`) of the exact values, with every chain started in the
SAME component, so the weights can only come out right if the moves cross between components with the correct
acceptance ratio. Checked by hand to fail when the science is wrong (see the negative test below and the report of
issue 16): without the map's tangent-space Jacobian the non-isometric scaling map gives E[u2^2] about 8 MCSE off.
"""

import dataclasses
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dgm
from conftest import mcse
from dgm.components import components_after_sampling, detect_components, split_rhat
from dgm.kernels import symmetry as symmetry_kernel
from dgm.models import disconnected
from dgm.symmetry import Symmetry, as_symmetries, check_symmetries
from test_chmc_exact import A, X_LINEAR, assert_linear_conditional_moments, linear_model

N_SE = 4.0


def component_fractions_within(result, example, n_se=N_SE):
    labels = np.asarray(jax.vmap(jax.vmap(example.component_of))(jnp.asarray(result.inputs)))
    for k, weight in enumerate(example.weights):
        indicator = (labels == k).astype(float)
        estimate, se = float(indicator.mean()), mcse(indicator)
        assert abs(estimate - weight) <= n_se * se, (
            f"{example.name} component {k}: fraction {estimate:.4f} vs exact {weight:.4f} (MCSE {se:.2g})")


def within(draws, exact, label, n_se=N_SE):
    estimate, se = float(np.mean(draws)), mcse(draws)
    assert abs(estimate - exact) <= n_se * se, f"{label}: {estimate:.4f} vs exact {exact:.4f} (MCSE {se:.2g})"


def no_component_warning(record):
    return not [w for w in record if "components" in str(w.message) and issubclass(w.category, RuntimeWarning)]


def sample_from_one_component(example, symmetries, *, n_samples=1000, seed=1, **options):
    model = dataclasses.replace(example.model, symmetries=symmetries)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        result = dgm.sample(model, example.x_obs, n_chains=4, n_warmup=200, n_samples=n_samples, seed=seed,
                            initial_positions=example.start(0, 4, seed), progress=False, **options)
    assert no_component_warning(record)
    return result


# ---------------------------------------------------------------------------------------------------------------------
# component weights with every chain started in the same component
# ---------------------------------------------------------------------------------------------------------------------
def test_two_lines_weights_and_within_component_law():
    example = disconnected.two_lines()  # w = (0.269, 0.731); all chains start on the lighter line u1 = -1
    result = sample_from_one_component(example, example.symmetries)
    component_fractions_within(result, example)
    u2 = result.inputs[..., 1]  # u2 ~ N(mu2, 1) on each line
    within(u2, 0.0, "E[u2]")
    within(u2**2, 1.0, "E[u2^2]")
    counts = result.symmetry_counts()
    # a move after each transition with probability 1/2 (the default): Binomial(4000, 1/2), 6 sd either side
    assert abs(counts[0]["proposed"] - 2000) <= 6 * np.sqrt(1000) and counts[0]["failed"] == 0
    assert 0.3 < counts[0]["accepted"] / counts[0]["proposed"] < 0.8
    assert result.components.n_components == 2 and result.components.chains_moving == 4
    assert "symmetry_acceptance_rate" in result.to_arviz()["sample_stats"]
    assert result.settings["symmetries"] == ["s0"]


def test_exact_symmetry_with_even_thinning_sees_both_images():
    """x = u1^2 + u2 with the exact symmetry u1 -> -u1: every move is accepted, so a move after *every* transition
    (the old default, probability 1) made the chain periodic and ``thin=2`` recorded one image only (fraction 1.0).
    With the default probability 1/2 the image is a fair coin: the fraction is 1/2 within 4 MCSE."""
    model = dgm.GenerativeModel(lambda u: jnp.atleast_1d(u[0] ** 2 + u[1]), input_dim=2,
                                symmetries=[lambda u: u.at[0].multiply(-1.0)])
    start = np.tile(np.array([1.0, 0.0]), (4, 1))
    result = dgm.sample(model, np.array([1.0]), n_chains=4, n_warmup=100, n_samples=300, thin=2, seed=3,
                        initial_positions=start, progress=False)
    within((result.inputs[..., 0] > 0).astype(float), 0.5, "P(u1 > 0)")


def test_four_lines_weights():
    example = disconnected.four_lines()  # w = (0.203, 0.066, 0.551, 0.180), the two sign flips as generators
    result = sample_from_one_component(example, example.symmetries)
    component_fractions_within(result, example)
    within(result.inputs[..., 2] ** 2, 1.0, "E[u3^2]")


def scaling_map(c=2.0):
    """``(u1, u2) -> (-u1, c u2)``: preserves ``u1^2``, not an involution (its inverse divides by c), not an isometry:
    the tangent-space Jacobian is ``c`` one way and ``1/c`` the other."""
    return Symmetry(lambda u: jnp.stack([-u[0], c * u[1]]), inverse=lambda u: jnp.stack([-u[0], u[1] / c]),
                    name="scale")


def test_non_isometric_map_with_inverse_keeps_the_target():
    example = disconnected.two_lines(mu=(0.5, 0.0))
    result = sample_from_one_component(example, [scaling_map()])
    component_fractions_within(result, example)
    within(result.inputs[..., 1] ** 2, 1.0, "E[u2^2]")
    assert set(result.symmetry_counts()) == {0}


def test_dropping_the_map_jacobian_is_detectably_wrong(monkeypatch):
    """The check above can fail: with J_s left out of the ratio the scaling map inflates u2 (E[u2^2] ~ 0.76)."""
    monkeypatch.setattr(symmetry_kernel, "tangent_log_jacobian", lambda g, s, u: jnp.zeros((), u.dtype))
    example = disconnected.two_lines(mu=(0.5, 0.0))
    # a move after every transition (probability 1) gives the wrong ratio the most chances to show
    result = sample_from_one_component(example, [scaling_map()], symmetry_probability=1.0)
    u2sq = result.inputs[..., 1] ** 2
    assert abs(float(u2sq.mean()) - 1.0) > 6 * mcse(u2sq)


def test_exact_linear_gaussian_check_passes_with_moves_on():
    """Within-component law: the exact conditional moments of the linear-Gaussian model with a reflection
    ``u -> u - 2 v v^T u`` (``v`` in ``ker A``, so ``A s(u) = A u``) applied after every transition; the manifold is
    connected, and the detection (run because symmetries are declared) finds one component, without a warning."""
    null = np.linalg.svd(A)[2][-1]
    v = null / np.linalg.norm(null)  # made a float64 array inside the traced map (dgm.float64 scope)
    model = dataclasses.replace(linear_model(), symmetries=[lambda u: u - 2.0 * jnp.asarray(v) * jnp.dot(v, u)])
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        result = dgm.sample(model, X_LINEAR, n_chains=4, n_warmup=200, n_samples=600, seed=3, progress=False)
    assert no_component_warning(record)
    assert_linear_conditional_moments(result)
    assert result.components.n_components == 1 and result.components.n_pairs > 0
    assert result.symmetry_counts()[0]["accepted"] > 0


# ---------------------------------------------------------------------------------------------------------------------
# the move itself: constraint preserved, its own reverse, the Jacobian's reciprocity (property tests)
# ---------------------------------------------------------------------------------------------------------------------
HYPERBOLA = disconnected.hyperbola(k=2.0)
SCALE = disconnected.gaussian_scale()


@jax.jit
def _hyperbola_move_quantities(u):
    s = HYPERBOLA.symmetries[0]
    g = HYPERBOLA.model.generator
    v = s(u)
    return (g(v), s(v), symmetry_kernel.tangent_log_jacobian(g, s, u),
            symmetry_kernel.tangent_log_jacobian(g, s, v))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(t=st.floats(0.05, 20.0), sign=st.sampled_from([-1.0, 1.0]))
def test_property_hyperbola_move_preserves_constraint_and_is_its_own_reverse(t, sign):
    with dgm.float64():
        u = jnp.asarray([sign * t, 1.0 / (sign * t)])  # on u1 u2 = 1
        g_v, back, log_jac, log_jac_back = _hyperbola_move_quantities(u)
        assert abs(float(g_v[0]) - 1.0) <= 1e-8
        np.testing.assert_allclose(np.asarray(back), np.asarray(u), rtol=1e-14, atol=1e-14)
        # J_s(s(u)) J_s(u) = 1 (what makes r(s(u)) = 1 / r(u)), and J_s equals its closed form
        assert abs(float(log_jac + log_jac_back)) < 1e-10
        k, (u1, u2) = 2.0, (float(u[0]), float(u[1]))
        exact = 0.5 * np.log((k**2 * u2**2 + u1**2 / k**2) / (u1**2 + u2**2))
        assert abs(float(log_jac) - exact) < 1e-10


@jax.jit
def _scale_move(key, theta):
    """One MH move of the Gaussian-scale simulator's flip from the manifold point with parameters ``theta``."""
    y = jnp.asarray(SCALE.x_obs)
    e = (y - theta[0]) / theta[1]
    u = jnp.concatenate([theta, e])
    geometry = dgm.methods.make_geometry(SCALE.model, y)
    from dgm.kernels import chmc

    move = symmetry_kernel.build_move(
        SCALE.model.generator, y, as_symmetries(SCALE.symmetries), tol=1e-8, reverse_check_tol=1e-4,
        position=lambda s: s.position, relocate=lambda s, v: chmc.init(v, geometry),
        log_density=lambda s: -s.point.potential)
    state, info = move(key, chmc.init(u, geometry))
    twice, _ = move(key, chmc.init(SCALE.symmetries[0](u), geometry))
    return u, state.position, info, twice.position


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), theta1=st.floats(-2.0, 2.0), theta2=st.floats(0.2, 4.0),
       sign=st.sampled_from([-1.0, 1.0]))
def test_property_symmetry_move_on_the_simulator(seed, theta1, theta2, sign):
    with dgm.float64():
        u, moved, info, back = _scale_move(jax.random.PRNGKey(seed), jnp.asarray([theta1, sign * theta2]))
        assert int(info.failure) == 0 and bool(info.proposed)
        assert abs(float(info.log_jacobian)) < 1e-10  # an isometry: J_s = 1 (computed, not assumed)
        residual = jnp.max(jnp.abs(SCALE.model.generator(moved) - jnp.asarray(SCALE.x_obs)))
        assert float(residual) <= 1e-8
        if bool(info.accepted):  # moved to the other component
            assert float(moved[1]) * float(u[1]) < 0
        # the flip of the flipped point is the starting point (the move is its own reverse)
        np.testing.assert_allclose(np.asarray(SCALE.symmetries[0](SCALE.symmetries[0](u))), np.asarray(u),
                                   rtol=0, atol=0)
        assert bool(jnp.all(jnp.isfinite(back)))


# ---------------------------------------------------------------------------------------------------------------------
# bad declarations
# ---------------------------------------------------------------------------------------------------------------------
def test_a_map_that_does_not_preserve_g_is_a_clear_error():
    example = disconnected.two_lines()
    wrong = dataclasses.replace(example.model, symmetries=[lambda u: u.at[1].multiply(-1.0) + jnp.array([0.1, 0.0])])
    with pytest.raises(ValueError, match="does not preserve the generator"):
        dgm.sample(wrong, example.x_obs, n_chains=2, n_warmup=0, n_samples=1, initial_positions=example.start(0, 2),
                   progress=False)


def test_declaration_errors():
    example = disconnected.two_lines()
    starts = example.start(0, 3)
    with dgm.float64():
        with pytest.raises(ValueError, match="not an involution"):  # a scaling map declared without its inverse
            check_symmetries(as_symmetries([lambda u: jnp.stack([-u[0], 2.0 * u[1]])]), example.model.generator,
                             starts)
        with pytest.raises(ValueError, match="inverse does not undo it"):
            check_symmetries(as_symmetries([Symmetry(lambda u: -u, inverse=lambda u: u)]), example.model.generator,
                             starts)
        with pytest.raises(ValueError, match="keep the shape"):
            check_symmetries(as_symmetries([lambda u: u[:1]]), example.model.generator, starts)
        check_symmetries(as_symmetries([Symmetry(lambda u: -u, order=2)]), example.model.generator, starts)
    with pytest.raises(ValueError, match="order"):
        Symmetry(lambda u: u, order=1)
    with pytest.raises(ValueError, match="not both"):
        Symmetry(lambda u: u, inverse=lambda u: u, order=3)
    with pytest.raises(TypeError):
        dgm.GenerativeModel(lambda u: u[:1], 2, symmetries=[3])
    with pytest.raises(ValueError, match="symmetry_probability"):
        dgm.methods.chmc_method(dataclasses.replace(example.model, symmetries=example.symmetries), example.x_obs,
                                symmetry_probability=1.5)


# ---------------------------------------------------------------------------------------------------------------------
# detection
# ---------------------------------------------------------------------------------------------------------------------
def test_detection_warns_when_chains_sit_on_different_components(tmp_path):
    example = disconnected.two_lines()
    starts = np.concatenate([example.start(0, 2, 0), example.start(1, 2, 1)])
    with pytest.warns(RuntimeWarning, match="no chain moved between them.*symmetries"):
        result = dgm.sample(example.model, example.x_obs, n_chains=4, n_warmup=100, n_samples=200, seed=0,
                            initial_positions=starts, progress=False)
    report = result.components
    assert report.n_components == 2 and report.chains_per_component == [2, 2] and report.stuck
    assert "2 components" in result.summary().attrs["components_text"]
    assert list(result.component_table()["chains"]) == [2, 2]
    result.save(tmp_path / "r.nc")
    assert dgm.load(tmp_path / "r.nc").components == report  # saved with the result


def test_detection_on_exact_draws():
    """No false alarm on connected manifolds (circle, sphere, a surface with a fold); the four lines are told apart.
    Draws are placed by hand (no sampling), each 'chain' covering a different arc of the same component."""
    rng = np.random.default_rng(0)
    with dgm.float64():
        circle = dgm.GenerativeModel(lambda u: jnp.atleast_1d(jnp.sum(u**2)), 2, name="circle")
        angles = rng.uniform(0, 2 * np.pi, (4, 40))
        draws = 2.0 * np.stack([np.cos(angles), np.sin(angles)], axis=-1)
        report = detect_components(circle, np.array([4.0]), draws)
        assert report.n_components == 1 and report.n_joined > 0

        sphere = dgm.GenerativeModel(lambda u: jnp.atleast_1d(jnp.sum(u**2)), 3, name="sphere")
        points = rng.standard_normal((4, 40, 3))
        report = detect_components(sphere, np.array([1.0]), points / np.linalg.norm(points, axis=-1, keepdims=True))
        assert report.n_components == 1

        example = disconnected.four_lines()
        draws = np.stack([example.start(k, 30, k) for k in range(4)])
        report = detect_components(example.model, example.x_obs, draws)
        assert report.n_components == 4 and report.chains_per_component == [1, 1, 1, 1] and report.stuck
        assert report.n_joined == 0


def test_split_rhat_screen():
    rng = np.random.default_rng(1)
    agree = rng.standard_normal((4, 200, 3))
    assert split_rhat(agree) < 1.05
    apart = agree.copy()
    apart[:2, :, 0] += 3.0  # two chains elsewhere
    assert split_rhat(apart) > 1.5
    lines = np.ones((4, 50, 1))
    assert split_rhat(lines) == 1.0  # constant and equal across chains: agreeing
    lines[2:] = -1.0
    assert split_rhat(lines) == np.inf  # constant within chains, different across: the two-lines case
    with pytest.raises(ValueError, match="detect_components"):
        components_after_sampling(disconnected.two_lines().model, np.ones(1), agree[..., :2], {}, mode="sometimes")
