"""dgm.from_numpyro: dgm's constrained HMC against NumPyro's NUTS on a regression, and a NumPyro Markov simulator's
cost per constrained-HMC iteration against the number of steps T (linear with the detected Markov structure).

1. Regression (12 observations, 2 coefficients, LogNormal noise scale; the model of tests/test_numpyro.py): the same
   NumPyro model sampled by ``dgm.sample(dgm.from_numpyro(...))`` (constrained HMC on the noise, exact: the
   observations are outputs of the generator) and by NumPyro's NUTS on its density. Both: 2 chains, the same warm-up
   and draws, float64. Reported: min bulk ESS over the parameters, seconds of sampling (compilation excluded: dgm's
   ``wall_time``; NUTS timed on a second ``run`` of the already compiled sampler) and ESS per second. Context only,
   no target: the two do different work (NUTS on a 3-D density, dgm on a 3-D manifold in 15-D input space with a
   Newton projection per step).
2. Random walk ``x_t = x_{t-1} + theta + 0.1 eps_t`` written with ``numpyro.contrib.control_flow.scan`` and observed
   through ``numpyro.deterministic``: seconds per constrained-HMC iteration (8 leapfrog steps, fixed step size, from
   the model's exact initialiser, compile excluded, best of repeats of 20 iterations) for each T, with the structured
   geometry ``from_numpyro`` attaches and, for T up to ``--dense-max``, the dense geometry. Linear cost shows as a
   constant time per step (``us/step`` column) once T is large enough for the per-step work to dominate.

Threads: single-threaded XLA / BLAS (:func:`dgm.threads.configure_cpu_threads`, before JAX loads), so the numbers are
about algorithmic cost and do not depend on a shared machine's core count.

Usage:  python benchmarks/numpyro_interop.py [--quick] [--steps 100,400,...] [--dense-max 400] [--repeats 5]
"""

from __future__ import annotations

from dgm.threads import configure_cpu_threads

THREADS = configure_cpu_threads()  # single-threaded XLA / BLAS, before JAX and NumPy load (the user's settings win)

import argparse  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
from numpyro.contrib.control_flow import scan  # noqa: E402

import dgm  # noqa: E402
from dgm.geometry.dense import DenseGeometry  # noqa: E402
from dgm.geometry.structured import StructuredGeometry  # noqa: E402
from dgm.integrator import IntegratorSettings  # noqa: E402
from dgm.kernels import chmc  # noqa: E402


def regression(X, y=None):
    beta = numpyro.sample("beta", dist.Normal(0.0, 1.0).expand([X.shape[1]]).to_event(1))
    sigma = numpyro.sample("sigma", dist.LogNormal(-1.0, 0.5))
    with numpyro.plate("N", X.shape[0]):
        numpyro.sample("y", dist.Normal(X @ beta, sigma), obs=y)


def random_walk(T):
    theta = numpyro.sample("theta", dist.Normal(0.0, 1.0))

    def step(x_prev, _):
        x = x_prev + theta + 0.1 * numpyro.sample("eps", dist.Normal(0.0, 1.0))
        return x, x

    _, path = scan(step, jnp.zeros(()), None, length=T)
    numpyro.deterministic("x", path)


def min_bulk_ess(draws: dict) -> float:
    """The smallest bulk ESS (ArviZ) over every entry of every ``(chain, draw, ...)`` array in ``draws``."""
    import arviz as az

    smallest = np.inf
    for v in draws.values():
        flat = np.asarray(v, dtype=float).reshape(v.shape[:2] + (-1,))
        for k in range(flat.shape[-1]):
            smallest = min(smallest, float(az.ess(flat[..., k])))
    return smallest


