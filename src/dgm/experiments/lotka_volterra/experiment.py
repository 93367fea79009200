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
CHMC_PRESETS = {"paper": PAPER_PRESET, "adaptive": ADAPTIVE_PRESET}
"""The constrained-HMC settings of the experiment: the one definition (the CLI, benchmarks and tests import it)."""


def describe_preset(name: str) -> str:
    """``"step size 0.25, N_s ~ U{4..8}, 3 geodesic sub-steps, tol 1e-08"`` (for help texts and reports)."""
    preset = CHMC_PRESETS[name]
    step = "adapted step size" if preset["step_size"] is None else f"step size {preset['step_size']:g}"
    lo, hi = preset["n_steps"]
    sub = "sub-step" if preset["n_inner"] == 1 else "sub-steps"
    return f"{step}, N_s ~ U{{{lo}..{hi}}}, {preset['n_inner']} geodesic {sub}, tol {preset['tol']:g}"
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
                   out: Optional[Path] = None, log=print, checkpoint=None, resume=None,
                   checkpoint_every=None) -> dict:
    """Run each method on the original experiment's observations; save samples to ``out`` if given.

    ``checkpoint=DIR``: each MCMC method's run is checkpointed to ``DIR/<label>`` (``dgm.sample(checkpoint=)``);
    ``resume=DIR``: each continues from there (a finished one is loaded, one not started yet starts)."""
    import dgm
    from dgm.kernels.abc import abc_rejection
    from dgm.models.lotka_volterra import default_observations, lotka_volterra
    from dgm.runtime.checkpoint import RUN_FILE

    if resume is not None and not any((Path(resume) / s.label / RUN_FILE).exists() for s in specs):
        raise ValueError(f"--resume {resume}: no checkpointed run of {', '.join(s.label for s in specs)} there")

    def saving(label):
        if checkpoint is None and resume is None:
            return {}
        directory = Path(resume if resume is not None else checkpoint) / label
        return {"checkpoint": directory, "resume": directory if resume is not None else None,
                "checkpoint_every": checkpoint_every}

    settings = CHMC_PRESETS[preset]
    x_obs = default_observations(step)
    model = dataclasses.replace(lotka_volterra(x_obs, step=step), latent_names=PARAMETER_NAMES)
    results = {}
    for spec in specs:
        log(f"\n== {spec.label} ==")
        if spec.method == "chmc":
            result = dgm.sample(model, x_obs, method="chmc", n_chains=chains, n_warmup=warmup, n_samples=samples,
                                seed=seed, progress=progress, **settings, **saving(spec.label))
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
                                progress=progress, **kwargs, **saving(spec.label))
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
            row = {"method": label, "epsilon": float(outcome.epsilon), "kernel": outcome.kernel,
                   "time": result.wall_time, "total_time": result.wall_time,
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
                step = result.settings.get("step_size")
                step = f"{step:.3g}" if isinstance(step, float) else str(step)
                how = result.settings.get("step_size_adaptation", "")
                row["note"] = f"max |g(u)-x|∞ = {result.max_residual:.2e}; step size {step} ({how})"
            rows.append(row)
    return rows


def _draws(result):
    """``(inputs, latents)`` of a run as flat ``(n, dim)`` arrays (``None`` when it has no draws: ABC rejection that
    accepted nothing)."""
    if isinstance(result, RejectionRun):
        outcome = result.result
        if outcome.n_accepted == 0:
            return None
        return np.asarray(outcome.inputs), np.asarray(outcome.latents).reshape(-1, 4)
    return result.inputs.reshape(-1, result.inputs.shape[-1]), result.latents.reshape(-1, 4)


def _no_data(ax, text):
    """Say in an empty panel why it is empty."""
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=9, color="0.35", wrap=True,
            bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.9})


def _finish(fig, empty, path):
    """Lay out, name the methods without draws in a footnote (when any), save and close."""
    if empty:
        fig.text(0.01, 0.01, "no draws (ABC rejection accepted none): " + ", ".join(empty), fontsize=8, color="0.35")
    fig.tight_layout(rect=(0, 0.05 if empty else 0, 1, 1))
    fig.savefig(path, dpi=120)
    import matplotlib.pyplot as plt

    plt.close(fig)


