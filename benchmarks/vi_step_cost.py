#!/usr/bin/env python
"""Cost of one training step of each MCMC-in-VI objective relative to the plain VAE's, measured side by side in one
run: MetVAE (K MetFlow kernels), L-MCVAE (K Langevin steps), A-MCVAE (K MALA steps), with the VAE, IWAE and HVAE
rows of ``dgm vae-benchmark`` for reference.

Every model is the same ``dgm vae-benchmark`` architecture (Bernoulli VAE, MLP widths ``--hidden``, latent
``--latent-dim``) and the same compiled epoch (:func:`dgm.vae.objective_training.build_epoch`: Adam on minibatches of 100
in one ``lax.scan``) over ``--train-size`` binarised images, so one epoch is ``train_size / 100`` training steps.
After one compiling epoch per model the epochs are timed in interleaved rounds (one epoch of every model per round,
in turn, so that a change in machine load hits all alike); reported: the median over rounds of each model's time
per step and of its ratio to the VAE's in the same round, the best (minimum) time per step and the ratio of the
best times (robust on a loaded machine), and the count of decoder passes per example a step makes (forward; each
transition also differentiates the decoder in ``z``).

Threads: single-threaded XLA/BLAS (``dgm.threads.configure_cpu_threads``, set before JAX is imported; printed).

    python benchmarks/vi_step_cost.py [--models vae,iwae5,hvae5,metvae5,lmcvae5,lmcvae10,amcvae3,amcvae5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dgm.threads import configure_cpu_threads  # noqa: E402

THREADS = configure_cpu_threads()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from dgm.vae import VAEConfig  # noqa: E402
from dgm.datasets import load_binarised  # noqa: E402
from dgm.vae.objective_training import build_epoch  # noqa: E402
from dgm.vae.registry import make_objective  # noqa: E402

DEFAULT_MODELS = "vae,iwae5,hvae5,metvae5,lmcvae5,lmcvae10,amcvae3,amcvae5"


def decoder_passes(model: str) -> str:
    """Forward decoder evaluations per example and step (``K + 1`` for K transitions: the target at every point)."""
    k = re.search(r"(\d+)", model)
    k = int(k.group(1)) if k else (5 if model.startswith("metvae") else 1)
    if model == "vae":
        return "1"
    if model.startswith("iwae"):
        return f"{k}"
    return f"{k + 1}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--models", default=DEFAULT_MODELS, help="comma-separated registered model names")
    p.add_argument("--rounds", type=int, default=3, help="timed epochs per model (interleaved)")
    p.add_argument("--train-size", type=int, default=2000, help="training images per epoch (steps = size / 100)")
    p.add_argument("--dataset", default="auto", choices=["auto", "mnist", "mnist_5k", "digits"])
    p.add_argument("--latent-dim", type=int, default=20)
    p.add_argument("--hidden", default="200,200")
    args = p.parse_args(argv)
    print(f"threads: {THREADS}")
    train, _, _, _, name = load_binarised(args.dataset, train_size=args.train_size, valid_size=1, test_size=1)
    config = VAEConfig(data_dim=train.shape[1], latent_dim=args.latent_dim,
                       hidden=tuple(int(w) for w in args.hidden.split(",")), likelihood="bernoulli")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if models[0] != "vae":
        models = ["vae"] + [m for m in models if m != "vae"]
    xs = jnp.asarray(train)
    n_steps = xs.shape[0] // 100
    state = {}
    for m in models:
        run, params, opt, _ = build_epoch(make_objective(m, config, jax.random.key(1)), config, xs.shape[0])
        t0 = time.perf_counter()
        params, opt, value = run(params, opt, xs, 0)
        value.block_until_ready()
        print(f"{m}: first epoch (with compilation) {time.perf_counter() - t0:.1f} s, bound {float(value):.1f}",
              flush=True)
        state[m] = [run, params, opt]
    times = {m: [] for m in models}
    for r in range(args.rounds):
        for m in models:
            run, params, opt = state[m]
            t0 = time.perf_counter()
            params, opt, value = run(params, opt, xs, r + 1)
            value.block_until_ready()
            times[m].append((time.perf_counter() - t0) / n_steps)
            state[m] = [run, params, opt]
        print(f"round {r + 1}: " + ", ".join(f"{m} {1e3 * times[m][-1]:.1f} ms/step" for m in models), flush=True)
    base = np.asarray(times["vae"])
    print(f"\n{name}: {xs.shape[0]} images, batch 100, latent {args.latent_dim}, widths {args.hidden}; "
          f"median over {args.rounds} interleaved rounds")
    print(f"{'model':<10}{'ms/step':>9}{'x VAE':>8}{'best ms/step':>14}{'x VAE (best)':>14}{'decoder passes':>16}")
    for m in models:
        ratio = float(np.median(np.asarray(times[m]) / base))
        best = float(np.min(times[m]))
        print(f"{m:<10}{1e3 * np.median(times[m]):>9.1f}{ratio:>8.2f}{1e3 * best:>14.1f}"
              f"{best / float(np.min(base)):>14.2f}{decoder_passes(m):>16}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
