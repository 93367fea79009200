"""Where one constrained leapfrog step spends its time, in generator-VJP equivalents, per geometry (issue 25).

For the MNIST in-painting generator (the experiment's trained VAE, top 7 rows observed: L = 50 parameter inputs,
N = 196 outputs) and the binocular pose generator (L = 83, N = 72), and for each geometry (``structured``: the generic
linear-time geometry, the *before*; ``additive``: :class:`dgm.geometry.additive.AdditiveNoiseGeometry`, the *after*;
``dense``), prints per leapfrog step the time spent in

* **Jacobian**: the Jacobian the geometry evaluates at a point;
* **factorisation**: the rest of the factor (``factorise(u)`` minus the Jacobian);
* **log-det gradient**: the potential and its gradient (``point(u)`` minus ``factorise(u)``);
* **projection**: the rest of the step (position projections forward and back, momentum projections, kicks):
  one leapfrog step minus ``point(u)``;

in units of one VJP of the generator (``u -> g(u)``, jitted), beside the **floor**: one VJP of the cheaper Jacobian
of the mean (its forward pass gives the Jacobian, its backward pass the log-det gradient, eq. 20) plus one generator
evaluation per Newton iteration of the step. HMC's leapfrog step is about one VJP of the mean (the gradient of the
conditional density), so the step's VJP equivalents are also about the ratio of per-step times, constrained HMC over
HMC, at equal ``n_steps``; the last column measures that ratio directly.

Every time is the best over repeats of a jitted loop of ``--repeats`` calls (dispatch amortised). Single-threaded
XLA/BLAS (set below, before JAX starts), float64.

    python benchmarks/chmc_step_profile.py [--models mnist pose] [--geometries structured additive dense]
                                           [--step-size 0.2] [--repeats 50]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dgm.threads import configure_cpu_threads

THREADS = configure_cpu_threads()

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import best_time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import dgm  # noqa: E402
from dgm.geometry.base import project_momentum  # noqa: E402
from dgm.integrator import IntegratorSettings, integrate  # noqa: E402
from dgm.kernels import hmc  # noqa: E402
from dgm.methods import make_geometry  # noqa: E402


def looped(fn, repeats: int):
    """A jitted ``(u, *rest) -> scalar`` running ``fn(u', *rest)`` ``repeats`` times (``u'`` depends on the loop
    carry so nothing is hoisted); seconds per call = best time / repeats."""

    @jax.jit
    def run(u, *rest):
        def body(_, acc):
            out = fn(u + 1e-300 * acc, *rest)
            leaves = [jnp.sum(leaf) for leaf in jax.tree_util.tree_leaves(out) if jnp.issubdtype(leaf.dtype,
                                                                                                  jnp.floating)]
            return acc + 1e-300 * sum(leaves)

        return jax.lax.fori_loop(0, repeats, body, jnp.zeros((), u.dtype))

    return run


def mnist_problem():
    """``(model, x_obs, u0 on the manifold, mean_fn, conditional log density)`` of the in-painting benchmark case."""
    try:
        from dgm.experiments import mnist_inpaint as mi
    except ImportError:
        from dgm.models import mnist_inpaint as mi
    from dgm.vae.generator import DecoderGenerator

    spec = mi.DATASETS["mnist"]
    data = mi.load_dataset("mnist")
    mask = mi.top_rows_mask(mi.image_shape(data), spec.observed_rows)
    vae, _ = mi.train_or_load(data, spec, cache=Path("~/.cache/dgm"), quick=False, seed=0, progress=False)
    case = mi.make_cases(vae, data, mask, n_digits=1, n_model_samples=0, seed=0)[0]
    gen = DecoderGenerator(vae.astype(jnp.float64), mask)
    u0 = gen.model.init(jax.random.PRNGKey(0), jnp.asarray(case.x_obs))
    return gen.model, jnp.asarray(case.x_obs), u0, gen.observed_mean, gen.conditional_log_density(case.x_obs)


def pose_problem():
    try:
        from dgm.experiments.pose import experiment as ex
    except ImportError:
        from dgm.models.pose import experiment as ex
    model, _ = ex.build_models()
    scene = ex.make_scenes(model, 1, 0)[0]
    _, u0 = model.initial_inputs(jax.random.PRNGKey(17), scene.x, 1, candidates=64)
    x = jnp.asarray(scene.x)
    log_density = hmc.noisy_log_density(model.conditional_model, x, model.noise_scale)
    return model.model, x, jnp.asarray(u0[0]), model.mean_observation, log_density


PROBLEMS = {"mnist": mnist_problem, "pose": pose_problem}


def profile(name, geometry_name, model, x_obs, u0, mean_fn, log_density, args, unit):
    L = model.parameter_inputs
    geometry = make_geometry(model, x_obs, geometry=geometry_name.split(":")[0],
                             jacobian_mode=(geometry_name.split(":") + ["auto"])[1], max_refreshes=2)
    settings = IntegratorSettings(max_refreshes=2)
    point = jax.jit(geometry.point)(u0)
    momentum = project_momentum(geometry, point.factor, jax.random.normal(jax.random.PRNGKey(1), u0.shape, u0.dtype))
    step = jax.jit(lambda pt, p: integrate(geometry, pt, p, args.step_size, 1, settings))
    result = step(point, momentum)
    if int(result.status) != 0:
        print(f"  ({geometry_name}: the leapfrog step failed with status {int(result.status)}; lower --step-size)")
    iterations = int(result.newton_iterations)
    if hasattr(geometry, "mean_jacobian"):
        jacobian = lambda u: geometry.mean_jacobian(u[:L])  # noqa: E731
    elif hasattr(geometry, "jacobian"):
        jacobian = geometry.jacobian
    else:  # structured: the per-step Jacobians are the factor minus the small factorisations; time the factor alone
        jacobian = None
    R = args.repeats
    t_factor = best_time(looped(geometry.factorise, R), u0) / R
    t_jac = best_time(looped(jacobian, R), u0) / R if jacobian is not None else float("nan")
    t_point = best_time(looped(geometry.point, R), u0) / R
    t_step = best_time(looped(lambda u, p: integrate(geometry, point._replace(position=u), p, args.step_size, 1,
                                                     settings).momentum, R), u0, momentum) / R
    parts = dict(jacobian=t_jac, factorisation=t_factor - t_jac if jacobian is not None else t_factor,
                 log_det_gradient=t_point - t_factor, projection=t_step - t_point)
    return parts, t_step, iterations


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["mnist", "pose"], choices=sorted(PROBLEMS))
    parser.add_argument("--geometries", nargs="+", default=["structured", "additive", "dense:forward",
                                                            "dense:reverse"],
                        help="geometry[:jacobian_mode] (structured = before, additive = after)")
    parser.add_argument("--step-size", type=float, default=0.2)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args(argv)
    print(f"threads: {THREADS}; jax {jax.__version__}, backend {jax.default_backend()}; float64; step size "
          f"{args.step_size}; times are the best of jitted loops of {args.repeats} calls")
    with dgm.float64():
        for name in args.models:
            model, x_obs, u0, mean_fn, log_density = PROBLEMS[name]()
            L, N = model.parameter_inputs, x_obs.shape[0]
            R = args.repeats
            u1 = u0[:L]
            cot = jnp.ones_like(x_obs)
            unit = best_time(looped(lambda u, w: jax.vjp(model.generator, u)[1](w)[0], R), u0, cot) / R
            t_gen = best_time(looped(model.generator, R), u0) / R
            floors = {}
            for mode, transform in (("forward", jax.jacfwd), ("reverse", jax.jacrev)):
                jac_fn = transform(mean_fn)
                weights = jnp.ones((N, L), u0.dtype)
                floors[mode] = best_time(looped(lambda u, w: jax.vjp(jac_fn, u[:L])[1](w)[0], R), u0, weights) / R
            t_hmc = best_time(looped(lambda h: jax.grad(log_density)(h), R), u1) / R
            print(f"\n{name}: L = {L} parameter inputs, N = {N} outputs, M = {model.input_dim} inputs; one generator "
                  f"VJP {1e6 * unit:.1f} us, one generator call {1e6 * t_gen:.1f} us, one HMC gradient "
                  f"{1e6 * t_hmc:.1f} us; VJP of the mean's Jacobian: forward {floors['forward'] / unit:.1f}, "
                  f"reverse {floors['reverse'] / unit:.1f} VJP-eq")
            print(f"{'geometry':<16}{'Jacobian':>10}{'factor':>9}{'logdet grad':>12}{'projection':>12}{'step':>8}"
                  f"{'Newton its':>11}{'floor':>8}{'step ms':>9}{'step/HMC':>10}")
            for geometry_name in args.geometries:
                try:
                    parts, t_step, iterations = profile(name, geometry_name, model, x_obs, u0, mean_fn, log_density,
                                                        args, unit)
                except ValueError as error:
                    print(f"{geometry_name:<16}not applicable: {error}")
                    continue
                floor = (min(floors.values()) + iterations * t_gen) / unit
                cells = "".join(f"{v / unit:>{w}.1f}" for v, w in zip(parts.values(), (10, 9, 12, 12)))
                print(f"{geometry_name:<16}{cells}{t_step / unit:>8.1f}{iterations:>11d}{floor:>8.1f}"
                      f"{1e3 * t_step:>9.3f}{t_step / t_hmc:>10.1f}", flush=True)


if __name__ == "__main__":
    main()
