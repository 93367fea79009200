"""sbibm tasks as generators, the wheel's files, the C2ST/MMD transcription, and ``dgm sbibm --quick``.

The generators are checked against what sbibm itself produced, without torch: each shipped observation was simulated
by sbibm at its ``true_parameters.csv``, so the noise that reproduces it (solved in closed form) must be i.i.d.
standard normal over the ten observations, and for ``gaussian_linear`` the reference posterior is known exactly.
"""

from __future__ import annotations

import importlib.util
import sys
import types

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

import dgm  # noqa: E402
from dgm.diagnostics.two_sample import c2st, median_pairwise_distance, mmd  # noqa: E402
from dgm.errors import DatasetNotFoundError  # noqa: E402
from dgm.models.sbibm import (  # noqa: E402
    NOT_DIFFERENTIABLE, TASKS, get_task, load_observation, load_reference_posterior, load_true_parameters,
)
from dgm.models.sbibm.tasks import (  # noqa: E402
    LV_INITIAL, LV_SAVE_TIMES, lotka_volterra_states, slcp_sign_flip, two_moons_reflection,
)

sbibm_installed = importlib.util.find_spec("sbibm") is not None
needs_sbibm = pytest.mark.skipif(not sbibm_installed, reason="pip install --no-deps sbibm==1.1.0")


def _recovered_noise(name):
    """The noise that reproduces each of the 10 observations at its true parameters, ``(10, n_noise)``, and the
    largest round-trip error ``|simulate(theta, noise) - x|``."""
    task = get_task(name)
    x = np.array([load_observation(name, k, task.n_data) for k in range(1, 11)])
    theta = np.array([load_true_parameters(name, k, task.n_parameters) for k in range(1, 11)])
    with dgm.float64():
        noise = jax.jit(jax.vmap(task.solve_noise))(jnp.asarray(theta), jnp.asarray(x))
        again = jax.jit(jax.vmap(task.simulate))(jnp.asarray(theta), noise)
        worst = float(jnp.max(jnp.abs(again - x) / (1 + jnp.abs(x))))
        return np.asarray(noise), worst


@needs_sbibm
@pytest.mark.parametrize("name", list(TASKS))
def test_observations_are_typical_draws_of_the_generator(name):
    """sbibm simulated each observation at its true parameters: the noise our generator needs to reproduce it must
    look i.i.d. N(0, 1) (mean within 4 s.e., variance within 4 s.e. of 1, no |z| beyond 4.5). A wrong transcription
    fails: e.g. reading gaussian_linear's "scale" 0.1 as a standard deviation makes the variance 10; a wrong LV save
    grid or noise scale gives |z| in the tens (checked by hand)."""
    noise, round_trip = _recovered_noise(name)
    z = noise.ravel()
    assert np.all(np.isfinite(z))
    assert round_trip < 1e-5  # float32 observations, float64 arithmetic
    n = z.size
    assert abs(z.mean()) < 4 / np.sqrt(n), z.mean()
    assert abs(z.var() - 1) < 4 * np.sqrt(2 / n), z.var()
    assert np.max(np.abs(z)) < 4.5


@needs_sbibm
def test_gaussian_linear_reference_posterior_is_the_exact_one():
    """theta ~ N(0, 0.1 I), x ~ N(theta, 0.1 I): posterior N(x / 2, 0.05 I); sbibm's reference draws agree (4 s.e.)."""
    for k in (1, 2):
        x = load_observation("gaussian_linear", k, 10)
        ref = load_reference_posterior("gaussian_linear", k, 10)
        assert ref.shape == (10_000, 10)
        assert np.all(np.abs(ref.mean(0) - x / 2) < 4 * np.sqrt(0.05 / 10_000))
        assert np.all(np.abs(ref.var(0, ddof=1) / 0.05 - 1) < 4 * np.sqrt(2 / 10_000))


