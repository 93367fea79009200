"""Lotka–Volterra constrained HMC: mici (reference implementation) vs dgm.

Both libraries run the same data, the same starting points, the same preset and the same number of chains and
iterations, single-threaded, in one process; the script prints bulk ESS per second (ArviZ, mean over the four
parameters z, compilation excluded) of mici, of dgm with the dense geometry (the like-for-like algorithm) and of dgm
with its default linear-time structured geometry, and their ratios. Run it as a script:

    python benchmarks/lotka_volterra_vs_mici.py --chains 4 --iterations 300

Needs the ``bench`` extra (``pip install mici``; mici 0.4.1 is pure Python over NumPy/SciPy and uses JAX here for the
derivatives). The paper's preset (section 6; Algorithm 1) is used:

* target: ``u ~ N(0, I_104)`` conditioned on ``g(u) = x̄`` (``DenseConstrainedEuclideanMetricSystem`` with
  ``dens_wrt_hausdorff=False``: density ``rho(u) |J J^T|^{-1/2}`` on the manifold, eq. 16), identity metric;
* ``ConstrainedLeapfrogIntegrator`` with step size 0.25 and 3 inner geodesic steps, the symmetric quasi-Newton
  projection (``solve_projection_onto_manifold_quasi_newton``) with tolerance 1e-8 in the max norm (the paper's
  ``‖g(u) − x̄‖_∞ < 1e-8``), reversibility check 2e-8;
* ``RandomMetropolisHMC`` with the number of steps uniform on {4, ..., 8}. Note: mici draws
  ``rng.integers(lower, upper)`` (upper bound *exclusive*, although its docstring says inclusive), so we pass
  ``(4, 9)``.

Threading: BLAS / OpenMP / XLA are limited to one thread by :func:`dgm.threads.configure_cpu_threads` *before* NumPy
or JAX is imported (no effect if this module is imported after them; run it as a script or import it first), and
``threadpoolctl`` is used as well when available.
"""

from __future__ import annotations

from dgm.threads import configure_cpu_threads

THREADS = configure_cpu_threads()  # single-threaded XLA / BLAS, before JAX and NumPy load (the user's settings win)

import argparse  # noqa: E402
import contextlib  # noqa: E402
import time  # noqa: E402
from typing import Optional, Sequence  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from dgm.models import lotka_volterra as lv  # noqa: E402
from dgm.experiments.lotka_volterra.experiment import PAPER_PRESET as DGM_PRESET  # noqa: E402

#: The paper's constrained-HMC preset for the Lotka–Volterra experiment (dgm's one definition) in mici's terms.
PAPER_PRESET = dict(step_size=DGM_PRESET["step_size"], n_step_range=DGM_PRESET["n_steps"],
                    n_inner_step=DGM_PRESET["n_inner"], constraint_tol=DGM_PRESET["tol"])


def _single_thread_blas():
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        return contextlib.nullcontext()
    return threadpool_limits(limits=1)


