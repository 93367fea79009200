"""Dynamic integration time on the manifold: ``chmc-dynamic`` against ``chmc`` and against mici's dynamic sampler.

Three comparisons, each measured side by side in this one run, bulk ESS (ArviZ) per second, compilation excluded:

1. **Lotka–Volterra** (dgm's default structured geometry): ``chmc`` with the paper preset (step 0.25,
   ``N_s ~ U{4..8}``, 3 geodesic sub-steps) against ``chmc-dynamic`` with its step size adapted by dual averaging
   (1 sub-step); both start from the same points and run the same warm-up and sampling iterations; time is warm-up +
   sampling (the dynamic kernel pays for its adaptation); ESS is the mean over the four parameters ``z``.
2. **Scales spanning 100x along the manifold** (:func:`scaled_model`: 10 inputs ``u_i ~ N(0, s_i^2)``, ``s`` from
   0.1 to 10, one mildly nonlinear constraint), identity metric: both kernels adapt their step size (``chmc`` with
   ``N_s ~ U{4..8}``); the step is set by the narrowest direction, so a fixed ``N_s`` random-walks along the widest
   while the tree doubles until the trajectory turns. ESS/s uses the minimum bulk ESS over the inputs.
3. **mici 0.4.1's** ``DynamicMultinomialHMC`` against ``chmc-dynamic`` on the Lotka–Volterra problem of
   ``benchmarks/lotka_volterra_vs_mici.py`` (its setup is imported, not copied): the same integrator (fixed step 0.25,
   3 geodesic sub-steps, quasi-Newton projection, tol 1e-8, reversibility check 2e-8), maximum tree depth 10,
   identical starting points, no warm-up, JAX backend, float64, single-threaded BLAS/XLA. dgm runs with the dense
   geometry (same linear algebra as mici) and with its default structured geometry. Target: >= 20x mici.

Run it as a script (thread configuration is set before NumPy/JAX are imported and printed)::

    python benchmarks/dynamic_vs_static.py                # about 10 minutes on 2 cores
    python benchmarks/dynamic_vs_static.py --quick        # a smoke run
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dgm.threads import configure_cpu_threads  # noqa: E402

THREADS = configure_cpu_threads()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import lotka_volterra_vs_mici as lv_mici  # noqa: E402  (also pins BLAS threads before NumPy is used)


def _bulk_ess(draws: np.ndarray) -> np.ndarray:
    """Bulk ESS of each trailing coordinate of ``(chain, draw, k)`` draws (ArviZ)."""
    import arviz as az

    return np.array([float(az.ess(np.asarray(draws[..., i]), method="bulk")) for i in range(draws.shape[-1])])


def _row(name, draws, seconds, accept, steps, failures, ess=None):
    ess = _bulk_ess(draws) if ess is None else ess
    return dict(name=name, time=seconds, accept=accept, steps=steps, failures=failures, ess=float(np.mean(ess)),
                ess_min=float(np.min(ess)), ess_per_sec=float(np.mean(ess)) / seconds)


def _print(title, rows, base_name=None, extra=""):
    print(f"\n{title}")
    print(f"{'sampler':52s} {'time (s)':>8s} {'accept':>6s} {'steps/it':>8s} {'failed':>6s} {'ESS':>7s} "
          f"{'ESS min':>7s} {'ESS/s':>8s} {'ratio':>7s}")
    base = next((r for r in rows if r["name"] == base_name), rows[0])
    for r in rows:
        print(f"{r['name']:52s} {r['time']:8.2f} {r['accept']:6.3f} {r['steps']:8.1f} {r['failures']:6d} "
              f"{r['ess']:7.0f} {r['ess_min']:7.0f} {r['ess_per_sec']:8.1f} {r['ess_per_sec'] / base['ess_per_sec']:6.1f}x")
    if extra:
        print(extra)


def _failures(result) -> int:
    return int(sum(result.rejection_counts().values()))


def _lv_starts(n_chains: int, seed: int) -> np.ndarray:
    from dgm.models import lotka_volterra as lv

    with jax.enable_x64(True):
        model = lv.lotka_volterra()
        x_obs = jnp.asarray(lv.default_observations())
        keys = jax.random.split(jax.random.PRNGKey(seed), n_chains)
        return np.stack([np.asarray(jax.jit(model.init)(k, x_obs)) for k in keys])


def lotka_volterra_static_vs_dynamic(chains, warmup, samples, seed):
    import dgm
    from dgm.models import lotka_volterra as lv
    from dgm.experiments.lotka_volterra.experiment import PAPER_PRESET

    model = lv.lotka_volterra()
    x_obs = lv.default_observations()
    starts = _lv_starts(chains, seed)
    common = dict(n_chains=chains, n_warmup=warmup, n_samples=samples, seed=seed, progress=False,
                  initial_positions=starts)
    static = dgm.sample(model, x_obs, method="chmc", **PAPER_PRESET, **common)
    dynamic = dgm.sample(model, x_obs, method="chmc-dynamic", step_size=None, n_inner=1, tol=PAPER_PRESET["tol"],
                         **common)
    rows = []
    for name, result in (("chmc, paper preset (0.25, N_s~U{4..8}, 3 sub-steps)", static),
                         ("chmc-dynamic, adapted step (1 sub-step)", dynamic)):
        rows.append(_row(name, result.latents, result.wall_time, result.acceptance_rate,
                         float(np.mean(result.stats["n_steps"])), _failures(result)))
    _print(f"1. Lotka-Volterra (structured geometry), {chains} chains x ({warmup} warm-up + {samples}) iterations, "
           "same starts; time = warm-up + sampling; ESS = mean over z1..z4", rows,
           extra=f"   adapted step of chmc-dynamic: {np.round(dynamic.step_size, 3)}, mean tree depth "
                 f"{np.mean(dynamic.stats['tree_depth']):.2f}")
    return rows


def scaled_model(dim: int = 10, span: float = 100.0):
    """Inputs with scales ``s`` log-spaced over ``span`` (``u_i ~ N(0, s_i^2)``), observed through the mildly
    nonlinear ``x = sum w_i + 0.05 sum w_i^3``, ``w = u / s``: the conditional's scales along the manifold span
    ``span``, so a step size small enough for the narrowest direction needs many steps to cross the widest."""
    import dgm

    scales = jnp.asarray(np.logspace(-0.5, 0.5, dim) ** np.log10(span))

    def generator(u):
        w = u / scales
        return jnp.atleast_1d(jnp.sum(w) + 0.05 * jnp.sum(w**3))

    return dgm.GenerativeModel(generator, dim, log_input_density=lambda u: -0.5 * jnp.sum((u / scales) ** 2),
                               name=f"scales-span-{span:g}")


def scaled_static_vs_dynamic(chains, warmup, samples, seed, dim=10, span=100.0):
    import dgm

    model = scaled_model(dim, span)
    common = dict(n_chains=chains, n_warmup=warmup, n_samples=samples, seed=seed, progress=False)
    rows = []
    for name, method in (("chmc, adapted step, N_s~U{4..8}", "chmc"), ("chmc-dynamic, adapted step", "chmc-dynamic")):
        result = dgm.sample(model, np.array([1.0]), method=method, **common)
        row = _row(name, result.inputs, result.wall_time, result.acceptance_rate,
                   float(np.mean(result.stats["n_steps"])), _failures(result))
        row["ess_per_sec"] = row["ess_min"] / result.wall_time
        row["name"] = f"{name} (step {np.median(result.step_size):.3f})"
        rows.append(row)
    _print(f"2. Scales spanning {span:g}x along the manifold ({dim} inputs, 1 constraint), {chains} chains x ({warmup} "
           f"warm-up + {samples}); ESS/s = min over inputs of bulk ESS / (warm-up + sampling time)", rows)
    return rows


def mici_vs_dgm_dynamic(chains, iterations, seed):
    starts = _lv_starts(chains, seed)
    mici = lv_mici.run_mici(chains, iterations, seed=seed, init_positions=starts, dynamic=True, max_tree_depth=10)
    s = mici["stats"]
    failed = int(np.sum(s["convergence_error"]) + np.sum(s["non_reversible_step"]) + np.sum(s["diverging"]))
    rows = [_row(f"mici {mici['settings']['mici_version']} DynamicMultinomialHMC (dense)", mici["z"],
                 mici["wall_time"], float(np.nanmean(s["accept_stat"])), float(np.mean(s["n_step"])), failed)]
    for geometry in ("dense", "structured"):
        out = lv_mici.run_dgm(starts, iterations, seed=seed, geometry=geometry, method="chmc-dynamic",
                              max_tree_depth=10)
        rows.append(_row(f"dgm chmc-dynamic (geometry={geometry})", out["z"], out["wall_time"], out["accept"],
                         float(np.mean(out["stats"]["n_steps"])), int(sum(out["failures"].values()))))
    _print(f"3. Lotka-Volterra, dynamic samplers, fixed step 0.25, 3 sub-steps, max depth 10, {chains} chains x "
           f"{iterations} iterations, same starts, no warm-up", rows)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=300, help="warm-up iterations (comparisons 1 and 2)")
    parser.add_argument("--samples", type=int, default=1000, help="sampling iterations (comparisons 1 and 2)")
    parser.add_argument("--mici-iterations", type=int, default=150, help="iterations per chain (comparison 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-mici", action="store_true")
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    args = parser.parse_args(argv)
    if args.quick:
        args.warmup, args.samples, args.mici_iterations, args.chains = 100, 100, 10, 2
    print("threads: " + ", ".join(f"{k}={v}" for k, v in THREADS.items()))
    lotka_volterra_static_vs_dynamic(args.chains, args.warmup, args.samples, args.seed)
    scaled_static_vs_dynamic(args.chains, args.warmup, args.samples, args.seed)
    if not args.skip_mici:
        mici_vs_dgm_dynamic(args.chains, args.mici_iterations, args.seed)


if __name__ == "__main__":
    main()
