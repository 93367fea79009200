"""Figures, tables and ``report.md`` of the pose experiment (:mod:`dgm.experiments.pose.experiment`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dgm.reports import fixed_width, markdown

COLUMNS = [("scene", "{}"), ("method", "{}"), ("time", "{:.1f}"), ("iterations", "{:d}"), ("ms", "{:.2f}"),
           ("acceptance", "{:.2f}"), ("step", "{:.3g}"), ("rmse", "{:.4f}"), ("se", "{:.4f}"), ("ratio", "{:.2f}")]
HEADERS = ["scene", "method", "time/run (s)", "iterations/run", "ms/iter", "accept", "step", "RMSE (m)", "s.e.",
           "RMSE ratio chmc/hmc"]


def _cells(rows):
    return [[fmt.format(r[k]) for k, fmt in COLUMNS] for r in rows]


def text_table(rows: list[dict]) -> str:
    return fixed_width(HEADERS, _cells(rows))


def markdown_table(rows: list[dict]) -> str:
    return markdown(HEADERS, _cells(rows))


def _pose(ax, positions, segments, horizontal, color, lw=2.0):
    for a, b in segments:
        ax.plot(positions[[a, b], horizontal], positions[[a, b], 1], color=color, lw=lw, solid_capstyle="round")
    ax.plot(positions[:, horizontal], positions[:, 1], "o", color=color, ms=2.5)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])


def figures(experiment: dict, out: Path) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    paths = {}
    summaries, scenes = experiment["summaries"], experiment["scenes"]
    fig, axes = plt.subplots(1, len(summaries), figsize=(4.2 * len(summaries), 3.4), squeeze=False)
    for ax, scene, s in zip(axes[0], scenes, summaries):
        for m, color, label in (("chmc", "tab:blue", "constrained HMC"), ("hmc", "tab:red", "HMC")):
            mean, se = s[m]["mean"], s[m]["se"]
            ax.plot(s["grid"], mean, color=color, label=label)
            ax.fill_between(s["grid"], np.maximum(mean - 3 * se, 1e-4), mean + 3 * se, color=color, alpha=0.25)
        ax.set_yscale("log")
        ax.set_xlabel("time per run (s)")
        ax.set_title(f"{scene.label}: ratio {s['ratio']:.2f}", fontsize=10)
    axes[0, 0].set_ylabel("RMSE of posterior mean (m)")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(f"Fig 5a: binocular, mean +- 3 s.e. over {experiment['settings']['runs']} runs", fontsize=10)
    fig.tight_layout()
    paths["fig5a"] = out / "fig5a_rmse.png"
    fig.savefig(paths["fig5a"], dpi=120)
    plt.close(fig)

    mono = experiment["monocular"]
    segments = experiment["mono"].skeleton.segments
    poses = [mono["truth"]] + list(mono["samples"])
    fig, axes = plt.subplots(2, 4, figsize=(8, 5.2))
    for j, p in enumerate(poses):
        color = "black" if j == 0 else "tab:blue"
        _pose(axes[0, j], p, segments, 0, color)
        _pose(axes[1, j], p, segments, 2, color)
        axes[0, j].set_title("true pose" if j == 0 else f"sample {j}", fontsize=9)
    axes[0, 0].set_ylabel("front (x-y)")
    axes[1, 0].set_ylabel("side (z-y)")
    fig.suptitle("Fig 5b: monocular projection, constrained-HMC samples", fontsize=10)
    fig.tight_layout()
    paths["fig5b"] = out / "fig5b_monocular.png"
    fig.savefig(paths["fig5b"], dpi=120)
    plt.close(fig)
    return paths


def write_report(experiment: dict, rows: list[dict], out: Path, command: str, paths: dict) -> Path:
    out = Path(out)
    st = experiment["settings"]
    mono = experiment["monocular"]["result"]
    ratios = [s["ratio"] for s in experiment["summaries"]]
    per_run = "\n".join(
        f"* {scene.label}: constrained HMC {', '.join(f'{v:.4f}' for v in s['chmc']['final'])}; HMC "
        f"{', '.join(f'{v:.4f}' for v in s['hmc']['final'])}"
        for scene, s in zip(experiment["scenes"], experiment["summaries"]))
    text = f"""# Human pose and camera inference (Appendix E, Figure 5)

Command: `{command}`

Binocular: {st['scenes']} scenes drawn from the prior (seed {st['seed']}), observation noise
{st.get('noise_scale', '?')}; per scene {st['runs']} independent runs (chains) per method from shared starts (each the
best of {st.get('candidates', 1)} prior draws by the hierarchical density); constrained HMC {st['warmup']} warm-up +
{st['samples']} draws per run; HMC the same wall-clock budget (measured per-iteration cost ratio). RMSE: running
posterior mean of the 17 non-root 3-D points vs the truth, metres per coordinate, at the common final time per run;
mean and s.e. over runs.

{markdown_table(rows)}

Per-run RMSE (m) at the common time (runs that stay in a poor local mode from their start show as outliers, for
either method):

{per_run}

RMSE ratios (constrained / HMC) at the common time: {', '.join(f'{r:.3f}' for r in ratios)}
(target <= 1/3 on every scene: {'met' if max(ratios) <= 1 / 3 else 'NOT met'}).

Monocular (Fig 5b): constrained HMC, {mono.n_chains} chain(s) x {mono.n_draws} draws, acceptance
{mono.acceptance_rate:.2f}, max constraint residual {mono.max_residual:.1e}; mean squared noise input per chain
{', '.join(f'{v:.2f}' for v in experiment['monocular'].get('fit', []))} (about 1 in the main mode); the figure shows
(chain, draw) {', '.join(f'({c}, {d})' for c, d in experiment['monocular'].get('picks', []))}.

Total time {experiment['seconds']:.0f} s (compilation included).

![Fig 5a]({paths['fig5a'].name})

![Fig 5b]({paths['fig5b'].name})
"""
    path = out / "report.md"
    path.write_text(text)
    runs = {scene.label: {m: s[m]["final"].tolist() for m in ("chmc", "hmc")}
            for scene, s in zip(experiment["scenes"], experiment["summaries"])}
    (out / "results.json").write_text(json.dumps(dict(rows=rows, per_run_rmse=runs, settings=st,
                                                      seconds=experiment["seconds"]), indent=2, default=float))
    return path
