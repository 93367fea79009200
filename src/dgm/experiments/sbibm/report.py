"""Tables, the C2ST figure, ``results.json`` and ``report.md`` of ``dgm sbibm``."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from dgm.experiments.sbibm.experiment import TARGET_C2ST, Run, summarise

BASELINES_NOTE = (
    "The sbibm paper (Lueckmann et al. 2021, Fig. 2) shows REJ-ABC, SMC-ABC, NLE, NPE and NRE as plots; its numbers "
    "are in sbibm's results repository (main_paper.csv), which is not shipped with the sbibm wheel and could not be "
    "read here, so no baseline is drawn rather than numbers read off a figure. Pass --baselines FILE (CSV with "
    "columns task,algorithm,c2st, one row per observation or per task mean) to draw published numbers beside dgm's."
)


def write_results(out: Path, command: str, settings: dict, runs: list[Run]) -> Path:
    from dgm.fileio import atomic_write

    payload = {"command": command, "settings": settings, "target_c2st": TARGET_C2ST,
               "runs": [dataclasses.asdict(r) for r in runs], "summary": summarise(runs)}
    text = json.dumps(payload, indent=1, default=float, allow_nan=True)
    return atomic_write(out / "results.json", text.encode())


def table(runs: list[Run], markdown_format: bool = False) -> str:
    from dgm.reports import fixed_width, markdown

    header = ["task", "obs", "seed", "method", "C2ST", "MMD", "time (s)", "compile (s)", "R-hat", "warnings"]
    body = []
    for r in runs:
        flag = "" if r.c2st <= TARGET_C2ST else " (!)"
        body.append([r.task, r.observation, r.seed, r.method, f"{r.c2st:.3f}{flag}",
                     "-" if r.mmd is None else f"{r.mmd:.2e}", f"{r.total_time:.1f}", f"{r.compile_time:.1f}",
                     f"{r.max_rhat:.3f}", str(len(r.warnings)) if r.warnings else "none"])
    return (markdown if markdown_format else fixed_width)(header, body)


def summary_table(runs: list[Run], markdown_format: bool = False) -> str:
    from dgm.reports import fixed_width, markdown

    header = ["task", "method", "runs", "C2ST mean ± sd", "min", "max", f"> {TARGET_C2ST}"]
    body = [[s["task"], s["method"], s["runs"], f"{s['c2st_mean']:.3f} ± {s['c2st_sd']:.3f}", f"{s['c2st_min']:.3f}",
             f"{s['c2st_max']:.3f}", s["above_target"]] for t, s in summarise(runs).items()]
    return (markdown if markdown_format else fixed_width)(header, body)


def read_baselines(path: Path) -> dict:
    """``{task: {algorithm: [c2st, ...]}}`` from a CSV with columns ``task,algorithm,c2st``."""
    import csv

    baselines: dict = {}
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"task", "algorithm", "c2st"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"--baselines {path}: missing column(s) {', '.join(sorted(missing))}")
        for row in reader:
            baselines.setdefault(row["task"], {}).setdefault(row["algorithm"], []).append(float(row["c2st"]))
    return baselines


def figure(runs: list[Run], path: Path, baselines: dict | None = None) -> Path:
    """C2ST per task as in the sbibm paper's Figure 2 (one column per task, 0.5 = indistinguishable): every
    task x observation x seed as a dot, the mean as a bar; published baselines beside it when given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(r.task for r in runs))
    algorithms = sorted({a for t in tasks for a in (baselines or {}).get(t, {})})
    fig, axes = plt.subplots(1, len(tasks), figsize=(2.4 * len(tasks) + 0.6, 3.4), sharey=True, squeeze=False)
    rng = np.random.default_rng(0)
    for ax, task in zip(axes[0], tasks):
        methods = list(dict.fromkeys(r.method for r in runs if r.task == task))
        columns = algorithms + (["dgm"] if len(methods) == 1 else methods)
        for i, column in enumerate(columns):
            if column not in algorithms:
                method = methods[0] if column == "dgm" else column
                values = np.array([r.c2st for r in runs if r.task == task and r.method == method])
                colour = "C3"
            else:
                values = np.asarray(baselines[task].get(column, []), dtype=float)
                colour = "0.55"
            if values.size == 0:
                continue
            ax.scatter(i + rng.uniform(-0.15, 0.15, values.size), values, s=10, color=colour, alpha=0.7, zorder=3)
            ax.plot([i - 0.3, i + 0.3], [values.mean()] * 2, color="black", lw=2, zorder=4)
        ax.axhline(0.5, color="0.3", lw=0.8, ls="--")
        ax.axhline(TARGET_C2ST, color="C2", lw=0.8, ls=":")
        ax.set_xticks(range(len(columns)), columns, rotation=45 if len(columns) > 1 else 0, ha="right"
                      if len(columns) > 1 else "center", fontsize=7)
        ax.set_xlim(-0.6, len(columns) - 0.4)
        ax.set_title(task.replace("_", " "), fontsize=9)
    axes[0][0].set_ylabel("C2ST (0.5 = indistinguishable)")
    axes[0][0].set_ylim(0.45, 1.0)
    fig.suptitle(f"dgm on sbibm: C2ST against the reference posteriors (dotted: target {TARGET_C2ST})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(out: Path, command: str, settings: dict, runs: list[Run], figure_path: Path,
                 with_baselines: bool) -> Path:
    from dgm.models.sbibm.tasks import NOT_DIFFERENTIABLE

    warned = [(r, w) for r in runs for w in r.warnings]
    text = [
        "# dgm on the SBI benchmark (sbibm 1.1.0)", "",
        f"Command: `{command}`", "",
        "Settings: `" + json.dumps(settings) + "`", "",
        f"C2ST: sbibm's classifier two-sample test between {settings['c2st_draws']:,} reference posterior draws and "
        f"as many dgm draws (all chains' draws thinned evenly); 0.5 = indistinguishable. Target: ≤ {TARGET_C2ST}. "
        "Times: set-up + compilation + sampling (C2ST and MMD excluded).", "",
        "## Per task", "", summary_table(runs, markdown_format=True), "",
        "## Per run", "", table(runs, markdown_format=True), "",
        f"![C2ST per task]({figure_path.name})", "",
    ]
    if not with_baselines:
        text += [BASELINES_NOTE, ""]
    if warned:
        text += ["## Warnings", ""] + [f"- {r.task} obs {r.observation} seed {r.seed}: {w}" for r, w in warned] + [""]
    text += ["## Tasks left out", ""] + [f"- `{t}`: {why}" for t, why in NOT_DIFFERENTIABLE.items()] + [""]
    path = out / "report.md"
    path.write_text("\n".join(text))
    return path


