r"""The Gaussian-model experiment of Caterini, Doucet & Sejdinovic (2018, their section 5): learning model
parameters by maximising the ELBO of several variational families.

Model: one global latent ``z ~ N(0, I_d)`` and ``N`` observations ``x_i | z ~ N(z + Delta, diag(sigma^2))``; the
true parameters are (as in the authors' code) ``Delta_j = r_j / 5`` and ``sigma_j = 36 r_j^2 / (10 (d-1)^2) + 0.1``
(``sigma = 1`` for ``d = 1``) with ``r = (-(d-1)/2, ..., (d-1)/2)``, so ``sigma`` ranges over ``[0.1, 1]``.  Each
method maximises its own ELBO jointly in ``(Delta, log sigma)`` and its variational parameters with RMSProp
(optax); the score is ``||Delta_hat - Delta||^2 + ||sigma_hat - sigma||^2`` at the end.

The likelihood is evaluated through the sufficient statistics ``xbar`` and ``S_j = sum_i (x_ij - xbar_j)^2``:
``log p(x | z) = sum_j [-(S_j + N (xbar_j - Delta_j - z_j)^2) / (2 sigma_j^2) - N log sigma_j] - (N d / 2) log 2 pi``.

Methods (:data:`METHODS`), all from ``q0 = N(0, I_d)`` as in the paper unless stated:

* ``hvae-K`` / ``hvae-K-t``: the Hamiltonian flow (:mod:`dgm.vi.hamiltonian_flow`) with ``K`` leapfrog steps, no
  tempering / the fixed quadratic schedule (``beta_0`` learnt); initial step size 0.005 per dimension (at most
  0.5) and ``1/sqrt(beta_0) = 5`` as the authors' code;
* ``nf-K``: ``K`` planar layers (:class:`dgm.vi.flows.PlanarFlow`, flowjax);
* ``vb``: mean-field Gaussian ``N(mu, diag s^2)`` with its ELBO in closed form (``mu = 0``, ``log s = 1`` at start).

The Monte-Carlo ELBOs average ``samples`` draws per iteration (10 in the paper).  Every data set of a dimension is
trained at once (``vmap``), ``record_every`` iterations per compiled ``lax.scan``, by :func:`dgm.vi.batched_fit.
fit_batched`, which records the estimates after every chunk and, given a checkpoint folder, keeps one resumable
checkpoint per ``(d, method)``.

Reading the result: the exact maximum-likelihood estimate (:func:`maximum_likelihood_error`) already has error
``~ d`` (one draw of ``z`` per data set is indistinguishable from ``Delta``), and mean-field VB is exact for this
model, so differences between methods are differences in how far their optimisation got and in the bias of their
bound, not in the ML floor.  :func:`convergence` states the criterion used in the report.
"""

from __future__ import annotations

import math
import sys
import textwrap
from typing import Callable, NamedTuple, Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from dgm.vi import hamiltonian_flow as hf
from dgm.vi.batched_fit import BatchedFit, fit_batched
from dgm.vi.flows import MeanFieldGaussian, PlanarFlow

__all__ = ["METHODS", "DIMS", "DEFAULTS", "QUICK", "true_parameters", "simulate", "run_method", "run_experiment",
           "figure", "median_table", "write_outputs"]

DIMS = (1, 2, 3, 5, 11, 25, 51, 101, 201, 301)
METHODS = ("hvae-1", "hvae-1-t", "hvae-10", "hvae-10-t", "nf-1", "nf-30", "vb")
_LOG_2PI = math.log(2.0 * math.pi)
# default run (about ten minutes of CPU on 2 cores) and --quick; the paper (--paper): 10 data sets, 30,000 iterations,
# lr 1e-3
DEFAULTS = dict(n_datasets=3, iterations=2000, learning_rate=1e-2, samples=10, n_obs=10_000)
QUICK = dict(dims=(1, 5, 25), n_datasets=2, iterations=300)


def true_parameters(d: int):
    """``(Delta, sigma)`` of the experiment in dimension ``d`` (module docstring)."""
    r = np.arange(d, dtype=np.float64) - (d - 1) / 2
    sigma = np.ones(1) if d == 1 else 36.0 / (10.0 * (d - 1) ** 2) * r ** 2 + 0.1
    return r / 5.0, sigma


class Stats(NamedTuple):
    """Sufficient statistics of one data set: its size, mean and centred sum of squares per coordinate."""

    n: jax.Array
    xbar: jax.Array
    ss: jax.Array


