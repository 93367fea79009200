"""Initialisation of structured models in linear time (no N x N matrix anywhere), the structured rank check, and the
check that a declared structure computes the same x as the model's generator."""

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dgm
from dgm.initialise import _gauss_newton_solver, _rank_statistics, check_full_rank, find_points_on_manifold
from dgm.models import lotka_volterra as lv
from dgm.structure import markov_model, markov_structure


def stable_markov_model(n_steps, with_init=False):
    """A nonlinear, stable 2-state Markov generator (L = 2) whose observations Gauss-Newton reaches from N(0, I)."""
    W = np.array([[0.5, -0.3], [0.2, 0.4]])  # float64 (a float32 constant would make dgm warn)

    def step(x_prev, z, v):
        return 0.9 * x_prev + 0.1 * z[0] * jnp.tanh(W @ x_prev) + jnp.exp(0.2 * z[1]) * (v + 0.1 * jnp.sin(v))

    model = markov_model(step, np.zeros(2), n_steps, lambda u1: u1, 2, name="stable-markov")
    return model if with_init else dataclasses.replace(model, init=None)


def _observations(model, seed=0):
    with dgm.float64():
        u = jax.random.normal(jax.random.PRNGKey(seed), (model.input_dim,), jnp.float64)
        return np.asarray(model.generator(u))


def _largest_intermediate(jaxpr) -> int:
    """The largest number of entries of any value in a (closed) jaxpr, sub-jaxprs (scan, while, cond) included."""
    largest = 0
    for eqn in jaxpr.eqns:
        for var in list(eqn.outvars) + [v for v in eqn.invars if hasattr(v, "aval")]:
            largest = max(largest, int(np.prod(getattr(var.aval, "shape", ()))))
        for param in eqn.params.values():
            for sub in param if isinstance(param, (list, tuple)) else [param]:
                inner = getattr(sub, "jaxpr", None)
                if inner is not None:
                    largest = max(largest, _largest_intermediate(getattr(inner, "jaxpr", inner)))
    return largest


@pytest.mark.parametrize("structured", [True, False])
def test_structured_initialisation_forms_no_n_by_n_matrix(structured):
    """The Gauss-Newton solver and the rank check of a structured model never hold anything of N^2 entries (the dense
    ones do: the check can fail)."""
    T = 500
    model = stable_markov_model(T)
    N, M = 2 * T, model.input_dim
    with dgm.float64():
        u = jnp.zeros((2, M))
        x = jnp.zeros(N)
        solver = _gauss_newton_solver(model, structured, 1e-8, 20)
        sizes = [_largest_intermediate(jax.make_jaxpr(solver)(u, x).jaxpr),
                 _largest_intermediate(jax.make_jaxpr(_rank_statistics(model, structured))(u).jaxpr)]
    if structured:
        assert max(sizes) < N * N // 20, sizes  # O(T) pieces only: (T, D, D) blocks, (points, 12, M) batches
    else:
        assert min(sizes) >= N * N, sizes


def test_structured_gauss_newton_finds_the_same_points_as_dense():
    model = stable_markov_model(30)
    x_obs = _observations(model)
    with dgm.float64():
        structured = find_points_on_manifold(model, x_obs, jax.random.PRNGKey(1), 3, structured=True)
        dense = find_points_on_manifold(model, x_obs, jax.random.PRNGKey(1), 3, structured=False)
        for positions in (structured, dense):
            residual = np.max(np.abs(np.asarray(jax.vmap(model.generator)(jnp.asarray(positions))) - x_obs))
            assert residual < 1e-8
    # minimum-norm Gauss-Newton from the same starts: the same points (up to the dense solver's 1e-14 ridge)
    np.testing.assert_allclose(structured, dense, rtol=0, atol=1e-6)


def test_structured_sample_without_init_runs():
    model = stable_markov_model(40)
    x_obs = _observations(model)
    result = dgm.sample(model, x_obs, n_chains=2, n_warmup=20, n_samples=20, seed=0, progress=False)
    assert result.max_residual < 1e-8 * max(1.0, np.abs(x_obs).max()) and result.acceptance_rate > 0.3


