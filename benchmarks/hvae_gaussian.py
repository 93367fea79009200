#!/usr/bin/env python
"""The Gaussian-model experiment of Caterini, Doucet & Sejdinovic (2018, section 5 of the paper): parameter error
``||Delta_hat - Delta||^2 + ||sigma_hat - sigma||^2`` against the dimension ``d`` for HVAE (K = 1, 10; with and without
the fixed quadratic tempering), a planar normalizing flow (K = 1, 30) and mean-field Gaussian VB, each learning
``(Delta, sigma)`` by maximising its own ELBO on N = 10,000 observations (:mod:`dgm.experiments.hvae_gaussian`).

The paper ran 30,000 RMSProp iterations at learning rate 1e-3 on 10 data sets per d; the default here is sized for
about ten minutes on 2 cores (most of it compilation: one program per method and dimension): 3 data sets per d,
2,000 RMSProp iterations at learning rate 1e-2, 10 draws per ELBO estimate.  Scale up with ``--iterations``,
``--datasets``, ``--learning-rate``.  ``--quick``: d in {1, 5, 25}, 2 data sets, 300 iterations.

Writes ``hvae_gaussian.png`` and ``hvae_gaussian.json`` to ``--out`` and prints the median error per method and d.
Threads: single-threaded XLA/BLAS (set before JAX is imported).

    python benchmarks/hvae_gaussian.py [--quick] [--dims 1 2 3 5 11 25 51 101 201 301] [--datasets 3]
        [--iterations 2000] [--learning-rate 0.01] [--out results/hvae-gaussian]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dgm.threads import configure_cpu_threads  # noqa: E402

THREADS = configure_cpu_threads()

from dgm.experiments.hvae_gaussian import experiment as hg  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dims", type=int, nargs="+", default=list(hg.DIMS), help="dimensions d")
    p.add_argument("--methods", nargs="+", default=list(hg.METHODS), help="hvae-K, hvae-K-t, nf-K, vb")
    p.add_argument("--datasets", type=int, default=hg.DEFAULTS["n_datasets"], help="data sets per d")
    p.add_argument("--iterations", type=int, default=hg.DEFAULTS["iterations"], 
                   help="RMSProp iterations (paper: 30,000)")
    p.add_argument("--learning-rate", type=float, default=hg.DEFAULTS["learning_rate"], 
                   help="RMSProp rate (paper: 1e-3)")
    p.add_argument("--samples", type=int, default=hg.DEFAULTS["samples"], help="draws per Monte-Carlo ELBO estimate")
    p.add_argument("--n-obs", type=int, default=hg.DEFAULTS["n_obs"], help="observations N per data set")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help=f"{hg.QUICK}")
    p.add_argument("--out", type=Path, default=Path("results/hvae-gaussian"))
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.dims, args.datasets = list(hg.QUICK["dims"]), min(args.datasets, hg.QUICK["n_datasets"])
        args.iterations = min(args.iterations, hg.QUICK["iterations"])
    print(f"threads: {THREADS}")
    t0 = time.perf_counter()
    result = hg.run_experiment(dims=args.dims, methods=args.methods, n_datasets=args.datasets,
                               iterations=args.iterations, learning_rate=args.learning_rate, samples=args.samples,
                               n_obs=args.n_obs, seed=args.seed, progress=not args.no_progress)
    result["seconds"] = time.perf_counter() - t0
    result["command"] = "python benchmarks/hvae_gaussian.py " + " ".join(sys.argv[1:] if argv is None else argv)
    paths = hg.write_outputs(result, args.out)
    print(hg.median_table(result))
    print(f"\n{result['seconds']:.0f} s; wrote {', '.join(p.name for p in paths)} to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