def run_mici(
    n_chains: int = 4,
    n_iter: int = 100,
    *,
    seed: int = 0,
    observations: Optional[np.ndarray] = None,
    step: str = "semi-implicit",
    step_size: float = PAPER_PRESET["step_size"],
    n_step_range: Sequence[int] = PAPER_PRESET["n_step_range"],
    n_inner_step: int = PAPER_PRESET["n_inner_step"],
    constraint_tol: float = PAPER_PRESET["constraint_tol"],
    position_tol: float = 1e-8,
    reverse_check_tol: float = 2e-8,
    max_iters: int = 50,
    init_positions: Optional[np.ndarray] = None,
    compile_iter: int = 1,
    dynamic: bool = False,
    max_tree_depth: int = 10,
) -> dict:
    """Run mici's constrained HMC on the Lotka–Volterra model (float64, sequential chains, one thread).

    Args:
      n_chains, n_iter: chains and iterations per chain (no warm-up: fixed step size as in the paper).
      seed: seeds both the initial points (``model.init`` with ``jax.random.PRNGKey(seed)`` split per chain) and
        mici's NumPy generator.
      observations, step: data and step rule (default: the original experiment's data, semi-implicit step).
      step_size, n_step_range (inclusive ``(lower, upper)``), n_inner_step, constraint_tol, position_tol,
        reverse_check_tol, max_iters: integrator / projection settings (defaults: :data:`PAPER_PRESET`).
      init_positions: optional ``(n_chains, 104)`` starting inputs on the manifold.
      compile_iter: iterations of an untimed first run (JIT compilation of the JAX derivative functions).
      dynamic: use mici's ``DynamicMultinomialHMC`` (NUTS-style, ``max_tree_depth``; ``n_step_range`` unused)
        instead of ``RandomMetropolisHMC``.

    Returns a dict with ``u`` ``(n_chains, n_iter, 104)``, ``z`` ``(n_chains, n_iter, 4)`` (the parameters),
    ``stats`` (mici's per-iteration statistics, each ``(n_chains, n_iter)``: ``accept_stat``, ``n_step``,
    ``convergence_error``, ``non_reversible_step`` ...), ``wall_time`` (seconds for the timed run, all chains),
    ``time_per_iteration`` (``wall_time / (n_chains * n_iter)``), ``compile_time``, ``max_constraint_violation``
    (max over the draws of ``‖g(u) − x̄‖_∞``) and the ``settings``.
    """
    import mici

    lower, upper = (int(n) for n in n_step_range)
    settings = dict(
        step_size=step_size, n_step_range=(lower, upper), n_inner_step=n_inner_step, constraint_tol=constraint_tol,
        position_tol=position_tol, reverse_check_tol=reverse_check_tol, max_iters=max_iters, step=step,
        mici_version=getattr(mici, "__version__", None) or _mici_version(),
        sampler="DynamicMultinomialHMC" if dynamic else "RandomMetropolisHMC",
    )
    with jax.enable_x64(True), _single_thread_blas():
        model = lv.lotka_volterra(observations, step=step)
        x_obs = jnp.asarray(lv.default_observations(step) if observations is None else observations, jnp.float64)
        generator = model.generator

        def neg_log_dens(u):
            return 0.5 * jnp.sum(u**2)

        def constr(u):
            return generator(u) - x_obs

        system = mici.systems.DenseConstrainedEuclideanMetricSystem(
            neg_log_dens=neg_log_dens, constr=constr, dens_wrt_hausdorff=False, backend="jax"
        )
        integrator = mici.integrators.ConstrainedLeapfrogIntegrator(
            system,
            step_size=step_size,
            n_inner_step=n_inner_step,
            reverse_check_tol=reverse_check_tol,
            projection_solver=mici.solvers.solve_projection_onto_manifold_quasi_newton,
            projection_solver_kwargs=dict(
                constraint_tol=constraint_tol, position_tol=position_tol, max_iters=max_iters
            ),
        )
        rng = np.random.default_rng(seed)
        # mici draws the number of steps with rng.integers(lower, upper): upper bound exclusive
        if dynamic:
            sampler = mici.samplers.DynamicMultinomialHMC(system, integrator, rng, max_tree_depth=max_tree_depth)
        else:
            sampler = mici.samplers.RandomMetropolisHMC(system, integrator, rng, n_step_range=(lower, upper + 1))

        if init_positions is None:
            init = jax.jit(model.init)
            keys = jax.random.split(jax.random.PRNGKey(seed), n_chains)
            init_positions = np.stack([np.asarray(init(k, x_obs)) for k in keys])
        init_positions = np.asarray(init_positions, np.float64)

        def trace(state):
            return {"u": state.pos}

        common = dict(adapters=[], n_worker=1, display_progress=False, trace_funcs=[trace])
        t0 = time.perf_counter()
        if compile_iter > 0:
            sampler.sample_chains(0, compile_iter, [init_positions[0].copy()], **common)
        compile_time = time.perf_counter() - t0
        t0 = time.perf_counter()
        final_states, traces, stats = sampler.sample_chains(
            0, n_iter, [p.copy() for p in init_positions], **common
        )
        wall_time = time.perf_counter() - t0

        u = np.stack(traces["u"])  # (n_chains, n_iter, 104)
        z = np.asarray(jax.vmap(jax.vmap(model.latents))(jnp.asarray(u)))
        residual = np.asarray(jax.vmap(jax.vmap(constr))(jnp.asarray(u)))
    integ = stats.get("integration", stats) if isinstance(stats, dict) else stats
    stats_out = {k: np.stack(v) for k, v in integ.items()}
    return dict(
        u=u,
        z=z,
        stats=stats_out,
        wall_time=wall_time,
        time_per_iteration=wall_time / (n_chains * n_iter),
        compile_time=compile_time,
        max_constraint_violation=float(np.max(np.abs(residual))),
        settings=settings,
    )


def _mici_version():
    try:
        from importlib.metadata import version

        return version("mici")
    except Exception:  # pragma: no cover
        return None


def run_dgm(init_positions: np.ndarray, n_iter: int, *, seed: int = 0, geometry: str = "auto",
            reverse_check_tol: float = 2e-8, chain_method: str = "auto", method: str = "chmc", tol=None,
            **options) -> dict:
    """dgm's constrained HMC with the paper preset from the given starting points (no warm-up, fixed step size);
    ``method="chmc-dynamic"`` runs the dynamic kernel with the same integrator (``options`` go to ``dgm.sample``).

    ``tol`` default: the preset's 1e-8 as an *absolute* bound like mici's, i.e. ``1e-8 / max(1, |x|_inf)`` for dgm,
    whose ``tol`` is relative to the observation scale (:func:`dgm.geometry.base.constraint_tolerance`)."""
    import dgm

    model = lv.lotka_volterra()
    positions = np.asarray(init_positions)
    model = dgm.GenerativeModel(
        model.generator, model.input_dim, latents=model.latents, parameter_inputs=model.parameter_inputs,
        structure=model.structure, init=None, name=model.name,
    )
    result = dgm.sample(
        model, lv.default_observations(), method=method, n_chains=len(positions), n_warmup=0, n_samples=n_iter,
        seed=seed, step_size=PAPER_PRESET["step_size"], n_steps=PAPER_PRESET["n_step_range"],
        n_inner=PAPER_PRESET["n_inner_step"], max_newton=50,
        tol=PAPER_PRESET["constraint_tol"] / max(1.0, float(np.max(np.abs(lv.default_observations()))))
        if tol is None else tol,
        reverse_check_tol=reverse_check_tol, geometry=geometry, chain_method=chain_method, progress=False,
        initial_positions=positions, **options,
    )
    return dict(z=result.latents, stats=result.stats, wall_time=result.wall_time, compile_time=result.compile_time,
                accept=result.acceptance_rate, failures=result.rejection_counts(),
                max_constraint_violation=result.max_residual)


