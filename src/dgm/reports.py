"""Tables and report text for sampling results (posterior summaries from ArviZ via :meth:`dgm.Result.summary`).

The ``ε`` column is read together with the ``kernel`` column beside it (from :attr:`dgm.Result.kernel`, set by each
method's builder): a uniform-ball radius and a per-output Gaussian standard deviation are different quantities.
"""

from __future__ import annotations

import numpy as np


def summary_row(label: str, result, names=None) -> dict:
    """One table row: posterior mean/sd of each latent, min bulk ESS, max R-hat, mean ESS/s, acceptance, and the
    time spent sampling (warm-up + draws, what ESS/s divides by) beside the total (set-up + compilation + sampling)."""
    table = result.summary("z")
    names = names or [f"z{i + 1}" for i in range(len(table))]
    row = {"method": label, "epsilon": result.epsilon, "kernel": result.kernel}
    for name, (_, line) in zip(names, table.iterrows()):
        row[name] = (float(line["mean"]), float(line["sd"]))
    row["ess_bulk"] = float(table["ess_bulk"].min())
    row["r_hat"] = float(table["r_hat"].max())
    row["ess_per_sec"] = float(table["ess_per_sec"].mean())
    row["ess_per_sec_each"] = [float(v) for v in table["ess_per_sec"]]
    row["time"] = float(result.wall_time)
    row["total_time"] = float(result.setup_time + result.compile_time + result.wall_time)
    row["acceptance"] = float(result.acceptance_rate)
    row["max_residual"] = float(result.max_residual)
    return row


def _cells(row: dict, names) -> list[str]:
    eps, kernel = row.get("epsilon"), row.get("kernel")
    exact = kernel == "exact" or (kernel is None and eps == 0)
    cells = [row["method"], "exact" if exact else (kernel or "-"), "-" if eps is None or exact else f"{eps:g}"]
    for name in names:
        value = row.get(name)
        cells.append("-" if value is None else f"{value[0]:.4g} ± {value[1]:.2g}")
    for key, fmt in (("ess_bulk", "{:.0f}"), ("r_hat", "{:.3f}"), ("ess_per_sec", "{:.3g}"), ("time", "{:.1f}"),
                     ("total_time", "{:.1f}"), ("acceptance", "{:.3f}")):
        value = row.get(key)
        cells.append("-" if value is None or (isinstance(value, float) and np.isnan(value)) else fmt.format(value))
    cells.append(row.get("note", ""))
    return cells


HEADERS = ["method", "kernel", "ε"]
"""``kernel`` says what ``ε`` is: the radius of a uniform ball (``‖g(u) − x̄‖₂ < ε``), the standard deviation of
Gaussian noise on each output, or ``exact`` (``‖g(u) − x̄‖∞`` below the Newton tolerance; no ε)."""
TAIL = ["bulk ESS (min)", "R̂ (max)", "ESS/s (mean)", "sampling (s)", "total (s)", "acceptance", "note"]
"""``sampling``: warm-up + draws (what ESS/s divides by); ``total``: set-up (initialisation) + compilation + sampling."""


def fixed_width(header: list, body: list[list]) -> str:
    """``header`` and rows of cells as a fixed-width table for the terminal (every experiment's table uses it)."""
    widths = [max(len(str(r[i])) for r in [header] + body) for i in range(len(header))]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in body])


def markdown(header: list, body: list[list]) -> str:
    """``header`` and rows of cells as a Markdown table (for the experiments' ``report.md``)."""
    out = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    return "\n".join(out + ["| " + " | ".join(map(str, r)) + " |" for r in body])


def text_table(rows: list[dict], names) -> str:
    """A fixed-width table for the terminal."""
    return fixed_width(HEADERS + [f"{n} mean ± sd" for n in names] + TAIL, [_cells(row, names) for row in rows])


def markdown_table(rows: list[dict], names) -> str:
    return markdown(HEADERS + [f"{n} mean ± sd" for n in names] + TAIL, [_cells(row, names) for row in rows])
