"""Ground truth for constrained HMC by quadrature over a chart of the manifold (test support, not library code).

On ``M_x = {u : g(u) = x}`` (dimension ``k = M - N``) the conditional density of ``u`` with respect to the Hausdorff
(surface) measure ``H^k`` is, by the co-area formula (paper, eq. 16),

    pi(u) ∝ rho(u) |J(u) J(u)^T|^{-1/2},   J = dg/du   (N x M).

For a chart ``s -> u(s)`` (``s`` in ``R^k``) the surface element is ``dH^k = |D(s)^T D(s)|^{1/2} ds`` with
``D = du/ds`` (``M x k``), so in chart coordinates

    p(s) ∝ rho(u(s)) |J J^T|^{-1/2} |D^T D|^{1/2}.

Both determinants are computed here from dense Jacobians (``jax.jacfwd`` and ``slogdet``), independently of
``dgm.geometry``, and expectations are Riemann sums on a uniform grid wide enough that the tails are negligible.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np


def log_chart_density(generator, chart, log_rho=lambda u: -0.5 * jnp.sum(u * u), with_log_det=True):
    """``s -> log p(s)`` (unnormalised); ``with_log_det=False`` gives the density a sampler that drops
    ``|J J^T|^{-1/2}`` would target (used to size the failure margins)."""

    def log_density(s):
        u = chart(s)
        jac = jax.jacfwd(generator)(u)
        d = jax.jacfwd(chart)(s)
        _, log_det_gram = jnp.linalg.slogdet(jac @ jac.T)
        _, log_det_area = jnp.linalg.slogdet(d.T @ d)
        return log_rho(u) - (0.5 * log_det_gram if with_log_det else 0.0) + 0.5 * log_det_area

    return log_density


class ChartQuadrature:
    """Normalised weights of ``p(s)`` on a tensor grid and the points ``u(s)`` they sit on."""

    def __init__(self, generator, chart, axes, **kwargs):
        with jax.enable_x64(True):
            grid = np.array(list(itertools.product(*axes))) if len(axes) > 1 else np.asarray(axes[0])[:, None]
            s = jnp.asarray(grid, jnp.float64)
            log_p = np.asarray(jax.jit(jax.vmap(log_chart_density(generator, chart, **kwargs)))(s))
            self.u = np.asarray(jax.jit(jax.vmap(chart))(s))
        log_p = np.where(np.isfinite(log_p), log_p, -np.inf)
        weights = np.exp(log_p - np.max(log_p))
        self.weights = weights / weights.sum()
        self.edge_mass = float(self.weights[_on_edge(grid, axes)].sum())  # must be negligible

    def expect(self, f) -> float:
        """``E[f(u)]`` for a NumPy function of the ``(n, M)`` array of points."""
        return float(np.sum(self.weights * f(self.u)))


def _on_edge(grid, axes):
    edge = np.zeros(len(grid), bool)
    for i, axis in enumerate(axes):
        edge |= (grid[:, i] == axis[0]) | (grid[:, i] == axis[-1])
    return edge
