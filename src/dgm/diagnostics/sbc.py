"""Simulation-based calibration (Talts, Betancourt, Simpson, Vehtari & Gelman 2018, Algorithm 2) of a sampler.

For replications ``r = 1..R``: draw inputs ``u*_r ~ rho`` from the prior, simulate ``x_r = g(u*_r)``, sample the
conditional ``u | g(u) = x_r`` (all replications at once with :func:`dgm.sample_many`), thin each replication's
draws to about its effective sample size (Talts et al., section 5: ranks of autocorrelated draws are not uniform
even for a correct sampler), keep ``L`` of them and compute, for each latent ``z = latents(u)``, the rank
``#{l : z_l < z*_r}`` in ``0..L``. If the sampler targets the right conditional, every rank is uniform on ``0..L``
(Talts et al., Theorem 1), so

* ``chi2``: Pearson's statistic of the ranks' histogram in ``n_bins`` equal bins of ``(L + 1) / n_bins`` ranks
  (``L + 1`` is made a multiple of ``n_bins``), ``chi2(n_bins - 1)`` p-value, per latent;
* the ECDF of the fractional ranks ``(rank + v) / (L + 1)``, ``v ~ U(0, 1)`` (uniform on ``(0, 1)`` under
  calibration), against **simultaneous** ``envelope_prob`` confidence bands (Säilynoja, Bürkner & Vehtari 2022,
  "Graphical test for discrete uniformity ...", the simulation method of their section 2.2), and the Δ-ECDF plot
  (ECDF minus the uniform CDF) with those bands as a PNG.

The simultaneous bands come from ArviZ (``arviz_stats.ecdf_utils.ecdf_pit``, Säilynoja et al.'s simulation method);
the rank bookkeeping, the thinning and the matplotlib figure (see :func:`plot_sbc` for why not
``arviz_plots.plot_ecdf_pit``) are written here. A calibration is declared *passed* when every latent's ECDF stays
inside its band and every ``chi2`` p-value exceeds ``alpha / n_latents`` (Bonferroni).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from dgm.model import GenerativeModel, standard_normal_log_density
from dgm.precision import float64

__all__ = ["sbc", "SBCResult", "rank_statistics", "thinned_draws"]


@dataclasses.dataclass
class SBCResult:
    """Ranks and tests of one simulation-based calibration.

    Attributes:
      ranks: ``(n_replications, n_latents)`` integers in ``0..n_ranks``.
      n_ranks: ``L``, thinned draws per replication ranked against the truth.
      pit: ``(n_replications, n_latents)`` fractional ranks ``(rank + v) / (L + 1)`` (the plotted values).
      chi2, chi2_pvalue: per latent, Pearson's statistic over ``n_bins`` bins and its ``chi2(n_bins - 1)`` p-value.
      ecdf_inside: per latent, whether the ECDF of ``pit`` stays inside the simultaneous ``envelope_prob`` band.
      thinning: ``(n_replications,)`` thinning factor used (draws per kept draw, from the smallest bulk ESS).
      ess: ``(n_replications,)`` smallest bulk ESS over the latents (ArviZ).
      true_latents: ``(n_replications, n_latents)`` ``z*`` drawn from the prior.
      latent_names, n_bins, envelope_prob, alpha: settings. figure: path of the PNG written, if any.
      wall_time: seconds in :func:`dgm.sample_many` (all replications).
      bands: per latent ``(x, ecdf, lower, upper)`` from ``arviz_stats.ecdf_utils.ecdf_pit``.
    """

    ranks: np.ndarray
    n_ranks: int
    pit: np.ndarray
    chi2: np.ndarray
    chi2_pvalue: np.ndarray
    ecdf_inside: np.ndarray
    thinning: np.ndarray
    ess: np.ndarray
    true_latents: np.ndarray
    latent_names: list
    n_bins: int
    envelope_prob: float
    alpha: float
    wall_time: float = 0.0
    figure: Optional[str] = None
    bands: Optional[list] = dataclasses.field(default=None, repr=False)

    @property
    def passed(self) -> bool:
        """Every ECDF inside its band and every chi2 p-value above ``alpha / n_latents``."""
        return bool(np.all(self.ecdf_inside) and np.all(self.chi2_pvalue > self.alpha / len(self.chi2_pvalue)))

    def summary(self):
        """``pandas.DataFrame``, one row per latent: chi2, df, p-value, ECDF inside the band, mean fractional rank."""
        import pandas as pd

        return pd.DataFrame({"chi2": self.chi2, "df": self.n_bins - 1, "p_value": self.chi2_pvalue,
                             "ecdf_in_band": self.ecdf_inside, "mean_pit": self.pit.mean(axis=0)},
                            index=pd.Index(self.latent_names, name="latent"))

    def plot(self, path, title: str = "SBC"):
        """Write the Δ-ECDF plot with simultaneous bands (:func:`plot_sbc`)."""
        self.figure = plot_sbc(self.pit, self.latent_names, path, self.envelope_prob, title=title, bands=self.bands)
        return self.figure


def thinned_draws(draws: np.ndarray, n_keep: int, thinning: int) -> np.ndarray:
    """``n_keep`` draws of ``(chain, draw, ...)`` taken every ``thinning`` draws in each chain (chains interleaved,
    the last draws first kept): about independent draws when ``thinning >= draws / ESS``."""
    n_chains, n_draws = draws.shape[:2]
    per_chain = n_draws // thinning
    if per_chain * n_chains < n_keep:
        raise ValueError(f"{n_chains} chains x {n_draws} draws thinned by {thinning} leave {per_chain * n_chains} < "
                         f"{n_keep} draws to rank")
    picked = draws[:, n_draws - 1 - thinning * np.arange(per_chain)[::-1]]  # (chain, per_chain, ...)
    return np.swapaxes(picked, 0, 1).reshape((-1,) + draws.shape[2:])[-n_keep:]


def rank_statistics(ranks: np.ndarray, n_ranks: int, n_bins: int):
    """Pearson's chi2 of the ranks' histogram in ``n_bins`` equal bins (``(n_ranks + 1) % n_bins == 0``) and its
    ``chi2(n_bins - 1)`` p-value, per column."""
    from scipy.stats import chi2

    if (n_ranks + 1) % n_bins:
        raise ValueError(f"n_ranks + 1 = {n_ranks + 1} is not a multiple of n_bins = {n_bins}")
    bins = ranks * n_bins // (n_ranks + 1)
    counts = np.stack([np.bincount(column, minlength=n_bins) for column in bins.T])
    expected = ranks.shape[0] / n_bins
    statistic = np.sum((counts - expected) ** 2 / expected, axis=1)
    return statistic, chi2.sf(statistic, n_bins - 1)


def _bands(pit_column: np.ndarray, envelope_prob: float, n_simulations: int, seed: int):
    from arviz_stats.ecdf_utils import ecdf_pit

    return ecdf_pit(pit_column, envelope_prob, n_simulations, rng=np.random.default_rng(seed))


def plot_sbc(pit: np.ndarray, latent_names, path, envelope_prob: float = 0.95, n_simulations: int = 1000,
             seed: int = 0, title: str = "SBC", bands=None) -> str:
    """The Δ-ECDF (ECDF minus the uniform CDF) of the fractional ranks per latent, with ArviZ's simultaneous
    ``envelope_prob`` band (:func:`arviz_stats.ecdf_utils.ecdf_pit`), as a PNG at ``path``.

    Drawn with matplotlib: ``arviz_plots.plot_ecdf_pit(method="envelope")`` computes the same band but fails in
    arviz-plots 1.3.2 with xarray 2026.9 (``TypeError`` from ``np.linspace`` given a DataArray), and its default
    ``"pot_c"`` method is another test (pointwise tail probabilities, not the simultaneous band). ``bands``: the
    ``(x, ecdf, lower, upper)`` per latent when already computed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_latents = pit.shape[1]
    columns = min(n_latents, 4)
    rows = -(-n_latents // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.6 * rows), sharex=True, sharey=True,
                             squeeze=False)
    for j, ax in enumerate(axes.flat):
        if j >= n_latents:
            ax.set_visible(False)
            continue
        x, ecdf, lower, upper = (bands[j] if bands is not None
                                 else _bands(pit[:, j], envelope_prob, n_simulations, seed))
        inside = np.all((ecdf >= lower - 1e-12) & (ecdf <= upper + 1e-12))
        ax.fill_between(x, lower - x, upper - x, step="post", color="0.8",
                        label=f"{envelope_prob:.0%} simultaneous band")
        ax.step(x, ecdf - x, where="post", color="C0" if inside else "C3", label="ECDF - uniform CDF")
        ax.axhline(0.0, color="0.4", lw=0.8, ls="--")
        ax.set_title(f"{latent_names[j]}" + ("" if inside else " (outside band)"), fontsize=9)
        if j % columns == 0:
            ax.set_ylabel("Δ-ECDF")
        if j >= n_latents - columns:
            ax.set_xlabel("fractional rank")
    axes.flat[0].legend(fontsize=7, loc="lower left")
    fig.suptitle(f"{title}: {pit.shape[0]} replications", fontsize=10)
    fig.tight_layout()
    fig.savefig(str(path), dpi=110)
    plt.close(fig)
    return str(path)


