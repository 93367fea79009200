"""Figures 6-7 and report.md of the MNIST in-painting experiment (:mod:`dgm.experiments.mnist_inpaint.experiment`).

Images are drawn as in the paper: the observed region black-on-white (inverted intensities), the in-painted region
white-on-black, with a red line at the boundary.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dgm.experiments.mnist_inpaint import experiment as mi


def _render(images: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``(n, H, W)`` greyscale in ``[0, 1]``: observed pixels inverted (black on white)."""
    images = np.clip(np.asarray(images, float).reshape((-1,) + mask.shape), 0.0, 1.0)
    return np.where(mask[None], 1.0 - images, images)


def image_grid(path: Path, images: np.ndarray, mask: np.ndarray, *, columns: int, title: str,
               row_labels=None, rows_per_label: int = 1) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = _render(images, mask)
    n = shown.shape[0]
    rows = max(1, int(np.ceil(n / columns)))
    size = 0.6 if mask.shape[0] > 8 else 0.45
    fig, axes = plt.subplots(rows, columns, figsize=(columns * size + 0.4, rows * size + 0.6), squeeze=False)
    boundary = int(mask.any(axis=1).sum()) - 0.5
    for k, ax in enumerate(axes.ravel()):
        ax.set_xticks([]), ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
        if k < n:
            ax.imshow(shown[k], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.axhline(boundary, color="tab:red", lw=0.6)
    if row_labels:
        for i, label in enumerate(row_labels):
            axes[i * rows_per_label, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=6)
    import textwrap

    width_chars = int(fig.get_size_inches()[0] * 72 / 5)  # ~5 points per character at fontsize 8
    title = textwrap.fill(title, max(width_chars, 30))  # a title wider than the grid would be cut off
    fig.suptitle(title, fontsize=8)
    left = 0.8 / fig.get_size_inches()[0] if row_labels else 0.0  # room for the row labels
    title_height = (0.2 + 0.15 * (title.count("\n") + 1)) / fig.get_size_inches()[1]
    fig.tight_layout(pad=0.2, h_pad=0.1, w_pad=0.1, rect=(left, 0, 1, 1 - title_height))
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path


def figures(experiment: dict, out: Path, *, per_case: int = 20, columns: int = 10, fig7_limit: int = 400) -> dict:
    """fig6a_chmc.png (consecutive constrained-HMC draws), fig6b_hmc.png (HMC draws thinned by the iteration ratio
    of the equal time budget, as in the paper), fig7_hmc_all.png (every HMC draw of one chain, first case)."""
    gen, mask, cases = experiment["gen"], experiment["mask"], experiment["cases"]
    out = Path(out)
    paths = {}
    rows_per_case = int(np.ceil(per_case / columns))
    blocks_a, blocks_b, labels = [], [], []
    for i, case in enumerate(cases):
        chmc = mi.in_paintings(gen, case.chmc, case.x_obs, limit=per_case, seed=i)
        thin = case.hmc.settings.get("thin", 1)
        every = max(1, int(round(case.hmc_iterations_per_chmc / thin)))
        hmc = mi.in_paintings(gen, case.hmc, case.x_obs, every=every, limit=per_case, seed=i)
        blocks_a.append(_pad(chmc, rows_per_case * columns))
        blocks_b.append(_pad(hmc, rows_per_case * columns))
        labels.append(case.label.split(" (")[0].replace("test digit ", "digit ").replace("model sample", "sample"))
    paths["fig6a"] = image_grid(out / "fig6a_chmc.png", np.concatenate(blocks_a), mask, columns=columns,
                                title="(a) constrained HMC: consecutive draws (observed top region black on white)",
                                row_labels=labels, rows_per_label=rows_per_case)
    paths["fig6b"] = image_grid(out / "fig6b_hmc.png", np.concatenate(blocks_b), mask, columns=columns,
                                title="(b) HMC: every k-th draw, k = HMC iterations per constrained-HMC iteration "
                                      "at equal time", row_labels=labels, rows_per_label=rows_per_case)
    first = cases[0]
    all_hmc = mi.in_paintings(gen, first.hmc, first.x_obs, limit=fig7_limit, seed=99)
    paths["fig7"] = image_grid(out / "fig7_hmc_all.png", all_hmc, mask, columns=20,
                               title=f"All HMC draws of chain 0 (first {all_hmc.shape[0]}, thin "
                                     f"{first.hmc.settings.get('thin', 1)}): {first.label}")
    return paths


def _pad(images: np.ndarray, n: int) -> np.ndarray:
    if images.shape[0] >= n:
        return images[:n]
    return np.concatenate([images, np.zeros((n - images.shape[0],) + images.shape[1:])])


def write_report(experiment: dict, rows: list[dict], out: Path, command: str, figure_paths: dict) -> Path:
    info = experiment["vae_info"]
    cfg = info["config"]
    gen = experiment["gen"]
    lines = [
        "# MNIST in-painting (Graham & Storkey 2017, Appendix F, Figures 6-7)",
        "",
        f"Command: `{command}`",
        "",
        "## Model",
        "",
        f"Gaussian VAE on `{experiment['dataset']}`: {cfg['latent_dim']}-dimensional code, tanh MLPs "
        f"{cfg['data_dim']}-{'-'.join(map(str, cfg['hidden']))}-(2x{cfg['latent_dim']}) encoder and "
        f"{cfg['latent_dim']}-{'-'.join(map(str, reversed(cfg['hidden'])))}-{cfg['data_dim']} decoder with sigmoid "
        f"means, fixed output noise sigma = {cfg['sigma']:g}. "
        + ("Loaded from the cache " if info.get("cached") else "Trained ")
        + f"({info.get('n_train')} training images, up to {info.get('epochs_max')} epochs of Adam 1e-3, batch 100, "
        f"early stopping on the validation ELBO; epochs run {info.get('epochs_run', '?')}, training time "
        f"{info.get('train_seconds', float('nan')):.0f} s, validation ELBO {info.get('valid_elbo', float('nan')):.1f} "
        f"nats per image). Checkpoint: `{info.get('path')}`.",
        "",
        f"Observed: the top {experiment['spec'].observed_rows} rows ({gen.observed.size} pixels); in-painted: "
        f"{gen.unobserved.size} pixels. Constrained HMC runs on u = (h, n_O) ({gen.model.input_dim} inputs, "
        f"{gen.observed.size} constraints) with the linear-time structured geometry; HMC runs on the known "
        "conditional density of h. Both start from the same prior draws of h, adapt one step size each "
        "(dual averaging, target acceptance 0.8), take N_s ~ U{4..8} leapfrog steps per iteration, and get the same "
        "wall-clock budget (HMC runs k times as many iterations, k measured). The unobserved pixels are drawn "
        "from their Gaussian given h.",
        "",
        "## Efficiency (ArviZ bulk ESS of the 50 coordinates of h; per second of warm-up + sampling, no compilation)",
        "",
        mi.markdown_table(rows),
        "",
    ]
    for case in experiment["cases"]:
        lines.append(f"* {case.label}: k = {case.hmc_iterations_per_chmc:.1f} HMC iterations per constrained-HMC "
                     f"iteration; max |g(u) - x_O| over constrained-HMC draws {case.chmc.max_residual:.1e}.")
    lines += ["", "## Figures", ""]
    lines += [f"![{name}]({p.name})" for name, p in figure_paths.items()]
    lines += ["", "Samples: `samples_case*_chmc.nc`, `samples_case*_hmc.nc` (ArviZ NetCDF, `dgm.load`)."]
    path = Path(out) / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
