"""The Lotka-Volterra experiment of section 6 end to end: constrained HMC against the ABC baselines, Figure 1.

Method specifications (comma-separated on the command line):

* ``chmc`` — constrained HMC (exact, ``|g(u) - x_obs|_inf < tol``);
* ``abc-ss-EPS`` / ``abc-ssg-EPS`` — pseudo-marginal slice sampling, uniform-ball / Gaussian kernel of tolerance EPS;
* ``abc-mcmc-EPS`` — ABC-MCMC (Marjoram et al.), uniform-ball kernel;
* ``abc-hmc-EPS`` — HMC on ``u`` with a Gaussian kernel of scale EPS;
* ``abc-reject-EPS`` — ABC rejection with a uniform-ball kernel over a simulation budget.

The paper preset (``PAPER_PRESET``) is the original experiment's integrator setting: step size 0.25, ``N_s ~ U{4..8}``,
3 geodesic sub-steps, tolerance 1e-8.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Optional

import numpy as np

PAPER_PRESET = {"step_size": 0.25, "n_steps": (4, 8), "n_inner": 3, "tol": 1e-8}
ADAPTIVE_PRESET = {"step_size": None, "n_steps": (4, 8), "n_inner": 1, "tol": 1e-8}
PRESETS = {"paper": PAPER_PRESET, "adaptive": ADAPTIVE_PRESET}
PARAMETER_NAMES = ("z1", "z2", "z3", "z4")
_FAMILIES = {
    "abc-ss": ("abc-slice", {}),
    "abc-ssg": ("abc-slice-gaussian", {}),
    "abc-mcmc": ("abc-mcmc", {}),
    "abc-hmc": ("abc-hmc", {}),
    "abc-reject": ("abc-reject", {}),
}


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    label: str
    method: str
    epsilon: Optional[float] = None


def parse_methods(text: str) -> list[MethodSpec]:
    """Parse ``"chmc,abc-ss-100,abc-ss-10"`` into :class:`MethodSpec` objects (clear errors for typos)."""
    specs = []
    for token in [t.strip() for t in text.split(",") if t.strip()]:
        if token == "chmc":
            specs.append(MethodSpec("chmc", "chmc", 0.0))
            continue
        family, _, eps = token.rpartition("-")
        if family not in _FAMILIES:
            raise ValueError(
                f"unknown method {token!r}: use chmc or one of {', '.join(f + '-EPS' for f in _FAMILIES)}"
            )
        try:
            epsilon = float(eps)
        except ValueError:
            raise ValueError(f"method {token!r}: the tolerance after {family}- must be a number") from None
        if not epsilon > 0:
            raise ValueError(f"method {token!r}: the tolerance must be positive")
        specs.append(MethodSpec(token, _FAMILIES[family][0], epsilon))
    if not specs:
        raise ValueError("no methods given")
    return specs


@dataclasses.dataclass
class RejectionRun:
    """ABC rejection outcome in the shape the report needs."""

    result: object
    wall_time: float


def run_experiment(specs, *, chains=4, warmup=200, samples=2000, abc_samples=5000, abc_thin=200,
                   abc_simulations=1_000_000, seed=0, preset="paper", step="semi-implicit", progress=True,
                   out: Optional[Path] = None, log=print) -> dict:
    """Run each method on the original experiment's observations; save samples to ``out`` if given."""
    import dgm
    from dgm.kernels.abc import abc_rejection
    from dgm.models.lotka_volterra import default_observations, lotka_volterra

    settings = PRESETS[preset]
    x_obs = default_observations(step)
    model = dataclasses.replace(lotka_volterra(x_obs, step=step), latent_names=PARAMETER_NAMES)
    results = {}
    for spec in specs:
        log(f"\n== {spec.label} ==")
        if spec.method == "chmc":
            result = dgm.sample(model, x_obs, method="chmc", n_chains=chains, n_warmup=warmup, n_samples=samples,
                                seed=seed, progress=progress, **settings)
        elif spec.method == "abc-reject":
            with dgm.float64():
                start = time.perf_counter()
                outcome = abc_rejection(model, x_obs, spec.epsilon, n_simulations=abc_simulations, seed=seed)
                result = RejectionRun(outcome, time.perf_counter() - start)
            log(f"{spec.label}: {outcome.n_accepted} of {outcome.n_simulations} simulations accepted "
                f"(closest distance {float(outcome.min_distance):.4g}) in {result.wall_time:.1f} s")
        else:
            kwargs = {"epsilon": spec.epsilon}
            if spec.method == "abc-hmc":
                kwargs.update(step_size=None, n_steps=settings["n_steps"])
            result = dgm.sample(model, x_obs, method=spec.method, n_chains=chains, n_warmup=warmup,
                                n_samples=abc_samples, thin=abc_thin if spec.method != "abc-hmc" else 1, seed=seed,
                                progress=progress, **kwargs)
        results[spec.label] = result
        if out is not None and not isinstance(result, RejectionRun):
            result.save(Path(out) / f"samples_{spec.label}.nc")
    return results


