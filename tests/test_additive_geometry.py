"""The additive-noise geometry (dgm.geometry.additive) equals the generic paths (dense, structured) to 1e-10; its
log-det gradient equals autodiff of the dense log-determinant to 1e-12; Newton refreshes (dense, structured,
additive) apply ``J_0^T (J(u_r) J_0^T)^{-1}`` exactly and rescue stalled projections on ``u_s + range(J_0^T)``;
the geometry and Jacobian mode are chosen by cost and can be overridden from ``dgm.sample``."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dgm
from dgm.geometry.additive import AdditiveNoiseGeometry
from dgm.geometry.base import constraint_tolerance, project_momentum
from dgm.geometry.dense import DenseGeometry
from dgm.geometry.jacobian_choice import resolve_jacobian_mode
from dgm.geometry.structured import StructuredGeometry
from dgm.methods import geometry_kind, make_geometry
from dgm.model import GenerativeModel
from dgm.structure import additive_noise_structure, markov_model

TOL = 1e-10


def _additive_model(L, N, per_output_scale, seed=0):
    rng = np.random.RandomState(seed)
    W1, W2 = jnp.asarray(rng.normal(size=(6, L))), jnp.asarray(rng.normal(size=(N, 6)) / 2)
    scale = jnp.asarray(0.1 + rng.rand(N)) if per_output_scale else 0.3

    def mean(u1):
        return W2 @ jnp.tanh(W1 @ u1) + 0.1 * jnp.sum(u1**2) + jnp.sin(u1[0])

    def generator(u):
        return mean(u[:L]) + jnp.asarray(scale) * u[L:]

    structure = additive_noise_structure(mean, L, np.asarray(scale))
    return GenerativeModel(generator, L + N, parameter_inputs=L, structure=structure, name="additive-test"), rng


def _rel(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1.0)


CASES = [(3, 7, False, "forward", "auto"), (3, 7, True, "reverse", "capacitance"), (6, 4, True, "auto", "auto"),
         (6, 4, False, "forward", "capacitance"), (5, 5, True, "reverse", "gram")]


@pytest.mark.parametrize("L, N, per_output, mode, factorisation", CASES)
def test_additive_geometry_equals_dense_and_structured(L, N, per_output, mode, factorisation):
    with dgm.float64():
        model, rng = _additive_model(L, N, per_output)
        u = jnp.asarray(rng.normal(size=L + N))
        x = model.generator(u)
        v, w = jnp.asarray(rng.normal(size=L + N)), jnp.asarray(rng.normal(size=N))
        geometries = dict(additive=AdditiveNoiseGeometry(model, x, jacobian_mode=mode, factorisation=factorisation),
                          structured=StructuredGeometry(model, x), dense=DenseGeometry(model.generator, x))

        @jax.jit
        def evaluate(u, v, w):
            out = {}
            for name, g in geometries.items():
                point = g.point(u)
                f = point.factor
                fresh = g.newton_operator(f, u + 0.05 * v)
                out[name] = dict(potential=point.potential, grad=point.potential_grad, jv=g.jacobian_vector(f, v),
                                 jtw=g.jacobian_transpose_vector(f, w), gram_solve=g.gram_solve(f, w),
                                 half_log_det=g.half_log_det_gram(g.factorise(u)),
                                 momentum=project_momentum(g, f, v),
                                 projected=g.project_position(f, u + 0.05 * v, 1e-12, 100, 0).position,
                                 newton=g.newton_correction(f, fresh, w))
            return out

        out = evaluate(u, v, w)
        for name in ("additive", "structured"):
            for key, value in out[name].items():
                assert _rel(value, out["dense"][key]) < TOL, (name, key, _rel(value, out["dense"][key]))


@pytest.mark.parametrize("factorisation", ["capacitance", "gram"])
def test_log_det_gradient_is_one_vjp_matching_autodiff(factorisation):
    """``d/du 1/2 log|J J^T|`` from the capacitance cotangent equals autodiff of ``slogdet`` of the dense Gram matrix
    (to 1e-12); dropping the ``S^{-2}`` of the cotangent (a plausible slip) is far off."""
    with dgm.float64():
        model, rng = _additive_model(4, 9, True, seed=3)
        u = jnp.asarray(rng.normal(size=model.input_dim))
        g = AdditiveNoiseGeometry(model, model.generator(u), factorisation=factorisation)

        def half_log_det(u):
            jac = jax.jacfwd(model.generator)(u)
            return 0.5 * jnp.linalg.slogdet(jac @ jac.T)[1]

        expected = jax.grad(half_log_det)(u)
        point = g.point(u)
        got = point.potential_grad - u  # phi = 1/2 log|J J^T| - log N(u; 0, I): remove the prior's gradient u
        assert _rel(got, expected) < 1e-12
        assert _rel(point.potential - 0.5 * jnp.sum(u * u), half_log_det(u)) < 1e-12
        # the science check: the cotangent without S^{-2} gives a visibly different gradient
        jac, pullback = jax.vjp(g.mean_jacobian, u[:4])
        wrong = pullback(jax.scipy.linalg.cho_solve((jnp.linalg.cholesky(jnp.eye(4) + (jac / g._scales(u.dtype)[
            :, None]).T @ (jac / g._scales(u.dtype)[:, None])), True), jac.T).T)[0]
        assert _rel(wrong, expected[:4]) > 1e-2


def _random_markov(seed=0, L=2, D=2, T=5):
    rng = np.random.RandomState(seed)
    W = 0.5 * rng.normal(size=(D, D))
    Gm = rng.normal(size=(D, D)) / 2 + 2.0 * np.eye(D)

    def step(x_prev, z, v):
        return jnp.tanh(jnp.asarray(W) @ x_prev + z[0]) + z[1] * x_prev + jnp.asarray(Gm) @ v + 0.1 * v**3

    return markov_model(step, np.ones(D), T, lambda u1: jnp.sin(u1) + u1, L, name="markov-test"), rng


def test_structured_newton_refresh_equals_the_dense_one():
    """``J_0^T (J(u_r) J_0^T)^{-1} c`` through the unsymmetric L x L capacitance equals the dense LU solve; the
    structured geometry's full Newton projection equals the dense one."""
    with dgm.float64():
        model, rng = _random_markov()
        u = jnp.asarray(rng.normal(size=model.input_dim))
        x = model.generator(u)
        v, c = jnp.asarray(rng.normal(size=model.input_dim)), jnp.asarray(rng.normal(size=x.shape[0]))
        s, d = StructuredGeometry(model, x), DenseGeometry(model.generator, x)
        fs, fd = s.factorise(u), d.factorise(u)
        moved = u + 0.1 * v
        assert _rel(s.newton_correction(fs, s.newton_operator(fs, moved), c),
                    d.newton_correction(fd, d.newton_operator(fd, moved), c)) < TOL
        sn, dn = StructuredGeometry(model, x, "newton"), DenseGeometry(model.generator, x, projection="newton")
        a, b = sn.project_position(fs, u + 0.05 * v, 1e-12, 50), dn.project_position(fd, u + 0.05 * v, 1e-12, 50)
        assert bool(a.converged) and bool(b.converged) and _rel(a.position, b.position) < TOL


