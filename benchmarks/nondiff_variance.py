#!/usr/bin/env python
"""Gradient variance and ELBO of score / plain reparameterisation / reparameterisation + boundary estimators on
``if``-branching models (Lee, Yu & Yang, "Reparameterization Gradient for Non-differentiable Models", NeurIPS 2018;
slides in /work/shared/papers).

Models (:mod:`dgm.vi.nondiff.examples`):

* ``sms-changepoint``: the text-message change-point model of Davidson-Pilon's "Bayesian Methods for Hackers"
  (ch. 1), the 74 real daily counts embedded literally; a step change point, 73 hyperplanes, d = 3;
* ``thermostat``: a thermostat-controlled temperature process with two nested ``if``\\ s per step (simulated data,
  seed 0), d = T = 40 (20 with ``--quick``), 2 (T - 1) hyperplanes.

For each model and estimator: Adam on the ELBO (mean-field Gaussian, ``N`` draws per step, jitted ``lax.scan``), the
final ELBO (20 000 draws), time per gradient (one jitted call with ``N`` draws, median), and the per-component
variance of the *single-draw* estimator, measured at common parameters (snapshots of the reparam+boundary run,
1000 draws each (500 with ``--quick``), averaged over snapshots). Prints a table, writes it to ``OUT/summary.txt`` and ELBO / variance vs
iteration plots to ``OUT/<model>.png``.

Threads: single-threaded XLA and BLAS/OpenMP (:func:`dgm.threads.configure_cpu_threads`, before JAX is imported).

    python benchmarks/nondiff_variance.py [--quick] [--out results/nondiff]
"""

from __future__ import annotations

import os

from dgm.threads import configure_cpu_threads

THREADS = configure_cpu_threads()  # single-threaded XLA / BLAS, before JAX and NumPy load (the user's settings win)

import argparse  # noqa: E402
import functools  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import matplotlib  # noqa: E402
import numpy as np  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from dgm.vi.nondiff import (  # noqa: E402
    MeanFieldGaussian,
    Reparameterisation,
    ReparameterisationBoundary,
    ScoreFunction,
    elbo_estimate,
    fit,
)
from dgm.vi.nondiff import examples as ex  # noqa: E402

ESTIMATORS = [
    ("score", ScoreFunction()),
    ("reparam (plain)", Reparameterisation()),
    ("reparam+bd sum", ReparameterisationBoundary("sum")),
    ("reparam+bd unif", ReparameterisationBoundary("uniform")),
    ("reparam+bd wtd", ReparameterisationBoundary("weighted")),
]
REFERENCE = "reparam+bd sum"


@functools.partial(jax.jit, static_argnames=("estimator", "model", "family", "num"))
def _estimate(params, key, *, estimator, model, family, num):
    return estimator(model, family, params, key, num)


def time_per_gradient(estimator, model, family, params, num, repeats):
    key = jax.random.PRNGKey(123)
    jax.block_until_ready(_estimate(params, key, estimator=estimator, model=model, family=family, num=num))
    times = []
    for i in range(repeats):
        k = jax.random.fold_in(key, i)
        t0 = time.perf_counter()
        jax.block_until_ready(_estimate(params, k, estimator=estimator, model=model, family=family, num=num))
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def single_draw_variance(estimator, model, family, snapshots, num, calls):
    """Per-component variance of the single-draw estimator (``calls * num`` draws, reusing the compiled ``num``-draw
    estimator), averaged over parameter snapshots."""
    out = []
    for j, p in enumerate(snapshots):
        per = [np.asarray(_estimate(p, jax.random.fold_in(jax.random.PRNGKey(1000 + j), c), estimator=estimator,
                                    model=model, family=family, num=num).per_sample) for c in range(calls)]
        out.append(np.var(np.concatenate(per), axis=0, ddof=1))
    return np.mean(out, axis=0)


def setups(quick):
    sms = ex.sms_changepoint()
    fam3 = MeanFieldGaussian(3)
    mean0 = float(np.log(ex.SMS_COUNTS.mean()))
    p_sms = fam3.init(jnp.array([mean0, mean0, 0.0]), jnp.array([0.1, 0.1, 0.5]))
    T = 20 if quick else 40
    thermo, data = ex.thermostat(T, seed=0)
    famT = MeanFieldGaussian(T)
    p_th = famT.init(jnp.asarray(data["y"]), 0.5)
    steps = 400 if quick else 3000
    return [
        dict(model=sms, family=fam3, params=p_sms, lr=0.02, steps=steps, num=8),
        dict(model=thermo, family=famT, params=p_th, lr=0.01, steps=steps, num=8),
    ]


