"""Observations per second: ``dgm.sample_many`` on a batch vs a Python loop of ``dgm.sample``, side by side.

``n_obs`` Lotka-Volterra data sets (the experiment's parameters, fresh noise per data set), each conditioned on with
constrained HMC (paper preset, structured geometry, ``n_chains`` chains, ``n_warmup`` + ``n_samples`` iterations).
Rows, all in this one process:

* ``loop``: ``for x in xs: dgm.sample(model, x, seed=...)`` — one compiled program reused (cached) for every call,
  one host loop, set-up and result building per observation;
* ``sample_many`` with ``chain_method="sequential"`` (the CPU default: ``lax.map`` over observations inside one
  program) and ``"vectorized"`` (``vmap`` over observations x chains).

Each is run once to compile (not timed) and then timed end to end (set-up + sampling + results); compile times are
printed apart. Thread configuration: single-threaded XLA / BLAS (``dgm.threads``), printed. Usage::

    python benchmarks/sample_many_throughput.py [--observations 16] [--chains 2] [--warmup 50] [--samples 100]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from dgm.threads import configure_cpu_threads  # noqa: E402  (before JAX starts)

THREADS = configure_cpu_threads()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--observations", type=int, default=16, help="data sets in the batch (default 16)")
    parser.add_argument("--chains", type=int, default=2, help="chains per observation (default 2)")
    parser.add_argument("--warmup", type=int, default=50, help="warm-up iterations (default 50)")
    parser.add_argument("--samples", type=int, default=100, help="kept iterations (default 100)")
    args = parser.parse_args(argv)

    import jax
    import numpy as np

    import dgm
    from dgm.models.lotka_volterra import TRUE_PARAMETERS, generator_fn, inputs_from_parameters, lotka_volterra
    from dgm.experiments.lotka_volterra.experiment import PAPER_PRESET

    import os

    print(f"threads: {THREADS}; cores: {len(os.sched_getaffinity(0))}; load average {os.getloadavg()}")
    model = lotka_volterra()
    with dgm.float64():
        u1 = inputs_from_parameters(jax.numpy.asarray(TRUE_PARAMETERS))
        noise = jax.random.normal(jax.random.PRNGKey(7), (args.observations, model.input_dim - 4))
        xs = np.asarray(jax.vmap(lambda v: generator_fn(jax.numpy.concatenate([u1, v])))(noise))
    common = dict(n_chains=args.chains, n_warmup=args.warmup, n_samples=args.samples, progress=False, **PAPER_PRESET)
    rows = []

    def loop():
        for i, x in enumerate(xs):
            dgm.sample(model, x, seed=jax.random.fold_in(jax.random.PRNGKey(0), i), **common)

    def many(method):
        return lambda: dgm.sample_many(model, xs, seed=0, chain_method=method, **common)

    with dgm.float64():
        for name, fn, warm in (("loop of dgm.sample", loop,
                                lambda: dgm.sample(model, xs[0], seed=0, **common)),
                               ("sample_many, sequential", many("sequential"), many("sequential")),
                               ("sample_many, vectorized", many("vectorized"), many("vectorized"))):
            t0 = time.perf_counter()
            warm()
            compile_and_first = time.perf_counter() - t0
            t0 = time.perf_counter()
            fn()
            seconds = time.perf_counter() - t0
            rows.append((name, compile_and_first, seconds))
    print(f"Lotka-Volterra, paper preset: {args.observations} observations x {args.chains} chains x "
          f"({args.warmup} + {args.samples}) iterations; timed after a first (compiling) call")
    print(f"{'':<26} {'first call s':>12} {'timed s':>8} {'obs/s':>7} {'vs loop':>8}")
    base = rows[0][2]
    for name, first, seconds in rows:
        print(f"{name:<26} {first:>12.2f} {seconds:>8.2f} {args.observations / seconds:>7.2f} "
              f"{base / seconds:>7.2f}x")


if __name__ == "__main__":
    main()
