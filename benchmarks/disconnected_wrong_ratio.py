"""Hand check (not a test, not a speed benchmark): the component-fraction check of ``tests/test_disconnected.py``
fails when the symmetry move's acceptance ratio is wrong.

Runs constrained HMC + the declared symmetry moves of an example of :mod:`dgm.models.disconnected`, every chain
started in component 0, and prints the fraction of draws per component against the exact weights, in Monte-Carlo
standard errors (ArviZ, ESS-based; the tests' tolerance is 4). ``--mode``:

* ``ok``: the correct ratio ``pi(s(u)) J_s(u) / pi(u)``;
* ``nodet``: the ratio without ``|J J^T|^{-1/2}`` (``rho(s(u)) J_s / rho(u)``); it matters where ``|J J^T|``
  differs between ``u`` and ``s(u)`` — the hyperbola (``|grad g| = |u|``), not the sign flips of the lines;
* ``nojac``: without the map's tangent-space Jacobian ``J_s`` (matters for non-isometric maps: the hyperbola);
* ``wrongjac``: ``J_s`` multiplied by ``e^0.3`` (a wrong ratio on any example).

    python benchmarks/disconnected_wrong_ratio.py --mode nodet --example hyperbola --draws 12000
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
from dgm.kernels import symmetry as kernel  # noqa: E402
from dgm.models import disconnected  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=["ok", "nodet", "nojac", "wrongjac"], default="ok",
                        help="which acceptance ratio (default: the correct one)")
    parser.add_argument("--example", choices=sorted(disconnected.EXAMPLES), default="hyperbola")
    parser.add_argument("--draws", type=int, default=4000, help="draws per chain after 300 warm-up (default 4000)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    example = disconnected.EXAMPLES[args.example]()
    model = dataclasses.replace(example.model, symmetries=example.symmetries)
    correct_jacobian, correct_build = kernel.tangent_log_jacobian, kernel.build_move
    if args.mode == "nojac":
        kernel.tangent_log_jacobian = lambda g, s, u: jnp.zeros((), u.dtype)
    elif args.mode == "wrongjac":
        kernel.tangent_log_jacobian = lambda g, s, u: correct_jacobian(g, s, u) + 0.3
    elif args.mode == "nodet":
        def build_without_det(*a, **k):
            position = k["position"]
            return correct_build(*a, **dict(k, log_density=lambda st: model.log_input_density(position(st))))

        kernel.build_move = build_without_det
    import arviz as az

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = dgm.sample(model, example.x_obs, n_chains=4, n_warmup=300, n_samples=args.draws, seed=args.seed,
                            initial_positions=example.start(0, 4, args.seed), progress=False)
        labels = np.asarray(jax.vmap(jax.vmap(example.component_of))(jnp.asarray(result.inputs)))
        fractions, z = [], []
        for k, weight in enumerate(example.weights):
            indicator = (labels == k).astype(float)
            fractions.append(indicator.mean())
            z.append((indicator.mean() - weight) / float(az.mcse(indicator)))
    print(f"{args.mode:9s} {args.example:14s} 4 x {args.draws} draws: fractions {np.round(fractions, 4).tolist()} "
          f"exact {np.round(example.weights, 4).tolist()} (fraction - exact) / MCSE {np.round(z, 2).tolist()}")


if __name__ == "__main__":
    main()
