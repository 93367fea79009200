"""A diagonal mass matrix on the manifold (``metric="diagonal"``): the M-weighted operations, the unchanged target
under a non-identity metric (static and dynamic kernels), the Gram factor in the potential, windowed adaptation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dgm
from dgm.geometry.base import project_momentum
from dgm.geometry.dense import DenseGeometry
from dgm.kernels.metric import scaled_model_parts
from helpers import assert_mean_within
from test_chmc_exact import X_CURVE, curve_model, curve_moment
from test_chmc_properties import draw, generator

INVERSE_MASS = np.array([4.0, 0.25])  # a metric far from the identity for the cubic curve


def test_scaled_coordinates_give_the_m_weighted_operations(x64):
    """In ``y = M^{1/2} u`` the identity-metric operations are the M-weighted ones in ``u``."""
    u = draw(0)
    inverse_mass = jnp.array([0.3, 2.0, 5.0, 0.7])
    scale = jnp.sqrt(inverse_mass)
    gen_y, dens_y = scaled_model_parts(generator, lambda v: -0.5 * jnp.sum(v**2), scale)
    geometry = DenseGeometry(gen_y, generator(u), dens_y)
    point = geometry.point(u / scale)
    jac = jax.jacfwd(generator)(u)
    gram = jac @ jnp.diag(inverse_mass) @ jac.T
    # Gram factor and the potential's log-determinant: J M^-1 J^T
    np.testing.assert_allclose(point.factor.gram_cholesky @ point.factor.gram_cholesky.T, gram, rtol=1e-12)
    np.testing.assert_allclose(point.potential, 0.5 * jnp.sum(u**2) + 0.5 * jnp.linalg.slogdet(gram)[1], rtol=1e-12)
    # momentum: velocity dy/dt = M^{-1/2} p_u, so p_y = scale * p_u; projection p - J^T (J M^-1 J^T)^-1 J M^-1 p
    p = draw(1, scale=2.0)
    projected_y = project_momentum(geometry, point.factor, scale * p)
    expected = p - jac.T @ jnp.linalg.solve(gram, jac @ (inverse_mass * p))
    np.testing.assert_allclose(projected_y / scale, expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(jac @ (inverse_mass * expected), 0.0, atol=1e-12)  # tangent velocity
    # position projection moves along range(M^-1 J^T)
    perturbed = u / scale + 0.05 * draw(2)
    result = geometry.project_position(point.factor, perturbed, 1e-11, 100)
    assert bool(result.converged)
    move_u = scale * (result.position - perturbed)
    coefficients, *_ = jnp.linalg.lstsq((inverse_mass[:, None] * jac.T), move_u)
    np.testing.assert_allclose(inverse_mass * (jac.T @ coefficients), move_u, atol=1e-10)


@pytest.mark.parametrize("method", ["chmc", "chmc-dynamic"])
def test_curve_quadrature_under_a_non_identity_metric(method):
    result = dgm.sample(curve_model(), np.array([X_CURVE]), method=method, metric="diagonal",
                        inverse_mass=INVERSE_MASS, adapt_metric=False, n_chains=4, n_warmup=300, n_samples=1500,
                        seed=5, progress=False, **({"n_steps": (2, 6)} if method == "chmc" else {}))
    t = result.inputs[..., 1]
    assert result.max_residual < 1e-8
    # lp is the target's log density log rho(u) - 1/2 log|J J^T|, J = [1, 3 u2^2], whatever the metric
    u = result.inputs
    expected_lp = -0.5 * np.sum(u**2, -1) - 0.5 * np.log(1.0 + 9.0 * u[..., 1] ** 4)
    np.testing.assert_allclose(result.stats["lp"], expected_lp, rtol=1e-9, atol=1e-9)
    assert_mean_within(t, curve_moment(lambda s: s), label="E[u2]")
    assert_mean_within(t**2, curve_moment(lambda s: s**2), label="E[u2^2]")
    assert_mean_within(result.inputs[..., 0], curve_moment(lambda s: X_CURVE - s**3), label="E[u1]")


def test_keeping_the_euclidean_gram_determinant_is_detectably_wrong():
    """With metric dynamics the potential needs 1/2 log|J M^-1 J^T|. Sampling as if it were 1/2 log|J J^T| (here: the
    correct sampler with the density tilted by |J M^-1 J^T|^1/2 / |J J^T|^1/2, which is what that mistake samples)
    lands far from the quadrature: the check above can fail."""
    a, b = INVERSE_MASS
    model = curve_model()

    def wrong_density(u):
        t4 = u[1] ** 4
        return -0.5 * jnp.sum(u**2) + 0.5 * jnp.log(a + 9.0 * b * t4) - 0.5 * jnp.log(1.0 + 9.0 * t4)

    wrong = dgm.GenerativeModel(model.generator, 2, log_input_density=wrong_density)
    result = dgm.sample(wrong, np.array([X_CURVE]), method="chmc", metric="diagonal", inverse_mass=INVERSE_MASS,
                        adapt_metric=False, n_chains=4, n_warmup=300, n_samples=1500, seed=5, n_steps=(2, 6),
                        progress=False)
    t = result.inputs[..., 1]
    from conftest import mcse

    assert abs(np.mean(t**2) - curve_moment(lambda s: s**2)) > 8 * mcse(t**2)


SCALES = np.logspace(-1.5, 1.5, 6)  # input scales spanning 10^3
B = np.array([[1.0, 2.0, 0.5, -0.3, 0.4, 1.0]])  # one constraint: the conditional keeps scales spanning ~10^3
X_SCALED = np.array([1.0])


def scaled_linear_model():
    return dgm.GenerativeModel(lambda u: jnp.asarray(B) @ (u / jnp.asarray(SCALES)), len(SCALES),
                               log_input_density=lambda u: -0.5 * jnp.sum((u / jnp.asarray(SCALES)) ** 2),
                               name="badly-scaled-linear")


def scaled_linear_conditional():
    """``u = S w``, ``w ~ N(0, I)`` given ``B w = x``: mean ``S B^T (B B^T)^-1 x``, cov ``S (I - B^T (B B^T)^-1 B) S``."""
    gram = B @ B.T
    mean_w = B.T @ np.linalg.solve(gram, X_SCALED)
    cov_w = np.eye(B.shape[1]) - B.T @ np.linalg.solve(gram, B)
    return SCALES * mean_w, SCALES[:, None] * cov_w * SCALES[None, :]


def test_windowed_adaptation_learns_the_scales_and_keeps_the_target():
    model = scaled_linear_model()
    mean, cov = scaled_linear_conditional()
    common = dict(n_chains=4, n_warmup=400, n_samples=1000, seed=3, progress=False)
    adapted = dgm.sample(model, X_SCALED, metric="diagonal", **common)
    plain = dgm.sample(model, X_SCALED, n_chains=2, n_warmup=400, n_samples=10, seed=3, progress=False)
    # scales spanning 10^3: the identity metric's step is set by the narrowest direction; the adapted metric makes
    # the problem unit-scale, so its step is an order of magnitude larger
    assert np.all(adapted.step_size > 5 * np.max(plain.step_size)), (adapted.step_size, plain.step_size)
    for i in range(len(SCALES)):
        assert_mean_within(adapted.inputs[..., i], mean[i], label=f"E[u{i}]")
        assert_mean_within(adapted.inputs[..., i] ** 2, cov[i, i] + mean[i] ** 2, label=f"E[u{i}^2]")


def test_warmup_schedule_has_slow_windows():
    from dgm.adaptation import warmup_schedule

    schedule = warmup_schedule(400)
    assert schedule.shape == (400, 2)
    assert schedule[:75, 0].sum() == 0 and schedule[-50:, 0].sum() == 0  # Stan's fast buffers
    assert schedule[:, 1].sum() >= 3 and np.all(schedule[schedule[:, 1], 0])  # window ends lie in slow windows
    assert warmup_schedule(0).shape == (0, 2)


def test_metric_options_are_checked():
    from dgm.models import lotka_volterra as lv

    with pytest.raises(ValueError, match="structured"):
        dgm.sample(lv.lotka_volterra(), lv.default_observations(), metric="diagonal", progress=False)
    with pytest.raises(ValueError, match="metric must be one of"):
        dgm.sample(curve_model(), np.array([X_CURVE]), metric="dense", progress=False)
    with pytest.raises(ValueError, match="shape"):
        dgm.sample(curve_model(), np.array([X_CURVE]), metric="diagonal", inverse_mass=[1.0], progress=False)
    with pytest.raises(ValueError, match="needs metric='diagonal'"):
        dgm.sample(curve_model(), np.array([X_CURVE]), inverse_mass=[1.0, 1.0], progress=False)