def figures(results: dict, out: Path, step: str = "semi-implicit", seed: int = 0) -> dict:
    """Write fig1a (trajectories), fig1b (marginals of log z), fig1c (ESS per second) as PNG; return their paths.

    Every method given gets its place; a panel without data (ABC rejection that accepted nothing, no method with an
    ESS) says so instead of being left out.
    """
    import jax
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import dgm
    from dgm.models.lotka_volterra import TRUE_PARAMETERS, default_observations, trajectory

    out = Path(out)
    draws = {label: _draws(result) for label, result in results.items()}
    empty = [label for label, d in draws.items() if d is None]
    x_obs = default_observations(step)
    observed = np.vstack([[100.0, 100.0], x_obs.reshape(-1, 2)])
    rng = np.random.default_rng(seed)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colour = {label: colours[i % len(colours)] for i, label in enumerate(results)}
    paths = {}

    # (a) observed populations and sampled trajectories
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), sharex=True)
    with dgm.float64():
        simulate = jax.jit(jax.vmap(lambda u: trajectory(u, step=step)))
        for label, d in draws.items():
            if d is None:
                continue
            flat = d[0]
            picks = flat[rng.choice(len(flat), size=min(3, len(flat)), replace=False)]
            for k, traj in enumerate(np.asarray(simulate(picks))):
                for j, ax in enumerate(axes):
                    ax.plot(traj[:, j], color=colour[label], lw=1, ls="--" if label != "chmc" else ":",
                            label=label if (k == 0 and j == 0) else None)
    for j, (ax, name) in enumerate(zip(axes, ("prey x1", "predator x2"))):
        ax.plot(observed[:, j], color="black", lw=2, label="observed" if j == 0 else None)
        ax.set_xlabel("time step")
        ax.set_ylabel(name)
    axes[0].legend(fontsize=8)
    fig.suptitle("(a) observed populations and sampled trajectories")
    paths["fig1a"] = out / "fig1a_trajectories.png"
    _finish(fig, empty, paths["fig1a"])

    # (b) marginal histograms of log z, true values marked; one row per method
    fig, axes = plt.subplots(len(results), 4, figsize=(12, 2.2 * len(results) + 0.6), squeeze=False, sharex="col")
    for r, (label, d) in enumerate(draws.items()):
        for c in range(4):
            ax = axes[r, c]
            if d is None:
                outcome = results[label].result
                _no_data(ax, f"no accepted draws\n(0 of {outcome.n_simulations:,} simulations)")
            else:
                ax.hist(np.log(d[1][:, c]), bins=40 if len(d[1]) >= 40 else "auto", density=True,
                        color=colour[label], alpha=0.8)
            ax.axvline(np.log(TRUE_PARAMETERS[c]), color="red", lw=2)
            if r == 0:
                ax.set_title(f"log z{c + 1}")
            if c == 0:
                ax.set_ylabel(label)
    fig.suptitle("(b) marginal posteriors of log z (red: true values)")
    paths["fig1b"] = out / "fig1b_marginals.png"
    _finish(fig, [], paths["fig1b"])

    # (c) ESS per second for each parameter (ABC rejection: accepted draws are independent, ESS = their number)
    from dgm.reports import summary_row

    fig, ax = plt.subplots(figsize=(7, 3.8))
    bars = {}
    for label, result in results.items():
        if isinstance(result, RejectionRun):
            if result.result.n_accepted:
                bars[label] = [result.result.n_accepted / max(result.wall_time, 1e-12)] * 4
        else:
            bars[label] = summary_row(label, result, list(PARAMETER_NAMES))["ess_per_sec_each"]
    width = 0.8 / max(len(bars), 1)
    for r, (label, each) in enumerate(bars.items()):
        shown = f"{label} (accepted draws/s, compilation included)" if isinstance(results[label], RejectionRun) else label
        ax.bar(np.arange(4) + (r - (len(bars) - 1) / 2) * width, each, width, label=shown, color=colour[label])
    if bars and all(v > 0 for each in bars.values() for v in each):
        ax.set_yscale("log")
    if bars:
        ax.legend(fontsize=8)
    else:
        _no_data(ax, "no method has draws, so no ESS to show")
    ax.set_xticks(range(4), [f"z{i + 1}" for i in range(4)])
    ax.set_xlim(-0.6, 3.6)
    ax.set_ylabel("bulk ESS per second")
    ax.set_title("(c) sampling efficiency (compilation excluded)")
    paths["fig1c"] = out / "fig1c_ess_per_second.png"
    _finish(fig, empty, paths["fig1c"])
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