def _ess_per_second(z: np.ndarray, wall_time: float) -> tuple[float, float]:
    import arviz as az

    ess = np.array([float(az.ess(np.asarray(z[..., i]), method="bulk")) for i in range(z.shape[-1])])
    return float(ess.mean()), float(ess.mean() / wall_time)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chains", type=int, default=4, help="chains for each library")
    parser.add_argument("--iterations", type=int, default=300, help="iterations per chain (no warm-up)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mici-only", action="store_true", help="run only the mici side")
    parser.add_argument("--dgm-only", action="store_true",
                        help="skip mici (not installed): dgm's geometries with the paper's projection alone "
                             "(max_refreshes=0) and with the default Newton refreshes (max_refreshes=2), side by side")
    args = parser.parse_args(argv)
    print("threads: " + ", ".join(f"{k}={v}" for k, v in THREADS.items()))
    with jax.enable_x64(True):
        keys = jax.random.split(jax.random.PRNGKey(args.seed), args.chains)
        model = lv.lotka_volterra()
        x_obs = jnp.asarray(lv.default_observations())
        positions = np.stack([np.asarray(jax.jit(model.init)(k, x_obs)) for k in keys])
    if args.dgm_only:
        for geometry in ("structured", "dense"):
            for refreshes in (0, 2):
                res = run_dgm(positions, args.iterations, seed=args.seed, geometry=geometry, max_refreshes=refreshes)
                ess, ess_s = _ess_per_second(res["z"], res["wall_time"])
                print(f"dgm geometry={geometry:<11} max_refreshes={refreshes}: {res['wall_time']:7.2f} s, accept "
                      f"{res['accept']:.3f}, bulk ESS {ess:.0f}, ESS/s {ess_s:.2f}, failures {res['failures']}, "
                      f"max resid {res['max_constraint_violation']:.1e}", flush=True)
        return
    out = run_mici(args.chains, args.iterations, seed=args.seed, init_positions=positions)
    s = out["stats"]
    print(f"mici {out['settings']['mici_version']}: {args.chains} chains x {args.iterations} iterations")
    print(f"  compile (first run) {out['compile_time']:.2f} s, sampling {out['wall_time']:.2f} s, "
          f"{1e3 * out['time_per_iteration']:.1f} ms / iteration")
    print(f"  mean accept_stat {np.nanmean(s['accept_stat']):.3f}, mean n_step {np.mean(s['n_step']):.2f}, "
          f"convergence errors {int(np.sum(s['convergence_error']))}, "
          f"non-reversible steps {int(np.sum(s['non_reversible_step']))}")
    print(f"  max |g(u) - x|_inf over draws {out['max_constraint_violation']:.2e}")
    print(f"  posterior mean z {np.mean(out['z'].reshape(-1, 4), 0)} (true {lv.TRUE_PARAMETERS})")
    if args.mici_only:
        return
    rows = [("mici " + str(out["settings"]["mici_version"]) + " (dense, JAX backend)", out["z"], out["wall_time"],
             float(np.nanmean(s["accept_stat"])), out["max_constraint_violation"])]
    for geometry in ("dense", "structured"):
        res = run_dgm(positions, args.iterations, seed=args.seed, geometry=geometry)
        print(f"dgm ({geometry}): sampling {res['wall_time']:.2f} s (+{res['compile_time']:.2f} s compile), "
              f"failures {res['failures']}")
        rows.append((f"dgm (geometry={geometry})", res["z"], res["wall_time"], res["accept"],
                     res["max_constraint_violation"]))
    print(f"\nLotka-Volterra, paper preset (step 0.25, N_s ~ U{{4..8}}, 3 inner steps, tol 1e-8), "
          f"{args.chains} chains x {args.iterations} iterations, same starting points")
    print(f"{'sampler':40s} {'time (s)':>9s} {'ms/it/chain':>11s} {'accept':>7s} {'bulk ESS':>9s} {'ESS/s':>9s} "
          f"{'vs mici':>8s} {'max resid':>9s}")
    base = None
    for name, z, wall, accept, resid in rows:
        ess, ess_s = _ess_per_second(z, wall)
        base = base or ess_s
        per_it = 1e3 * wall / (args.chains * args.iterations)
        print(f"{name:40s} {wall:9.2f} {per_it:11.2f} {accept:7.3f} {ess:9.0f} {ess_s:9.2f} {ess_s / base:7.1f}x "
              f"{resid:9.1e}")


if __name__ == "__main__":
    main()
