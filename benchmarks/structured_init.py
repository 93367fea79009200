"""Initialisation time of a structured (Markov) model with no ``init``: linear in T (target: T = 500 -> 4000 <= 10x).

Model: a nonlinear, stable two-state Markov generator ``x_t = 0.9 x_{t-1} + 0.1 z1 tanh(W x_{t-1}) +
exp(0.2 z2) (v_t + 0.1 sin v_t)``, ``z = u1`` (L = 2), ``x_0 = 0``, declared with :func:`dgm.structure.markov_model`
and then stripped of its exact initialiser, so :func:`dgm.initialise.find_points_on_manifold` has to run Gauss-Newton
from standard-normal draws (the structured geometry's minimum-norm steps), check the declaration against the
generator and run the structured rank check. Observations: the generator at a seeded N(0, I) input.

Reported per T (4 points each): ``first`` = the first call (tracing + XLA compilation + run) and ``run`` = the best
of five further calls with other keys (the solver is cached per model, so this is run time alone). The ratio line
uses ``run``; ``first`` is printed beside it. With ``--dense-up-to T`` the dense solver (an N x N Gram matrix,
O(N^3) per step) is timed the same way for T up to that value, for comparison.

Threads: XLA and BLAS single-threaded (:mod:`dgm.threads`); float64.

    python benchmarks/structured_init.py [--steps 500,1000,2000,4000] [--points 4] [--dense-up-to 1000]
"""

from __future__ import annotations

from dgm.threads import configure_cpu_threads

threads = configure_cpu_threads()  # single-threaded XLA / BLAS, before JAX and NumPy load (the user's settings win)

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import dgm  # noqa: E402
from dgm.initialise import find_points_on_manifold  # noqa: E402
from dgm.structure import markov_model  # noqa: E402


def stable_markov_model(n_steps):
    W = jnp.array([[0.5, -0.3], [0.2, 0.4]])

    def step(x_prev, z, v):
        return 0.9 * x_prev + 0.1 * z[0] * jnp.tanh(W @ x_prev) + jnp.exp(0.2 * z[1]) * (v + 0.1 * jnp.sin(v))

    model = markov_model(step, np.zeros(2), n_steps, lambda u1: u1, 2, name=f"stable-markov-{n_steps}")
    return dataclasses.replace(model, init=None)  # no exact initialiser: Gauss-Newton from N(0, I) draws


def time_initialisation(model, x_obs, n_points, structured, repeats=5):
    times = []
    for key in jax.random.split(jax.random.PRNGKey(1), repeats + 1):
        start = time.perf_counter()
        positions = find_points_on_manifold(model, x_obs, key, n_points, structured=structured)
        times.append(time.perf_counter() - start)
    residual = float(np.max(np.abs(np.asarray(jax.vmap(model.generator)(jnp.asarray(positions))) - x_obs)))
    return times[0], min(times[1:]), residual


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", default="500,1000,2000,4000", help="comma-separated T values")
    parser.add_argument("--points", type=int, default=4, help="points on the manifold to find (chains)")
    parser.add_argument("--dense-up-to", type=int, default=1000, help="also time the dense solver for T <= this")
    args = parser.parse_args(argv)
    steps = [int(s) for s in args.steps.split(",")]
    print(f"threads: {threads}; jax {jax.__version__}, backend {jax.default_backend()}; {args.points} points\n")
    rows = []
    with dgm.float64():
        for T in steps:
            model = stable_markov_model(T)
            x_obs = np.asarray(model.generator(jax.random.normal(jax.random.PRNGKey(0), (model.input_dim,),
                                                                 jnp.float64)))
            first, run, residual = time_initialisation(model, x_obs, args.points, structured=True)
            dense = (np.nan, np.nan)
            if T <= args.dense_up_to:
                dense_first, dense_run, _ = time_initialisation(model, x_obs, args.points, structured=False, repeats=1)
                dense = (dense_first, dense_run)
            rows.append((T, first, run, residual) + dense)
            print(f"  T={T}: structured first {first:.2f} s, run {run:.3f} s; dense run {dense[1]:.3f} s", flush=True)
    print(f"\n{'T':>5} {'N':>6} {'first call s':>13} {'run s':>8} {'run vs T0':>10} {'max |g(u)-x|':>13} "
          f"{'dense first s':>14} {'dense run s':>12}")
    for T, first, run, residual, dense_first, dense_run in rows:
        print(f"{T:>5} {2 * T:>6} {first:>13.2f} {run:>8.3f} {run / rows[0][2]:>9.1f}x {residual:>13.1e} "
              f"{dense_first:>14.2f} {dense_run:>12.3f}")
    T0, T1 = rows[0][0], rows[-1][0]
    run_ratio, first_ratio = rows[-1][2] / rows[0][2], rows[-1][1] / rows[0][1]
    verdict = "OK" if run_ratio <= 10 else "ABOVE TARGET"
    print(f"\ninitialisation run time T={T0} -> T={T1}: {run_ratio:.1f}x (target <= 10x, linear "
          f"{T1 / T0:.0f}x): {verdict}; first call (compile + run): {first_ratio:.1f}x")


if __name__ == "__main__":
    main()
