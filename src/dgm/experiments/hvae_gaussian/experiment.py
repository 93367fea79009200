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

The Monte-Carlo ELBOs average ``samples`` draws per iteration (10 in the paper).  Every dataset of a dimension is
trained at once (``vmap``); iterations run in ``lax.scan``.
"""

from __future__ import annotations

import math
import sys
from typing import Callable, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from dgm.vi import hamiltonian_flow as hf
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
               seed: int = 0):
    """Train ``method`` on every data set in ``stats`` (stacked) at once; returns ``(delta_hat, sigma_hat,
    final_elbo)`` as numpy arrays with a leading data-set axis."""
    n_sets = stats.xbar.shape[0]
    optimiser = optax.rmsprop(learning_rate)

    def init(key):
        variational, _ = _variational(method, d, key)
        model = ModelParams(jnp.zeros(d), jnp.full((d,), 3.0))  # the paper's start: Delta = 0, log sigma = 3
        return (model, variational)

    _, elbo_fn = _variational(method, d, jax.random.key(0))
    keys = jax.random.split(jax.random.key(seed), n_sets)
    params0 = eqx.filter_vmap(init)(keys)
    params, static = eqx.partition(params0, eqx.is_inexact_array)

    def train_one(p, stats_one, key):
        def loss(p, k):
            model, variational = eqx.combine(p, static)
            return -elbo_fn(model, variational, stats_one, k, samples)

        def body(carry, i):
            p, opt_state = carry
            value, grads = jax.value_and_grad(loss)(p, jax.random.fold_in(key, i))
            updates, opt_state = optimiser.update(grads, opt_state, p)
            return (optax.apply_updates(p, updates), opt_state), value

        (p, _), values = lax.scan(body, (p, optimiser.init(p)), jnp.arange(iterations))
        return p, -jnp.mean(values[-max(1, iterations // 20):])

    # static is shared: unbatched leaves of the vmapped init are the same structure for every data set
    p, elbo = jax.jit(jax.vmap(train_one))(params, stats, jax.random.split(jax.random.fold_in(keys[0], 7), n_sets))
    model, _ = eqx.combine(p, static)
    return np.asarray(model.delta), np.exp(np.asarray(model.log_sigma)), np.asarray(elbo)


def run_experiment(*, dims=DIMS, methods=METHODS, n_datasets: int = 3, iterations: int = 2000,
                   learning_rate: float = 5e-3, samples: int = 10, n_obs: int = 10_000, seed: int = 0,
                   progress: bool = True) -> dict:
    """``{"errors": {method: {d: [error per data set]}}, "elbo": ..., "settings": ...}``."""
    from tqdm.auto import tqdm

    for name, v in (("n_datasets", n_datasets), ("iterations", iterations), ("samples", samples), ("n_obs", n_obs)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    for m in methods:  # refuse a bad method name before any training
        _variational(m, 1, jax.random.key(0))
    errors = {m: {} for m in methods}
    elbos = {m: {} for m in methods}
    with tqdm(total=len(dims) * len(methods), desc="Gaussian model", disable=not progress, file=sys.stderr) as bar:
        for d in dims:
            stats = simulate(d, n_datasets, n_obs, seed)
            delta, sigma = true_parameters(d)
            for m in methods:
                bar.set_postfix_str(f"d={d} {m}", refresh=True)
                d_hat, s_hat, elbo = run_method(m, d, stats, iterations=iterations, learning_rate=learning_rate,
                                                samples=samples, seed=seed)
                err = np.sum((d_hat - delta) ** 2, -1) + np.sum((s_hat - sigma) ** 2, -1)
                errors[m][d] = err.tolist()
                elbos[m][d] = elbo.tolist()
                bar.update(1)
    settings = dict(dims=list(dims), methods=list(methods), n_datasets=n_datasets, iterations=iterations,
                    learning_rate=learning_rate, optimiser="rmsprop", samples=samples, n_obs=n_obs, seed=seed)
    return {"errors": errors, "elbo": elbos, "settings": settings}


def figure(result: dict, path) -> None:
    """Error against dimension, log-log, median and range over data sets per method (the paper's figure 2)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {"hvae-1": "HVAE K=1", "hvae-1-t": "HVAE K=1, tempered", "hvae-10": "HVAE K=10",
              "hvae-10-t": "HVAE K=10, tempered", "nf-1": "planar NF K=1", "nf-30": "planar NF K=30", "vb": "VB"}
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for i, (m, per_d) in enumerate(result["errors"].items()):
        dims = sorted(int(d) for d in per_d)
        vals = [np.asarray(per_d[d] if d in per_d else per_d[str(d)]) for d in dims]
        med = [np.median(v) for v in vals]
        ax.plot(dims, med, "-o", ms=3, color=f"C{i}", label=labels.get(m, m))
        ax.fill_between(dims, [v.min() for v in vals], [v.max() for v in vals], color=f"C{i}", alpha=0.12)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("dimension d")
    ax.set_ylabel(r"$\|\hat\Delta-\Delta\|^2 + \|\hat\sigma-\sigma\|^2$")
    s = result["settings"]
    ax.set_title(f"Gaussian model, N={s['n_obs']}: median (line) and range (band) over {s['n_datasets']} data sets; "
                 f"{s['iterations']} RMSProp iterations, lr {s['learning_rate']}", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def median_table(result: dict) -> str:
    """Median error over data sets per method (rows) and dimension (columns), as text."""
    dims = result["settings"]["dims"]
    lines = ["median error   " + "".join(f"{d:>10}" for d in dims)]
    for m, per_d in result["errors"].items():
        lines.append(f"{m:<15}" + "".join(f"{np.median(per_d[d]):>10.3g}" for d in dims))
    return "\n".join(lines)


def write_outputs(result: dict, out) -> list:
    """``hvae_gaussian.json`` and ``hvae_gaussian.png`` in ``out``; returns their paths."""
    import json
    from pathlib import Path

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "hvae_gaussian.json", out / "hvae_gaussian.png"]
    paths[0].write_text(json.dumps(result, indent=2))
    figure(result, paths[1])
    return paths