def run_model(cfg, quick, out_dir, lines):
    model, family, params0 = cfg["model"], cfg["family"], cfg["params"]
    d = family.dim
    print(f"\n== {model.name}: d = {d}, K = {model.num_boundaries} hyperplanes, {cfg['steps']} Adam steps "
          f"(lr {cfg['lr']}), N = {cfg['num']} draws/step ==", flush=True)
    fits, rows = {}, {}
    for i, (name, est) in enumerate(ESTIMATORS):
        t0 = time.perf_counter()
        res = fit(model, family, params0, est, jax.random.PRNGKey(7), num_steps=cfg["steps"], num_samples=cfg["num"],
                  learning_rate=cfg["lr"], record_params=(name == REFERENCE))
        jax.block_until_ready(res.elbo)
        final = float(elbo_estimate(model, family, res.params, jax.random.PRNGKey(99), 20_000))
        fits[name] = res
        rows[name] = dict(elbo=final, fit_s=time.perf_counter() - t0)
        print(f"  fitted {name:16s} final ELBO {final:10.3f}  ({rows[name]['fit_s']:.1f} s incl. compile)", flush=True)

    # common parameters for the variance comparison: snapshots along the reference run
    _, unravel = jax.flatten_util.ravel_pytree(params0)
    trace = np.asarray(fits[REFERENCE].params_trace)
    idx = np.linspace(0, cfg["steps"] - 1, 4).astype(int)
    snapshots = [unravel(jnp.asarray(trace[i])) for i in idx]
    for name, est in ESTIMATORS:
        rows[name]["ms"] = time_per_gradient(est, model, family, snapshots[-1], cfg["num"], 20 if quick else 50)
        calls = (500 if quick else 1000) // cfg["num"]
        rows[name]["var"] = single_draw_variance(est, model, family, snapshots, cfg["num"], calls)

    # flat order of ravel_pytree(params) for the mean-field family: log_scale (d), mean (d)
    score_var = rows["score"]["var"]
    hdr = (f"{'model':16s} {'estimator':16s} {'ms/grad':>8s} {'final ELBO':>11s} {'var(mean)':>10s} "
           f"{'var(logsd)':>10s} {'score/this':>10s}")
    block = [hdr, "-" * len(hdr)]
    for name, _ in ESTIMATORS:
        r = rows[name]
        vm, vs = r["var"][d:].mean(), r["var"][:d].mean()
        ratio = np.median(score_var / np.maximum(r["var"], 1e-300))
        block.append(f"{model.name:16s} {name:16s} {r['ms']:8.2f} {r['elbo']:11.3f} {vm:10.3g} {vs:10.3g} "
                     f"{ratio:10.3g}")
    if d <= 4:  # per-component table
        names = model.latent_names or tuple(f"z{i}" for i in range(d))
        comps = [f"mu[{n}]" for n in names] + [f"logsd[{n}]" for n in names]
        block.append("")
        block.append(f"{'per-component variance':33s}" + "".join(f"{c:>19s}" for c in comps))
        for name, _ in ESTIMATORS:
            v = rows[name]["var"]
            v = np.concatenate([v[d:], v[:d]])
            block.append(f"{'':16s} {name:16s}" + "".join(f"{x:19.3g}" for x in v))
    print("\n".join(block), flush=True)
    lines.extend(block + [""])

    # plots: ELBO (moving average) and mean per-component variance along each estimator's own run
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    w = max(1, cfg["steps"] // 60)
    for name, _ in ESTIMATORS:
        e = np.asarray(fits[name].elbo)
        smooth = np.convolve(e, np.ones(w) / w, mode="valid")
        axes[0].plot(np.arange(smooth.size) + w - 1, smooth, label=name)
        axes[1].semilogy(np.asarray(fits[name].grad_var).mean(axis=1), label=name, lw=0.8)
    best = max(r["elbo"] for r in rows.values())
    axes[0].set_ylim(best - 60 if model.name == "sms-changepoint" else best - 40, best + 5)
    axes[0].set(xlabel="iteration", ylabel=f"ELBO (moving avg, {w} its)", title=f"{model.name}: ELBO")
    axes[1].set(xlabel="iteration", ylabel="mean per-component variance (single draw)",
                title=f"{model.name}: gradient variance")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path = os.path.join(out_dir, f"{model.name}.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"  wrote {path}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="few steps, smaller thermostat (smoke test)")
    ap.add_argument("--out", default="results/nondiff", help="directory for PNGs and summary.txt")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    lines = [f"Lee, Yu & Yang (2018) estimators; float64, mean-field Gaussian; quick={args.quick}; "
             f"jax {jax.__version__}, devices {jax.devices()}", ""]
    t0 = time.perf_counter()
    with jax.enable_x64(True):
        for cfg in setups(args.quick):
            run_model(cfg, args.quick, args.out, lines)
    with open(os.path.join(args.out, "summary.txt"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print(f"\ntotal {time.perf_counter() - t0:.1f} s; summary in {os.path.join(args.out, 'summary.txt')}")


if __name__ == "__main__":
    main()
