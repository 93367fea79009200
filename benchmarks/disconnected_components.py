"""Disconnected manifolds: constrained HMC with declared symmetry moves against plain constrained HMC (issue 16).

For each example of :mod:`dgm.models.disconnected` with exact component weights —

* (a) ``two-lines``: ``u ~ N(mu, I_2)``, ``x = u1^2`` (weights 0.269 / 0.731);
* (b) ``four-lines``: ``u ~ N(mu, I_3)``, ``x = (u1^2, u2^2)`` (weights 0.203 / 0.066 / 0.551 / 0.180);
* (c) ``gaussian-scale``: the simulator ``y_i = theta1 + theta2 e_i`` (6 observations, the sign of ``theta2`` is
  identified by the prior only; weights 0.236 / 0.764);
* ``hyperbola``: ``x = u1 u2`` with the non-isometric involution ``(u1, u2) -> (-2 u2, -u1 / 2)``

— three runs side by side, same iterations, seeds and step-size adaptation:

1. ``chmc`` with every chain started in component 0 (as a user whose initialiser always lands there);
2. ``chmc`` from dgm's default initialiser (Gauss–Newton from standard-normal draws: components by chance);
3. ``chmc`` + symmetry moves (after every transition) with every chain started in component 0.

Printed per run: the largest error of the component fractions ``max_k |f_k - w_k|`` and the same in Monte-Carlo
standard errors (ArviZ, ESS-based; ``inf`` when no chain ever changes component, where no MCSE exists), the bulk
ESS of the component indicators (ArviZ's mean ESS, the one their MCSE uses, min over components; ``nan`` without a
change of component; bulk ESS is not used for these 0/1 series, on which its rank normalisation misbehaves) and the
bulk ESS of the latents ``z`` (min over the entries that vary continuously: the coordinates that only take the values
``±sqrt(x)`` are the indicators again; for the plain runs, ESS of a distribution that is not the target), each per
second of sampling
(warm-up + draws, compilation excluded), the acceptance of the symmetry moves, and what the detection of
:mod:`dgm.components` reported. Single-threaded XLA /
BLAS (:mod:`dgm.threads`), printed.

    python benchmarks/disconnected_components.py            # 4 chains x (500 warm-up + 2000) draws, ~2 min
    python benchmarks/disconnected_components.py --quick    # a smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import warnings

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
from dgm.threads import configure_cpu_threads  # noqa: E402

THREADS = configure_cpu_threads()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import dgm  # noqa: E402
from dgm.models import disconnected  # noqa: E402


def _ess(draws, method="bulk") -> float:
    import arviz as az

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = float(az.ess(np.asarray(draws, dtype=float), method=method))
    return value if np.isfinite(value) else float("nan")


def _mcse(draws) -> float:
    import arviz as az

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = float(az.mcse(np.asarray(draws, dtype=float)))
    return value


def measure(example, label, result) -> dict:
    labels = np.asarray(jax.vmap(jax.vmap(example.component_of))(jnp.asarray(result.inputs)))
    errors, z_errors, ess_indicator = [], [], []
    moving = bool(np.any(labels != labels[:, :1]))  # some chain changed component: else no MCSE / ESS exists
    for k, weight in enumerate(example.weights):
        indicator = (labels == k).astype(float)
        error = abs(float(indicator.mean()) - weight)
        se = _mcse(indicator) if moving else float("nan")
        errors.append(error)
        z_errors.append(error / se if se > 0 and np.isfinite(se) else (0.0 if error == 0 else np.inf))
        ess_indicator.append(_ess(indicator, "mean") if moving else float("nan"))
    latents = result.latents.reshape(result.n_chains, result.n_draws, -1)
    continuous = [i for i in range(latents.shape[-1]) if np.unique(np.round(latents[..., i], 6)).size > 10]
    ess_z = min(_ess(latents[..., i]) for i in continuous)
    counts = result.symmetry_counts()
    proposed = sum(c["proposed"] for c in counts.values())
    accepted = sum(c["accepted"] for c in counts.values())
    ess_c = float(np.nanmin(ess_indicator)) if np.any(np.isfinite(ess_indicator)) else float("nan")
    return dict(example=example.name, run=label, error=max(errors), z_error=max(z_errors), ess_c=ess_c,
                ess_c_s=ess_c / result.wall_time, ess_z=ess_z, ess_z_s=ess_z / result.wall_time,
                time=result.wall_time, accept=result.acceptance_rate,
                sym_accept=(accepted / proposed) if proposed else float("nan"),
                components=result.components.describe() if result.components is not None else "-")


def run_example(example, n_chains, n_warmup, n_samples, seed) -> list:
    rows = []
    common = dict(n_chains=n_chains, n_warmup=n_warmup, n_samples=n_samples, seed=seed, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the detection warning is reported in the table's last column
        same = example.start(0, n_chains, seed)
        plain = dgm.sample(example.model, example.x_obs, initial_positions=same, **common)
        rows.append(measure(example, "chmc, all chains in component 0", plain))
        default = dgm.sample(example.model, example.x_obs, **common)
        rows.append(measure(example, "chmc, default initialiser", default))
        model = dataclasses.replace(example.model, symmetries=example.symmetries)
        moved = dgm.sample(model, example.x_obs, initial_positions=same, **common)
        rows.append(measure(example, "chmc + symmetry moves, all in component 0", moved))
    return rows


def print_table(rows):
    header = (f"{'example':15s} {'run':44s} {'max|f-w|':>8s} {'in MCSE':>8s} {'ESS(ind)':>8s} {'ESS(ind)/s':>10s} "
              f"{'ESS(z)':>7s} {'ESS(z)/s':>8s} {'time(s)':>7s} {'acc':>5s} {'sym acc':>7s}  components found")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['example']:15s} {r['run']:44s} {r['error']:8.4f} {r['z_error']:8.1f} {r['ess_c']:8.0f} "
              f"{r['ess_c_s']:10.0f} {r['ess_z']:7.0f} {r['ess_z_s']:8.0f} {r['time']:7.2f} {r['accept']:5.2f} "
              f"{r['sym_accept']:7.2f}  {r['components']}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs (200 warm-up + 400 draws)")
    parser.add_argument("--chains", type=int, default=4, help="chains per run (default 4)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every run (default 0)")
    parser.add_argument("--examples", nargs="*", default=["two-lines", "four-lines", "gaussian-scale", "hyperbola"],
                        choices=sorted(disconnected.EXAMPLES), help="which examples (default: all)")
    args = parser.parse_args(argv)
    n_warmup, n_samples = (200, 400) if args.quick else (500, 2000)
    print(f"threads: {THREADS}; {args.chains} chains x ({n_warmup} warm-up + {n_samples}) draws, seed {args.seed}; "
          f"jax {jax.__version__}, backend {jax.default_backend()}")
    rows = []
    for name in args.examples:
        example = disconnected.EXAMPLES[name]()
        print(f"{name}: exact weights {np.round(example.weights, 4).tolist()}", flush=True)
        rows += run_example(example, args.chains, n_warmup, n_samples, args.seed)
    print()
    print_table(rows)


if __name__ == "__main__":
    main()
