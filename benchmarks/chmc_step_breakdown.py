"""Per-iteration cost of constrained HMC and its breakdown on the Lotka-Volterra generator (104 inputs, 100 outputs).

Prints the time of: the Jacobian; Jacobian + Cholesky of J J^T (the factor); the full point evaluation (factor +
potential + gradient) with the eq.-20 VJP identity and with autodiff through the Cholesky; one quasi-Newton position
projection; one momentum projection; one constrained leapfrog step; one whole transition. The headline ratio is one
leapfrog step over one (Jacobian + factorisation + gradient) evaluation (target <= 3).

    python benchmarks/chmc_step_breakdown.py [--n-inner 1] [--step-size 0.25]

The transition row averages over the distribution of N_s ~ U{4..8} (the paper preset's range): one jitted call runs
``--keys`` independent transitions from the same state with different keys (so different N_s and momenta) and the
time is divided by their number; the mean drawn N_s is printed beside it.

Threads: XLA and BLAS single-threaded (:func:`dgm.threads.configure_cpu_threads`, printed); float64 throughout.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dgm.threads import configure_cpu_threads

THREADS = configure_cpu_threads()  # single-threaded XLA / BLAS, before JAX and NumPy load (the user's settings win)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import best_time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import dgm  # noqa: E402
from dgm.geometry.base import project_momentum  # noqa: E402
from dgm.geometry.dense import DenseGeometry  # noqa: E402
from dgm.integrator import IntegratorSettings, integrate  # noqa: E402
from dgm.kernels import chmc  # noqa: E402
from dgm.models.lotka_volterra import default_observations, lotka_volterra  # noqa: E402
from dgm.experiments.lotka_volterra.experiment import PAPER_PRESET  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-inner", type=int, default=1, help="geodesic sub-steps per leapfrog step")
    parser.add_argument("--step-size", type=float, default=PAPER_PRESET["step_size"], help="integrator step size")
    parser.add_argument("--keys", type=int, default=64,
                        help="transitions (keys) averaged over for the N_s ~ U{lo..hi} row")
    args = parser.parse_args(argv)
    print(f"threads: {THREADS}; jax {jax.__version__}, backend {jax.default_backend()}")
    with dgm.float64():
        x_obs = jnp.asarray(default_observations())
        model = lotka_volterra(x_obs)
        u0 = jnp.asarray(dgm.initialise.find_points_on_manifold(model, x_obs, jax.random.PRNGKey(0), 1)[0])
        settings = IntegratorSettings(n_inner=args.n_inner, tol=1e-8, max_newton=50, reverse_check_tol=1e-4)
        geometry = DenseGeometry(model.generator, x_obs, model.log_input_density)
        point = jax.jit(geometry.point)(u0)
        momentum = project_momentum(geometry, point.factor, jax.random.normal(jax.random.PRNGKey(1), u0.shape))
        perturbed = u0 + args.step_size * momentum
        projection = jax.jit(lambda f, u: geometry.project_position(f, u, 1e-8, 50))
        iterations = int(projection(point.factor, perturbed).iterations)
        leapfrog = jax.jit(lambda pt, p: integrate(geometry, pt, p, args.step_size, 1, settings))
        status = int(leapfrog(point, momentum).status)
        assert status == 0, f"leapfrog step failed with status {status}; lower --step-size"
        lo, hi = PAPER_PRESET["n_steps"]
        kernel = chmc.build_kernel(geometry, settings, (lo, hi))

        @jax.jit
        def transitions(keys, state):  # independent transitions from one state: N_s and momentum vary with the key
            def one(carry, key):
                new, info = kernel(key, state, args.step_size)
                return carry + jnp.sum(new.position), info.num_integration_steps

            return jax.lax.scan(one, jnp.zeros(()), keys)

        keys = jax.random.split(jax.random.PRNGKey(3), args.keys)
        start = chmc.init(u0, geometry)
        drawn = jax.device_get(transitions(keys, start)[1])
        mean_steps = float(drawn.mean())
        point_time = {}
        for mode in ("vjp", "autodiff"):
            variant = DenseGeometry(model.generator, x_obs, model.log_input_density, log_det_gradient=mode)
            point_time[mode] = best_time(jax.jit(variant.point), u0)
        rows = [
            ("generator g(u)", best_time(jax.jit(model.generator), u0)),
            ("Jacobian J", best_time(jax.jit(geometry.jacobian), u0)),
            ("factor: J + chol(J J^T)", best_time(jax.jit(geometry.factorise), u0)),
            ("point: factor + potential + gradient (eq. 20 VJP)", point_time["vjp"]),
            ("point: factor + potential + gradient (autodiff)", point_time["autodiff"]),
            (f"position projection (quasi-Newton, {iterations} its)", best_time(projection, point.factor, perturbed)),
            ("momentum projection", best_time(jax.jit(lambda f, p: project_momentum(geometry, f, p)),
                                              point.factor, momentum)),
            ("one constrained leapfrog step", best_time(leapfrog, point, momentum)),
            (f"one transition, N_s ~ U{{{lo}..{hi}}} (mean of {args.keys} keys, mean N_s {mean_steps:.2f})",
             best_time(transitions, keys, start) / args.keys),
        ]
        print(f"\nLotka-Volterra generator: {model.input_dim} inputs, {x_obs.shape[0]} outputs, "
              f"step size {args.step_size}, n_inner {args.n_inner}")
        print(f"{'operation':66s} {'time (ms)':>10s}")
        for name, value in rows:
            print(f"{name:66s} {1e3 * value:10.3f}")
        point_vjp, point_ad = point_time["vjp"], point_time["autodiff"]
        best_point = min(point_vjp, point_ad)
        ratio = dict(rows)["one constrained leapfrog step"] / best_point
        print(f"\nlog-det gradient: eq. 20 VJP {1e3 * point_vjp:.3f} ms vs autodiff through Cholesky "
              f"{1e3 * point_ad:.3f} ms (autodiff / VJP = {point_ad / point_vjp:.2f})")
        print(f"ratio leapfrog step / (Jacobian + factorisation + gradient) = {ratio:.2f}  (target <= 3)")


if __name__ == "__main__":
    main()