def _simulate(model, prior_sampler, key, n: int, keep):
    """``n`` prior draws ``u*`` and their simulations ``x = g(u*)``, redrawn where ``keep(x)`` is false (rounds of
    ``2 n`` draws, at most 10)."""
    kept_u, kept_x, drawn = [], [], 0
    for attempt in range(10):
        size = n if keep is None else 2 * n
        u = jnp.asarray(jax.vmap(prior_sampler)(jax.random.split(jax.random.fold_in(key, attempt), size)),
                        jnp.float64)
        if u.shape != (size, model.input_dim):
            raise ValueError(f"prior_sampler must return ({model.input_dim},) inputs, got {u.shape[1:]}")
        x = jax.vmap(model.generator)(u)
        if keep is None:
            return np.asarray(u), np.asarray(x)
        ok = np.asarray(jax.vmap(keep)(x), bool) & np.all(np.isfinite(np.asarray(x)), axis=-1)
        kept_u.append(np.asarray(u)[ok])
        kept_x.append(np.asarray(x)[ok])
        drawn += size
        if sum(len(k) for k in kept_u) >= n:
            return np.concatenate(kept_u)[:n], np.concatenate(kept_x)[:n]
        if drawn >= 20 * n:
            break
    raise ValueError(f"keep accepted {sum(len(k) for k in kept_u)} of {drawn} simulations, fewer than "
                     f"n_replications={n}: loosen it")


