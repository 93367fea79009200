"""The public API: bad inputs give clear errors, failures are counted, seeds reproduce, results round-trip."""

from pathlib import Path

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr

import dgm
from dgm.geometry.dense import DenseGeometry
from dgm.initialise import ManifoldInitialisationError
from dgm.kernels import chmc

A = np.array([[1.0, 2.0, 0.5], [0.3, -1.0, 1.0]])
DATA = Path(__file__).parent / "data"


def linear():
    return dgm.GenerativeModel(lambda u: jnp.asarray(A) @ u, 3)


def test_wrong_observation_shape_is_a_clear_error():
    with pytest.raises(ValueError, match="shape"):
        dgm.sample(linear(), np.zeros(3), progress=False)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_observation_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="non-finite"):
        dgm.sample(linear(), np.array([1.0, bad]), progress=False)


def test_more_outputs_than_inputs_is_a_clear_error():
    model = dgm.GenerativeModel(lambda u: jnp.concatenate([u, u]), 2)
    with pytest.raises(ValueError, match="fewer observed outputs"):
        dgm.sample(model, np.zeros(4), progress=False)


def test_generator_returning_nan_everywhere_fails_before_sampling():
    model = dgm.GenerativeModel(lambda u: A @ u + jnp.nan, 3)
    with pytest.raises(ManifoldInitialisationError, match="non-finite"):
        dgm.sample(model, np.zeros(2), progress=False)


def test_unreachable_observation_names_best_residual():
    model = dgm.GenerativeModel(lambda u: jnp.atleast_1d(jnp.sum(u**2)), 3)  # |u|^2 = -1 has no solution
    with pytest.raises(ManifoldInitialisationError, match="best residual"):
        dgm.sample(model, np.array([-1.0]), progress=False)


def test_rank_deficient_jacobian_is_a_clear_error():
    model = dgm.GenerativeModel(lambda u: jnp.stack([u[0] + u[1], 2.0 * (u[0] + u[1])]), 3)
    with pytest.raises(ValueError, match="rank-deficient"):
        dgm.sample(model, np.array([1.0, 2.0]), progress=False)


def test_nan_inside_the_chain_is_a_counted_rejection_not_a_crash():
    # The generator returns NaN when u2 > 0.8: trajectories entering that region are rejected and counted.
    def generator(u):
        return jnp.atleast_1d(u[0] + u[1] + jnp.where(u[2] > 0.8, jnp.nan, 0.0))

    model = dgm.GenerativeModel(generator, 3)
    with pytest.warns(RuntimeWarning, match="failed numerically"):
        result = dgm.sample(model, np.array([0.5]), n_warmup=50, n_samples=200, step_size=0.5, seed=0, progress=False)
    counts = result.rejection_counts()
    assert sum(counts.values()) > 0
    assert np.all(np.isfinite(result.inputs))
    assert np.all(result.inputs[..., 2] <= 0.8)
    assert result.max_residual < 1e-8


def test_same_seed_same_samples_and_different_seed_differs():
    first = dgm.sample(linear(), np.array([1.0, 0.0]), n_warmup=20, n_samples=30, seed=7, progress=False)
    again = dgm.sample(linear(), np.array([1.0, 0.0]), n_warmup=20, n_samples=30, seed=7, progress=False)
    other = dgm.sample(linear(), np.array([1.0, 0.0]), n_warmup=20, n_samples=30, seed=8, progress=False)
    np.testing.assert_array_equal(first.inputs, again.inputs)
    np.testing.assert_array_equal(first.step_size, again.step_size)
    assert not np.array_equal(first.inputs, other.inputs)


def test_float32_positions_are_refused_by_the_low_level_kernel():
    geometry = DenseGeometry(lambda u: jnp.asarray(A, jnp.float32) @ u, jnp.zeros(2, jnp.float32))
    with pytest.raises(TypeError, match="float64"):
        chmc.init(jnp.zeros(3, jnp.float32), geometry)


def test_sample_does_not_flip_the_global_precision():
    before = jnp.zeros(()).dtype
    dgm.sample(linear(), np.array([1.0, 0.0]), n_warmup=5, n_samples=5, progress=False)
    assert jnp.zeros(()).dtype == before


