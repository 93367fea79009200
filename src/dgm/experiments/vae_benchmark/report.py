"""Tables, figures and files of ``dgm vae-benchmark`` (:mod:`dgm.experiments.vae_benchmark.experiment`).

* :func:`summary` -- one row per model: test NLL mean +- s.e. over seeds (nats; each seed's value is the mean over
  test images of ``-log p(x)`` estimated by importance sampling), the best validation bound, the epochs trained,
  seconds of optimiser steps per epoch and that time relative to the ``vae`` row;
* :func:`orderings` -- the papers' orderings ``NLL(model) <= NLL(vae)`` with seed-paired standard errors;
* :func:`text_table` / :func:`markdown_table`;
* :func:`write_outputs` -- ``results.json`` (settings, per-seed numbers, curves), ``report.md``,
  ``training_curves.png`` (validation and training bound per epoch, mean over seeds) and ``samples.png`` (decoder
  means at 64 prior draws, seed 0, one panel per model).
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np

from dgm.reports import fixed_width, markdown

__all__ = ["summary", "orderings", "text_table", "markdown_table", "ordering_table", "write_outputs", "HEADERS"]

HEADERS = ["model", "test NLL (nats)", "valid bound", "epochs", "s/epoch", "x VAE time", "objective"]
ORDERING_HEADERS = ["ordering", "NLL(model) - NLL(vae), mean ± s.e. over seeds", "verdict"]


def _steady_seconds(secs: np.ndarray) -> float:
    secs = np.asarray(secs, float)
    if secs.size == 0:
        return float("nan")
    return float(np.median(secs[1:])) if len(secs) > 1 else float(secs[0])


def _seconds_per_epoch(row, batch: int, n_train: int) -> float:
    """Seconds of optimiser steps per epoch: all of them over the epochs done (a time budget can end training inside
    an epoch; compilation is not in ``epoch_seconds``), or, for rows without a step count, the median epoch after
    the first."""
    if row.steps:
        return float(np.sum(row.epoch_seconds)) / (row.steps * batch / n_train)
    return _steady_seconds(row.epoch_seconds)


def _se(values) -> float:
    values = np.asarray(values, float)
    return float(values.std(ddof=1) / np.sqrt(values.size)) if values.size > 1 else float("nan")


def summary(result: dict) -> list:
    """``[{model, description, nll_mean, nll_se, nll_sd, nll_per_seed, valid_bound, epochs, seconds_per_epoch,
    relative_time}]``: test NLL mean ± standard error over seeds (each seed's value is the mean over test images of
    ``-log p(x)``), the best validation bound, the epochs of training (fractional under a time budget) and the
    optimiser seconds per epoch."""
    out = []
    n_train = result["settings"]["train_size"]
    batch = result["settings"]["batch_size"]
    for model in result["settings"]["models"]:
        rows = [r for r in result["rows"] if r.model == model]
        nll = np.array([-float(np.mean(r.test_log_px)) for r in rows])
        steps = [r.steps for r in rows]
        out.append(dict(model=model, description=rows[0].description, nll_mean=float(nll.mean()), nll_se=_se(nll),
                        nll_sd=float(nll.std(ddof=1)) if len(nll) > 1 else float("nan"),
                        nll_per_seed=nll.tolist(), seeds=[r.seed for r in rows],
                        nll_image_se=[float(np.std(r.test_log_px, ddof=1) / np.sqrt(r.test_log_px.size)) for r in rows],
                        valid_bound=float(np.mean([np.max(r.valid_bound) for r in rows])),
                        epochs=(float(np.mean(steps)) * batch / n_train if all(steps)
                                else float(len(rows[0].valid_bound))),
                        seconds_per_epoch=float(np.mean([_seconds_per_epoch(r, batch, n_train) for r in rows]))))
    base = next((s["seconds_per_epoch"] for s in out if s["model"] == "vae"), None)
    for s in out:
        s["relative_time"] = s["seconds_per_epoch"] / base if base else float("nan")
    return out


def orderings(result: dict, reference: str = "vae") -> list:
    """The papers' orderings ``NLL(model) <= NLL(reference)``, per model: the seed-paired differences (same seed:
    same initialisation, same test images) and their mean ± standard error; the verdict is "holds" when the mean
    is more than two standard errors below zero, "reversed" when more than two above, else "not resolved"."""
    ref = {r.seed: -float(np.mean(r.test_log_px)) for r in result["rows"] if r.model == reference}
    out = []
    for model in result["settings"]["models"]:
        if model == reference:
            continue
        diffs = np.array([-float(np.mean(r.test_log_px)) - ref[r.seed] for r in result["rows"]
                          if r.model == model and r.seed in ref])
        if diffs.size == 0:
            continue
        mean, se = float(diffs.mean()), _se(diffs)
        if np.isnan(se):
            verdict = "one seed: not resolved"
        elif mean + 2 * se < 0:
            verdict = "holds"
        elif mean - 2 * se > 0:
            verdict = "reversed"
        else:
            verdict = "not resolved"
        out.append(dict(model=model, reference=reference, diff_mean=mean, diff_se=se, diffs=diffs.tolist(),
                        verdict=verdict))
    return out


def _cells(s: dict) -> list:
    se = "" if np.isnan(s["nll_se"]) else f" ± {s['nll_se']:.2f}"
    rel = "" if np.isnan(s["relative_time"]) else f"{s['relative_time']:.2f}"
    return [s["model"], f"{s['nll_mean']:.2f}{se}", f"{s['valid_bound']:.2f}", f"{s['epochs']:.1f}",
            f"{s['seconds_per_epoch']:.2f}", rel, s["description"]]


def _ordering_cells(o: dict) -> list:
    se = "" if np.isnan(o["diff_se"]) else f" ± {o['diff_se']:.2f}"
    return [f"{o['model']} <= {o['reference']}", f"{o['diff_mean']:+.2f}{se}", o["verdict"]]


def text_table(summaries: list) -> str:
    return fixed_width(HEADERS, [_cells(s) for s in summaries])


def markdown_table(summaries: list) -> str:
    return markdown(HEADERS, [_cells(s) for s in summaries])


def ordering_table(ordering: list, *, markdown_format: bool = False) -> str:
    rows = [_ordering_cells(o) for o in ordering]
    return markdown(ORDERING_HEADERS, rows) if markdown_format else fixed_width(ORDERING_HEADERS, rows)


def _curves(result: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, model in enumerate(result["settings"]["models"]):
        rows = [r for r in result["rows"] if r.model == model]
        n = min(len(r.valid_bound) for r in rows)  # under a time budget seeds may run different epoch counts
        epochs = np.arange(1, n + 1)
        colour = f"C{i % 10}"
        ax.plot(epochs, np.mean([r.valid_bound[:n] for r in rows], 0), "-o", color=colour, ms=3,
                label=f"{model} valid")
        ax.plot(epochs, np.mean([r.train_bound[:n] for r in rows], 0), "--", color=colour, alpha=0.6)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_ylabel("bound on log p(x) per image (nats)")
    ax.set_title(f"{result['dataset']}: validation (solid) and training (dashed) bound, mean over seeds", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _samples(result: dict, path: Path, n: int = 64) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = result["settings"]["models"]
    shape = result["image_shape"]
    side = int(np.ceil(np.sqrt(n)))
    fig, axes = plt.subplots(1, len(models), figsize=(2.6 * len(models), 2.9), squeeze=False)
    for ax, model in zip(axes[0], models):
        row = min((r for r in result["rows"] if r.model == model), key=lambda r: r.seed)
        z = row.vae.prior().sample(jax.random.key(1), (n,))
        means = np.asarray(jax.vmap(row.vae.decoder_mean)(z)).reshape((n,) + tuple(shape))
        grid = np.ones((side * (shape[0] + 1), side * (shape[1] + 1)))
        for j in range(n):
            r, c = divmod(j, side)
            grid[r * (shape[0] + 1): r * (shape[0] + 1) + shape[0], c * (shape[1] + 1): c * (shape[1] + 1) + shape[1]] \
                = means[j]
        ax.imshow(grid, cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(model, fontsize=9)
        ax.axis("off")
    fig.suptitle("decoder means at prior draws (first seed)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_outputs(result: dict, out: Path, command: str) -> dict:
    """Write ``results.json``, ``report.md``, ``training_curves.png`` and ``samples.png`` to ``out``; return
    ``{name: path}``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summaries = summary(result)
    ordering = orderings(result) if any(r.model == "vae" for r in result["rows"]) else []
    runs = [dict(model=r.model, seed=r.seed, train_bound=r.train_bound.tolist(), valid_bound=r.valid_bound.tolist(),
                 epoch_seconds=r.epoch_seconds.tolist(), test_nll=-float(np.mean(r.test_log_px)),
                 nll_seconds=r.nll_seconds, steps=r.steps, best_epoch=r.best_epoch,
                 stopped_by_budget=r.stopped_by_budget, stopped_early=r.stopped_early) for r in result["rows"]]
    paths = {"results": out / "results.json", "report": out / "report.md"}
    paths["results"].write_text(json.dumps(dict(command=command, settings=result["settings"], summary=summaries,
                                                orderings=ordering, runs=runs), indent=2, default=str))
    paths["curves"] = _curves(result, out / "training_curves.png")
    paths["samples"] = _samples(result, out / "samples.png")
    s = result["settings"]
    budget = (f"at most {s['epochs']} epochs" if not s.get("budget_seconds") else
              f"an equal budget of {s['budget_seconds']:g} s of optimiser steps per run ({s.get('budget_clock')} "
              f"clock; compilation and validation not counted; at most {s['epochs']} epochs)")
    text = [f"# dgm vae-benchmark on {result['dataset']}", "", f"Command: `{command}`", "",
            f"{s['train_size']} training images ({s.get('binarisation', 'static')} binarisation) / {s['valid_size']} "
            f"validation / {s['test_size']} test images (validation and test binarised once with a fixed seed); "
            f"{budget}, early stopping on the validation bound (patience {s.get('patience')}; the best validation "
            f"epoch is kept), Adam lr {s['learning_rate']}, batch {s['batch_size']}, latent dim {s['latent_dim']}, "
            f"MLP widths {s['hidden']}, {s['seeds']} seed(s). Test NLL: importance sampling with {s['is_samples']} "
            "draws per image from each method's own proposal; mean ± s.e. over seeds. epochs: epochs of training "
            "(fractional under a time budget); s/epoch: seconds of optimiser steps per epoch.", "",
            markdown_table(summaries), ""]
    if ordering:
        text += ["Orderings (seed-paired differences; holds: more than 2 s.e. below zero):", "",
                 ordering_table(ordering, markdown_format=True), ""]
    text += ["![training curves](training_curves.png)", "", "![samples](samples.png)", ""]
    paths["report"].write_text("\n".join(text))
    return paths