def _standard_normal_sampler(input_dim):
    return lambda key: jax.random.normal(key, (input_dim,), jnp.float64)


def sbc(
    model: GenerativeModel,
    prior_sampler: Optional[Callable] = None,
    n_replications: int = 100,
    *,
    seed: int = 0,
    n_chains: int = 2,
    n_warmup: int = 200,
    n_samples: int = 200,
    n_ranks: Optional[int] = None,
    n_bins: int = 10,
    envelope_prob: float = 0.95,
    alpha: float = 0.01,
    n_simulations: int = 1000,
    figure=None,
    keep: Optional[Callable] = None,
    progress: bool = True,
    **sample_options,
) -> SBCResult:
    """Simulation-based calibration of ``dgm.sample_many`` on ``model`` (see the module docstring).

    Args:
      model: the generative model; its ``latents`` are ranked.
      prior_sampler: ``key -> u`` (``(input_dim,)``), a draw from the input density ``rho`` the model's
        ``log_input_density`` describes; ``None`` for the default standard normal (only when the model uses the
        default density).
      n_replications: number of simulated data sets ``R``.
      n_chains, n_warmup, n_samples, **sample_options: passed to :func:`dgm.sample_many` (``method``, ``step_size``,
        ``sharded`` ...).
      n_ranks: ``L``, draws ranked per replication (default: as many as thinning to the ESS leaves in every
        replication, rounded down so that ``L + 1`` is a multiple of ``n_bins``).
      n_bins: bins of the chi2 statistic; envelope_prob: coverage of the simultaneous band; alpha: level of the
        chi2 test (Bonferroni over latents) for :attr:`SBCResult.passed`; n_simulations: draws of the band's
        simulation (ArviZ).
      figure: path of a PNG to write the Δ-ECDF plot to (``None``: no plot).
      keep: optional ``x -> bool`` (jittable): simulations it refuses are drawn again (e.g. diverging or
        non-finite trajectories). Conditioning on an event of ``x`` alone leaves every posterior ``p(u | x)``
        unchanged, so the ranks stay uniform under calibration; ``ValueError`` when fewer than one draw in 20 is
        kept. Without it, a non-finite simulation is an error.
    """
    import arviz as az

    from dgm.runtime.batch import sample_many

    if not isinstance(n_replications, (int, np.integer)) or n_replications < 2:
        raise ValueError(f"n_replications must be an integer >= 2, got {n_replications!r}")
    if not isinstance(n_bins, (int, np.integer)) or n_bins < 2:
        raise ValueError(f"n_bins must be an integer >= 2, got {n_bins!r}")
    if prior_sampler is None:
        if model.log_input_density is not standard_normal_log_density:
            raise ValueError("the model has its own log_input_density: pass prior_sampler (key -> u) drawing from it")
        prior_sampler = _standard_normal_sampler(model.input_dim)
    with float64():
        key_prior, key_sample = jax.random.split(jax.random.PRNGKey(seed))
        truth, x = _simulate(model, prior_sampler, key_prior, n_replications, keep)
        z_true = np.asarray(jax.vmap(model.latents)(jnp.asarray(truth))).reshape(n_replications, -1)
    results = sample_many(model, x, seed=key_sample, n_chains=n_chains, n_warmup=n_warmup, n_samples=n_samples,
                          progress=progress, **sample_options)
    latents = [np.asarray(r.latents).reshape(r.latents.shape[:2] + (-1,)) for r in results]
    ess = np.array([float(np.nanmin(np.asarray(az.ess(z, method="bulk")))) for z in latents])
    ess = np.where(np.isfinite(ess) & (ess > 1), ess, 1.0)
    total = n_chains * n_samples
    thinning = np.maximum(1, np.ceil(total / ess)).astype(int)
    available = int(np.min(n_chains * (n_samples // thinning)))
    if n_ranks is None:
        n_ranks = (available + 1) // n_bins * n_bins - 1
        if n_ranks < n_bins - 1:
            raise ValueError(f"thinning to the effective sample size leaves {available} draws in the worst "
                             f"replication (ESS {ess.min():.1f}), fewer than n_bins - 1 = {n_bins - 1}: sample "
                             "longer (n_samples) or with more chains")
    if (n_ranks + 1) % n_bins:
        raise ValueError(f"n_ranks + 1 = {n_ranks + 1} must be a multiple of n_bins = {n_bins}")
    ranks = np.stack([np.sum(thinned_draws(z, n_ranks, t) < z_true[r], axis=0)
                      for r, (z, t) in enumerate(zip(latents, thinning))])
    chi2, pvalue = rank_statistics(ranks, n_ranks, n_bins)
    jitter = np.random.default_rng(seed).uniform(size=ranks.shape)
    pit = (ranks + jitter) / (n_ranks + 1)
    bands = [_bands(pit[:, j], envelope_prob, n_simulations, seed) for j in range(pit.shape[1])]
    inside = [bool(np.all((ecdf >= lower - 1e-12) & (ecdf <= upper + 1e-12))) for _, ecdf, lower, upper in bands]
    names = list(getattr(model, "latent_names", None) or [f"z[{j}]" for j in range(pit.shape[1])])
    out = SBCResult(ranks=ranks, n_ranks=int(n_ranks), pit=pit, chi2=chi2, chi2_pvalue=pvalue,
                    ecdf_inside=np.asarray(inside), thinning=thinning, ess=ess, true_latents=z_true,
                    latent_names=names, n_bins=int(n_bins), envelope_prob=float(envelope_prob), alpha=float(alpha),
                    wall_time=float(results[0].settings["batch_wall_time"]), bands=bands)
    if figure is not None:
        out.plot(figure)
    return out