@pytest.mark.parametrize("geometry", ["additive", "structured", "dense"])
def test_newton_refresh_rescues_a_stalled_projection_on_the_right_affine_space(geometry):
    """With a budget of 2 quasi-Newton iterations the paper's iteration fails from a far start; with refreshes the
    projection converges, counts its refreshes, and the move ``u - u_s`` lies in ``range(J_0^T)`` (RATTLE)."""
    with dgm.float64():
        model, rng = _additive_model(3, 5, True, seed=1)
        u = jnp.asarray(rng.normal(size=model.input_dim))
        x = model.generator(u)
        g = make_geometry(model, x, geometry=geometry)
        factor = g.factorise(u)
        start = u + 0.3 * project_momentum(g, factor, jnp.asarray(rng.normal(size=model.input_dim)))
        plain = g.project_position(factor, start, 1e-11, 2, 0)
        rescued = g.project_position(factor, start, 1e-11, 2, 3)
        assert not bool(plain.converged) and int(plain.refreshes) == 0
        assert bool(rescued.converged) and int(rescued.refreshes) >= 1
        assert float(jnp.max(jnp.abs(model.generator(rescued.position) - x))) < 1e-11
        move = rescued.position - start  # in range(J_0^T): its tangential component vanishes
        assert float(jnp.max(jnp.abs(project_momentum(g, factor, move)))) < 1e-9 * float(jnp.max(jnp.abs(move)))