def test_priors_by_inverse_cdf_and_noise_moments():
    """Prior and noise transforms have the moments of sbibm's distributions (10^5 draws, 5 s.e.)."""
    rng = np.random.default_rng(0)
    n = 100_000
    with dgm.float64():
        u = jnp.asarray(rng.standard_normal((n, 24)))
        uniform = np.asarray(jax.vmap(get_task("gaussian_linear_uniform").parameters)(u[:, :10]))
        assert abs(uniform.mean()) < 5 * np.sqrt(1 / 3 / uniform.size) and abs(uniform.var() - 1 / 3) < 0.005
        assert uniform.min() > -1 and uniform.max() < 1
        lv = np.log(np.asarray(jax.vmap(get_task("lotka_volterra").parameters)(u[:, :4])))
        assert np.allclose(lv.mean(0), [-0.125, -3.0, -0.125, -3.0], atol=5 * 0.5 / np.sqrt(n))
        assert np.allclose(lv.std(0), 0.5, atol=0.005)
        moons = get_task("two_moons")
        x = np.asarray(jax.vmap(lambda e: moons.simulate(jnp.zeros(2), e))(u[:, :2]))
        # theta = 0: x = (r cos a + 0.25, r sin a), a ~ U(-pi/2, pi/2), r ~ N(0.1, 0.01^2): E x0 = 0.25 + 0.2 / pi
        assert abs(x[:, 0].mean() - (0.25 + 0.2 / np.pi)) < 5 * x[:, 0].std() / np.sqrt(n)
        assert abs(x[:, 1].mean()) < 5 * x[:, 1].std() / np.sqrt(n)
        assert abs(np.mean(np.hypot(x[:, 0] - 0.25, x[:, 1])) - 0.1) < 5 * 0.01 / np.sqrt(n)
        slcp = get_task("slcp")
        theta = jnp.array([0.5, -1.0, 1.2, -0.8, 0.7])
        draws = np.asarray(jax.vmap(lambda e: slcp.simulate(theta, e))(u[:, :8])).reshape(-1, 2)
        s1, s2, rho = 1.2 ** 2, 0.8 ** 2, np.tanh(0.7)
        cov = np.array([[s1 ** 2, rho * s1 * s2], [rho * s1 * s2, s2 ** 2]]) + 1e-6 * np.eye(2)
        assert np.allclose(draws.mean(0), [0.5, -1.0], atol=5 * 1.44 / np.sqrt(draws.shape[0]))
        assert np.allclose(np.cov(draws.T), cov, rtol=0.03, atol=0.01)


def test_lotka_volterra_ode_matches_a_tight_adaptive_solve():
    """The constant-step Tsit5 solution against Dopri8 at rtol = atol = 1e-11: |log ratio| far below the 0.1
    observation noise (a wrong step or save grid fails this)."""
    import diffrax

    def field(t, y, p):
        return jnp.stack([p[0] * y[0] - p[1] * y[0] * y[1], -p[2] * y[1] + p[3] * y[0] * y[1]])

    with dgm.float64():
        theta = jnp.array([0.6859157, 0.10761319, 0.88789904, 0.116794825])  # observation 1's true parameters
        tight = diffrax.diffeqsolve(
            diffrax.ODETerm(field), diffrax.Dopri8(), 0.0, LV_SAVE_TIMES[-1], 0.01, jnp.asarray(LV_INITIAL),
            args=theta, saveat=diffrax.SaveAt(ts=jnp.asarray(LV_SAVE_TIMES)),
            stepsize_controller=diffrax.PIDController(rtol=1e-11, atol=1e-11), max_steps=100_000).ys.T
        ours = lotka_volterra_states(theta)
        assert float(jnp.max(jnp.abs(jnp.log(ours / tight)))) < 1e-4


@pytest.mark.parametrize("name,symmetries", [("two_moons", [two_moons_reflection]),
                                             ("slcp", [slcp_sign_flip(2), slcp_sign_flip(3)])])
def test_declared_symmetries_preserve_the_generator(name, symmetries):
    task = get_task(name)
    rng = np.random.default_rng(1)
    with dgm.float64():
        for _ in range(5):
            u = jnp.asarray(rng.standard_normal(task.input_dim))
            for s in symmetries:
                assert np.allclose(task.generator(s(u)), task.generator(u), atol=1e-12)
                assert np.allclose(s(s(u)), u)
                assert not np.allclose(task.latents(s(u)), task.latents(u))


@needs_sbibm
def test_exact_initialiser_lands_on_the_manifold():
    for name in ("two_moons", "slcp"):
        task = get_task(name)
        with dgm.float64():
            x = jnp.asarray(load_observation(name, 3, task.n_data))
            u = jax.vmap(task.exact_init, in_axes=(0, None))(jax.random.split(jax.random.PRNGKey(0), 3), x)
            assert float(jnp.max(jnp.abs(jax.vmap(task.generator)(u) - x))) < 1e-10


def test_loader_errors(monkeypatch):
    with pytest.raises(ValueError, match="has no differentiable generator"):
        get_task("sir")
    with pytest.raises(ValueError, match="unknown sbibm task"):
        get_task("two_moon")
    assert set(NOT_DIFFERENTIABLE) == {"bernoulli_glm", "sir", "gaussian_mixture", "slcp_distractors"}
    if sbibm_installed:
        with pytest.raises(ValueError, match="1..10"):
            load_observation("two_moons", 11, 2)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "sbibm" else real(name, *a))
    with pytest.raises(DatasetNotFoundError, match=r"pip install --no-deps sbibm==1\.1\.0"):
        load_observation("two_moons", 1, 2)


# -- metrics ----------------------------------------------------------------------------------------------------------
def test_c2st_half_for_one_distribution_one_for_separated():
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((1000, 2)), rng.standard_normal((1000, 2))
    assert abs(c2st(X, Y) - 0.5) < 0.05  # 2000 test labels over the folds: s.e. 0.011
    assert c2st(X, Y + np.array([6.0, 0.0])) > 0.98