def simulate(d: int, n_datasets: int, n_obs: int = 10_000, seed: int = 0) -> Stats:
    """``n_datasets`` data sets of ``n_obs`` draws each (a fresh ``z`` per data set), as stacked :class:`Stats`."""
    delta, sigma = true_parameters(d)
    rng = np.random.default_rng([seed, d])
    xbar, ss = [], []
    for _ in range(n_datasets):
        z = rng.normal(size=d)
        x = z + delta + sigma * rng.normal(size=(n_obs, d))
        if not np.all(np.isfinite(x)):  # pragma: no cover - simulated data are finite
            raise ValueError("simulated data contain NaN")
        xbar.append(x.mean(0))
        ss.append(((x - x.mean(0)) ** 2).sum(0))
    return Stats(jnp.full((n_datasets,), float(n_obs), jnp.float32), jnp.asarray(np.array(xbar), jnp.float32),
                 jnp.asarray(np.array(ss), jnp.float32))


class ModelParams(eqx.Module):
    delta: jax.Array
    log_sigma: jax.Array


def log_joint(model: ModelParams, stats: Stats, z):
    """``log p(x, z)`` from the sufficient statistics (module docstring)."""
    d = z.shape[-1]
    inv_var = jnp.exp(-2.0 * model.log_sigma)
    resid = stats.xbar - model.delta - z
    log_lik = jnp.sum(-0.5 * (stats.ss + stats.n * resid ** 2) * inv_var - stats.n * model.log_sigma) \
        - 0.5 * stats.n * d * _LOG_2PI
    return log_lik - 0.5 * jnp.sum(z * z) - 0.5 * d * _LOG_2PI


def _vb_elbo(model, variational: MeanFieldGaussian, stats, key, samples):
    """Closed-form ELBO of the mean-field Gaussian: ``E_q log p(x, z) + H[q]``."""
    mu, s2 = variational.loc, jnp.exp(2.0 * variational.log_scale)
    d = mu.shape[0]
    inv_var = jnp.exp(-2.0 * model.log_sigma)
    e_resid2 = (stats.xbar - model.delta - mu) ** 2 + s2
    e_log_lik = jnp.sum(-0.5 * (stats.ss + stats.n * e_resid2) * inv_var - stats.n * model.log_sigma) \
        - 0.5 * stats.n * d * _LOG_2PI
    e_log_prior = -0.5 * jnp.sum(mu * mu + s2) - 0.5 * d * _LOG_2PI
    return e_log_lik + e_log_prior + variational.entropy()


def _nf_elbo(model, variational: PlanarFlow, stats, key, samples):
    return variational.elbo(lambda z: log_joint(model, stats, z), key, samples)


def _hvae_elbo(model, flow: hf.HamiltonianFlow, stats, key, samples):
    d = flow.dim
    k_z, k_g = jax.random.split(key)
    z0 = jax.random.normal(k_z, (samples, d))
    gamma0 = jax.random.normal(k_g, (samples, d))
    log_q0 = -0.5 * jnp.sum(z0 * z0, -1) - 0.5 * d * _LOG_2PI
    target = lambda z: log_joint(model, stats, z)  # noqa: E731
    out = jax.vmap(lambda a, b, c: hf.log_weight(flow, target, a, b, c))(z0, gamma0, log_q0)
    return jnp.mean(out.log_weight)


def _variational(method: str, d: int, key):
    """``(initial variational parameters, elbo function)`` for a method name."""
    parts = method.split("-")
    if not (len(parts) == 1 or parts[1].isdigit()) or (len(parts) == 3 and parts[2] != "t") or len(parts) > 3:
        raise ValueError(f"unknown method {method!r}; known: {METHODS} (hvae-K, hvae-K-t, nf-K for any K)")
    if parts[0] == "hvae" and len(parts) in (2, 3):
        tempering = "fixed" if parts[-1] == "t" else "none"
        return hf.HamiltonianFlow(d, int(parts[1]), tempering=tempering, step_size=0.005, max_step=0.5,
                                  beta0=1.0 / 25.0), _hvae_elbo
    if parts[0] == "nf" and len(parts) == 2:
        return PlanarFlow(d, int(parts[1]), key=key), _nf_elbo
    if method == "vb":
        return MeanFieldGaussian(d, loc=0.0, scale=math.e), _vb_elbo
    raise ValueError(f"unknown method {method!r}; known: {METHODS} (hvae-K, hvae-K-t, nf-K for any K)")