def linear_algorithm():
    """A fixed-step constrained-HMC SamplingAlgorithm on the linear model, and a point on its manifold."""
    x = jnp.array([1.0, 0.0])
    geometry = DenseGeometry(lambda u: jnp.asarray(A) @ u, x)
    algorithm = chmc.as_top_level_api(geometry, step_size=0.3, n_steps=(2, 4))
    return geometry, algorithm, jnp.asarray(A.T @ np.linalg.solve(A @ A.T, np.asarray(x)))


def test_low_level_kernel_composes_like_blackjax():
    with dgm.float64():
        geometry, algorithm, u0 = linear_algorithm()
        state = algorithm.init(u0)
        step = jax.jit(algorithm.step)
        for i in range(5):
            state, info = step(jax.random.PRNGKey(i), state)
        assert float(jnp.max(jnp.abs(geometry.constraint(state.position)))) < 1e-8
        assert info.acceptance_rate.shape == ()


def test_kernel_runs_under_blackjax_run_inference_algorithm():
    from blackjax.util import run_inference_algorithm

    with dgm.float64():
        geometry, algorithm, u0 = linear_algorithm()
        _, (positions, infos) = run_inference_algorithm(
            jax.random.PRNGKey(0), algorithm, 50, initial_position=u0,
            transform=lambda state, info: (state.position, info),
        )
        assert positions.shape == (50, 3)
        residual = jnp.max(jnp.abs(jax.vmap(geometry.constraint)(positions)))
        assert float(residual) < 1e-8 and float(jnp.mean(infos.is_accepted)) > 0.5


def test_result_summary_save_and_load(tmp_path):
    result = dgm.sample(linear(), np.array([1.0, 0.0]), n_warmup=50, n_samples=100, seed=1, progress=False)
    table = result.summary()
    for column in ["mean", "sd", "ess_bulk", "ess_tail", "r_hat", "ess_per_sec", "max_residual"]:
        assert column in table.columns
    assert result.compile_time > 0 and result.wall_time > 0
    tree = result.to_arviz()
    assert isinstance(tree, xr.DataTree)
    assert {"posterior", "sample_stats", "observed_data", "warmup_sample_stats"} <= set(tree.children)
    assert tree.posterior["u"].shape == (4, 100, 3)
    stats = tree.sample_stats
    for name in ["acceptance_rate", "step_size", "n_steps", "energy", "lp", "diverging", "failure",
                 "newton_iterations", "constraint_residual"]:
        assert stats[name].shape == (4, 100), name
    assert float(stats["constraint_residual"].max()) == result.max_residual < 1e-8
    np.testing.assert_array_equal(stats["diverging"], result.stats["failure"] != 0)
    # lp is the log target on the manifold, -phi(u) = log rho(u) - 1/2 log|J J^T| (|J J^T| constant here)
    u = result.inputs
    np.testing.assert_allclose(stats["lp"] - stats["lp"][0, 0], -0.5 * np.sum(u**2, -1) + 0.5 * np.sum(u[0, 0] ** 2),
                               atol=1e-10)
    for name in ("run.nc", "run.zarr"):
        result.save(tmp_path / name)
        loaded = dgm.load(tmp_path / name)
        np.testing.assert_array_equal(loaded.inputs, result.inputs)
        np.testing.assert_array_equal(loaded.latents, result.latents)
        assert set(loaded.stats) == set(result.stats) and set(loaded.warmup_stats) == set(result.warmup_stats)
        for key in result.stats:
            np.testing.assert_array_equal(loaded.stats[key], result.stats[key])
        assert loaded.wall_time == result.wall_time and loaded.method == "chmc"
        assert loaded.rejection_counts() == result.rejection_counts()
        assert loaded.unrecorded_failures == result.unrecorded_failures and loaded.kernel == result.kernel == "exact"
    assert az.from_netcdf(str(tmp_path / "run.nc")).posterior["z"].shape == (4, 100, 3)


def test_load_reads_files_written_before_arviz_1(tmp_path):
    """tests/data/result_v0_1.nc was written by dgm 0.1.0 under ArviZ 0.23 (InferenceData, the kernels' stat names)."""
    old = dgm.load(DATA / "result_v0_1.nc")
    assert old.method == "chmc" and old.inputs.shape == (2, 20, 3) and old.latents.shape == (2, 20, 3)
    assert old.stats["n_steps"].shape == (2, 20) and "num_integration_steps" not in old.stats
    np.testing.assert_array_equal(old.stats["diverging"], old.stats["failure"] != 0)
    assert old.warmup_stats["step_size"].shape == (2, 10)
    assert old.summary().shape[0] == 3
    old.save(tmp_path / "again.nc")  # and it converts to the current format
    assert set(dgm.load(tmp_path / "again.nc").stats) == set(old.stats)