def test_rank_checks_catch_a_rank_deficient_jacobian():
    # x_t = 0.5 x_{t-1} + z x_{t-1} + x_{t-1} v_t with x_0 = 0: x = 0 whatever u, so J = 0
    model = markov_model(lambda x, z, v: 0.5 * x + z * x + x * v, np.zeros(1), 4, lambda u1: u1, 1, name="flat")
    with dgm.float64():
        positions = np.random.RandomState(0).normal(size=(2, model.input_dim))
        with pytest.raises(ValueError, match="G_t = df/dv_t of the declared structure is singular"):
            check_full_rank(model, positions)  # structured by default
        with pytest.raises(ValueError, match="generator's Jacobian is rank-deficient"):
            check_full_rank(model, positions, structured=False)
        check_full_rank(stable_markov_model(5), np.random.RandomState(0).normal(size=(2, 12)))  # full rank: fine


def test_structured_rank_check_refuses_a_singular_noise_jacobian_and_points_to_dense():
    # x_t = 0.5 x_{t-1} + z + x_{t-1} v_t with x_0 = 0: G_1 = x_0 = 0 but dx_1/dz = 1, so J has full rank: the
    # structured geometry (which inverts G_1) cannot run, the dense one can
    model = markov_model(lambda x, z, v: 0.5 * x + z + x * v, np.zeros(1), 4, lambda u1: u1, 1, name="singular-G")
    with dgm.float64():
        positions = np.random.RandomState(0).normal(size=(2, model.input_dim))
        with pytest.raises(ValueError, match="geometry='dense'"):
            check_full_rank(model, positions, structured=True)
        check_full_rank(model, positions, structured=False)


def _mismatched_lotka_volterra(index, factor=1.001):
    """LV whose generator differs from its declared structure in one output entry."""
    base = lv.lotka_volterra(n_steps=10)

    def generator(u):
        return base.generator(u).at[index].multiply(factor)

    return dataclasses.replace(base, generator=generator, name="mismatched")


def test_structure_that_differs_from_the_generator_is_refused():
    model = _mismatched_lotka_volterra(13)
    x_obs = lv.default_observations(n_steps=10)
    with pytest.raises(ValueError, match=r"declared structure does not compute the same x") as error:
        dgm.sample(model, x_obs, n_chains=2, n_warmup=5, n_samples=5, progress=False)
    message = str(error.value)
    assert "output 13 (step 7, state component 1)" in message
    u = np.asarray(model.init(jax.random.PRNGKey(0), jnp.asarray(x_obs)))
    assert "generator " in message and "structure " in message and "2 of 40 entries differ" in message
    # the dense geometry does not use the declaration, so it is the documented way out
    result = dgm.sample(model, x_obs, geometry="dense", n_chains=1, n_warmup=0, n_samples=2, step_size=0.01,
                        progress=False)
    assert result.inputs.shape == (1, 2, u.shape[0])
    # starting points given by the user are checked the same way
    with pytest.raises(ValueError, match=r"declared structure does not compute the same x"):
        dgm.sample(model, x_obs, initial_positions=result.inputs[:, -1], n_chains=1, n_warmup=0, n_samples=2,
                   step_size=0.01, progress=False)


def test_check_generator_names_the_largest_difference():
    structure = markov_structure(lambda x, z, v: 0.5 * x + z + v, np.zeros(2), 3, lambda u1: u1, 2)
    positions = np.random.RandomState(0).normal(size=(4, structure.input_dim))
    with dgm.float64():
        structure.check_generator(structure.generator, positions)  # itself: fine
        structure.check_generator(lambda u: structure.generator(u) * (1 + 1e-9), positions)  # rounding: fine

        def wrong(u):
            return structure.generator(u).at[4].add(u[0])

        with pytest.raises(ValueError) as error:
            structure.check_generator(wrong, positions, name="toy")
        point = int(np.argmax(np.abs(positions[:, 0])))  # the point with the largest difference
        expected = float(np.asarray(structure.generator(jnp.asarray(positions[point])))[4])
        message = str(error.value)
        assert message.startswith("toy:") and f"starting point {point}, output 4 (step 3, state component 0)" in message
        given, declared = (float(v) for v in re.search(r"generator (\S+), structure (\S+) ", message).groups())
        np.testing.assert_allclose([given, declared], [expected + positions[point, 0], expected], rtol=1e-12)
        assert "4 of 24 entries differ" in message