def run_method(method: str, d: int, stats: Stats, *, iterations: int, learning_rate: float, samples: int = 10,
               seed: int = 0, record_every: int = 1000, checkpoint=None, progress: bool = False) -> BatchedFit:
    """Train ``method`` on every data set in ``stats`` (stacked) at once (:func:`dgm.vi.batched_fit.fit_batched`:
    ``vmap`` over data sets, ``record_every`` RMSProp iterations per compiled ``lax.scan``).  The fit's records hold
    ``delta`` and ``sigma`` (estimates after every chunk, leading axes ``(record, data set)``); ``checkpoint``: a file
    to resume from and to write after every chunk (a finished one is loaded, not rerun)."""
    n_sets = stats.xbar.shape[0]

    def init(key):
        variational, _ = _variational(method, d, key)
        model = ModelParams(jnp.zeros(d), jnp.full((d,), 3.0))  # the paper's start: Delta = 0, log sigma = 3
        return (model, variational)

    _, elbo_fn = _variational(method, d, jax.random.key(0))
    keys = jax.random.split(jax.random.key(seed), n_sets)
    # static is shared: unbatched leaves of the vmapped init are the same structure for every data set
    params, static = eqx.partition(eqx.filter_vmap(init)(keys), eqx.is_inexact_array)
    train_keys = jax.random.split(jax.random.fold_in(keys[0], 7), n_sets)

    def elbo(pair, stats_one, key):
        model, variational = pair
        return elbo_fn(model, variational, stats_one, key, samples)

    def record(pair):
        return {"delta": pair[0].delta, "sigma": jnp.exp(pair[0].log_sigma)}

    settings = dict(method=method, d=d, n_datasets=n_sets, learning_rate=learning_rate, samples=samples, seed=seed,
                    n_obs=int(round(float(stats.n[0]))), optimiser="rmsprop")
    return fit_batched(elbo, params, static, stats, train_keys, optimiser=optax.rmsprop(learning_rate),
                       iterations=iterations, record_every=record_every, record=record, checkpoint=checkpoint,
                       settings=settings, progress=progress, description=f"d={d} {method}")


def squared_error(delta_hat, sigma_hat, d: int):
    """``||Delta_hat - Delta||^2 + ||sigma_hat - sigma||^2`` over the last axis (the paper's score)."""
    delta, sigma = true_parameters(d)
    return np.sum((np.asarray(delta_hat) - delta) ** 2, -1) + np.sum((np.asarray(sigma_hat) - sigma) ** 2, -1)


def maximum_likelihood_error(stats: Stats, d: int) -> np.ndarray:
    """The score of the exact maximum-likelihood estimate per data set: ``Delta_hat = xbar`` and ``sigma_hat^2 =
    S / (N - 1)`` (the marginal ``x_1..N ~ N(Delta 1, sigma^2 I + 1 1^T)`` per coordinate, up to a ``1/N``
    correction).  Mean-field VB is exact for this model (its posterior is a diagonal Gaussian), so this is also the
    optimum of the VB ELBO: the floor every method's error tends to as its bound tightens, ``~ d`` because one draw
    of ``z`` per data set cannot be told apart from ``Delta``."""
    n = np.asarray(stats.n, np.float64)[:, None]
    return squared_error(np.asarray(stats.xbar, np.float64), np.sqrt(np.asarray(stats.ss, np.float64) / (n - 1)), d)


def convergence(delta_path, sigma_path, iterations, d: int, *, window: int = 5000, tolerance: float = 0.1):
    """The convergence criterion, per data set: over the last ``window`` iterations the estimate
    ``theta = (Delta_hat, sigma_hat)`` moved by at most ``tolerance`` times its distance to the truth,
    ``||theta_T - theta_{T - window}|| <= tolerance ||theta_T - theta*||`` (a squared move at most 1 % of the
    error for the default 0.1).  ``delta_path``/``sigma_path``: ``(record, data set, d)`` estimates at
    ``iterations``; returns ``(converged (n_sets,) bool, relative move (n_sets,))``."""
    iterations = np.asarray(iterations)
    target = iterations[-1] - window
    if target < iterations[0] or target not in iterations:
        raise ValueError(f"the convergence window ({window} iterations) needs an estimate recorded at iteration "
                         f"{target}; records are at {iterations[:3].tolist()}...")
    j = int(np.where(iterations == target)[0][0])
    move = np.sqrt(np.sum((delta_path[-1] - delta_path[j]) ** 2, -1) + np.sum((sigma_path[-1] - sigma_path[j]) ** 2,
                                                                              -1))
    dist = np.sqrt(squared_error(delta_path[-1], sigma_path[-1], d))
    relative = move / np.maximum(dist, 1e-12)
    return relative <= tolerance, relative


