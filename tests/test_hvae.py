"""Hamiltonian importance-sampling flow, HVAE, planar flow baseline and the ``dgm vae-benchmark`` harness."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgm.vi import hamiltonian_flow as hf
from dgm.vi.hamiltonian_vi import HamiltonianVI, fit

TEMPERINGS = ["none", "fixed", "free"]


def _gaussian_target(d, seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(d, d))
    precision = a @ a.T / d + np.eye(d)
    mean = rng.normal(size=d)
    return mean, precision


def _affine_flow_numpy(mean, precision, eps, log_alpha):
    """The flow on the target N(mean, precision^-1) as an affine map (z, rho) -> M (z, rho) + c, built by hand from
    the leapfrog and cooling matrices (independent of the JAX code)."""
    d = mean.size
    M, c = np.eye(2 * d), np.zeros(2 * d)
    E = np.diag(eps)
    kick = np.block([[np.eye(d), np.zeros((d, d))], [-0.5 * E @ precision, np.eye(d)]])  # rho -= eps/2 P (z - m)
    kick_c = np.concatenate([np.zeros(d), 0.5 * E @ precision @ mean])
    drift = np.block([[np.eye(d), E], [np.zeros((d, d)), np.eye(d)]])
    for la in log_alpha:
        cool = np.diag(np.concatenate([np.ones(d), np.full(d, np.exp(la))]))
        for A, b in ((kick, kick_c), (drift, np.zeros(2 * d)), (kick, kick_c), (cool, np.zeros(2 * d))):
            M, c = A @ M, A @ c + b
    return M, c


@pytest.mark.parametrize("tempering", TEMPERINGS)
def test_flow_density_is_the_exact_gaussian_output_law(x64, tempering):
    d, K = 3, 4
    mean, precision = _gaussian_target(d, 1)
    flow = hf.HamiltonianFlow(d, K, tempering=tempering, step_size=np.array([0.3, 0.2, 0.25]), beta0=0.3,
                              dtype=jnp.float64)
    log_target = lambda z: -0.5 * (z - mean) @ precision @ (z - mean)  # noqa: E731
    m0, s0 = np.array([0.5, -1.0, 0.2]), np.array([0.7, 1.3, 0.9])
    beta0 = float(np.exp(flow.log_beta0()))
    M, c = _affine_flow_numpy(mean, precision, np.asarray(flow.step_sizes()), np.asarray(flow.log_momentum_factors()))
    out_mean = M @ np.concatenate([m0, np.zeros(d)]) + c
    out_cov = M @ np.diag(np.concatenate([s0 ** 2, np.full(d, 1 / beta0)])) @ M.T
    rng = np.random.default_rng(2)
    for _ in range(5):
        z0, rho0 = m0 + s0 * rng.normal(size=d), rng.normal(size=d) / math.sqrt(beta0)
        log_q0 = float(np.sum(-0.5 * ((z0 - m0) / s0) ** 2 - np.log(s0) - 0.5 * math.log(2 * math.pi)))
        z, rho, _ = hf.forward(flow, log_target, jnp.asarray(z0), jnp.asarray(rho0))
        y = np.concatenate([np.asarray(z), np.asarray(rho)])
        np.testing.assert_allclose(y, M @ np.concatenate([z0, rho0]) + c, rtol=0, atol=1e-12)
        r = y - out_mean
        exact = -0.5 * r @ np.linalg.solve(out_cov, r) - 0.5 * np.linalg.slogdet(2 * math.pi * out_cov)[1]
        ours = float(hf.log_density(flow, jnp.asarray(z0), jnp.asarray(rho0), log_q0))
        assert abs(ours - exact) < 1e-8, (ours, exact)


@pytest.mark.parametrize("tempering", TEMPERINGS)
def test_tempering_jacobian_equals_autodiff_log_det(x64, tempering):
    d = 3
    flow = hf.HamiltonianFlow(d, 5, tempering=tempering, step_size=0.2, beta0=0.2, dtype=jnp.float64)
    log_target = lambda z: -jnp.sum(z ** 4) / 4 - 0.5 * jnp.sum(z ** 2) + jnp.sin(z[0] * z[1])  # noqa: E731

    def flow_map(v):
        z, rho, _ = hf.forward(flow, log_target, v[:d], v[d:])
        return jnp.concatenate([z, rho])

    v = jnp.asarray(np.random.default_rng(3).normal(size=2 * d))
    sign, logdet = np.linalg.slogdet(np.asarray(jax.jacfwd(flow_map)(v)))
    assert sign > 0
    np.testing.assert_allclose(logdet, float(flow.log_det_jacobian()), rtol=0, atol=1e-10)
    if tempering != "none":
        assert float(flow.log_det_jacobian()) < -1.0  # the cooling is not volume preserving: the test has teeth
        np.testing.assert_allclose(float(flow.log_beta0()), math.log(0.2), rtol=1e-12)


def _linear_gaussian(d=2, n_obs=3, seed=0):
    """z ~ N(0, I_d), x | z ~ N(A z + b, s^2 I): log p(x, z) and the exact log p(x)."""
    rng = np.random.default_rng(seed)
    A, b, s = rng.normal(size=(n_obs, d)), rng.normal(size=n_obs), 0.5
    x = A @ rng.normal(size=d) + b + s * rng.normal(size=n_obs)
    cov = A @ A.T + s ** 2 * np.eye(n_obs)
    r = x - b
    log_px = -0.5 * r @ np.linalg.solve(cov, r) - 0.5 * np.linalg.slogdet(2 * math.pi * cov)[1]
    A_, b_, x_ = (jnp.asarray(v, jnp.float32) for v in (A, b, x))

    def log_joint(z):
        u = (x_ - A_ @ z - b_) / s
        return -0.5 * u @ u - n_obs * (math.log(s) + 0.5 * math.log(2 * math.pi)) - 0.5 * z @ z \
            - 0.5 * d * math.log(2 * math.pi)

    return log_joint, float(log_px)


def test_hvae_elbo_below_log_evidence_and_tightens_with_training():
    log_joint, log_px = _linear_gaussian()
    family = HamiltonianVI(2, 4, tempering="fixed", scale=1.0, step_size=0.1, beta0=0.5)
    n = 4000
    key = jax.random.key(7)
    before = np.asarray(family.sample(log_joint, key, n).log_weight, np.float64)
    trained, trace = fit(family, log_joint, steps=600, samples=16, learning_rate=2e-2, seed=0, progress=False)
    after = np.asarray(trained.sample(log_joint, key, n).log_weight, np.float64)
    se_before, se_after = before.std() / math.sqrt(n), after.std() / math.sqrt(n)
    # the ELBO is a lower bound: its estimate is below log p(x) up to 3 Monte-Carlo standard errors
    assert before.mean() <= log_px + 3 * se_before and after.mean() <= log_px + 3 * se_after
    gap_before, gap_after = log_px - before.mean(), log_px - after.mean()
    assert gap_after < 0.25 * gap_before and gap_after < 0.05, (gap_before, gap_after)
    # E[w] = p(x): the importance-sampling estimate log mean w agrees with log p(x)
    log_mean_w = np.logaddexp.reduce(after) - math.log(n)
    w = np.exp(after - after.max())
    se_log = w.std() / w.mean() / math.sqrt(n)  # delta-method standard error of log mean w
    assert abs(log_mean_w - log_px) < 4 * se_log + 1e-3, (log_mean_w, log_px, se_log)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="n_steps"):
        hf.HamiltonianFlow(2, 0)
    with pytest.raises(ValueError, match="step sizes"):
        hf.HamiltonianFlow(2, 3, step_size=-0.1)
    with pytest.raises(ValueError, match="step sizes"):
        hf.HamiltonianFlow(2, 3, step_size=0.0)
    with pytest.raises(ValueError, match="beta0"):
        hf.HamiltonianFlow(2, 3, tempering="fixed", beta0=0.0)
    with pytest.raises(ValueError, match="beta0"):
        hf.HamiltonianFlow(2, 3, tempering="free", beta0=-1.0)
    with pytest.raises(ValueError, match="tempering"):
        hf.HamiltonianFlow(2, 3, tempering="hot")
    data = jnp.array([1.0, jnp.nan])
    family = HamiltonianVI(2, 2)
    with pytest.raises(ValueError, match="NaN"):
        fit(family, lambda z: -0.5 * jnp.sum((z - data) ** 2), steps=1, progress=False)
    from dgm.vae import VAEConfig
    from dgm.vae.objective_training import train_objective
    from dgm.vae.registry import make_objective

    config = VAEConfig(data_dim=4, latent_dim=2, hidden=(8,), likelihood="bernoulli")
    with pytest.raises(ValueError, match="unknown model"):
        make_objective("hvae", config, jax.random.key(0))
    with pytest.raises(ValueError, match="n_steps"):
        make_objective("hvae0", config, jax.random.key(0))
    bad = np.zeros((10, 4), np.float32)
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        train_objective(make_objective("hvae1", config, jax.random.key(0)), config, bad, bad, epochs=1,
                        progress=False)


def test_planar_flow_log_density_matches_change_of_variables(x64):
    from dgm.vi.flows import PlanarFlow

    flow = PlanarFlow(3, 4, key=jax.random.key(0))
    flow = jax.tree_util.tree_map(lambda v: v * 30 if eqx_is_array(v) else v, flow)  # non-trivial layers
    z, log_q = flow.sample_and_log_prob(jax.random.key(1), 3)
    z0 = jax.random.normal(jax.random.key(1), (3, 3), z.dtype)
    for i in range(3):
        J = jax.jacfwd(lambda v: flow.bijection.transform_and_log_det(v)[0])(z0[i])
        expected = -0.5 * z0[i] @ z0[i] - 1.5 * math.log(2 * math.pi) - np.linalg.slogdet(np.asarray(J))[1]
        np.testing.assert_allclose(float(log_q[i]), expected, rtol=0, atol=1e-10)


def eqx_is_array(v):
    return isinstance(v, jax.Array) and jnp.issubdtype(v.dtype, jnp.floating)


def test_vae_benchmark_quick_writes_its_files(tmp_path, capsys):
    from dgm.cli import main

    out = tmp_path / "bench"
    rc = main(["vae-benchmark", "--quick", "--dataset", "digits", "--models", "vae,iwae3,hvae2-t", "--train-size",
               "300", "--no-progress", "--out", str(out)])
    assert rc == 0
    for name in ("results.json", "report.md", "training_curves.png", "samples.png"):
        assert (out / name).stat().st_size > 0
    results = json.loads((out / "results.json").read_text())
    assert [s["model"] for s in results["summary"]] == ["vae", "iwae3", "hvae2-t"]
    assert all(np.isfinite(s["nll_mean"]) and s["nll_mean"] > 0 for s in results["summary"])
    assert "test NLL" in capsys.readouterr().out


def test_gaussian_model_likelihood_from_sufficient_statistics_is_exact():
    from dgm.experiments.hvae_gaussian import experiment as hg

    rng = np.random.default_rng(4)
    d, n = 3, 40
    x = rng.normal(size=(n, d)) * 2 + 1
    model = hg.ModelParams(jnp.asarray([0.3, -0.2, 1.0]), jnp.asarray([0.1, -0.5, 0.4]))
    z = jnp.asarray([0.2, 0.1, -0.3])
    stats = hg.Stats(jnp.float32(n), jnp.asarray(x.mean(0), jnp.float32),
                     jnp.asarray(((x - x.mean(0)) ** 2).sum(0), jnp.float32))
    sigma = np.exp(np.asarray(model.log_sigma))
    direct = np.sum(-0.5 * ((x - np.asarray(z) - np.asarray(model.delta)) / sigma) ** 2 - np.log(sigma)
                    - 0.5 * math.log(2 * math.pi)) - 0.5 * np.sum(np.asarray(z) ** 2) - 1.5 * math.log(2 * math.pi)
    np.testing.assert_allclose(float(hg.log_joint(model, stats, z)), direct, rtol=1e-5)
    delta, sigma = hg.true_parameters(5)
    np.testing.assert_allclose(delta, [-0.4, -0.2, 0.0, 0.2, 0.4])
    np.testing.assert_allclose(sigma[[0, 2, 4]], [1.0, 0.1, 1.0])


def test_hvae_gaussian_cli_runs_and_writes_its_files(tmp_path):
    from dgm.cli import main

    rc = main(["hvae-gaussian", "--dims", "2", "--methods", "vb,hvae-2-t", "--datasets", "2", "--iterations", "30",
               "--n-obs", "200", "--no-progress", "--out", str(tmp_path)])
    assert rc == 0
    result = json.loads((tmp_path / "hvae_gaussian.json").read_text())
    for m in ("vb", "hvae-2-t"):
        errors = result["errors"][m]["2"]
        assert len(errors) == 2 and np.all(np.isfinite(errors))
    assert (tmp_path / "hvae_gaussian.png").stat().st_size > 0
    with pytest.raises(SystemExit):
        main(["hvae-gaussian", "--methods", "hvae-x", "--no-progress", "--out", str(tmp_path)])
