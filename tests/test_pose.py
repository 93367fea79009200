"""Human pose model (Appendix E): skeleton, camera, learnt prior, generator, constrained HMC vs HMC."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

import dgm
from dgm.models.pose import prior, skeleton
from dgm.models.pose.camera import CameraPrior, project
from dgm.models.pose.model import AnglePrior, PoseModel
from dgm.models.pose.skeleton import Joint, Point, Skeleton


@pytest.fixture(scope="module")
def humanoid():
    return skeleton.deepmimic_skeleton()


def tiny_skeleton():
    """Two revolute joints (a shoulder and an elbow in the image plane at zero angles), three points."""
    joints = (Joint("shoulder", -1, "revolute"), Joint("elbow", 0, "revolute"))
    points = (Point("shoulder", -1, -1, -1, (0.0, 0.0, 0.0)), Point("elbow", 0, 0, 0, (0.0, -0.3, 0.0)),
              Point("wrist", 1, 1, 1, (0.0, -0.25, 0.0)))
    return Skeleton(joints, points, ("upper_arm", "forearm"), (0.05, 0.05))


def tiny_prior():
    """A fixed linear 'decoder' with a one-dimensional code: m(h) = [cos-means; sin-means]."""
    def mean_fn(h):
        return jnp.stack([1.0 + 0.2 * h[0], 0.9 - 0.3 * h[0], 0.4 + 0.5 * h[0], 0.7 + 0.2 * h[0]])
    return AnglePrior(mean_fn, 1, 0.3)


# -- skeleton --------------------------------------------------------------------------------------------------------
def test_euler_matrix_matches_scipy():
    angles = np.array([0.3, -1.1, 2.0])
    for order in ("XYZ", "ZYX", "YXZ", "ZXY"):
        np.testing.assert_allclose(np.asarray(skeleton.euler_matrix(jnp.asarray(angles), order)),
                                   Rotation.from_euler(order, angles).as_matrix(), atol=1e-6)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(-np.pi, np.pi), min_size=31, max_size=31),
       st.lists(st.floats(0.5, 2.0), min_size=10, max_size=10))
def test_forward_kinematics_preserves_bone_lengths(humanoid, angles, scales):
    lengths = humanoid.rest_bone_lengths * np.asarray(scales)
    positions = np.asarray(_fk(humanoid)(jnp.asarray(angles, jnp.float32), jnp.asarray(lengths, jnp.float32)))
    expected = np.array([lengths[humanoid.points[i].bone] for _, i in humanoid.segments])
    np.testing.assert_allclose(humanoid.bone_lengths_of(positions), expected, rtol=1e-5)
    np.testing.assert_array_equal(positions[0], 0.0)  # the root is the scene origin


_FK = {}


def _fk(sk):
    if sk not in _FK:
        _FK[sk] = jax.jit(sk.forward_kinematics)
    return _FK[sk]


def test_zero_angles_give_the_rest_pose(humanoid):
    positions = np.asarray(humanoid.forward_kinematics(jnp.zeros(31)))
    offsets = np.array([p.offset for p in humanoid.points])
    expected = np.zeros_like(offsets)
    for i, p in enumerate(humanoid.points):
        if p.parent >= 0:
            expected[i] = expected[p.parent] + offsets[i]
    np.testing.assert_allclose(positions, expected @ skeleton.SCENE_FROM_BODY.T, atol=1e-6)
    # the rest pose stands: feet 0.85 m below the pelvis, head 0.64 m above, facing the cameras (-Z)
    names = humanoid.point_names
    assert positions[names.index("right_foot"), 1] == pytest.approx(-0.421546 - 0.40987 - 0.0225, abs=1e-5)
    assert positions[names.index("head"), 1] == pytest.approx(0.236151 + 0.223894 + 0.175, abs=1e-5)
    assert positions[names.index("right_foot"), 2] == pytest.approx(-0.045, abs=1e-6)  # toes point at the camera


def test_a_right_angle_elbow_by_hand(humanoid):
    names, angles = humanoid.point_names, np.zeros(31)
    angles[humanoid.angle_names.index("right_elbow")] = np.pi / 2  # about the body z axis (scene X)
    p = np.asarray(humanoid.forward_kinematics(jnp.asarray(angles)))
    shoulder = np.array([0.18311, 0.236151 + 0.2435, 0.02405])  # scene (X, Y, Z) = (z, y, -x) in the body
    elbow = shoulder + [0.0, -0.274788, 0.0]
    # R_z(90 deg) turns the forearm's rest direction -y_body into +x_body (forward), i.e. scene -Z
    wrist = elbow + [0.0, 0.0, -0.258947]
    np.testing.assert_allclose(p[names.index("right_shoulder")], shoulder, atol=1e-6)
    np.testing.assert_allclose(p[names.index("right_elbow")], elbow, atol=1e-6)
    np.testing.assert_allclose(p[names.index("right_wrist")], wrist, atol=1e-6)


# -- camera ----------------------------------------------------------------------------------------------------------
def test_a_point_on_the_optical_axis_projects_to_the_principal_point():
    camera = jnp.array([0.3, -0.2, 4.0])
    xy = np.asarray(project(jnp.array([[0.3, -0.2, 1.5], [0.3 + 0.5, -0.2, 1.0]]), camera, focal=2.0))
    np.testing.assert_allclose(xy[0], 0.0, atol=1e-7)
    np.testing.assert_allclose(xy[1], [2.0 * 0.5 / 5.0, 0.0], atol=1e-7)  # f X / Z


# -- the learnt prior ------------------------------------------------------------------------------------------------
def _max_ks(vae, data, n=3000):
    from scipy.stats import ks_2samp

    a = np.asarray(prior.sample_angles(vae, jax.random.key(1), n))
    return max(max(ks_2samp(np.cos(a[:, k]), np.cos(data[:, k])).statistic,
                   ks_2samp(np.sin(a[:, k]), np.sin(data[:, k])).statistic) for k in range(data.shape[1]))


def test_trained_prior_matches_the_angle_marginals():
    """Two-sample Kolmogorov-Smirnov statistic D between 3000 prior draws and the 1,620 mocap frames, on cos and
    sin of every angle: max D <= 0.25 (the shipped prior: 0.20; an untrained VAE of the same shape: 0.95). The
    frames are strongly autocorrelated, so D is compared with a threshold, not turned into a p-value."""
    vae = prior.load_prior()
    data = skeleton.load_motion_data()["angles"]
    assert _max_ks(vae, data) <= 0.25


def test_prior_checkpoint_is_checked(tmp_path):
    import shutil

    src = prior.default_checkpoint()
    shutil.copy(src, tmp_path / "p.eqx")
    shutil.copy(src.with_suffix(".json"), tmp_path / "p.json")
    with open(tmp_path / "p.eqx", "r+b") as f:
        f.seek(200)
        f.write(b"\x00\x01\x02")
    with pytest.raises(dgm.vae.CheckpointError, match="corrupt"):
        prior.load_prior(tmp_path / "p.eqx")


# -- the generator, constrained HMC against HMC ----------------------------------------------------------------------
def _tiny_model(**kwargs):
    return PoseModel(tiny_skeleton(), tiny_prior(), camera=CameraPrior(), **kwargs)


def test_bad_observations_are_refused(humanoid):
    with dgm.float64():
        pm = _tiny_model()
        _, x = pm.simulate(jax.random.key(0))
        with pytest.raises(ValueError, match="must be 12 numbers"):
            pm.check_observation(x[:-1])
        with pytest.raises(ValueError, match="non-finite"):
            pm.check_observation(np.where(np.arange(12) == 3, np.nan, x))
        with pytest.raises(ValueError, match="shape"):
            dgm.sample(pm.model, x[:-2], method="chmc", n_chains=1, n_warmup=1, n_samples=1, progress=False)
        positions = np.asarray(pm.scene(jnp.zeros(pm.n_parameters))["positions"])
        with pytest.raises(ValueError, match="behind the camera"):
            pm.observe(positions + [0.0, 0.0, -5.0], np.array([0.0, 0.0, 3.0]))
        with pytest.raises(ValueError, match="non-finite"):
            pm.observe(np.where(positions == 0, np.nan, positions), np.array([0.0, 0.0, 3.0]))
        # inside a chain, a point behind the camera is a NaN projection (a counted rejection), not a crash
        u1 = np.zeros(pm.n_parameters)
        u1[-1] = -80.0  # depth exp(1.5 - 40) ~ 0: the wrist is behind the camera plane
        assert np.isnan(np.asarray(pm.mean_observation(jnp.asarray(u1)))).any()


def test_model_dimensions_for_the_humanoid(humanoid):
    with dgm.float64():
        pm = PoseModel(humanoid, AnglePrior.from_vae(prior.load_prior().astype(jnp.float64)))
        assert (pm.n_parameters, pm.n_observed, pm.model.input_dim) == (8 + 62 + 10 + 3, 72, 155)
        mono = PoseModel(humanoid, pm.angle_prior, binocular=False)
        assert (mono.n_observed, mono.model.input_dim) == (36, 119)
        u1, x = pm.simulate(jax.random.key(3))
        _, u0 = pm.initial_inputs(jax.random.key(4), x, 2)
        np.testing.assert_allclose(np.asarray(jax.vmap(pm.model.generator)(jnp.asarray(u0))), np.tile(x, (2, 1)),
                                   atol=1e-9)  # the shared starts lie on the manifold
        assert len(pm.latent_names) == np.asarray(pm.latents(jnp.asarray(u1))).size == 31 + 10 + 3 + 54


def test_starting_points_are_the_best_of_their_candidates():
    """``initial_inputs(..., candidates=c)``: run i starts from the candidate with the smallest |u_1|^2 + |v|^2 among
    prior draws i c .. (i + 1) c - 1 (the same draws as ``candidates=1`` for n c runs), on the manifold."""
    with dgm.float64():
        pm = _tiny_model()
        _, x = pm.simulate(jax.random.key(0))
        u1, u0 = pm.initial_inputs(jax.random.key(5), x, 3, candidates=16)
        all1, all0 = pm.initial_inputs(jax.random.key(5), x, 48)
        np.testing.assert_array_equal(all0[:, :pm.n_parameters], all1)
        score = np.sum(all0 ** 2, axis=1).reshape(3, 16)
        np.testing.assert_array_equal(u0, all0[np.argmin(score, axis=1) + 16 * np.arange(3)])
        np.testing.assert_array_equal(u1, u0[:, :pm.n_parameters])
        assert np.all(np.sum(u0 ** 2, axis=1) <= np.median(score, axis=1))
        np.testing.assert_allclose(np.asarray(jax.vmap(pm.model.generator)(jnp.asarray(u0))), np.tile(x, (3, 1)),
                                   atol=1e-9)
        with pytest.raises(ValueError, match="candidates"):
            pm.initial_inputs(jax.random.key(5), x, 3, candidates=0)


@pytest.fixture(scope="module")
def tiny_runs():
    """Constrained HMC and HMC-on-the-noisy-model on the tiny binocular arm, same observation and starts."""
    with dgm.float64():
        pm = _tiny_model(noise_scale=0.05)
        _, x = pm.simulate(jax.random.key(7))
        u1, u0 = pm.initial_inputs(jax.random.key(8), x, 4)
        chmc = dgm.sample(pm.model, x, method="chmc", n_chains=4, n_warmup=200, n_samples=600, seed=1,
                          initial_positions=u0, progress=False)
        hmc = dgm.sample(pm.conditional_model, x, method="hmc", noise_scale=0.05, n_chains=4, n_warmup=500,
                         n_samples=3000, seed=2, initial_positions=u1, progress=False, n_steps=(8, 16))
    return pm, x, chmc, hmc


def test_chmc_draws_reproduce_the_observations(tiny_runs):
    pm, x, chmc, _ = tiny_runs
    inputs = np.asarray(chmc.inputs).reshape(-1, pm.model.input_dim)
    with dgm.float64():
        out = np.asarray(jax.vmap(pm.model.generator)(jnp.asarray(inputs)))
    assert np.max(np.abs(out - x)) < 1e-8 * max(1.0, np.max(np.abs(x)))  # tol relative to the observation scale
    assert chmc.acceptance_rate > 0.5


def test_constrained_and_noisy_hmc_posteriors_agree(tiny_runs):
    """Posterior means of the parameter inputs u_1 (integrating the noise v out of the constrained target gives the
    HMC target exactly): |difference| <= 4 combined Monte-Carlo standard errors (ArviZ-style MCSE) for all 10, and
    for the wrist's position."""
    from conftest import mcse

    pm, _, chmc, hmc = tiny_runs
    K = pm.n_parameters
    a = np.asarray(chmc.inputs)[..., :K]
    b = np.asarray(hmc.inputs)[..., :K]
    pa = np.asarray(chmc.latents)[..., -2:]  # the wrist's Y and Z (the tiny arm moves in the X = 0 plane)
    pb = np.asarray(hmc.latents)[..., -2:]
    for k, (da, db) in enumerate([(a[..., i], b[..., i]) for i in range(K)] + [(pa[..., i], pb[..., i])
                                                                                  for i in range(2)]):
        z = abs(da.mean() - db.mean()) / np.hypot(mcse(da), mcse(db))
        assert z <= 4.0, f"quantity {k}: constrained {da.mean():.4f} vs HMC {db.mean():.4f} ({z:.1f} MCSE)"