def test_load_refuses_what_dgm_did_not_write(tmp_path):
    with pytest.raises(FileNotFoundError, match="no dgm result"):
        dgm.load(tmp_path / "missing.nc")
    (tmp_path / "junk.nc").write_bytes(b"not a netcdf file")
    with pytest.raises(ValueError, match="not a readable"):
        dgm.load(tmp_path / "junk.nc")
    xr.DataTree.from_dict({"posterior": xr.Dataset({"z": ("draw", np.zeros(3))})}).to_netcdf(
        tmp_path / "other.nc", engine="h5netcdf")
    with pytest.raises(ValueError, match="not written by dgm"):
        dgm.load(tmp_path / "other.nc")


def test_unknown_method_and_missing_noise_scale():
    with pytest.raises(ValueError, match="unknown method"):
        dgm.sample(linear(), np.zeros(2), method="gibbs", progress=False)
    with pytest.raises(ValueError, match="noise_scale"):
        dgm.sample(linear(), np.zeros(2), method="hmc", progress=False)


def test_warmup_adapts_the_step_size_towards_the_target_and_records_it():
    B = np.array([[1.0, 2.0, 0.5, -0.3, 0.0], [0.3, -1.0, 1.0, 0.0, 0.7]])
    model = dgm.GenerativeModel(lambda u: jnp.asarray(B) @ u + 0.1 * jnp.sin(u[:2] * u[2:4]), 5)
    runs = {
        target: dgm.sample(model, np.array([1.0, -0.5]), n_warmup=500, n_samples=500, seed=4,
                           target_acceptance=target, progress=False)
        for target in (0.6, 0.9)
    }
    low, high = runs[0.6], runs[0.9]
    warm = high.warmup_stats["step_size"]
    assert warm.shape == (4, 500) and not np.allclose(warm[:, 0], warm[:, -1])  # the step size moved
    np.testing.assert_allclose(high.stats["step_size"], np.broadcast_to(high.step_size[:, None], (4, 500)))
    assert np.all(high.step_size < low.step_size)  # a higher target gives smaller steps ...
    assert high.acceptance_rate > low.acceptance_rate  # ... and more acceptances
    assert abs(high.acceptance_rate - 0.9) < 0.05


# ----------------------------------------------------------------------------------------------------------------------
# options: refused when not applicable, validated, recorded as run (issue 9, bugs 3-5)
# ----------------------------------------------------------------------------------------------------------------------
def nan_region_model():
    """Trajectories entering u2 > 0.8 fail (NaN generator): a known, high failure rate at step size 0.5."""
    return dgm.GenerativeModel(lambda u: jnp.atleast_1d(u[0] + u[1] + jnp.where(u[2] > 0.8, jnp.nan, 0.0)), 3)


def test_unknown_or_inapplicable_options_are_errors_naming_what_the_method_accepts():
    x = np.array([1.0, 0.0])
    with pytest.raises(ValueError, match=r"method 'abc-mcmc' does not accept step_size=0.3.*proposal_scale"):
        dgm.sample(linear(), x, method="abc-mcmc", epsilon=1.0, step_size=0.3, progress=False)
    with pytest.raises(ValueError, match=r"method 'chmc' does not accept geometri='dense'.*geometry"):
        dgm.sample(linear(), x, geometri="dense", progress=False)
    with pytest.raises(ValueError, match=r"method 'abc-slice' does not accept n_inner=3"):
        dgm.sample(linear(), x, method="abc-slice", epsilon=1.0, n_inner=3, progress=False)
    with pytest.raises(ValueError, match=r"method 'abc-mcmc' needs epsilon="):
        dgm.sample(linear(), x, method="abc-mcmc", progress=False)
    with pytest.raises(ValueError, match=r"'abc-slice' has no step size to adapt"):
        dgm.sample(linear(), x, method="abc-slice", epsilon=1.0, adapt_step_size=True, progress=False)


