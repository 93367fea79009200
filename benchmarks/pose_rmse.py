"""Human pose (Appendix E, Figure 5a): RMSE of the posterior-mean 3-D pose, constrained HMC vs HMC, equal wall time.

Side by side in one run, single-threaded XLA/BLAS (set below, before JAX starts). The binocular scenes of ``dgm pose``
(drawn from the prior, seed 0); per scene ``--runs`` independent runs per method from shared prior draws; constrained
HMC runs ``--warmup`` + ``--samples`` iterations per run and HMC as many iterations as fit in the same time (measured
per-iteration cost ratio). Prints, per scene, each method's RMSE (m, per coordinate, 17 non-root points; mean +- s.e.
over runs) of the running posterior mean at the common final time per run, and the ratio.

Target (issue 12): constrained HMC's RMSE <= 1/3 of HMC's on every binocular scene at the same wall time.
Anchor (Graham's thesis, the same experiment at ~440 s per run): constrained HMC 0.016 / 0.020 m vs HMC 0.106 /
0.042 m on two scenes.

    python benchmarks/pose_rmse.py [--scenes 3] [--runs 10] [--warmup 100] [--samples 300] [--candidates 64]
                                    [--noise-scale 0.001]
"""

import os

from dgm.threads import configure_cpu_threads  # noqa: E402  (before NumPy/JAX; keeps the user's own flags)

configure_cpu_threads()

import argparse  # noqa: E402

import numpy as np  # noqa: E402

import dgm  # noqa: E402
from dgm.experiments.pose import experiment as ex  # noqa: E402
from dgm.models.pose.model import NOISE_SCALE  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=3)
    parser.add_argument("--runs", type=int, default=ex.DEFAULTS["runs"])
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", type=int, nargs="+", default=None, help="run only these scene indices")
    parser.add_argument("--candidates", type=int, default=ex.DEFAULTS["candidates"],
                        help="best of this many prior draws per run, shared by both methods (1: plain prior draws)")
    parser.add_argument("--noise-scale", type=float, default=NOISE_SCALE)
    parser.add_argument("--chmc-method", choices=list(ex.CHMC_METHODS), default="chmc")
    parser.add_argument("--budgets", type=float, nargs="+", default=[1.0],
                        help="time budgets per run in units of the time of --warmup + --samples constrained-HMC "
                             "iterations: one run long enough for the largest, each method's RMSE of its running "
                             "mean read at each budget (the same chains a shorter run would have drawn)")
    args = parser.parse_args()
    base_iterations = args.warmup + args.samples
    longest = max(args.budgets)
    if longest > 1:
        args.samples = int(round(longest * base_iterations)) - args.warmup

    with dgm.float64():
        model, _ = ex.build_models(noise_scale=args.noise_scale)
        scenes = ex.make_scenes(model, args.scenes, args.seed)
        ratios = []
        print(f"single-threaded XLA; noise scale {args.noise_scale}; {args.runs} runs per method from the best of "
              f"{args.candidates} prior draws each (shared); {args.chmc_method} {args.warmup} + {args.samples} "
              "iterations per run, HMC the same wall time\n")
        print(f"{'scene':<9}{'time/run s':>11}{'chmc ms/it':>11}{'hmc ms/it':>10}{'RMSE chmc (m)':>18}"
              f"{'RMSE hmc (m)':>18}{'ratio':>7}")
        for i, scene in enumerate(scenes):
            if args.only is not None and i not in args.only:
                continue
            ex.run_scene(model, scene, runs=args.runs, warmup=args.warmup, samples=args.samples,
                         seed=args.seed + 100 * i, progress=False, candidates=args.candidates,
                         chmc_method=args.chmc_method)
            s = ex.summary(model, scene)
            ms = {m: 1e3 * getattr(scene, m).wall_time / args.runs / (
                int(getattr(scene, m).settings["n_warmup"]) + getattr(scene, m).n_draws
                * int(getattr(scene, m).settings.get("thin", 1))) for m in ("chmc", "hmc")}
            cell = {m: f"{np.mean(s[m]['final']):.4f} +- {np.std(s[m]['final'], ddof=1) / np.sqrt(args.runs):.4f}"
                    for m in ("chmc", "hmc")}
            ratios.append(s["ratio"])
            print(f"{scene.label:<9}{s['end']:>11.1f}{ms['chmc']:>11.2f}{ms['hmc']:>10.3f}{cell['chmc']:>18}"
                  f"{cell['hmc']:>18}{s['ratio']:>7.3f}", flush=True)
            print(f"{'':<9}per run: chmc {np.round(s['chmc']['final'], 4).tolist()}, "
                  f"hmc {np.round(s['hmc']['final'], 4).tolist()}", flush=True)
            curve = s["chmc"]["mean"] / s["hmc"]["mean"]  # ratio of the mean RMSEs along the common time grid
            marks = [int(round(f * (len(curve) - 1))) for f in (0.25, 0.5, 0.75, 1.0)]
            print(f"{'':<9}ratio along the run: " + ", ".join(f"{curve[k]:.3f} at {s['grid'][k]:.1f} s"
                                                          for k in marks), flush=True)
            if len(args.budgets) > 1 or longest > 1:
                per_iteration = ms["chmc"] / 1e3
                cells = []
                for budget in args.budgets:
                    t = budget * base_iterations * per_iteration
                    at = {m: np.nanmean(ex.on_grid(*ex.rmse_curve(model, getattr(scene, m), scene.truth),
                                                   np.array([t]))) for m in ("chmc", "hmc")}
                    cells.append(f"{budget:g}x ({t:.1f} s): chmc {at['chmc']:.4f}, hmc {at['hmc']:.4f}, ratio "
                                 f"{at['chmc'] / at['hmc']:.3f}")
                print(f"{'':<9}budgets: " + "; ".join(cells), flush=True)
    worst = max(ratios)
    print(f"\nworst ratio {worst:.3f}: target (<= 1/3 on every scene) {'met' if worst <= 1 / 3 else 'NOT met'}")


if __name__ == "__main__":
    main()