def test_geometry_and_jacobian_mode_are_chosen_by_cost_and_overridable():
    with dgm.float64():
        wide, _ = _additive_model(6, 4, False)
        assert geometry_kind(wide) == "additive"
        assert AdditiveNoiseGeometry(wide, jnp.zeros(4)).factorisation == "gram"  # L >= N: the N x N Gram matrix
        narrow, _ = _additive_model(3, 7, False)
        assert AdditiveNoiseGeometry(narrow, jnp.zeros(7)).factorisation == "capacitance"
        assert geometry_kind(narrow, "structured") == "structured" and geometry_kind(narrow, "dense") == "dense"
        markov, _ = _random_markov(L=2, D=2, T=5)
        assert geometry_kind(markov) == "structured"  # L = 2 < N = 10
        many_parameters, _ = _random_markov(L=12, D=2, T=5)
        assert geometry_kind(many_parameters) == "dense"  # L = 12 >= N = 10
        plain = GenerativeModel(lambda u: u[:2] + u[2:4], 4)
        assert geometry_kind(plain) == "dense"
        with pytest.raises(ValueError, match="additive_noise_structure"):
            geometry_kind(markov, "additive")
        assert resolve_jacobian_mode("auto", n_inputs=50, n_outputs=196) == "forward"
        assert resolve_jacobian_mode("auto", n_inputs=155, n_outputs=72) == "reverse"
        assert resolve_jacobian_mode("reverse", n_inputs=50, n_outputs=196) == "reverse"
        assert make_geometry(narrow, jnp.zeros(7), jacobian_mode="reverse").jacobian_mode == "reverse"
        with pytest.raises(ValueError, match="jacobian_mode"):
            make_geometry(narrow, jnp.zeros(7), jacobian_mode="sideways")


def test_tolerance_is_relative_to_the_observation_scale():
    class Holder:
        x_obs = jnp.asarray([3.0, -250.0])

    assert float(constraint_tolerance(Holder(), 1e-8)) == pytest.approx(2.5e-6)
    Holder.x_obs = jnp.asarray([0.2, -0.5])
    assert float(constraint_tolerance(Holder(), 1e-8)) == pytest.approx(1e-8)


def test_sample_reaches_geometry_jacobian_mode_and_counts_refreshes():
    """The same seed gives the same draws on the additive and generic structured geometries (same target, same
    arithmetic up to rounding), and the statistics carry the refresh counts."""
    model, rng = _additive_model(3, 5, False, seed=2)
    with dgm.float64():
        u = jnp.asarray(rng.normal(size=model.input_dim))
        x = np.asarray(model.generator(u))
    runs = {g: dgm.sample(model, x, method="chmc", geometry=g, jacobian_mode="reverse", n_chains=1, n_warmup=0,
                          n_samples=20, step_size=0.2, initial_positions=np.asarray(u)[None], progress=False,
                          detect_components=False)
            for g in ("additive", "structured")}
    assert "newton_refreshes" in runs["additive"].stats
    assert np.max(np.abs(runs["additive"].inputs - runs["structured"].inputs)) < 1e-6