def table_rows(results: dict) -> list[dict]:
    from dgm.reports import summary_row

    rows = []
    for label, result in results.items():
        if isinstance(result, RejectionRun):
            outcome = result.result
            row = {"method": label, "epsilon": float(outcome.epsilon), "time": result.wall_time,
                   "acceptance": float(outcome.acceptance_rate),
                   "note": f"{outcome.n_accepted} of {outcome.n_simulations} accepted"}
            if outcome.n_accepted >= 2:
                z = np.asarray(outcome.latents)
                for i, name in enumerate(PARAMETER_NAMES):
                    row[name] = (float(z[:, i].mean()), float(z[:, i].std(ddof=1)))
                row["ess_bulk"] = float(outcome.n_accepted)
                row["ess_per_sec"] = outcome.n_accepted / max(result.wall_time, 1e-12)
            rows.append(row)
        else:
            row = summary_row(label, result, list(PARAMETER_NAMES))
            if result.method == "chmc":
                row["note"] = f"max |g(u)-x|∞ = {result.max_residual:.2e}"
            rows.append(row)
    return rows


def figures(results: dict, out: Path, step: str = "semi-implicit", seed: int = 0) -> dict:
    """Write fig1a (trajectories), fig1b (marginals of log z), fig1c (ESS per second) as PNG; return their paths."""
    import jax
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import dgm
    from dgm.models.lotka_volterra import TRUE_PARAMETERS, default_observations, trajectory

    out = Path(out)
    mcmc = {k: v for k, v in results.items() if not isinstance(v, RejectionRun)}
    x_obs = default_observations(step)
    observed = np.vstack([[100.0, 100.0], x_obs.reshape(-1, 2)])
    rng = np.random.default_rng(seed)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    paths = {}

    # (a) observed populations and sampled trajectories
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), sharex=True)
    with dgm.float64():
        simulate = jax.jit(jax.vmap(lambda u: trajectory(u, step=step)))
        for (label, result), colour in zip(mcmc.items(), colours):
            flat = result.inputs.reshape(-1, result.inputs.shape[-1])
            picks = flat[rng.choice(len(flat), size=min(3, len(flat)), replace=False)]
            paths_u = np.asarray(simulate(picks))
            for k, traj in enumerate(paths_u):
                for j, ax in enumerate(axes):
                    ax.plot(traj[:, j], color=colour, lw=1, ls="--" if label != "chmc" else ":",
                            label=label if (k == 0 and j == 0) else None)
    for j, (ax, name) in enumerate(zip(axes, ("prey x1", "predator x2"))):
        ax.plot(observed[:, j], color="black", lw=2, label="observed" if j == 0 else None)
        ax.set_xlabel("time step")
        ax.set_ylabel(name)
    axes[0].legend(fontsize=8)
    fig.suptitle("(a) observed populations and sampled trajectories")
    fig.tight_layout()
    paths["fig1a"] = out / "fig1a_trajectories.png"
    fig.savefig(paths["fig1a"], dpi=120)
    plt.close(fig)

    # (b) marginal histograms of log z, true values marked
    fig, axes = plt.subplots(len(mcmc), 4, figsize=(12, 2.2 * len(mcmc) + 0.6), squeeze=False, sharex="col")
    for r, (label, result) in enumerate(mcmc.items()):
        logz = np.log(result.latents.reshape(-1, 4))
        for c in range(4):
            ax = axes[r, c]
            ax.hist(logz[:, c], bins=40, density=True, color=colours[r % len(colours)], alpha=0.8)
            ax.axvline(np.log(TRUE_PARAMETERS[c]), color="red", lw=2)
            if r == 0:
                ax.set_title(f"log z{c + 1}")
            if c == 0:
                ax.set_ylabel(label)
    fig.suptitle("(b) marginal posteriors of log z (red: true values)")
    fig.tight_layout()
    paths["fig1b"] = out / "fig1b_marginals.png"
    fig.savefig(paths["fig1b"], dpi=120)
    plt.close(fig)

    # (c) ESS per second for each parameter
    from dgm.reports import summary_row

    fig, ax = plt.subplots(figsize=(7, 3.8))
    width = 0.8 / max(len(mcmc), 1)
    for r, (label, result) in enumerate(mcmc.items()):
        each = summary_row(label, result, list(PARAMETER_NAMES))["ess_per_sec_each"]
        ax.bar(np.arange(4) + (r - (len(mcmc) - 1) / 2) * width, each, width, label=label,
               color=colours[r % len(colours)])
    ax.set_yscale("log")
    ax.set_xticks(range(4), [f"z{i + 1}" for i in range(4)])
    ax.set_ylabel("bulk ESS per second")
    ax.set_title("(c) sampling efficiency (compilation excluded)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths["fig1c"] = out / "fig1c_ess_per_second.png"
    fig.savefig(paths["fig1c"], dpi=120)
    plt.close(fig)
    return paths


def write_report(results: dict, out: Path, command: str, settings: dict, figure_paths: dict) -> Path:
    from dgm.reports import markdown_table

    rows = table_rows(results)
    text = [
        "# Lotka–Volterra: constrained HMC against ABC",
        "",
        f"Command: `{command}`",
        "",
        "Settings: `" + json.dumps(settings, default=str) + "`",
        "",
        "ESS per second divides ArviZ's bulk ESS by the run time (warm-up + sampling, compilation excluded).",
        "",
        markdown_table(rows, PARAMETER_NAMES),
        "",
    ]
    for key, title in (("fig1a", "Observed and sampled trajectories"), ("fig1b", "Marginal posteriors of log z"),
                       ("fig1c", "ESS per second")):
        if key in figure_paths:
            text += [f"## {title}", "", f"![{title}]({Path(figure_paths[key]).name})", ""]
    path = Path(out) / "report.md"
    path.write_text("\n".join(text))
    return path
