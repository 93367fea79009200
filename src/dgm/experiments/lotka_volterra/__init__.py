"""``dgm lotka-volterra``: the paper's section-6 experiment (constrained HMC against ABC, Figure 1).

The science is in :mod:`dgm.experiments.lotka_volterra.experiment`; this module is its command-line interface
(:mod:`dgm.experiments` describes the convention).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dgm.experiments.lotka_volterra.experiment import CHMC_PRESETS, describe_preset
from dgm.experiments.options import require_at_least

NAME = "lotka-volterra"
HELP = "the paper's section-6 experiment: constrained HMC against ABC, Figure 1"
DESCRIPTION = (
    "Infer the four parameters of the stochastic Lotka-Volterra model from the original experiment's 100 observed "
    "populations with constrained HMC and ABC baselines. Prints a table (posterior mean ± sd of each z_i, bulk ESS, "
    "R-hat, ESS per second, run time, acceptance) and writes samples (ArviZ NetCDF), fig1a_trajectories.png, "
    "fig1b_marginals.png, fig1c_ess_per_second.png and report.md to --out. The default run takes about ten minutes "
    "on two cores; scale it with --samples, --abc-samples and --abc-simulations."
)
PRESETS = {
    "quick": {"warmup": 100, "samples": 300, "abc_samples": 2000, "abc_thin": 25, "abc_simulations": 100_000},
    "default": {"chains": 4, "warmup": 200, "samples": 2000, "abc_samples": 5000, "abc_thin": 200,
                "abc_simulations": 1_000_000},
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--chains", type=int, help="chains per method (run in parallel)")
    p.add_argument("--warmup", type=int, help="warm-up iterations per chain (discarded)")
    p.add_argument("--samples", type=int, help="constrained-HMC draws kept per chain")
    p.add_argument("--abc-samples", type=int,
                   help="draws kept per chain for the ABC MCMC methods (each after --abc-thin iterations)")
    p.add_argument("--abc-thin", type=int,
                   help="iterations per kept draw for ABC slice / ABC-MCMC (they mix slowly; thinning keeps files "
                        "small)")
    p.add_argument("--abc-simulations", type=int, help="simulation budget of ABC rejection")
    p.add_argument(
        "--methods", default="chmc,abc-ss-100,abc-ss-10",
        help="comma-separated: chmc, abc-ss-EPS (pseudo-marginal slice, uniform kernel), abc-ssg-EPS (Gaussian "
             "kernel), abc-mcmc-EPS, abc-hmc-EPS (HMC with Gaussian kernel), abc-reject-EPS (rejection)",
    )
    p.add_argument("--preset", choices=sorted(CHMC_PRESETS), default="paper",
                   help="constrained-HMC settings: 'paper' = " + describe_preset("paper") + " (the original "
                        "experiment); 'adaptive' = " + describe_preset("adaptive") + " (with --warmup 0 the step "
                        "size comes from BlackJAX's find_reasonable_step_size heuristic; the report records it)")
    p.add_argument("--step", choices=["semi-implicit", "explicit"], default="semi-implicit",
                   help="Euler-Maruyama step: the original code's semi-implicit one (reproduces its data) or the "
                        "textbook explicit one")
    saving = p.add_mutually_exclusive_group()
    saving.add_argument("--checkpoint", type=Path, metavar="DIR",
                        help="write each sampling run's complete state and its draws to DIR/<method>/ as it goes "
                             "(atomic, checksummed), so that a killed run can be continued with --resume DIR")
    saving.add_argument("--resume", type=Path, metavar="DIR",
                        help="continue the runs checkpointed in DIR with the same options: finished methods are "
                             "loaded, an interrupted one goes on from its last checkpoint (draws bit-identical to an "
                             "uninterrupted run), methods not yet started start")
    p.add_argument("--checkpoint-every", type=int, default=100, metavar="N",
                   help="iterations between checkpoints (rounded to chunks of 100)")


def run(args: argparse.Namespace) -> int:
    from dgm.experiments.lotka_volterra.experiment import (
        PARAMETER_NAMES, figures, parse_methods, run_experiment, table_rows, write_report,
    )
    from dgm.reports import text_table

    specs = parse_methods(args.methods)
    require_at_least(args, 1, "chains", "samples", "abc_samples", "abc_thin", "abc_simulations")
    require_at_least(args, 0, "warmup")
    require_at_least(args, 1, "checkpoint_every")
    args.out.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "checkpoint", "resume", "command_line")}
    settings["preset_values"] = CHMC_PRESETS[args.preset]
    results = run_experiment(
        specs, chains=args.chains, warmup=args.warmup, samples=args.samples, abc_samples=args.abc_samples,
        abc_thin=args.abc_thin, abc_simulations=args.abc_simulations, seed=args.seed, preset=args.preset,
        step=args.step, progress=not args.no_progress, out=args.out, checkpoint=args.checkpoint,
        resume=args.resume, checkpoint_every=args.checkpoint_every,
    )
    rows = table_rows(results)
    print("\n" + text_table(rows, PARAMETER_NAMES))
    figure_paths = figures(results, args.out, step=args.step, seed=args.seed)
    report = write_report(results, args.out, args.command_line, settings, figure_paths)
    samples = sorted(f"samples_{label}.nc" for label in results if (args.out / f"samples_{label}.nc").exists())
    written = [report.name] + [p.name for p in figure_paths.values()] + samples
    print(f"\nwrote {', '.join(written)} to {args.out}")
    return 0