def run_experiment(*, dims=DIMS, methods=METHODS, n_datasets: int = 3, iterations: int = 2000,
                   learning_rate: float = 5e-3, samples: int = 10, n_obs: int = 10_000, seed: int = 0,
                   record_every: int = 1000, window: Optional[int] = None, checkpoint_dir=None,
                   progress: bool = True, only_finished: bool = False, log=print) -> dict:
    """Every method on ``n_datasets`` data sets per ``d``; ``{"errors": {method: {d: [error per data set]}},
    "elbo", "converged", "relative_move", "error_path", "ml_error", "settings"}``.

    ``checkpoint_dir``: one checkpoint per ``(d, method)`` (``d{d}_{method}.npz``), written every ``record_every``
    iterations; an interrupted run resumes where it stopped and finished ones are loaded.  ``only_finished``: report
    what ``checkpoint_dir`` already holds completed, train nothing (a run still in progress elsewhere).  ``window``:
    the convergence window (default: the last sixth of the run, rounded to ``record_every``)."""
    from pathlib import Path

    from tqdm.auto import tqdm

    for name, v in (("n_datasets", n_datasets), ("iterations", iterations), ("samples", samples), ("n_obs", n_obs),
                    ("record_every", record_every)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    record_every = min(record_every, iterations)
    if window is None:
        window = max(record_every, (iterations // 6) // record_every * record_every)
    for m in methods:  # refuse a bad method name before any training
        _variational(m, 1, jax.random.key(0))
    folder = None if checkpoint_dir is None else Path(checkpoint_dir)
    keys = ("errors", "elbo", "converged", "relative_move", "error_path", "seconds")
    out = {k: {m: {} for m in methods} for k in keys}
    ml_error, missing = {}, []
    with tqdm(total=len(dims) * len(methods), desc="Gaussian model", disable=not progress, file=sys.stderr) as bar:
        for d in dims:
            stats = simulate(d, n_datasets, n_obs, seed)
            ml_error[d] = maximum_likelihood_error(stats, d).tolist()
            for m in methods:
                bar.set_postfix_str(f"d={d} {m}", refresh=True)
                path = None if folder is None else folder / f"d{d}_{m}.npz"
                if only_finished and not _finished(path, iterations):
                    missing.append((d, m))
                    bar.update(1)
                    continue
                fit = run_method(m, d, stats, iterations=iterations, learning_rate=learning_rate, samples=samples,
                                 seed=seed, record_every=record_every, checkpoint=path, progress=progress)
                delta_path, sigma_path = fit.records["delta"], fit.records["sigma"]
                err_path = squared_error(delta_path, sigma_path, d)  # (record, data set)
                out["errors"][m][d] = err_path[-1].tolist()
                out["elbo"][m][d] = fit.elbo[-1].tolist()
                out["error_path"][m][d] = dict(iterations=fit.iterations.tolist(),
                                               median=np.median(err_path, 1).tolist())
                if window < iterations:
                    ok, rel = convergence(delta_path, sigma_path, fit.iterations, d, window=window)
                    out["converged"][m][d], out["relative_move"][m][d] = ok.tolist(), rel.tolist()
                out["seconds"][m][d] = fit.seconds
                bar.update(1)
    settings = dict(dims=list(dims), methods=list(methods), n_datasets=n_datasets, iterations=iterations,
                    learning_rate=learning_rate, optimiser="rmsprop", samples=samples, n_obs=n_obs, seed=seed,
                    record_every=record_every, convergence_window=window, convergence_tolerance=0.1)
    if missing:
        log(f"[hvae-gaussian] not finished in {folder}: " + ", ".join(f"d={d} {m}" for d, m in missing))
    return dict(out, ml_error=ml_error, settings=settings, missing=[list(v) for v in missing])


def _finished(path, iterations: int) -> bool:
    if path is None or not path.exists():
        return False
    from dgm.vi.batched_fit import load_checkpoint

    return int(load_checkpoint(path)["meta"]["iteration"]) >= iterations


LABELS = {"hvae-1": "HVAE K=1", "hvae-1-t": "HVAE K=1, tempered", "hvae-10": "HVAE K=10",
          "hvae-10-t": "HVAE K=10, tempered", "nf-1": "planar NF K=1", "nf-30": "planar NF K=30", "vb": "VB"}
PAPER_READING = ("the paper's Figure 2 (its reading, as stated in the text): the tempered HVAE has the lowest error at "
                 "large d, VB the highest; HVAE errors grow slowly with d")


def _per_d(per_d: dict, d):
    return per_d[d] if d in per_d else per_d[str(d)]


def figure(result: dict, path) -> None:
    """Error against dimension, log-log: mean over data sets with error bars of one standard error (the paper's
    Figure 2), hollow markers where fewer than all data sets met the convergence criterion, and the exact
    maximum-likelihood error (the floor) in grey."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    n_methods = max(1, len(result["errors"]))
    for i, (m, per_d) in enumerate(result["errors"].items()):
        dims = sorted(int(d) for d in per_d)
        if not dims:
            continue
        vals = [np.asarray(_per_d(per_d, d), float) for d in dims]
        mean = np.array([v.mean() for v in vals])
        se = np.array([v.std(ddof=1) / np.sqrt(v.size) if v.size > 1 else 0.0 for v in vals])
        x = np.asarray(dims, float) * (1 + 0.03 * (i - (n_methods - 1) / 2))  # small offsets: bars stay apart
        colour = f"C{i}"
        ax.errorbar(x, mean, yerr=se, fmt="-", color=colour, lw=1.2, capsize=2, label=LABELS.get(m, m))
        conv = result.get("converged", {}).get(m, {})
        for xi, d, mi in zip(x, dims, mean):
            flags = conv.get(d, conv.get(str(d)))
            full = flags is not None and all(flags)
            ax.plot([xi], [mi], "o", ms=4, color=colour, mfc=colour if full else "white")
    ml = result.get("ml_error", {})
    if ml:
        dims = sorted(int(d) for d in ml)
        ax.plot(dims, [np.mean(_per_d(ml, d)) for d in dims], ":", color="0.4", lw=1.5,
                label="exact maximum likelihood (VB's optimum)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("dimension d")
    ax.set_ylabel(r"$\|\hat\Delta-\Delta\|^2 + \|\hat\sigma-\sigma\|^2$")
    s = result["settings"]
    ax.set_title(f"Gaussian model, N={s['n_obs']}: mean ± s.e. over {s['n_datasets']} data sets; {s['iterations']} "
                 f"RMSProp iterations, lr {s['learning_rate']}\nfilled: converged on every data set (move over the "
                 f"last {s.get('convergence_window', '?')} iterations <= 10% of the error), hollow: not\n"
                 + textwrap.fill(PAPER_READING, 110), fontsize=7)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def median_table(result: dict) -> str:
    """Mean error ± s.e. over data sets per method (rows) and dimension (columns), with the number of data sets that
    met the convergence criterion, as text."""
    dims = [d for d in result["settings"]["dims"]]
    width = 18
    lines = ["mean error (converged/data sets)".ljust(16) + "".join(f"{'d=' + str(d):>{width}}" for d in dims)]
    for m, per_d in result["errors"].items():
        cells = []
        for d in dims:
            if d not in per_d and str(d) not in per_d:
                cells.append(f"{'-':>{width}}")
                continue
            v = np.asarray(_per_d(per_d, d), float)
            conv = result.get("converged", {}).get(m, {})
            flags = conv.get(d, conv.get(str(d)))
            tag = "" if flags is None else f" ({int(np.sum(flags))}/{len(flags)})"
            cells.append(f"{v.mean():.3g}{tag}".rjust(width))
        lines.append(f"{m:<16}" + "".join(cells))
    ml = result.get("ml_error", {})
    if ml:
        lines.append(f"{'max. likelihood':<16}" + "".join(
            f"{np.mean(_per_d(ml, d)):.3g}".rjust(width) if (d in ml or str(d) in ml) else f"{'-':>{width}}"
            for d in dims))
    return "\n".join(lines)


def write_outputs(result: dict, out) -> list:
    """``hvae_gaussian.json`` and ``hvae_gaussian.png`` in ``out``; returns their paths."""
    import json
    from pathlib import Path

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "hvae_gaussian.json", out / "hvae_gaussian.png"]
    paths[0].write_text(json.dumps(result, indent=2, default=str))
    figure(result, paths[1])
    return paths
