"""``dgm hvae-gaussian``: the Hamiltonian-VAE paper's Gaussian-model experiment (parameter error against dimension).

The science, table and figure are in :mod:`dgm.experiments.hvae_gaussian.experiment`; this module is the
command-line interface (:mod:`dgm.experiments` describes the convention).
"""

from __future__ import annotations

import argparse

from dgm.experiments.hvae_gaussian.experiment import DEFAULTS, DIMS, METHODS, QUICK
from dgm.experiments.options import integer_list, name_list

NAME = "hvae-gaussian"
HELP = "the Hamiltonian-VAE paper's Gaussian-model experiment: parameter error against dimension"
DESCRIPTION = (
    "z ~ N(0, I_d), x_i | z ~ N(z + Delta, diag sigma^2), N observations: learn Delta and sigma by maximising the "
    "ELBO of HVAE (K = 1, 10, with/without tempering), planar flows (K = 1, 30) and mean-field VB; print the median "
    "error ||Delta_hat - Delta||^2 + ||sigma_hat - sigma||^2 per method and d and write hvae_gaussian.png and "
    "hvae_gaussian.json to --out (same as benchmarks/hvae_gaussian.py). --paper runs the paper's size (10 data "
    "sets, 30,000 RMSProp iterations at learning rate 1e-3: hours)."
)
PRESETS = {
    "quick": {"dims": ",".join(map(str, QUICK["dims"])), "datasets": QUICK["n_datasets"],
              "iterations": QUICK["iterations"]},
    "default": {"dims": ",".join(map(str, DIMS)), "datasets": DEFAULTS["n_datasets"],
                "iterations": DEFAULTS["iterations"], "learning_rate": DEFAULTS["learning_rate"],
                "samples": DEFAULTS["samples"], "n_obs": DEFAULTS["n_obs"]},
    "paper": {"dims": ",".join(map(str, DIMS)), "datasets": 10, "iterations": 30_000, "learning_rate": 1e-3},
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dims", help="comma-separated dimensions d")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated: hvae-K, hvae-K-t, nf-K, vb")
    p.add_argument("--datasets", type=int, help="data sets per d")
    p.add_argument("--iterations", type=int, help="RMSProp iterations per method (the paper: 30,000)")
    p.add_argument("--learning-rate", type=float, help="RMSProp learning rate (the paper: 1e-3)")
    p.add_argument("--samples", type=int, help="draws per Monte-Carlo ELBO estimate")
    p.add_argument("--n-obs", type=int, help="observations per data set")


def run(args: argparse.Namespace) -> int:
    from dgm.experiments.hvae_gaussian import experiment as hg

    dims = integer_list(args.dims, "--dims")
    if not dims or min(dims) < 1:
        raise ValueError(f"--dims must be positive integers, got {args.dims!r}")
    result = hg.run_experiment(dims=dims, methods=name_list(args.methods), n_datasets=args.datasets,
                               iterations=args.iterations, learning_rate=args.learning_rate, samples=args.samples,
                               n_obs=args.n_obs, seed=args.seed, progress=not args.no_progress)
    result["command"] = args.command_line
    paths = hg.write_outputs(result, args.out)
    print("\n" + hg.median_table(result))
    print(f"\nwrote {', '.join(p.name for p in paths)} to {args.out}")
    return 0
