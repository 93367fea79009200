"""Do the chains agree on the posterior's modes? A mode-mixing check run after every :func:`dgm.sample` (issue 23).

Per-chain diagnostics can look healthy while the answer is wrong: chains that each stay in one mode (one crescent of
a two-moons posterior, one component of a disconnected manifold) accept every move, but the pooled draws weigh the
modes by where the chains started. What shows it is *across* chains: their draws disagree about which mode they are
in. This module turns that into one number and a warning:

1. **Basin indicator.** The draws' features ``f = (u, u^2)`` are standardised over all draws (those constant up to
   rounding left out); the direction ``d`` in
   which the chains' mean features differ most (the leading principal axis of the chain means) separates the
   chains' modes when they disagree. The projections ``p = f d`` of all draws are split in two by 1-D two-means
   (Lloyd's iterations from the median), and ``I = [p > threshold]`` is each draw's basin.
2. **Split R-hat** of ``I`` (classic, BDA3 eq. 11.4, with the convention of
   :func:`dgm.components.split_rhat`: infinite when ``I`` is constant within chains but not across) and its
   **effective sample size** (BDA3 eq. 11.8: multi-chain autocorrelation with Geyer's initial monotone sequence).
   Chains that never cross between basins give an infinite R-hat, however many moves they accept.
3. A ``RuntimeWarning`` with the remedy for the method when R-hat exceeds :data:`MIXING_RHAT`, naming the tempered
   round trips when the run has them.

In a posterior with one mode, ``I`` splits that mode in two halves that every chain visits, so R-hat stays near 1
when the chains mix (the indicator is a smooth-ish function of the draws): the check is silent on connected
examples. It cannot see modes no chain reached.

ArviZ computes the same R-hat and ESS (rank-normalised), but importing it costs seconds, too much for every
:func:`dgm.sample` call; the few means and autocovariances here are written by hand for that reason.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Optional

import numpy as np

MIXING_RHAT = 1.2
"""The warning fires when the split R-hat of the basin indicator exceeds this. Above Gelman and Rubin's 1.1 because
a two-level indicator of a well-mixing unimodal run of a few hundred draws can reach 1.1 by chance; stuck chains
give values far above (infinite when no chain crosses)."""
FEATURE_RTOL = 1e-6
"""Features whose spread over all draws is below this (relative) are left out of the basin indicator."""
MIN_DRAWS = 20
"""Runs with fewer draws per chain, or one chain, are not checked."""


@dataclasses.dataclass
class MixingReport:
    """The basin indicator's agreement across chains.

    Attributes:
      rhat: split R-hat of the basin indicator (``inf``: chains never cross and disagree).
      ess: its effective sample size (``nan`` when it is constant over all draws).
      basin_fractions: per chain, the fraction of its draws in basin 1.
      round_trips: per chain, the tempered ladder's round trips of the sampling phase (``None`` for other methods).
    """

    rhat: float
    ess: float
    basin_fractions: list
    round_trips: Optional[list] = None

    @property
    def disagree(self) -> bool:
        return not (self.rhat <= MIXING_RHAT)

    def describe(self) -> str:
        fractions = ", ".join(f"{f:.2f}" for f in self.basin_fractions)
        text = (f"split R-hat of the basin indicator {self.rhat:.2f}, its ESS {self.ess:.0f}; fraction of each "
                f"chain's draws in basin 1: {fractions}")
        if self.round_trips is not None:
            text += f"; tempered round trips per chain {self.round_trips}"
        return text


def basin_indicator(inputs) -> np.ndarray:
    """``(chain, draw)`` 0/1: which of two basins each draw is in (module docstring, step 1)."""
    inputs = np.asarray(inputs, dtype=np.float64)
    n_chains, n_draws = inputs.shape[:2]
    features = np.concatenate([inputs, inputs**2], axis=-1).reshape(n_chains, n_draws, -1)
    flat = features.reshape(-1, features.shape[-1])
    scale = np.std(flat, axis=0)
    # features constant on the manifold up to the Newton tolerance (u1^2 = x on the lines x = u1^2) carry only
    # rounding, which differs between chains: left out, or they would split the draws by chain
    varies = scale > FEATURE_RTOL * (1.0 + np.max(np.abs(flat), axis=0))
    features = np.where(varies, (features - np.mean(features, axis=(0, 1))) / np.where(varies, scale, 1.0), 0.0)
    means = np.mean(features, axis=1)
    centred = means - np.mean(means, axis=0)
    if not np.any(np.abs(centred) > 0):
        direction = np.zeros(features.shape[-1])
        direction[0] = 1.0
    else:
        direction = np.linalg.svd(centred, full_matrices=False)[2][0]
    p = features @ direction
    threshold = float(np.median(p))
    for _ in range(50):  # 1-D two-means
        low, high = p[p <= threshold], p[p > threshold]
        if low.size == 0 or high.size == 0:
            break
        new = 0.5 * (float(np.mean(low)) + float(np.mean(high)))
        if new == threshold:
            break
        threshold = new
    return (p > threshold).astype(np.float64)


def effective_sample_size(draws) -> float:
    """Multi-chain ESS of ``draws`` (``(chain, draw)``; BDA3 eqs. 11.5-11.8, Geyer's initial monotone sequence);
    ``nan`` when constant."""
    x = np.asarray(draws, dtype=np.float64)
    n_chains, n = x.shape
    centred = x - x.mean(axis=1, keepdims=True)
    size = 1 << int(np.ceil(np.log2(2 * n)))
    spectrum = np.fft.rfft(centred, size, axis=1)
    acov = np.fft.irfft(spectrum * np.conj(spectrum), size, axis=1)[:, :n] / n
    within = np.mean(acov[:, 0] * n / (n - 1)) if n > 1 else 0.0
    between_n = np.var(x.mean(axis=1), ddof=1) if n_chains > 1 else 0.0
    var_plus = (n - 1) / n * within + between_n
    if not var_plus > 0:
        return float("nan")
    rho = 1.0 - (within - np.mean(acov, axis=0)) / var_plus
    rho[0] = 1.0
    total, previous = 0.0, np.inf
    for t in range(0, n - 1, 2):
        pair = rho[t] + rho[t + 1]
        if pair < 0:
            break
        pair = min(pair, previous)  # initial monotone sequence
        total += pair
        previous = pair
    tau = max(-1.0 + 2.0 * total, 1.0 / np.log10(n_chains * n))
    return float(n_chains * n / tau)


def split_rhat(draws) -> float:
    """Classic split R-hat of ``draws`` (``(chain, draw)``): :func:`dgm.components.split_rhat` of one column."""
    from dgm.components import split_rhat as columns_rhat

    return columns_rhat(np.asarray(draws, dtype=np.float64)[..., None])


def mode_mixing(inputs, round_trips=None) -> Optional[MixingReport]:
    """The :class:`MixingReport` of ``inputs`` (``(chain, draw, input_dim)``), or ``None`` with one chain or fewer
    than :data:`MIN_DRAWS` draws. ``round_trips``: per chain, from a tempered run's settings."""
    inputs = np.asarray(inputs)
    if inputs.ndim != 3 or inputs.shape[0] < 2 or inputs.shape[1] < MIN_DRAWS:
        return None
    if not np.all(np.isfinite(inputs)):
        return None
    indicator = basin_indicator(inputs)
    return MixingReport(rhat=split_rhat(indicator), ess=effective_sample_size(indicator),
                        basin_fractions=[float(f) for f in indicator.mean(axis=1)],
                        round_trips=None if round_trips is None else [int(r) for r in round_trips])


def remedy(method: str) -> str:
    """What to do when the chains disagree, for ``method``."""
    if method == "chmc-tempered":
        return ("Run a longer warm-up (n_warmup) so that the ladder keeps adapting, or start it higher "
                "(noise_scales=(..., a top scale above the spread of g between the modes)) with more levels "
                "(max_levels); more sampling iterations help when round trips are few")
    if method in ("chmc", "chmc-dynamic"):
        return ("Constrained HMC does not cross low-density regions or gaps between components: sample with "
                "method='chmc-tempered' (exact tempering over noise scales), or declare the maps between the modes "
                "as symmetries (GenerativeModel(..., symmetries=[...]))")
    return "Run longer chains, more chains from dispersed starts, or method='chmc-tempered'"


def warn_if_not_mixing(report: Optional[MixingReport], method: str, stacklevel: int = 3) -> None:
    """``RuntimeWarning`` with the remedy when the chains disagree about the modes (R-hat > :data:`MIXING_RHAT`)."""
    if report is None or not report.disagree:
        return
    warnings.warn(
        f"{method}: the chains do not mix between modes ({report.describe()}): chains that stay in different modes "
        "can accept every move while the pooled draws weigh the modes by where the chains started, not by their "
        f"posterior mass. {remedy(method)}.",
        RuntimeWarning,
        stacklevel=stacklevel,
    )
