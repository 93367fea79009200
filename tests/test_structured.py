"""The linear-time structured geometry (dgm.geometry.structured) equals the dense reference on Markov and independent
generators; dgm.structure declarations; Lotka–Volterra chains agree between geometries."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import dgm
from dgm.geometry.base import project_momentum
from dgm.geometry.dense import DenseGeometry
from dgm.geometry.structured import StructuredGeometry
from dgm.methods import make_geometry
from dgm.models import lotka_volterra as lv
from dgm.structure import MarkovStructure, independent_model, markov_model

RTOL = 1e-9


def _random_model(seed, L, D, T, independent, constant_x0=False):
    """A random nonlinear Markov (or independent) generator with ``G_t = df/dv_t`` safely invertible."""
    rng = np.random.RandomState(seed)
    P = L + 1
    Wp = rng.normal(size=(P, L))
    W = 0.6 * rng.normal(size=(D, D)) / np.sqrt(D)
    Wz = rng.normal(size=(D, P)) / np.sqrt(P)
    Gm = rng.normal(size=(D, D)) / np.sqrt(D) + 2.5 * np.eye(D)
    X0 = rng.normal(size=(D, P))

    def parameter_transform(u1):
        return jnp.sin(jnp.asarray(Wp) @ u1) + 0.3 * jnp.concatenate([u1, u1[:1] ** 2])

    def step(x_prev, z, v):
        mix = jnp.asarray(Gm) + 0.2 * jnp.diag(jnp.tanh(x_prev + z[0]))
        return jnp.tanh(jnp.asarray(W) @ x_prev + jnp.asarray(Wz) @ z) + 0.5 * x_prev * z[-1] + mix @ v + 0.05 * v**3

    if independent:
        return independent_model(lambda z, v: step(jnp.cos(jnp.arange(D) + z[0]), z, v), T, parameter_transform, L,
                                 noise_dim=D, name="random-independent")
    x0 = rng.normal(size=D) if constant_x0 else (lambda z: jnp.asarray(X0) @ z)
    return markov_model(step, x0, T, parameter_transform, L, name="random-markov")


def _rel(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300)


def _compare_geometries(model, seed):
    rng = np.random.RandomState(seed + 1)
    u = jnp.asarray(rng.normal(size=model.input_dim))
    x_obs = model.generator(u)
    v = jnp.asarray(rng.normal(size=model.input_dim))
    w = jnp.asarray(rng.normal(size=x_obs.shape[0]))
    structured = StructuredGeometry(model, x_obs)
    dense = DenseGeometry(model.generator, x_obs, model.log_input_density)

    @jax.jit
    def evaluate(u, v, w):
        out = {}
        for name, g in (("s", structured), ("d", dense)):
            point = g.point(u)
            f = point.factor
            start = u + 0.05 * v
            out[name] = dict(
                potential=point.potential,
                grad=point.potential_grad,
                jv=g.jacobian_vector(f, v),
                jtw=g.jacobian_transpose_vector(f, w),
                gram_solve=g.gram_solve(f, w),
                half_log_det=g.half_log_det_gram(f),
                half_log_det_factorise=g.half_log_det_gram(g.factorise(u)),
                momentum=project_momentum(g, f, v),
                qn_one=g.project_position(f, start, 1e-300, 1).position,
                qn=g.project_position(f, start, 1e-11, 100),
            )
        out["fused_momentum"] = structured.project_momentum(structured.factorise(u), v)
        return out

    return evaluate(u, v, w)


@settings(max_examples=3, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    L=st.integers(1, 3),
    D=st.integers(1, 3),
    T=st.integers(1, 5),
    independent=st.booleans(),
    constant_x0=st.booleans(),
)
@example(seed=0, L=2, D=3, T=4, independent=False, constant_x0=False)
@example(seed=1, L=3, D=2, T=5, independent=True, constant_x0=False)
@example(seed=2, L=1, D=2, T=3, independent=False, constant_x0=True)
def test_structured_equals_dense(seed, L, D, T, independent, constant_x0):
    with jax.enable_x64(True):
        model = _random_model(seed, L, D, T, independent, constant_x0)
        out = _compare_geometries(model, seed)
        s, d = out["s"], out["d"]
        for key in ("potential", "grad", "jv", "jtw", "gram_solve", "half_log_det", "half_log_det_factorise",
                    "momentum", "qn_one"):
            assert _rel(s[key], d[key]) < RTOL, (key, _rel(s[key], d[key]))
        assert _rel(out["fused_momentum"], d["momentum"]) < RTOL
        assert bool(s["qn"].converged) and bool(d["qn"].converged)
        assert _rel(s["qn"].position, d["qn"].position) < RTOL


def test_structure_fields():
    with jax.enable_x64(True):
        model = _random_model(3, 2, 2, 3, independent=False, constant_x0=True)
        assert isinstance(model.structure, MarkovStructure) and not model.structure.independent
        assert model.parameter_inputs == 2 and model.input_dim == 2 + 3 * 2
        assert model.output_shape() == (6,)
        indep = _random_model(3, 2, 3, 4, independent=True)
        assert indep.structure.independent and indep.input_dim == 2 + 4 * 3 and indep.output_shape() == (12,)
        u = jnp.asarray(np.random.RandomState(0).normal(size=indep.input_dim))
        np.testing.assert_allclose(indep.latents(u), indep.structure.parameter_transform(u[:2]))


def test_default_initialiser_solves_noise_per_step():
    with jax.enable_x64(True):
        model = _random_model(5, 2, 2, 4, independent=False)
        x_obs = model.generator(jnp.asarray(np.random.RandomState(0).normal(size=model.input_dim)))
        u = model.init(jax.random.PRNGKey(1), x_obs)
        assert np.max(np.abs(model.generator(u) - x_obs)) < 1e-10


def test_noise_dimension_above_state_dimension_is_a_clear_error():
    with jax.enable_x64(True):
        def step(x_prev, z, v):  # 3 noise inputs for a 2-D state
            return 0.5 * x_prev + z[:2] + v[:2] + 0.1 * v[2]

        model = markov_model(step, jnp.zeros(2), 3, lambda u1: jnp.concatenate([u1, u1]), 1, noise_dim=3)
        assert model.input_dim == 1 + 3 * 3
        x = model.generator(jnp.ones(model.input_dim))
        with pytest.raises(ValueError, match="geometry='dense'"):
            StructuredGeometry(model, x)
        with pytest.raises(ValueError, match="geometry='dense'"):
            make_geometry(model, x, geometry="structured")  # asked for explicitly: refused
        with pytest.warns(UserWarning, match="dense geometry"):
            assert isinstance(make_geometry(model, x), DenseGeometry)  # auto: documented fallback, with a warning
        assert isinstance(make_geometry(model, x, geometry="dense"), DenseGeometry)


def test_declaration_errors():
    with jax.enable_x64(True):
        model = _random_model(0, 1, 2, 2, independent=False)
        with pytest.raises(ValueError, match="quasi-newton"):  # full Newton is supported (tests/test_additive_geometry)
            StructuredGeometry(model, jnp.zeros(4), projection="gauss-seidel")
        with pytest.raises(ValueError, match="shape"):
            markov_model(lambda x, z, v: jnp.concatenate([x, v]), jnp.zeros(2), 3, lambda u: u, 1)
        with pytest.raises(ValueError, match="1-D"):
            markov_model(lambda x, z, v: x + v, jnp.zeros((2, 2)), 3, lambda u: u, 1)
        with pytest.raises(ValueError, match="structure"):
            StructuredGeometry(dgm.GenerativeModel(lambda u: u[:1], 2), jnp.zeros(1))


def euler_maruyama_lotka_volterra(u, n_steps, *, semi_implicit=True, dt=1.0, x0=(100.0, 100.0)):
    """Paper eqs. 14-15 discretised by Euler-Maruyama, written here from the equations (not dgm.structure, not
    dgm.models): z = exp(-2 + u1) (log-normal priors), unit white noise scaled by sqrt(dt), prey first; the semi-implicit
    rule (the original code's) feeds the updated prey to the predator's update."""
    z1, z2, z3, z4 = jnp.exp(-2.0 + u[:4])
    noise = u[4:].reshape(n_steps, 2)

    def one_step(populations, n):
        prey, predator = populations
        new_prey = prey + (z1 * prey - z2 * prey * predator) * dt + n[0] * jnp.sqrt(dt)
        seen_prey = new_prey if semi_implicit else prey
        new_predator = predator + (-z3 * predator + z4 * seen_prey * predator) * dt + n[1] * jnp.sqrt(dt)
        return (new_prey, new_predator), jnp.stack([new_prey, new_predator])

    _, xs = jax.lax.scan(one_step, (jnp.asarray(x0[0], u.dtype), jnp.asarray(x0[1], u.dtype)), noise)
    return xs.reshape(-1)


def _independent_dense_model(n_steps, step="semi-implicit"):
    reference = lv.lotka_volterra(n_steps=n_steps, step=step, structured=False)
    generator = lambda u: euler_maruyama_lotka_volterra(u, n_steps, semi_implicit=step == "semi-implicit")  # noqa
    return dgm.GenerativeModel(generator, reference.input_dim, latents=reference.latents, init=reference.init,
                               parameter_inputs=4, name="lotka-volterra-by-hand")


@pytest.mark.parametrize("step", ["semi-implicit", "explicit"])
def test_lotka_volterra_structure_matches_an_independent_dense_generator(step):
    """The declared Markov structure of the LV model (its step function through dgm.structure's scan) and its geometry
    against an Euler-Maruyama generator written from eqs. 14-15 with the dense geometry: same x, same potential and
    gradient, same projections, at random points on the data manifold."""
    with jax.enable_x64(True):
        n_steps = 20
        model = lv.lotka_volterra(n_steps=n_steps, step=step)
        by_hand = _independent_dense_model(n_steps, step)
        x_obs = jnp.asarray(lv.default_observations(step, n_steps=n_steps))
        structured = StructuredGeometry(model, x_obs)
        dense = DenseGeometry(by_hand.generator, x_obs)

        @jax.jit
        def evaluate(u, v, w):
            out = {}
            for name, g in (("structured", structured), ("dense", dense)):
                point = g.point(u)
                f = point.factor
                projected = g.project_position(f, u + 0.02 * project_momentum(dense, dense.factorise(u), v), 1e-10, 50)
                out[name] = dict(potential=point.potential, grad=point.potential_grad, gram_solve=g.gram_solve(f, w),
                                 momentum=project_momentum(g, f, v), projected=projected)
            return out

        rng = np.random.RandomState(0)
        for k in range(4):
            u = model.init(jax.random.PRNGKey(k), x_obs)
            for off_manifold in (u, u + 0.01 * jnp.asarray(rng.normal(size=u.shape))):
                reference = by_hand.generator(off_manifold)
                np.testing.assert_allclose(model.structure.generator(off_manifold), reference, rtol=1e-13)
                np.testing.assert_allclose(model.generator(off_manifold), reference, rtol=1e-13)
            out = evaluate(u, jnp.asarray(rng.normal(size=u.shape)), jnp.asarray(rng.normal(size=x_obs.shape)))
            s, d = out["structured"], out["dense"]
            for key in ("potential", "grad", "gram_solve", "momentum"):
                assert _rel(s[key], d[key]) < RTOL, (key, _rel(s[key], d[key]))
            assert bool(s["projected"].converged) and bool(d["projected"].converged)
            np.testing.assert_allclose(s["projected"].position, d["projected"].position, rtol=0, atol=1e-9)


def test_lotka_volterra_chains_agree_structured_vs_independent_dense():
    model = lv.lotka_volterra(n_steps=20)
    x_obs = lv.default_observations(n_steps=20)
    kw = dict(n_chains=2, n_warmup=0, n_samples=3, seed=3, step_size=0.05, n_steps=(3, 4), progress=False)
    structured = dgm.sample(model, x_obs, **kw)
    dense = dgm.sample(_independent_dense_model(20), x_obs, geometry="dense", **kw)
    assert isinstance(make_geometry(model, x_obs), StructuredGeometry)
    np.testing.assert_array_equal(structured.stats["is_accepted"], dense.stats["is_accepted"])
    assert np.mean(structured.stats["is_accepted"]) > 0.5
    np.testing.assert_allclose(structured.inputs, dense.inputs, rtol=0, atol=1e-9)
    np.testing.assert_allclose(structured.latents, dense.latents, rtol=1e-9)
    assert structured.max_residual < 1e-8 * max(1.0, np.max(np.abs(x_obs)))  # tol relative to the observation scale