@pytest.mark.parametrize("option,value", [
    ("step_size", 0.0), ("step_size", -0.1), ("step_size", float("nan")), ("step_size", "big"),
    ("n_steps", (8, 4)), ("n_steps", (0, 3)), ("n_steps", (2.5, 4)), ("n_steps", "ab"), ("n_steps", (1, 2, 3)),
    ("n_inner", 0), ("n_inner", 1.5), ("tol", 0.0), ("tol", -1e-8), ("max_newton", 0), ("thin", 0),
    ("n_chains", 0), ("n_warmup", -1),
])
def test_bad_option_values_are_errors_naming_the_option(option, value):
    with pytest.raises(ValueError, match=option):
        dgm.sample(linear(), np.array([1.0, 0.0]), progress=False, **{option: value})


def test_settings_record_only_the_options_that_applied():
    result = dgm.sample(linear(), np.array([1.0, 0.0]), method="abc-mcmc", epsilon=1.0, n_warmup=0, n_samples=20,
                        progress=False)
    assert "n_inner" not in result.settings and "max_newton" not in result.settings
    assert result.settings["step_size"] is None and result.settings["step_size_adaptation"] == "none"
    assert result.kernel == "uniform ball" and result.rejection_counts() == {}


def test_no_warmup_and_no_step_size_runs_a_recorded_heuristic_step_size():
    """n_warmup=0, step_size=None: BlackJAX's find_reasonable_step_size from 0.1 (not a silent 0.1); the settings
    record the step size that ran and how it was chosen; a fixed step size is recorded as fixed."""
    model = dgm.GenerativeModel(lambda u: jnp.asarray(A) @ u + 0.1 * jnp.sin(u[:2] * u[1:]), 3)
    x = np.array([1.0, -0.5])
    result = dgm.sample(model, x, n_warmup=0, n_samples=100, seed=4, progress=False)
    settings = result.settings
    assert settings["step_size_adaptation"] == "find-reasonable-step-size" and settings["adapt_step_size"] is True
    assert settings["step_size_requested"] is None
    ran = np.broadcast_to(np.asarray(settings["step_size"], dtype=float), (4,))
    np.testing.assert_allclose(ran, result.step_size)
    np.testing.assert_allclose(result.stats["step_size"], np.broadcast_to(result.step_size[:, None], (4, 100)))
    assert np.all(result.step_size != 0.1)  # the heuristic doubles or halves at least once
    assert result.acceptance_rate > 0.3
    fixed = dgm.sample(model, x, n_warmup=0, n_samples=20, step_size=0.3, seed=4, progress=False)
    assert fixed.settings["step_size"] == 0.3 and fixed.settings["adapt_step_size"] is False
    assert fixed.settings["step_size_adaptation"] == "fixed"
    adapted = dgm.sample(model, x, n_warmup=30, n_samples=20, seed=4, progress=False)
    assert adapted.settings["step_size_adaptation"] == "dual-averaging"
    np.testing.assert_allclose(np.broadcast_to(np.asarray(adapted.settings["step_size"], float), (4,)),
                               adapted.step_size)


def test_failures_of_every_iteration_are_counted_with_thinning_and_warned_about():
    """thin=4: rejection_counts() counts all 4 x 100 x 4 iterations run, not only the 400 kept ones. The kept
    iterations are a sample of all, so their failure rate agrees with the total rate within 4 binomial standard
    errors; with thin=1 the counts equal those read from the per-draw statistics exactly."""
    x = np.array([0.5])
    with pytest.warns(RuntimeWarning, match=r"of sampling trajectories \(\d+ of 1600\) failed numerically "
                                            r"\(newton_not_converged \d+"):
        result = dgm.sample(nan_region_model(), x, n_warmup=0, n_samples=100, thin=4, step_size=0.5, seed=0,
                            progress=False)
    total = sum(result.rejection_counts().values())
    kept = int(np.sum(result.stats["failure"] != 0))
    p = total / 1600
    assert total > kept and abs(kept / 400 - p) <= 4 * np.sqrt(p * (1 - p) / 400), (total, kept)
    with pytest.warns(RuntimeWarning, match="failed numerically"):
        plain = dgm.sample(nan_region_model(), x, n_warmup=0, n_samples=50, step_size=0.5, seed=1, progress=False)
    failure = plain.stats["failure"]
    assert plain.rejection_counts() == {"newton_not_converged": int(np.sum(failure == 1)),
                                        "not_reversible": int(np.sum(failure == 2)),
                                        "non_finite": int(np.sum(failure == 3)),
                                        "divergent": int(np.sum(failure == 4))}
