"""``dgm pose``: the human-pose experiment (Appendix E, Figure 5) and ``--train-prior``.

The science is in :mod:`dgm.experiments.pose.experiment`, figures and report in :mod:`dgm.experiments.pose.report`;
the generative model itself in :mod:`dgm.models.pose`.  This module is the command-line interface
(:mod:`dgm.experiments` describes the convention).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dgm.experiments.options import require_at_least
from dgm.experiments.pose.experiment import DEFAULTS, PAPER, QUICK
from dgm.models.pose.model import NOISE_SCALE

NAME = "pose"
HELP = "the paper's Appendix-E experiment: 3-D human pose and camera from 2-D joint projections, Figure 5"
DESCRIPTION = (
    "Draw scenes (pose from the learnt VAE prior over DeepMimic joint angles, log-normal bone lengths, camera "
    "position) from the prior with a fixed seed, observe the 18 skeleton points with two cameras (noise "
    "--noise-scale), and infer the 3-D scene with constrained HMC and with BlackJAX HMC on the hierarchical density "
    "of the non-noise inputs, several independent runs per method at equal wall-clock budget. Prints a table (time "
    "and iterations per run, acceptance, RMSE of the running posterior-mean 3-D positions in metres per coordinate at "
    "the common final time, its s.e., the constrained/HMC ratio) and writes fig5a_rmse.png (RMSE vs time, mean +- 3 "
    "s.e.), fig5b_monocular.png (true pose and three constrained-HMC samples given one camera, front and side views), "
    "samples_*.nc (ArviZ NetCDF), results.json and report.md to --out. --train-prior instead retrains the shipped "
    "pose prior. --paper runs the paper's size (tens of minutes)."
)
PRESETS = {"quick": dict(QUICK), "default": dict(DEFAULTS), "paper": dict(PAPER)}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scenes", type=int, help="binocular scenes drawn from the prior")
    p.add_argument("--runs", type=int,
                   help="independent runs (chains) per method and scene (the paper: 10)")
    p.add_argument("--warmup", type=int, help="constrained-HMC warm-up iterations per run")
    p.add_argument("--samples", type=int,
                   help="constrained-HMC draws per run; HMC runs as many iterations as fit in the same time")
    p.add_argument("--mono-chains", type=int, help="monocular (Fig 5b) chains")
    p.add_argument("--mono-samples", type=int, help="monocular draws per chain")
    p.add_argument("--candidates", type=int,
                   help="each run (both methods alike) starts from the best of this many prior draws by the "
                        "hierarchical density log N(u1; 0, I) + log N(x; f(u1), noise^2 I); 1 = a plain prior draw")
    p.add_argument("--chmc-method", choices=["chmc", "chmc-dynamic"], default="chmc",
                   help="'chmc': constrained HMC with N_s ~ U{4..8} steps of its own adapted size; 'chmc-dynamic': "
                        "trajectory length by the no-U-turn criterion")
    p.add_argument("--noise-scale", type=float, default=NOISE_SCALE,
                   help="observation-noise standard deviation in normalised image coordinates (the authors' notebook: "
                        "0.001, 0.6 mm at the person; larger values make HMC's job easier)")
    p.add_argument("--prior", type=Path, default=None,
                   help="pose-prior checkpoint (.eqx with its .json); default: the one shipped in the package")
    p.add_argument("--train-prior", action="store_true",
                   help="retrain the pose prior on the shipped DeepMimic angles (seed 0, deterministic) and write it "
                        "to --prior (default: the package's data/pose_prior.eqx), then stop")


def run(args: argparse.Namespace) -> int:
    if args.train_prior:
        return _train_prior(args)
    from dgm.experiments.pose import experiment as ex
    from dgm.experiments.pose.report import figures, text_table, write_report

    if not (args.noise_scale > 0 and args.noise_scale < float("inf")):
        raise ValueError(f"--noise-scale must be positive and finite, got {args.noise_scale}")
    require_at_least(args, 1, "scenes", "runs", "warmup", "samples", "mono_chains", "mono_samples", "candidates")
    if args.runs < 2:
        raise ValueError("--runs must be >= 2 (the figure shows +- 3 standard errors over runs)")
    args.out.mkdir(parents=True, exist_ok=True)
    experiment = ex.run_experiment(scenes=args.scenes, runs=args.runs, warmup=args.warmup, samples=args.samples,
                                   seed=args.seed, mono_chains=args.mono_chains, mono_samples=args.mono_samples,
                                   candidates=args.candidates, noise_scale=args.noise_scale,
                                   progress=not args.no_progress, out=args.out, checkpoint=args.prior,
                                   chmc_method=args.chmc_method)
    rows = ex.table_rows(experiment)
    print("\n" + text_table(rows))
    paths = figures(experiment, args.out)
    report = write_report(experiment, rows, args.out, args.command_line, paths)
    print(f"\nwrote {report.name}, {', '.join(p.name for p in paths.values())}, results.json and samples_*.nc "
          f"to {args.out}")
    return 0


def _train_prior(args) -> int:
    from dgm.models.pose import prior

    vae, history = prior.train_prior(progress=not args.no_progress)
    path = prior.save_prior(vae, history, args.prior)
    print(f"trained {len(history.train_objective)} epochs (best {history.best_epoch + 1}, validation ELBO "
          f"{history.valid_objective[history.best_epoch]:.2f}, {history.seconds:.0f} s); wrote {path}")
    return 0
