"""Human pose (Appendix E): BlackJAX NUTS on the hierarchical density, for context next to ``pose_rmse.py``.

Not the issue's baseline (HMC with N_s ~ U{4..8}); NUTS's trajectories grow with the posterior's widest scale over
the tiny step that the observation noise forces. Same scenes and the same screened starts as ``dgm pose`` (best of 64
prior draws per run); per scene ``--runs`` runs of ``n`` iterations (a quarter warm-up), ``n`` chosen by a short pilot
so that a run takes about ``--budget`` seconds at the pilot's cost per iteration (trees grow after warm-up, so runs
take longer than that). Prints each run's RMSE (m, per coordinate, 17 non-root points) of the running posterior mean
at 3 s, 10 s and the end of the run. Single-threaded XLA/BLAS (set below).

    python benchmarks/pose_nuts.py [--scenes 0 1 2] [--runs 10] [--budget 2.0]
"""


from dgm.threads import configure_cpu_threads  # noqa: E402  (before NumPy/JAX; keeps the user's own flags)

configure_cpu_threads()

import argparse  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

import dgm  # noqa: E402
from dgm.experiments.pose import experiment as ex  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--budget", type=float, default=2.0, help="seconds per run aimed at (see the docstring)")
    args = parser.parse_args()
    print("single-threaded XLA; BlackJAX NUTS on the hierarchical density, starts as dgm pose\n")
    with dgm.float64():
        pm, _ = ex.build_models()
        scenes = ex.make_scenes(pm, max(args.scenes) + 1, 0)
        for i in args.scenes:
            scene = scenes[i]
            seed = 100 * i  # dgm pose's seed for scene i, so the starts are the same
            u1, _ = pm.initial_inputs(jax.random.fold_in(jax.random.key(seed), 17), scene.x, args.runs,
                                      candidates=ex.DEFAULTS["candidates"])
            pilot = dgm.sample(pm.conditional_model, scene.x, method="nuts", noise_scale=pm.noise_scale,
                               n_chains=args.runs, n_warmup=50, n_samples=50, seed=seed + 3, initial_positions=u1,
                               progress=False)
            n = max(8, int(args.budget / (pilot.wall_time / args.runs / 100)))
            result = dgm.sample(pm.conditional_model, scene.x, method="nuts", noise_scale=pm.noise_scale,
                                n_chains=args.runs, n_warmup=n // 4, n_samples=n - n // 4, seed=seed + 4,
                                initial_positions=u1, progress=False)
            times, rmse = ex.rmse_curve(pm, result, scene.truth)
            print(f"{scene.label}: {n} iterations per run, {1e3 * result.wall_time / args.runs / n:.2f} ms each, "
                  f"{times[-1]:.1f} s per run; step sizes {np.round(np.atleast_1d(result.step_size), 5).tolist()}")
            for t in (3.0, 10.0, float(times[-1])):
                at = ex.on_grid(times, rmse, np.array([t]))[:, 0]
                mean = "no draws yet (warm-up)" if np.isnan(at).all() else f"mean {np.nanmean(at):.4f}"
                print(f"  at {t:.1f} s per run: {mean}; per run {np.round(at, 4).tolist()}", flush=True)


if __name__ == "__main__":
    main()
