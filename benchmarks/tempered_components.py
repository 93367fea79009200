"""Disconnected manifolds: ``chmc-tempered`` against plain constrained HMC, every chain started in one component.

For each example of :mod:`dgm.models.disconnected` (two lines ``x = u1^2``, four lines ``x = (u1^2, u2^2)``, the
Gaussian-scale simulator with a squared parameter ``y_i = theta1 + theta2 e_i``, and the hyperbola ``x = u1 u2``)
both samplers run side by side in this one run, from the same starting points -- all in one component (the lightest
by default: the hardest start) --, with the same warm-up and sampling lengths and step sizes adapted by dual
averaging. Reported:

* ``weight err``: ``max_k |fraction of draws in component k - w_k|`` against the exact weights ``w``; ``/MCSE``:
  the same in Monte-Carlo standard errors of the fraction (ArviZ, ESS-based; ``-`` where the chain never left its
  component, so no standard error exists);
* ``ESS comp``: the smallest bulk ESS over the components' indicator functions (ArviZ), ``-`` when constant;
  ``ESS/s comp`` that per second of warm-up + sampling (compilation excluded), and ``s/eff``: seconds per effective
  sample of the component indicator -- the cost of the mechanism per effective sample;
* ``ESS/s z``: mean bulk ESS per second of the latents ``z`` (within-component mixing; for plain constrained HMC an
  ESS of draws that are all in the wrong place);
* ``jump acc``: mean acceptance of the dimension-changing swap (manifold <-> lowest relaxation), ``swap acc``:
  the smallest mean acceptance over the other level pairs, ``levels``: ladder size ``L + 1``, ``jump fail``: the
  jump's rejections for numerical reasons (Newton non-convergence, non-reversible), ``iter cost``: seconds per
  iteration relative to plain constrained HMC.

Run it as a script (thread configuration is set before NumPy/JAX are imported and printed)::

    python benchmarks/tempered_components.py            # about 6 minutes on 2 cores
    python benchmarks/tempered_components.py --quick    # a smoke run
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

import dgm  # noqa: E402
from dgm.kernels.tempered import tempering_summary  # noqa: E402
from dgm.models import disconnected  # noqa: E402

EXAMPLES = ("two-lines", "four-lines", "gaussian-scale", "hyperbola")


def _ess(draws: np.ndarray) -> float:
    import arviz as az

    draws = np.asarray(draws, dtype=float)
    if np.all(draws == draws.flat[0]):
        return float("nan")
    return float(az.ess(draws, method="bulk"))


def _mcse(draws: np.ndarray) -> float:
    import arviz as az

    draws = np.asarray(draws, dtype=float)
    return float("nan") if np.all(draws == draws.flat[0]) else float(az.mcse(draws))


def run_example(name: str, method: str, n_chains: int, n_warmup: int, n_samples: int, seed: int) -> dict:
    example = disconnected.EXAMPLES[name]()
    start_label = int(np.argmin(example.weights))
    result = dgm.sample(example.model, example.x_obs, method=method, n_chains=n_chains, n_warmup=n_warmup,
                        n_samples=n_samples, initial_positions=example.start(start_label, n_chains, seed),
                        seed=seed, progress=False)
    labels = np.asarray(jax.vmap(jax.vmap(example.component_of))(jnp.asarray(result.inputs)))
    errors, in_se, ess = [], [], []
    for k, weight in enumerate(example.weights):
        indicator = (labels == k).astype(float)
        errors.append(abs(indicator.mean() - weight))
        in_se.append(errors[-1] / _mcse(indicator))
        ess.append(_ess(indicator))
    seconds = result.wall_time
    z = result.latents.reshape(result.latents.shape[:2] + (-1,))
    ess_z = float(np.nanmean([_ess(z[..., i]) for i in range(z.shape[-1])]))  # constant coordinates: no ESS
    row = dict(example=name, method=method, start=start_label, seconds=seconds, compile=result.compile_time,
               iterations=n_warmup + n_samples, weight_error=max(errors), error_in_se=max(in_se),
               ess_component=min(ess), ess_z_per_sec=ess_z / seconds, levels=1, jump=float("nan"),
               swap=float("nan"), jump_failures=0)
    row["ess_component_per_sec"] = row["ess_component"] / seconds
    if method == "chmc-tempered":
        summary = tempering_summary(result)
        row.update(levels=len(summary["noise_scales"]) + 1, jump=summary["swap_acceptance"][0],
                   swap=min(summary["swap_acceptance"][1:]), jump_failures=sum(summary["jump_failures"].values()),
                   noise_scales=summary["noise_scales"])
    return row


def _fmt(value, spec):
    return "-" if value is None or not np.isfinite(value) else format(value, spec)


def print_table(rows):
    print(f"\n{'example':15s} {'sampler':14s} {'levels':>6s} {'time(s)':>8s} {'iter cost':>9s} {'weight err':>10s} "
          f"{'/MCSE':>6s} {'ESS comp':>8s} {'ESS/s comp':>10s} {'s/eff':>7s} {'ESS/s z':>8s} {'jump acc':>8s} "
          f"{'swap acc':>8s} {'jump fail':>9s}")
    base = {r["example"]: r for r in rows if r["method"] == "chmc"}
    for r in rows:
        cost = (r["seconds"] / r["iterations"]) / (base[r["example"]]["seconds"] / base[r["example"]]["iterations"])
        print(f"{r['example']:15s} {r['method']:14s} {r['levels']:6d} {r['seconds']:8.2f} {cost:8.1f}x "
              f"{r['weight_error']:10.3f} {_fmt(r['error_in_se'], '6.2f'):>6s} {_fmt(r['ess_component'], '8.0f'):>8s} "
              f"{_fmt(r['ess_component_per_sec'], '10.1f'):>10s} "
              f"{_fmt(1.0 / r['ess_component_per_sec'] if r['ess_component_per_sec'] else float('nan'), '7.3f'):>7s} "
              f"{r['ess_z_per_sec']:8.1f} {_fmt(r['jump'], '8.3f'):>8s} {_fmt(r['swap'], '8.3f'):>8s} "
              f"{r['jump_failures']:9d}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs (smoke test)")
    parser.add_argument("--examples", nargs="+", default=list(EXAMPLES), choices=EXAMPLES)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    n_warmup, n_samples = (100, 200) if args.quick else (500, 2000)
    print(f"threads: {THREADS}; {args.chains} chains, {n_warmup} warm-up + {n_samples} draws each, all started in "
          "the lightest component; time = warm-up + sampling (compilation excluded)")
    rows = []
    for name in args.examples:
        for method in ("chmc", "chmc-tempered"):
            row = run_example(name, method, args.chains, n_warmup, n_samples, args.seed)
            rows.append(row)
            extra = f", noise scales {np.round(row['noise_scales'], 3).tolist()}" if "noise_scales" in row else ""
            print(f"  {name} / {method}: {row['seconds']:.1f} s + {row['compile']:.1f} s compile{extra}", flush=True)
    print_table(rows)


if __name__ == "__main__":
    main()
