"""MNIST in-painting speed: constrained HMC (structured and dense geometry) against HMC on the conditional of h.

Side by side in one run, single-threaded XLA/BLAS (set below, before JAX starts). One test digit (top 7 rows
observed), the experiment's trained VAE (``~/.cache/dgm``, trained by ``dgm mnist-inpaint`` when absent; ``--quick``
uses the 2-epoch VAE). Prints time per iteration of each method, the ratios, and bulk ESS of h per second at equal
wall-clock budgets. Targets (issue 10): constrained-HMC time per iteration <= 3x HMC's; ESS/s of h >= HMC's. The
dense geometry (a 196 x 196 factorisation and a 246-column Jacobian per point) is what the paper's implementation
paid.

    python benchmarks/mnist_inpaint_speed.py [--quick] [--chains 2] [--warmup 150] [--samples 300]
"""


from dgm.threads import configure_cpu_threads  # noqa: E402  (before NumPy/JAX; keeps the user's own flags)

configure_cpu_threads()

import argparse  # noqa: E402
from pathlib import Path  # noqa: E402

import jax.numpy as jnp  # noqa: E402

import dgm  # noqa: E402
from dgm.experiments.mnist_inpaint import experiment as mi  # noqa: E402
from dgm.vae.generator import DecoderGenerator  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=150)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--dense-iterations", type=int, default=40, help="dense-geometry iterations timed")
    parser.add_argument("--dataset", default="mnist", choices=sorted(mi.DATASETS))
    parser.add_argument("--cache", type=Path, default=Path("~/.cache/dgm"))
    args = parser.parse_args()

    spec = mi.DATASETS[args.dataset]
    data = mi.load_dataset(args.dataset)
    mask = mi.top_rows_mask(mi.image_shape(data), spec.observed_rows)
    vae, info = mi.train_or_load(data, spec, cache=args.cache, quick=args.quick, seed=0, progress=True)
    case = mi.make_cases(vae, data, mask, n_digits=1, n_model_samples=0, seed=0)[0]
    with dgm.float64():
        gen = DecoderGenerator(vae.astype(jnp.float64), mask)
    mi.run_case(gen, case, chains=args.chains, warmup=args.warmup, samples=args.samples, seed=0, progress=False)
    dense = dgm.sample(gen.model, case.x_obs, method="chmc", geometry="dense", n_chains=1, n_warmup=0,
                       n_samples=args.dense_iterations, step_size=float(case.chmc.step_size.mean()), progress=False,
                       initial_positions=case.chmc.inputs[:1, -1])
    c, h = mi.efficiency(case.chmc, gen.latent_dim), mi.efficiency(case.hmc, gen.latent_dim)
    dense_ms = 1e3 * dense.wall_time / args.dense_iterations
    print(f"\n{case.label}; VAE {info['config']['hidden']} hidden, L = {gen.latent_dim}, "
          f"{gen.observed.size} observed pixels; single-threaded XLA")
    print(f"{'method':<28}{'ms/iter':>10}{'iterations':>12}{'time s':>9}{'ESS h min':>11}{'ESS/s min':>11}"
          f"{'ESS/s mean':>12}")
    for name, e in (("constrained HMC (structured)", c), ("HMC on p(h | x_O)", h)):
        print(f"{name:<28}{e['ms_per_iteration']:>10.2f}{e['iterations']:>12d}{e['time']:>9.1f}{e['ess_min']:>11.0f}"
              f"{e['ess_per_sec_min']:>11.3g}{e['ess_per_sec_mean']:>12.3g}")
    print(f"{'constrained HMC (dense)':<28}{dense_ms:>10.2f}{args.dense_iterations:>12d}{dense.wall_time:>9.1f}")
    print(f"\ntime per iteration, constrained (structured) / HMC: {c['ms_per_iteration'] / h['ms_per_iteration']:.1f}x "
          f"(target <= 3x)")
    print(f"time per iteration, constrained (dense) / HMC:      {dense_ms / h['ms_per_iteration']:.1f}x "
          f"(the paper: ~40x)")
    print(f"time per iteration, dense / structured geometry:     {dense_ms / c['ms_per_iteration']:.1f}x")
    print(f"ESS/s of h (min over coordinates), constrained / HMC: {c['ess_per_sec_min'] / h['ess_per_sec_min']:.2f} "
          f"(mean: {c['ess_per_sec_mean'] / h['ess_per_sec_mean']:.2f}; target >= 1)")


if __name__ == "__main__":
    main()
