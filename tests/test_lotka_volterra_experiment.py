"""The Lotka-Volterra experiment: constrained-HMC guarantees on the original data, and the command end to end."""

import subprocess
import sys

import jax
import numpy as np
import pytest

import dgm
from dgm.cli import main
from dgm.models.lotka_volterra import TRUE_PARAMETERS, default_observations, lotka_volterra
from dgm.experiments.lotka_volterra.experiment import PAPER_PRESET, parse_methods


@pytest.mark.slow
def test_chmc_on_original_data_is_exact_converged_and_covers_the_truth():
    result = dgm.sample(lotka_volterra(), default_observations(), n_chains=4, n_warmup=100, n_samples=600, seed=0,
                        progress=False, **PAPER_PRESET)
    # every draw reproduces the observations to the Newton tolerance
    with dgm.float64():
        flat = jax.numpy.asarray(result.inputs.reshape(-1, result.inputs.shape[-1]))
        residuals = np.abs(np.asarray(jax.vmap(lotka_volterra().generator)(flat)) - default_observations())
    allowed = 1e-8 * max(1.0, np.abs(default_observations()).max())  # the projection rule: tol * max(1, |x|_inf)
    assert residuals.max() < allowed and result.max_residual < allowed
    table = result.summary()
    assert (table["r_hat"] <= 1.01).all(), table
    z = result.latents.reshape(-1, 4)
    for i, true in enumerate(TRUE_PARAMETERS):  # the truth lies inside the posterior bulk (central 99%)
        lo, hi = np.quantile(z[:, i], [0.005, 0.995])
        assert lo < true < hi, (i, lo, true, hi)


def test_method_specifications_parse_and_reject_typos():
    specs = parse_methods("chmc, abc-ss-100,abc-ss-10,abc-mcmc-1000,abc-hmc-5,abc-reject-1e3")
    assert [s.method for s in specs] == ["chmc", "abc-slice", "abc-slice", "abc-mcmc", "abc-hmc", "abc-reject"]
    assert specs[2].epsilon == 10.0 and specs[-1].epsilon == 1000.0
    for bad in ["abc-xx-10", "abc-ss-ten", "abc-ss--1", ""]:
        with pytest.raises(ValueError):
            parse_methods(bad)


