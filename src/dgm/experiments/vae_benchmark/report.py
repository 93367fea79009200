"""Tables, figures and files of ``dgm vae-benchmark`` (:mod:`dgm.experiments.vae_benchmark.experiment`).

* :func:`summary` -- one row per model: test NLL mean +- s.d. over seeds (nats; each seed's value is the mean over
  test images of ``-log p(x)`` estimated by importance sampling), the last validation bound, seconds per epoch
  (the median over epochs after the first, which includes compilation) and that time relative to the ``vae`` row;
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

__all__ = ["summary", "text_table", "markdown_table", "write_outputs", "HEADERS"]

HEADERS = ["model", "test NLL (nats)", "valid bound", "s/epoch", "x VAE time", "objective"]


def _steady_seconds(secs: np.ndarray) -> float:
    return float(np.median(secs[1:])) if len(secs) > 1 else float(secs[0])


def summary(result: dict) -> list:
    """``[{model, description, nll_mean, nll_sd, nll_per_seed, valid_bound, seconds_per_epoch, relative_time}]``."""
    out = []
    for model in result["settings"]["models"]:
        rows = [r for r in result["rows"] if r.model == model]
        nll = np.array([-float(np.mean(r.test_log_px)) for r in rows])
        out.append(dict(model=model, description=rows[0].description, nll_mean=float(nll.mean()),
                        nll_sd=float(nll.std(ddof=1)) if len(nll) > 1 else float("nan"),
                        nll_per_seed=nll.tolist(),
                        nll_image_se=[float(np.std(r.test_log_px, ddof=1) / np.sqrt(r.test_log_px.size)) for r in rows],
                        valid_bound=float(np.mean([r.valid_bound[-1] for r in rows])),
                        seconds_per_epoch=float(np.mean([_steady_seconds(r.epoch_seconds) for r in rows]))))
    base = next((s["seconds_per_epoch"] for s in out if s["model"] == "vae"), None)
    for s in out:
        s["relative_time"] = s["seconds_per_epoch"] / base if base else float("nan")
    return out


def _cells(s: dict) -> list:
    sd = "" if np.isnan(s["nll_sd"]) else f" ± {s['nll_sd']:.2f}"
    rel = "" if np.isnan(s["relative_time"]) else f"{s['relative_time']:.2f}"
    return [s["model"], f"{s['nll_mean']:.2f}{sd}", f"{s['valid_bound']:.2f}", f"{s['seconds_per_epoch']:.2f}", rel,
            s["description"]]


def text_table(summaries: list) -> str:
    return fixed_width(HEADERS, [_cells(s) for s in summaries])


def markdown_table(summaries: list) -> str:
    return markdown(HEADERS, [_cells(s) for s in summaries])


def _curves(result: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, model in enumerate(result["settings"]["models"]):
        rows = [r for r in result["rows"] if r.model == model]
        epochs = np.arange(1, len(rows[0].valid_bound) + 1)
        colour = f"C{i % 10}"
        ax.plot(epochs, np.mean([r.valid_bound for r in rows], 0), "-o", color=colour, ms=3, label=f"{model} valid")
        ax.plot(epochs, np.mean([r.train_bound for r in rows], 0), "--", color=colour, alpha=0.6)
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
        row = next(r for r in result["rows"] if r.model == model and r.seed == 0)
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
    fig.suptitle("decoder means at prior draws (seed 0)", fontsize=9)
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
    runs = [dict(model=r.model, seed=r.seed, train_bound=r.train_bound.tolist(), valid_bound=r.valid_bound.tolist(),
                 epoch_seconds=r.epoch_seconds.tolist(), test_nll=-float(np.mean(r.test_log_px)),
                 nll_seconds=r.nll_seconds) for r in result["rows"]]
    paths = {"results": out / "results.json", "report": out / "report.md"}
    paths["results"].write_text(json.dumps(dict(command=command, settings=result["settings"], summary=summaries,
                                                runs=runs), indent=2, default=str))
    paths["curves"] = _curves(result, out / "training_curves.png")
    paths["samples"] = _samples(result, out / "samples.png")
    s = result["settings"]
    text = [f"# dgm vae-benchmark on {result['dataset']}", "", f"Command: `{command}`", "",
            f"{s['train_size']} training / {s['valid_size']} validation / {s['test_size']} test images (binarised once "
            f"with a fixed seed); {s['epochs']} epochs, Adam lr {s['learning_rate']}, batch {s['batch_size']}, "
            f"latent dim {s['latent_dim']}, MLP widths {s['hidden']}, {s['seeds']} seed(s). Test NLL: importance "
            f"sampling with {s['is_samples']} draws per image from each method's own proposal; mean ± s.d. over "
            "seeds. s/epoch: median over epochs after the first (which compiles).", "",
            markdown_table(summaries), "", "![training curves](training_curves.png)", "", "![samples](samples.png)",
            ""]
    paths["report"].write_text("\n".join(text))
    return paths
