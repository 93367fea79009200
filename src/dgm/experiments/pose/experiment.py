r"""The human-pose experiment of Appendix E, Figure 5: constrained HMC against HMC given binocular projections, and
monocular samples.

**Figure 5a.** ``n_scenes`` scenes ``(u_1, x)`` are drawn from the binocular model's prior with a fixed seed. For each
scene both methods start ``runs`` independent chains (one chain = one run) from the same points: each run's ``u_1``
is the best of ``candidates`` prior draws (default 64) by the hierarchical density ``log N(u_1; 0, I) + log N(x;
f(u_1), eps^2 I)`` (:meth:`PoseModel.initial_inputs`; a prior draw facing away from the cameras, say, is a poor start
for any local sampler, and the screen costs 64 generator calls per run), and constrained HMC adds the noise ``v = (x
- f(u_1)) / eps`` that puts it on the manifold:

(a) constrained HMC, ``dgm.sample(model, x, method="chmc")`` (linear-time geometry);
(b) HMC, ``dgm.sample(conditional_model, x, method="hmc", noise_scale=eps)`` on the hierarchical density of the
    non-noise inputs (:mod:`dgm.models.pose.model`).

Both adapt their step size by dual averaging in warm-up (target acceptance 0.8, ``N_s ~ U{4..8}`` leapfrog steps)
and get the same wall-clock budget: HMC runs ``k`` times as many warm-up and sampling iterations, ``k`` the measured
ratio of the per-iteration times (short HMC pilot). On CPU the chains of one call run one after another, so one run's
time is the call's wall time (compilation excluded) divided by ``runs``, and draw ``j`` of a run is available at
``tau (W + j thin)`` with ``tau`` the per-iteration time: warm-up counts, as it is part of the cost of the estimate.

The error of a run at draw ``j`` is the RMSE of its running posterior-mean 3-D point positions against the true
positions, **in metres per coordinate**: ``sqrt(mean over the 17 non-root points and 3 coordinates of (pbar -
p)^2)`` (the root is the origin in every draw, so it is left out; the original notebook averaged over homogeneous
4-vectors, which shrinks the RMSE by ``sqrt(3/4)``; that is not done here; the per-point Euclidean error is
``sqrt(3)`` times this). The curves are put on a common time grid (the value of the latest draw available at each
time) and averaged over runs, with ``+- 3`` standard errors.

**Figure 5b.** Scene 0's pose seen by one camera (the monocular model); constrained HMC from the same kind of screened
starts; the true pose and three draws, orthographic front (x-y) and side (z-y) views: the last draw of each chain in
the posterior's main mode (mean squared noise input within a factor 2 of 1; a chain stuck in a poor local fit from
its start has a much larger value and its poses do not match the projection; every chain's value is in the report),
so the three come from independent chains and show the depth ambiguity; draws from the second half of the best chain
fill in when fewer than three chains qualify.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from pathlib import Path
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

import dgm
from dgm.models.pose import prior as prior_lib
from dgm.models.pose.model import NOISE_SCALE, AnglePrior, PoseModel
from dgm.models.pose.skeleton import deepmimic_skeleton

DEFAULTS = dict(scenes=3, runs=10, warmup=100, samples=300, seed=0, mono_chains=3, mono_samples=150, candidates=64)
QUICK = dict(scenes=3, runs=2, warmup=25, samples=40, mono_chains=2, mono_samples=30)
PAPER = dict(scenes=3, runs=10, warmup=200, samples=2000, mono_chains=4, mono_samples=500)
"""Settings: the default run (< 10 min on 2 cores), ``--quick`` (about a minute plus compilation) and the paper's
size (10 runs per method; the thesis compared at ~440 s per run)."""


def build_models(checkpoint: Optional[Path] = None, noise_scale: float = NOISE_SCALE) -> tuple[PoseModel, PoseModel]:
    """The binocular and monocular humanoid models with the trained prior (float64; call inside
    ``dgm.float64()``)."""
    vae = prior_lib.load_prior(checkpoint).astype(jnp.float64)
    angles = AnglePrior.from_vae(vae)
    sk = deepmimic_skeleton()
    return (PoseModel(sk, angles, binocular=True, noise_scale=noise_scale),
            PoseModel(sk, angles, binocular=False, noise_scale=noise_scale))


@dataclasses.dataclass
class Scene:
    label: str
    u1: np.ndarray  # true parameter inputs
    x: np.ndarray  # the observation
    truth: np.ndarray  # (P, 3) true point positions
    camera: np.ndarray  # true (c_x, c_y, d)
    chmc: Optional[dgm.Result] = None
    hmc: Optional[dgm.Result] = None
    hmc_factor: float = 1.0


def make_scenes(pm: PoseModel, n: int, seed: int) -> list[Scene]:
    scenes = []
    for i in range(n):
        u1, x = pm.simulate(jax.random.fold_in(jax.random.key(seed), i))
        s = pm.scene(jnp.asarray(u1))
        scenes.append(Scene(f"scene {i}", u1, x, np.asarray(s["positions"]), np.asarray(s["camera"])))
    return scenes


CHMC_METHODS = ("chmc", "chmc-dynamic")
CHMC_STEPS = (4, 8)
"""Constrained HMC's own trajectory length, ``N_s ~ U{4..8}`` leapfrog steps of its own adapted size (HMC's
``U{4..8}`` steps are of a size limited by the noise scale ``eps``, constrained HMC's are not: its trajectories are
far longer in ``u_1`` already); ``chmc_method="chmc-dynamic"`` chooses the length per transition instead."""


def run_scene(pm: PoseModel, scene: Scene, *, runs: int, warmup: int, samples: int, seed: int, progress: bool,
              candidates: int = 1, hmc_factor: Optional[float] = None, max_draws: int = 2000,
              chmc_method: str = "chmc", chmc_steps=CHMC_STEPS) -> Scene:
    """Constrained HMC (``chmc_method``: ``"chmc"`` with ``chmc_steps``, or ``"chmc-dynamic"``), then HMC with the
    same wall-clock budget, from the same starts (module docstring)."""
    if chmc_method not in CHMC_METHODS:
        raise ValueError(f"chmc_method must be one of {CHMC_METHODS}, got {chmc_method!r}")
    u1, u0 = pm.initial_inputs(jax.random.fold_in(jax.random.key(seed), 17), scene.x, runs, candidates=candidates)
    trajectory = dict(n_steps=chmc_steps) if chmc_method == "chmc" else {}
    scene.chmc = dgm.sample(pm.model, scene.x, method=chmc_method, n_chains=runs, n_warmup=warmup, n_samples=samples,
                            seed=seed, initial_positions=u0, progress=progress, **trajectory)
    eps = pm.noise_scale
    if hmc_factor is None:
        n_pilot = 300
        pilot = dgm.sample(pm.conditional_model, scene.x, method="hmc", noise_scale=eps, n_chains=runs,
                           n_warmup=n_pilot // 3, n_samples=n_pilot - n_pilot // 3, seed=seed + 1,
                           initial_positions=u1, progress=False)
        hmc_factor = max(1.0, (scene.chmc.wall_time / (warmup + samples)) / (pilot.wall_time / n_pilot))
    scene.hmc_factor = float(hmc_factor)
    hmc_warmup, hmc_iterations = int(round(warmup * hmc_factor)), int(round(samples * hmc_factor))
    thin = max(1, int(np.ceil(hmc_iterations / max_draws)))
    scene.hmc = dgm.sample(pm.conditional_model, scene.x, method="hmc", noise_scale=eps, n_chains=runs,
                           n_warmup=hmc_warmup, n_samples=hmc_iterations // thin, thin=thin, seed=seed + 2,
                           initial_positions=u1, progress=progress)
    return scene


# -- Figure 5a: RMSE of the running posterior mean against time ----------------------------------------------------
def position_draws(pm: PoseModel, result: dgm.Result) -> np.ndarray:
    """``(chain, draw, P, 3)`` point positions of every draw."""
    latents = np.asarray(result.latents)
    return pm.positions_from_latents(latents.reshape(result.n_chains, result.n_draws, -1))


def rmse_curve(pm: PoseModel, result: dgm.Result, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(times (draw,), rmse (chain, draw))``: per-run seconds at which each draw is available, and the RMSE (m,
    per coordinate, root excluded) of each run's running posterior mean of the positions."""
    pos = position_draws(pm, result)[:, :, 1:]
    running = np.cumsum(pos, axis=1) / np.arange(1, pos.shape[1] + 1)[None, :, None, None]
    rmse = np.sqrt(np.mean((running - truth[1:]) ** 2, axis=(2, 3)))
    warmup, thin = int(result.settings["n_warmup"]), int(result.settings.get("thin", 1))
    iterations = warmup + result.n_draws * thin
    per_iteration = result.wall_time / result.n_chains / iterations
    times = per_iteration * (warmup + thin * np.arange(1, result.n_draws + 1))
    return times, rmse