def test_command_writes_table_figures_samples_and_report(tmp_path, capsys):
    code = main(["lotka-volterra", "--chains", "2", "--warmup", "5", "--samples", "15", "--abc-samples", "40",
                 "--abc-thin", "2", "--abc-simulations", "2000", "--methods", "chmc,abc-ss-100,abc-reject-1000",
                 "--out", str(tmp_path), "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    for label in ("chmc", "abc-ss-100", "abc-reject-1000", "ESS/s", "R̂"):
        assert label in printed
    for name in ("fig1a_trajectories.png", "fig1b_marginals.png", "fig1c_ess_per_second.png", "report.md",
                 "samples_chmc.nc", "samples_abc-ss-100.nc"):
        assert (tmp_path / name).stat().st_size > 0, name
    loaded = dgm.load(tmp_path / "samples_chmc.nc")
    assert loaded.inputs.shape == (2, 15, 104) and loaded.max_residual < 1e-8 * max(1.0, np.abs(loaded.x_obs).max())
    report = (tmp_path / "report.md").read_text()
    assert "| chmc | exact | - |" in report and "| abc-ss-100 | uniform ball | 100 |" in report
    assert "fig1b_marginals.png" in report and "step size 0.25 (fixed)" in report


def test_command_reports_bad_methods_clearly(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["lotka-volterra", "--methods", "abc-zz-3", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "unknown method" in capsys.readouterr().err


@pytest.mark.parametrize("argv,expected", [
    (["lotka-volterra", "--chains", "0"], "--chains must be >= 1"),
    (["lotka-volterra", "--warmup", "-1"], "--warmup must be >= 0"),
    (["lotka-volterra", "--chains", "two"], "invalid int value"),
    (["lotka-volterra", "--bogus"], "unrecognized arguments"),
    (["lotka-volterra", "--preset", "fast"], "invalid choice"),
    (["lotka-volterra", "--methods", ""], "no methods given"),
    (["lotka-volterra", "--methods", "abc-ss-ten"], "must be a number"),
    (["fly"], "invalid choice"),
    ([], "required"),
])
def test_every_user_mistake_is_one_line_and_exit_code_2(tmp_path, capsys, argv, expected):
    with pytest.raises(SystemExit) as exit_info:
        main(argv + (["--out", str(tmp_path)] if argv[:1] == ["lotka-volterra"] else []))
    captured = capsys.readouterr()
    assert exit_info.value.code == 2
    assert captured.out == "" and captured.err.count("\n") == 1 and captured.err.startswith("dgm"), captured.err
    assert expected in captured.err


def test_command_line_mistake_in_a_fresh_process_has_no_traceback(tmp_path):
    done = subprocess.run([sys.executable, "-m", "dgm.cli", "lotka-volterra", "--abc-thin", "0", "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == "dgm lotka-volterra: error: --abc-thin must be >= 1, got 0", done.stderr


def test_command_with_only_abc_rejection_writes_every_output(tmp_path, capsys):
    """No MCMC method at all (one rejection run that accepts some draws, one that accepts none): every figure and
    the report are written, the empty panels say why, and the table shows each method's kernel beside its ε."""
    code = main(["lotka-volterra", "--quick", "--abc-simulations", "3000", "--methods",
                 "abc-reject-1000,abc-reject-100", "--out", str(tmp_path), "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "kernel" in printed and "uniform ball" in printed and "0 of 3000 accepted" in printed
    for name in ("fig1a_trajectories.png", "fig1b_marginals.png", "fig1c_ess_per_second.png", "report.md"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert not list(tmp_path.glob("samples_*.nc"))
    report = (tmp_path / "report.md").read_text()
    assert "| abc-reject-1000 | uniform ball | 1000 |" in report and "| abc-reject-100 | uniform ball | 100 |" in report


@pytest.mark.slow
def test_adaptive_preset_without_warmup_records_the_step_size_that_ran(tmp_path, capsys):
    code = main(["lotka-volterra", "--preset", "adaptive", "--warmup", "0", "--samples", "10", "--chains", "2",
                 "--methods", "chmc", "--out", str(tmp_path), "--no-progress"])
    assert code == 0
    loaded = dgm.load(tmp_path / "samples_chmc.nc")
    assert loaded.settings["step_size_adaptation"] == "find-reasonable-step-size"
    np.testing.assert_allclose(np.broadcast_to(np.asarray(loaded.settings["step_size"], float), (2,)),
                               loaded.step_size)
    report = (tmp_path / "report.md").read_text()
    assert "(find-reasonable-step-size)" in report and "| chmc | exact | - |" in report


@pytest.mark.slow
@pytest.mark.parametrize("method", ["chmc", "chmc-dynamic"])
def test_chmc_matches_nuts_on_the_exact_four_dimensional_posterior(method):
    """Ground truth: given the full trajectory, p(u1 | x) ∝ N(u1) N(u2(u1, x)) in closed form (4-D). BlackJAX NUTS on
    it and constrained HMC on the 104-D manifold must agree on the posterior means of u1 (4 combined MCSE). The
    dynamic kernel runs with its adapted step size."""
    import blackjax
    import jax.numpy as jnp

    from conftest import mcse
    from dgm.models.lotka_volterra import exact_log_posterior

    x_obs = default_observations()
    settings = PAPER_PRESET if method == "chmc" else {"n_warmup": 300}
    chmc = dgm.sample(lotka_volterra(), x_obs, method=method, n_chains=4, n_samples=1500, seed=1, progress=False,
                      **{"n_warmup": 100, **settings})
    with dgm.float64():
        x = jnp.asarray(x_obs)
        log_density = lambda u1: exact_log_posterior(u1, x)  # noqa: E731
        start = jnp.asarray(chmc.inputs[:, 0, :4])
        warmup = blackjax.window_adaptation(blackjax.nuts, log_density)
        (state, parameters), _ = warmup.run(jax.random.PRNGKey(0), start[0], num_steps=500)
        kernel = jax.jit(blackjax.nuts(log_density, **parameters).step)

        def chain(key, position):
            def body(s, k):
                s, _ = kernel(k, s)
                return s, s.position

            _, draws = jax.lax.scan(body, blackjax.nuts.init(position, log_density), jax.random.split(key, 2000))
            return draws

        reference = np.asarray(jax.vmap(chain)(jax.random.split(jax.random.PRNGKey(1), 4), start))
    for i in range(4):
        a, b = chmc.inputs[..., i], reference[..., i]
        se = np.hypot(mcse(a), mcse(b))
        assert abs(a.mean() - b.mean()) < 4 * se, (i, a.mean(), b.mean(), se)
        assert abs(a.std() - b.std()) < 0.1 * b.std(), (i, a.std(), b.std())