def _fake_torch():
    """A NumPy stand-in for the few torch calls of sbibm's c2st.py, so its code runs as written without torch."""

    class Tensor(np.ndarray):
        def cpu(self):
            return self

        def numpy(self):
            return np.asarray(self)

    torch = types.ModuleType("torch")
    torch.Tensor = Tensor
    torch.mean = lambda x, dim: np.mean(x, axis=dim).view(Tensor)
    torch.std = lambda x, dim: np.std(x, axis=dim, ddof=1).view(Tensor)  # torch.std is the unbiased one
    torch.randn = lambda shape: np.random.standard_normal(shape).view(Tensor)
    torch.from_numpy = lambda a: np.asarray(a).view(Tensor)
    return torch


@needs_sbibm
def test_c2st_matches_sbibms_own_code(monkeypatch):
    """sbibm/metrics/c2st.py, executed as shipped (with a NumPy stand-in for torch), gives the same accuracy."""
    from dgm.models.sbibm import sbibm_root

    source = (sbibm_root() / "metrics" / "c2st.py").read_text()
    monkeypatch.setitem(sys.modules, "torch", _fake_torch())
    namespace: dict = {}
    exec(compile(source, "sbibm/metrics/c2st.py", "exec"), namespace)
    rng = np.random.default_rng(3)
    X = rng.standard_normal((300, 2)).astype(np.float32)
    Y = (rng.standard_normal((300, 2)) + [1.0, 0.0]).astype(np.float32)
    theirs = float(namespace["c2st"](X.view(sys.modules["torch"].Tensor), Y.view(sys.modules["torch"].Tensor))[0])
    assert theirs == pytest.approx(c2st(X, Y), abs=1e-6)
    assert 0.6 < theirs < 0.8  # two unit normals 1 apart: Bayes accuracy Phi(1/2) = 0.69


def test_mmd_definition():
    """Unbiased MMD^2 with the lower-median bandwidth, against the O(n^2) formula written out; ~0 for one
    distribution, clearly positive for two."""
    from scipy.spatial.distance import cdist, pdist

    rng = np.random.default_rng(2)
    X, Y = rng.standard_normal((300, 2)), rng.standard_normal((200, 2)) + [0.5, 0.0]
    d = np.sort(pdist(X))
    sigma = d[(d.size - 1) // 2]
    assert median_pairwise_distance(X) == pytest.approx(sigma, rel=1e-12)
    k = lambda A, B: np.exp(-cdist(A, B, "sqeuclidean") / (2 * sigma ** 2))  # noqa: E731
    kxx, kyy = k(X, X), k(Y, Y)
    direct = ((kxx.sum() - 300) / (300 * 299) + (kyy.sum() - 200) / (200 * 199) - 2 * k(X, Y).mean())
    assert mmd(X, Y) == pytest.approx(direct, rel=1e-10)
    assert mmd(X, Y) > 0.02
    assert abs(mmd(X, rng.standard_normal((300, 2)))) < 0.01


# -- the command ------------------------------------------------------------------------------------------------------
@needs_sbibm
def test_quick_run_writes_its_outputs(tmp_path, capsys):
    """``dgm sbibm --quick`` in-process, through the command line."""
    import json

    from dgm.cli import UserMistake, main

    assert main(["sbibm", "--quick", "--no-progress", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    (run,) = results["runs"]
    assert run["task"] == "two_moons" and run["method"] == "chmc-tempered" and results["settings"]["c2st_draws"] == 1000
    assert 0.45 < run["c2st"] <= 1.0 and np.isfinite(run["mmd"])  # the score's quality is the benchmark's business
    assert np.load(tmp_path / "draws" / "two_moons_obs1_seed0.npy").shape == (1000, 2)
    for name in ("report.md", "table.txt", "c2st.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert "C2ST" in capsys.readouterr().out
    with pytest.raises(UserMistake, match="no differentiable generator"):
        main(["sbibm", "--quick", "--tasks", "sir", "--out", str(tmp_path)])
    with pytest.raises(UserMistake, match="fewer than --c2st-draws"):
        main(["sbibm", "--quick", "--samples", "10", "--out", str(tmp_path)])


def test_independent_structure_declaration_computes_the_generator():
    """The linear-time declaration (x_i = observe(shared(u_theta), v_i, i)) computes the same x as the generator."""
    rng = np.random.default_rng(4)
    for name in ("gaussian_linear", "gaussian_linear_uniform"):
        model = get_task(name).model()
        with dgm.float64():
            u = rng.standard_normal((3, model.input_dim))
            model.structure.check_generator(model.generator, u, name=name)
            assert np.allclose(jax.vmap(model.structure.generator)(jnp.asarray(u)), jax.vmap(model.generator)(u))