def compare_with_nuts(n_warmup: int, n_samples: int):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(12, 2))
    y = X @ np.array([1.0, -0.5]) + 0.3 * rng.normal(size=12)
    model = dgm.from_numpyro(regression, X, y, observed="y")
    result = dgm.sample(model, {"y": y}, n_chains=2, n_warmup=n_warmup, n_samples=n_samples, seed=1, progress=False)
    posterior = result.to_arviz()["posterior"]
    dgm_row = ("dgm chmc", min_bulk_ess({k: posterior[k].values for k in ("beta", "sigma")}), result.wall_time,
               result.compile_time)
    with dgm.float64():
        mcmc = numpyro.infer.MCMC(numpyro.infer.NUTS(regression), num_warmup=n_warmup, num_samples=n_samples,
                                  num_chains=2, progress_bar=False, chain_method="sequential")
        t0 = time.perf_counter()
        mcmc.run(jax.random.key(2), X, y)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        mcmc.run(jax.random.key(3), X, y)  # compiled: the second run times sampling alone
        second = time.perf_counter() - t0
    nuts = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
    nuts_row = ("numpyro nuts", min_bulk_ess(nuts), second, max(first - second, 0.0))
    print(f"\nRegression, 2 chains x ({n_warmup} warm-up + {n_samples} draws), float64, single-threaded")
    print(f"{'sampler':<14}{'min ESS':>10}{'sample s':>10}{'ESS/s':>10}{'compile s':>11}")
    for name, ess, seconds, compile_s in (dgm_row, nuts_row):
        print(f"{name:<14}{ess:>10.0f}{seconds:>10.2f}{ess / seconds:>10.0f}{compile_s:>11.1f}")
    print(f"ESS/s ratio dgm / NUTS: {(dgm_row[1] / dgm_row[2]) / (nuts_row[1] / nuts_row[2]):.2f} (context, no target)")


def seconds_per_iteration(geometry, u0, repeats: int, iterations: int = 20, step_size: float = 0.02):
    kernel = chmc.build_kernel(geometry, IntegratorSettings(), (8, 8))

    def run(key, state):
        def body(state, k):
            state, info = kernel(k, state, step_size)
            return state, info.is_accepted

        return jax.lax.scan(body, state, jax.random.split(key, iterations))

    state = jax.jit(lambda u: chmc.init(u, geometry))(u0)
    compiled = jax.jit(run).lower(jax.random.key(0), state).compile()
    times, accepted = [], []
    for r in range(repeats):
        t0 = time.perf_counter()
        state, acc = compiled(jax.random.key(r + 1), state)
        jax.block_until_ready(state)
        times.append((time.perf_counter() - t0) / iterations)
        accepted.append(np.asarray(acc))
    return min(times), float(np.mean(accepted))  # best of the repeats: the least disturbed by other load


def markov_scaling(steps, dense_max: int, repeats: int):
    print("\nRandom walk (NumPyro scan, observed through numpyro.deterministic): seconds per CHMC iteration, "
          "8 leapfrog steps")
    print(f"{'T':>6}{'structured ms':>15}{'us/step':>10}{'accept':>8}{'dense ms':>11}{'dense/struct':>14}")
    for T in steps:
        model = dgm.from_numpyro(random_walk, T)
        assert model.structure is not None, "the Markov structure was not detected"
        x_obs = np.cumsum(0.7 + 0.1 * np.random.default_rng(T).normal(size=T))
        with dgm.float64():
            x = jnp.asarray(x_obs)
            u0 = model.init(jax.random.key(0), x)
            structured, acc = seconds_per_iteration(StructuredGeometry(model, x), u0, repeats)
            dense = None
            if T <= dense_max:
                dense, _ = seconds_per_iteration(DenseGeometry(model.generator, x, model.log_input_density), u0,
                                                 repeats)
        dense_cols = f"{dense * 1e3:>11.2f}{dense / structured:>14.1f}" if dense else f"{'-':>11}{'-':>14}"
        print(f"{T:>6}{structured * 1e3:>15.2f}{structured / T * 1e6:>10.1f}{acc:>8.2f}{dense_cols}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (about a minute)")
    parser.add_argument("--steps", default=None, help="comma-separated T values (default 100,400,1600,6400)")
    parser.add_argument("--dense-max", type=int, default=400, help="largest T also timed with the dense geometry")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"threads: {THREADS}")
    steps = [int(t) for t in args.steps.split(",")] if args.steps else ([100, 400] if args.quick
                                                                          else [100, 400, 1600, 6400])
    compare_with_nuts(*((200, 400) if args.quick else (500, 1000)))
    markov_scaling(steps, min(args.dense_max, 100) if args.quick else args.dense_max, args.repeats)


if __name__ == "__main__":
    main()