def test_experiment_pipeline_on_the_tiny_arm(tiny_runs, tmp_path):
    """``dgm pose``'s pieces (equal-time runs, RMSE curves, table, figures, report) at tiny size."""
    from dgm.experiments.pose import experiment as ex
    from dgm.experiments.pose.report import figures, text_table, write_report

    pm, x, _, _ = tiny_runs
    with dgm.float64():
        scene = ex.make_scenes(pm, 1, 3)[0]
        ex.run_scene(pm, scene, runs=4, warmup=20, samples=30, seed=0, progress=False, hmc_factor=3.0)
    s = ex.summary(pm, scene)
    assert scene.hmc.n_draws == 90 and scene.chmc.n_draws == 30
    assert np.all(np.isfinite(s["chmc"]["final"])) and s["ratio"] > 0
    times, rmse = ex.rmse_curve(pm, scene.chmc, scene.truth)
    assert np.all(np.diff(times) > 0) and rmse.shape == (4, 30)
    grid = ex.on_grid(times, rmse, np.array([times[0] - 1.0, times[-1]]))
    assert np.isnan(grid[:, 0]).all() and np.allclose(grid[:, 1], rmse[:, -1])
    pos = ex.position_draws(pm, scene.chmc).reshape(-1, 3, 3)
    experiment = dict(scenes=[scene], summaries=[s], mono=pm, seconds=1.0,
                      monocular=dict(result=scene.chmc, truth=scene.truth, samples=pos[:3],
                                     fit=ex.noise_fit(pm, scene.chmc), picks=[(0, 0), (0, 1), (0, 2)]),
                      settings=dict(scenes=1, runs=4, warmup=20, samples=30, seed=3))
    rows = ex.table_rows(experiment)
    assert "chmc" in text_table(rows)
    paths = figures(experiment, tmp_path)
    report = write_report(experiment, rows, tmp_path, "dgm pose --test", paths)
    assert paths["fig5a"].stat().st_size > 0 and paths["fig5b"].stat().st_size > 0
    assert "RMSE ratios" in report.read_text()
