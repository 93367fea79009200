"""A diagonal mass matrix on the manifold: ESS/s with and without windowed metric adaptation on a badly scaled model.

The model is :func:`dynamic_vs_static.scaled_model` with input scales spanning 10^3 (10 inputs ``u_i ~ N(0, s_i^2)``,
``s`` from 0.03 to 30, one mildly nonlinear constraint; dense geometry). Each kernel (``chmc`` with
``N_s ~ U{4..8}``, ``chmc-dynamic``) runs with the identity metric and with ``metric="diagonal"`` (adapted in
Stan-style windows during the same warm-up), same seed and iterations, side by side in this run. ESS/s is the minimum
over the inputs of ArviZ's bulk ESS divided by warm-up + sampling time (compilation excluded). Run as a script::

    python benchmarks/metric_adaptation.py            # about 3 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dgm.threads import configure_cpu_threads  # noqa: E402

THREADS = configure_cpu_threads()

import numpy as np  # noqa: E402

from dynamic_vs_static import _bulk_ess, _failures, scaled_model  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--span", type=float, default=1000.0, help="ratio of the largest to the smallest input scale")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    import dgm

    print("threads: " + ", ".join(f"{k}={v}" for k, v in THREADS.items()))
    model = scaled_model(10, args.span)
    rows = []
    for method in ("chmc", "chmc-dynamic"):
        for metric in ("identity", "diagonal"):
            result = dgm.sample(model, np.array([1.0]), method=method, metric=metric, geometry="dense",
                                n_chains=args.chains, n_warmup=args.warmup, n_samples=args.samples, seed=args.seed,
                                progress=False)
            ess = _bulk_ess(result.inputs)
            rows.append((f"{method}, metric={metric}", result, ess))
    print(f"\nScales spanning {args.span:g}x ({model.input_dim} inputs), {args.chains} chains x ({args.warmup} warm-up + "
          f"{args.samples}); ESS/s = min bulk ESS over inputs / (warm-up + sampling time)")
    print(f"{'sampler':34s} {'time (s)':>8s} {'step':>7s} {'steps/it':>8s} {'failed':>6s} {'ESS min':>8s} "
          f"{'ESS max':>8s} {'ESS/s':>9s} {'vs identity':>11s}")
    base = {}
    for name, result, ess in rows:
        method = name.split(",")[0]
        ess_per_sec = ess.min() / result.wall_time
        base.setdefault(method, ess_per_sec)
        print(f"{name:34s} {result.wall_time:8.2f} {np.median(result.step_size):7.3f} "
              f"{np.mean(result.stats['n_steps']):8.1f} {_failures(result):6d} {ess.min():8.0f} "
              f"{ess.max():8.0f} {ess_per_sec:9.1f} {ess_per_sec / base[method]:10.1f}x")


if __name__ == "__main__":
    main()
