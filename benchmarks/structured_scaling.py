"""Time per constrained-HMC iteration on Lotka–Volterra: structured (linear-time) vs dense geometry, T steps.

Threads: everything runs single-threaded (:func:`dgm.threads.configure_cpu_threads`, before JAX is imported): XLA's
intra-op thread pool, Eigen, OpenMP and the BLAS/LAPACK pools. The comparison is about algorithmic cost (O(T) vs O(T^3)); multithreading would
help the dense geometry's large matrix products far more than the structured geometry's many small operations, make
timings depend on the machine's core count and load (the development machine has 2 cores shared with others), and
distort the scaling ratios. Override by exporting XLA_FLAGS / *_NUM_THREADS yourself before running.

For each T in {50, 100, 200, 400, 800}: observations simulated from the true parameters (seeded, as in the paper's
experiment but T steps), a start on the manifold from the model's exact initialiser, one jitted CHMC transition with
the same step size and a fixed number of leapfrog steps for both geometries; compile time excluded; the time per
iteration is the median over repeats of a few iterations each (the chain keeps moving between iterations).

Usage:  python benchmarks/structured_scaling.py [--quick] [--steps T1,T2,...] [--repeats R] [--iterations I]
"""

from __future__ import annotations

from dgm.threads import configure_cpu_threads

THREADS = configure_cpu_threads()  # single-threaded XLA / BLAS, before JAX and NumPy load (the user's settings win)

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from dgm.geometry.dense import DenseGeometry  # noqa: E402
from dgm.geometry.structured import StructuredGeometry  # noqa: E402
from dgm.integrator import IntegratorSettings  # noqa: E402
from dgm.kernels import chmc  # noqa: E402
from dgm.models import lotka_volterra as lv  # noqa: E402


def time_per_iteration(geometry, u0, step_size, n_leapfrog, repeats, iterations, seed=0):
    kernel = chmc.build_kernel(geometry, IntegratorSettings(), (n_leapfrog, n_leapfrog))

    def run(key, state):
        def body(state, k):
            state, info = kernel(k, state, step_size)
            return state, (info.is_accepted, info.failure)

        return jax.lax.scan(body, state, jax.random.split(key, iterations))

    state = jax.jit(lambda u: chmc.init(u, geometry))(u0)
    key = jax.random.PRNGKey(seed)
    t0 = time.perf_counter()
    compiled = jax.jit(run).lower(key, state).compile()
    compile_time = time.perf_counter() - t0
    times, accepted, failures = [], [], []
    for r in range(repeats):
        key, sub = jax.random.split(key)
        t0 = time.perf_counter()
        state, (acc, fail) = compiled(sub, state)
        jax.block_until_ready(state)
        times.append((time.perf_counter() - t0) / iterations)
        accepted.append(np.asarray(acc))
        failures.append(np.asarray(fail))
    return statistics.median(times), compile_time, float(np.mean(accepted)), int(np.sum(np.concatenate(failures) != 0))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="T in {50, 100, 200}, 2 repeats of 2 iterations")
    parser.add_argument("--steps", type=str, default=None, help="comma-separated T values")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--iterations", type=int, default=None, help="CHMC iterations per timed repeat")
    parser.add_argument("--step-size", type=float, default=0.05)
    parser.add_argument("--leapfrog", type=int, default=5, help="leapfrog steps per iteration (fixed)")
    parser.add_argument("--no-dense", action="store_true", help="time the structured geometry only")
    args = parser.parse_args(argv)
    steps = [50, 100, 200] if args.quick else [50, 100, 200, 400, 800]
    if args.steps:
        steps = [int(s) for s in args.steps.split(",")]
    repeats = args.repeats or (2 if args.quick else 5)
    iterations = args.iterations or (2 if args.quick else 3)
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, threads: {THREADS}")
    print(f"step size {args.step_size}, {args.leapfrog} leapfrog steps/iteration, median of {repeats} repeats x "
          f"{iterations} iterations; compile excluded\n")
    rows = []
    with jax.enable_x64(True):
        for T in steps:
            model = lv.lotka_volterra(n_steps=T, structured=True)  # observations: lv.default_observations(n_steps=T) (seeded)
            x_obs = jnp.asarray(lv.default_observations(n_steps=T))
            u0 = model.init(jax.random.PRNGKey(T), x_obs)
            structured = StructuredGeometry(model, x_obs)
            t_s, c_s, a_s, f_s = time_per_iteration(structured, u0, args.step_size, args.leapfrog, repeats, iterations)
            if args.no_dense:
                t_d = c_d = a_d = np.nan
                f_d = 0
            else:
                dense = DenseGeometry(model.generator, x_obs, model.log_input_density)
                t_d, c_d, a_d, f_d = time_per_iteration(dense, u0, args.step_size, args.leapfrog, repeats, iterations)
            rows.append((T, t_s, t_d, c_s, c_d, a_s, a_d, f_s, f_d))
            print(f"  T={T}: structured {t_s * 1e3:.2f} ms, dense {t_d * 1e3:.2f} ms", flush=True)
    t50 = rows[0][1]
    print(f"\n{'T':>5} {'N':>5} {'structured ms/it':>17} {'vs T0':>7} {'dense ms/it':>12} {'dense/struct':>13} "
          f"{'acc s/d':>9} {'fail s/d':>9} {'compile s/d (s)':>16}")
    for T, t_s, t_d, c_s, c_d, a_s, a_d, f_s, f_d in rows:
        print(f"{T:>5} {2 * T:>5} {t_s * 1e3:>17.2f} {t_s / t50:>6.1f}x {t_d * 1e3:>12.1f} {t_d / t_s:>12.1f}x "
              f"{a_s:>4.2f}/{a_d:<4.2f} {f_s:>4d}/{f_d:<4d} {c_s:>7.1f}/{c_d:<7.1f}")
    T_last = rows[-1][0]
    print(f"\nstructured time growth T={rows[0][0]} -> T={T_last}: {rows[-1][1] / t50:.1f}x "
          f"(linear would be {T_last / rows[0][0]:.0f}x); dense/structured at T={T_last}: "
          f"{rows[-1][2] / rows[-1][1]:.1f}x")


if __name__ == "__main__":
    main()
