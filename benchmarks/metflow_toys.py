#!/usr/bin/env python
"""MetFlow's sampling toys (Thin et al. 2020, section 5.1): MetFlow against a plain RealNVP of equal parameter count
and against an MCMC kernel alone, on fixed unnormalised targets with known normaliser and exact samplers.

Targets (all normalised, so the true ``log Z = 0``):

* ``mog2d``: 8 well-separated Gaussians (sd 0.35) evenly spaced on the circle of radius 4;
* ``banana``: ``x1 ~ N(0, 1.5^2)``, ``x2 | x1 ~ N(x1^2 / 2 - 1, 0.5^2)``;
* ``mog10d``: 4 Gaussians (identity covariance) in 10-D with means ``+-3.5 e_1``, ``+-3.5 e_2``.

Methods (same ``q_0`` = a learnt diagonal Gaussian, same optimiser, steps and batch):

* ``metflow``: ``K`` (``--k``, 5) MetFlow kernels (Barker acceptance, direction variable, learnt decision law:
  ``K`` extra logits) sharing one RealNVP of ``--layers`` coupling layers (:mod:`dgm.vi.metflow`);
* ``realnvp``: that same RealNVP applied once -- exactly the same number of parameters;
* ``mala``: BlackJAX's MALA alone, ``--mala-steps`` iterations of independent chains started from a standard normal
  (step size ``--mala-step``): no training, no normaliser estimate.

Reported per target and method: the ELBO ``E[log w]`` and ``log Z`` estimate ``log mean w`` over ``--draws`` draws
(true 0), target evaluations per draw, the squared MMD (Gaussian kernel, median-heuristic bandwidth, unbiased estimator) against as many exact
target draws, mode coverage for the mixtures (modes holding >= 1/4 of their share of the samples, by nearest
mean) and, in 2-D, the total-variation distance between the sample histogram and the target's cell masses on a
60 x 60 grid (midpoint quadrature).  One PNG per target: the target density and each method's samples.

Threads: single-threaded XLA/BLAS (``dgm.threads``), printed.  Default run ~10 minutes on 2 cores; ``--quick``
about a minute.

    python benchmarks/metflow_toys.py [--quick] [--targets mog2d,banana,mog10d] [--steps 3000] [--out results/metflow_toys]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dgm.threads import configure_cpu_threads  # noqa: E402

THREADS = configure_cpu_threads()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.scipy.special import logsumexp  # noqa: E402

from dgm.vi import target_fit as tf  # noqa: E402

_LOG_2PI = math.log(2 * math.pi)


# -- targets: log density (normalised), exact sampler, mode means (mixtures) ------------------------------------------
def _mixture(means, sd):
    means = np.asarray(means, np.float64)
    n, d = means.shape

    def log_density(x):
        m = jnp.asarray(means, x.dtype)
        return logsumexp(-0.5 * jnp.sum((x - m) ** 2, -1) / sd**2) - math.log(n) - d * (math.log(sd) + 0.5 * _LOG_2PI)

    def sample(rng, size):
        return means[rng.integers(n, size=size)] + sd * rng.standard_normal((size, d))

    return log_density, sample, means


def make_target(name):
    if name == "mog2d":
        angles = 2 * np.pi * np.arange(8) / 8
        return _mixture(4.0 * np.stack([np.cos(angles), np.sin(angles)], -1), 0.35)
    if name == "mog10d":
        means = np.zeros((4, 10))
        means[0, 0], means[1, 0], means[2, 1], means[3, 1] = 3.5, -3.5, 3.5, -3.5
        return _mixture(means, 1.0)
    if name == "banana":
        def log_density(x):
            r1, r2 = x[0] / 1.5, (x[1] - 0.5 * x[0] ** 2 + 1.0) / 0.5
            return -0.5 * (r1 * r1 + r2 * r2) - math.log(1.5 * 0.5) - _LOG_2PI

        def sample(rng, size):
            x1 = 1.5 * rng.standard_normal(size)
            return np.stack([x1, 0.5 * x1**2 - 1.0 + 0.5 * rng.standard_normal(size)], -1)

        return log_density, sample, None
    raise ValueError(f"unknown target {name!r}")


# -- metrics -----------------------------------------------------------------------------------------------------------
def mmd2(x, y, max_n=3000):
    """Unbiased squared MMD with a Gaussian kernel, bandwidth = median pairwise distance of ``y``."""
    x, y = np.asarray(x[:max_n], np.float64), np.asarray(y[:max_n], np.float64)

    def sq(a, b):
        return np.maximum(np.sum(a * a, 1)[:, None] + np.sum(b * b, 1)[None] - 2 * a @ b.T, 0)

    h2 = np.median(sq(y[:1000], y[:1000]))
    kxx, kyy, kxy = np.exp(-sq(x, x) / h2), np.exp(-sq(y, y) / h2), np.exp(-sq(x, y) / h2)
    n, m = len(x), len(y)
    return float((kxx.sum() - n) / (n * (n - 1)) + (kyy.sum() - m) / (m * (m - 1)) - 2 * kxy.mean())


def mode_coverage(x, means):
    nearest = np.argmin(np.linalg.norm(x[:, None, :] - means[None], axis=-1), 1)
    share = np.bincount(nearest, minlength=len(means)) / len(x)
    return int(np.sum(share >= 0.25 / len(means))), share


def tv_2d(x, log_density, lim, bins=60):
    edges = np.linspace(-lim, lim, bins + 1)
    mid = 0.5 * (edges[1:] + edges[:-1])
    grid = np.stack(np.meshgrid(mid, mid, indexing="ij"), -1).reshape(-1, 2)
    dens = np.exp(np.asarray(jax.vmap(log_density)(jnp.asarray(grid))))
    p = dens / dens.sum()
    h, _, _ = np.histogram2d(x[:, 0], x[:, 1], bins=[edges, edges])
    q = h.reshape(-1) / len(x)  # samples outside the box count as mass the target (almost) does not have
    return float(0.5 * np.abs(p - q).sum() + 0.5 * (1 - q.sum()))


# -- MALA alone (BlackJAX) ------------------------------------------------------------------------------------------------
def run_mala(log_density, dim, n, steps, step_size, seed):
    import blackjax

    mala = blackjax.mala(log_density, step_size)

    @jax.jit
    def chains(key):
        def one(key):
            k0, k1 = jax.random.split(key)
            state = mala.init(jax.random.normal(k0, (dim,)))

            def body(state, k):
                state, info = mala.step(k, state)
                return state, info.is_accepted

            state, acc = jax.lax.scan(body, state, jax.random.split(k1, steps))
            return state.position, jnp.mean(acc)

        return jax.vmap(one)(jax.random.split(key, n))

    x, acc = chains(jax.random.key(seed))
    return np.asarray(x), float(np.mean(acc))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--targets", default="mog2d,banana,mog10d", help="comma-separated: mog2d, banana, mog10d")
    p.add_argument("--k", type=int, default=5, help="MetFlow kernels K")
    p.add_argument("--layers", type=int, default=4, help="RealNVP coupling layers (both flow methods)")
    p.add_argument("--width", type=int, default=32, help="coupling-network width")
    p.add_argument("--steps", type=int, default=3000, help="Adam steps per method")
    p.add_argument("--batch", type=int, default=256, help="draws per Adam step")
    p.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate")
    p.add_argument("--draws", type=int, default=5000, help="draws for the reported metrics")
    p.add_argument("--mala-steps", type=int, default=200, help="MALA iterations per chain")
    p.add_argument("--mala-step", type=float, default=0.05, help="MALA step size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="about a minute: 2-D targets, 300 steps, 2000 draws")
    p.add_argument("--out", default="results/metflow_toys", help="output folder (table JSON, PNGs)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.draws, args.mala_steps = min(args.steps, 300), min(args.draws, 2000), min(args.mala_steps, 100)
        if args.targets == p.get_default("targets"):
            args.targets = "mog2d,banana"
    os.makedirs(args.out, exist_ok=True)
    print(f"threads: {THREADS}")
    print(f"settings: {vars(args)}")
    rng = np.random.default_rng(args.seed)
    rows = []
    for name in args.targets.split(","):
        log_density, sampler, means = make_target(name)
        dim = 2 if name != "mog10d" else 10
        exact = sampler(rng, args.draws)
        key = jax.random.key(args.seed)
        families = [tf.metflow_family(log_density, dim, args.k, key=key, n_layers=args.layers, width=args.width,
                                      scale=2.0),
                    tf.flow_family(log_density, dim, key=key, n_layers=args.layers, width=args.width, scale=2.0)]
        samples = {}
        for fam in families:
            fit = tf.fit(fam, steps=args.steps, batch=args.batch, learning_rate=args.lr, seed=args.seed,
                         progress=not args.no_progress)
            t0 = time.perf_counter()
            x, log_w = tf.draws(fam, fit.params, args.draws, seed=args.seed + 1)
            finite = np.isfinite(log_w)
            rows.append(dict(target=name, method=fam.name, parameters=tf.n_parameters(fam.params),
                             target_evals=args.k + 1 if fam.name.startswith("MetFlow") else 1,
                             elbo=float(np.mean(log_w[finite])), log_z=tf.log_z_estimate(log_w),
                             train_s=fit.seconds, sample_s=time.perf_counter() - t0))
            samples[fam.name] = x
        t0 = time.perf_counter()
        x, acc = run_mala(log_density, dim, args.draws, args.mala_steps, args.mala_step, args.seed)
        rows.append(dict(target=name, method=f"MALA alone ({args.mala_steps} steps, acc {acc:.2f})", parameters=0,
                         target_evals=args.mala_steps + 1,
                         elbo=float("nan"), log_z=float("nan"), train_s=0.0, sample_s=time.perf_counter() - t0))
        samples[rows[-1]["method"]] = x
        for row, (label, x) in zip(rows[-len(samples):], samples.items()):
            x = x[np.all(np.isfinite(x), 1)]
            row["mmd2"] = mmd2(x, exact)
            if means is not None:
                row["modes"], share = mode_coverage(x, means)
                row["n_modes"] = len(means)
            if dim == 2:
                row["tv"] = tv_2d(x, log_density, 6.0)
        if dim == 2:
            figure(name, log_density, samples, os.path.join(args.out, f"{name}.png"))
    print()
    print(table(rows))
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(dict(settings=vars(args), threads=THREADS, rows=rows), f, indent=2)
    print(f"\nwrote results.json and PNGs to {args.out}")


def table(rows):
    head = f"{'target':8} {'method':34} {'params':>6} {'evals':>5} {'ELBO':>8} {'log Z^':>8} {'MMD^2':>8} {'modes':>6} {'TV':>6} {'train s':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        modes = f"{r['modes']}/{r['n_modes']}" if "modes" in r else "-"
        tv = f"{r['tv']:.3f}" if "tv" in r else "-"
        lines.append(f"{r['target']:8} {r['method']:34} {r['parameters']:6d} {r['target_evals']:5d} {r['elbo']:8.3f} {r['log_z']:8.3f} "
                     f"{r['mmd2']:8.4f} {modes:>6} {tv:>6} {r['train_s']:8.1f}")
    return "\n".join(lines)


def figure(name, log_density, samples, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lim = 6.0
    g = np.linspace(-lim, lim, 200)
    grid = np.stack(np.meshgrid(g, g, indexing="xy"), -1).reshape(-1, 2)
    dens = np.exp(np.asarray(jax.vmap(log_density)(jnp.asarray(grid)))).reshape(200, 200)
    fig, axes = plt.subplots(1, 1 + len(samples), figsize=(3.2 * (1 + len(samples)), 3.3))
    axes[0].contourf(g, g, dens, levels=30, cmap="viridis")
    axes[0].set_title(f"{name}: target")
    for ax, (label, x) in zip(axes[1:], samples.items()):
        ax.scatter(x[:3000, 0], x[:3000, 1], s=1, alpha=0.4)
        ax.set_title(label, fontsize=8)
    for ax in axes:
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