def on_grid(times: np.ndarray, rmse: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """``(chain, grid)``: each run's RMSE of the latest draw available at each grid time (NaN before the first)."""
    idx = np.searchsorted(times, grid, side="right") - 1
    out = rmse[:, np.clip(idx, 0, None)]
    out[:, idx < 0] = np.nan
    return out


def summary(pm: PoseModel, scene: Scene, n_grid: int = 200) -> dict:
    """Both methods' RMSE curves on a common time grid, and the values at the common final time."""
    curves = {m: rmse_curve(pm, getattr(scene, m), scene.truth) for m in ("chmc", "hmc")}
    end = min(t[-1] for t, _ in curves.values())
    start = min(t[0] for t, _ in curves.values())
    grid = np.linspace(start, end, n_grid)
    out = dict(grid=grid, end=float(end))
    for m, (t, r) in curves.items():
        g = on_grid(t, r, grid)
        with warnings.catch_warnings():  # NaN (no draw yet) at the start of the grid is expected
            warnings.simplefilter("ignore", RuntimeWarning)
            mean, se = np.nanmean(g, axis=0), np.nanstd(g, axis=0, ddof=1) / np.sqrt(g.shape[0])
        out[m] = dict(mean=mean, se=se, final=r[:, np.searchsorted(t, end, side="right") - 1])
    out["ratio"] = float(np.mean(out["chmc"]["final"]) / np.mean(out["hmc"]["final"]))
    return out


# -- Figure 5b: monocular -----------------------------------------------------------------------------------------
def run_monocular(mono: PoseModel, scene: Scene, *, chains: int, warmup: int, samples: int, seed: int,
                  progress: bool, candidates: int = 1) -> dict:
    """Constrained HMC given one camera's view of ``scene``'s pose, and three draws for the figure: the last draw of
    each chain in the main mode (mean squared noise input within a factor 2 of 1, closest first), then draws spread
    over the second half of the best chain if fewer than three chains qualify. ``picks`` lists ``(chain, draw)``."""
    x = mono.observe(scene.truth, scene.camera, jax.random.key(seed + 5))
    _, u0 = mono.initial_inputs(jax.random.key(seed + 6), x, chains, candidates=candidates)
    result = dgm.sample(mono.model, x, method="chmc", n_chains=chains, n_warmup=warmup, n_samples=samples,
                        seed=seed + 7, initial_positions=u0, progress=progress)
    fit = noise_fit(mono, result)
    order = [int(c) for c in np.argsort(np.abs(np.log(fit)))]
    last = result.n_draws - 1
    picks = [(c, last) for c in order if abs(np.log(fit[c])) <= np.log(2.0)][:3]
    spread = np.linspace(result.n_draws // 2, last, 3).astype(int)
    for d in spread[::-1]:
        if len(picks) < 3 and (order[0], int(d)) not in picks:
            picks.append((order[0], int(d)))
    pos = position_draws(mono, result)
    return dict(x=x, result=result, truth=scene.truth, samples=np.stack([pos[c, d] for c, d in picks]),
                picks=picks, fit=fit)


def noise_fit(pm: PoseModel, result: dgm.Result) -> np.ndarray:
    """Per chain, the mean over draws of ``mean(v^2)``, the squared observation-noise inputs: about 1 in the
    posterior's main mode; much larger for a chain stuck in a poor local fit whose noise absorbs the mismatch."""
    v = np.asarray(result.inputs).reshape(result.n_chains, result.n_draws, -1)[..., pm.n_parameters:]
    return np.mean(v * v, axis=(1, 2))


def run_experiment(*, scenes: int, runs: int, warmup: int, samples: int, seed: int = 0, mono_chains: int = 3,
                   mono_samples: int = 150, candidates: int = 64, noise_scale: float = NOISE_SCALE,
                   progress: bool = True, out: Optional[Path] = None, checkpoint: Optional[Path] = None,
                   chmc_method: str = "chmc") -> dict:
    """Everything Figure 5 needs; samples saved to ``out`` as NetCDF."""
    t0 = time.perf_counter()
    with dgm.float64():
        binocular, mono = build_models(checkpoint, noise_scale)
        cases = make_scenes(binocular, scenes, seed)
        for i, scene in enumerate(cases):
            if progress:
                print(f"\n== {scene.label}: binocular, {binocular.n_observed} observed coordinates, "
                      f"{binocular.model.input_dim} inputs ==")
            run_scene(binocular, scene, runs=runs, warmup=warmup, samples=samples, seed=seed + 100 * i,
                      progress=progress, candidates=candidates, chmc_method=chmc_method)
            if out is not None:
                for m in ("chmc", "hmc"):
                    getattr(scene, m).save(Path(out) / f"samples_scene{i}_{m}.nc")
        if progress:
            print("\n== monocular (scene 0's pose, one camera) ==")
        monocular = run_monocular(mono, cases[0], chains=mono_chains, warmup=warmup, samples=mono_samples,
                                  seed=seed, progress=progress, candidates=candidates)
        if out is not None:
            monocular["result"].save(Path(out) / "samples_monocular_chmc.nc")
        summaries = [summary(binocular, s) for s in cases]
    return dict(model=binocular, mono=mono, scenes=cases, summaries=summaries, monocular=monocular,
                seconds=time.perf_counter() - t0,
                settings=dict(scenes=scenes, runs=runs, warmup=warmup, samples=samples, seed=seed,
                              mono_chains=mono_chains, mono_samples=mono_samples, candidates=candidates,
                              noise_scale=binocular.noise_scale))


def table_rows(experiment: dict) -> list[dict]:
    rows = []
    for scene, s in zip(experiment["scenes"], experiment["summaries"]):
        for m in ("chmc", "hmc"):
            r = getattr(scene, m)
            iterations = int(r.settings["n_warmup"]) + r.n_draws * int(r.settings.get("thin", 1))
            final = s[m]["final"]
            rows.append(dict(scene=scene.label, method=m, time=s["end"], iterations=iterations,
                             ms=1e3 * r.wall_time / r.n_chains / iterations, acceptance=float(r.acceptance_rate),
                             step=float(np.mean(r.step_size)), rmse=float(np.mean(final)),
                             se=float(np.std(final, ddof=1) / np.sqrt(final.size)) if final.size > 1 else np.nan,
                             ratio=s["ratio"]))
    return rows
