"""Which connected components of the manifold do the chains occupy?

Constrained HMC moves continuously on ``M = {u : g(u) = x}``, so a chain never leaves the connected component it
starts in; when ``M`` has several, pooled draws weigh the components by where the chains started, not by their
posterior mass, while per-chain diagnostics look healthy. After sampling, :func:`detect_components` estimates the
components the draws lie on and which chains visited which:

1. **Representatives**: ``per_chain`` draws of each chain, evenly spaced over the run.
2. **Free links**: consecutive representatives of a chain that made only continuous moves (no accepted symmetry
   move) lie in the same component by construction.
3. **Path tests**: each representative ``a`` is tested against its ``neighbours`` nearest representatives ``b`` of
   *other* chains (Euclidean in ``u``). The test follows the straight segment from ``a`` to ``b`` on the manifold
   (predictor–corrector continuation): ``passes`` times, ``steps`` increments ``(b - p) / steps`` are added to the
   current point ``p`` and each predictor is projected back onto ``M`` by the sampler's own quasi-Newton projection
   (:meth:`~dgm.geometry.base.Geometry.project_position`, along ``range(J(p)^T)``). Within a component the gap
   ``|b - p|`` shrinks to zero from pass to pass (cubically in the chord length, for a smooth manifold); across
   components the projections keep returning ``p`` to its own component and the gap stays at least the distance
   between them. ``a`` and ``b`` are *joined* when every projection converged, no step moved ``p`` by more than
   three increments (a projection that jumps elsewhere) and the final gap is at most ``gap_tol * |b - a|``.
4. The components are the connected components of the graph of joined representatives (union-find, host side).

A join is a proof (a followed path); a missing one is evidence only: two chains in the same component whose draws
never came near each other (poor mixing, which R-hat also flags) can look like two components. Components no chain
reached are, of course, not seen. The tests run as one jitted, ``vmap``-ped program over all pairs (cached per model
and settings); cost ``C * per_chain * neighbours * passes * steps`` projections.

No library provides this for implicitly defined manifolds, hence written here.
"""

from __future__ import annotations

import dataclasses
import functools
import time
import warnings
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from dgm.model import GenerativeModel


@dataclasses.dataclass
class ComponentReport:
    """Components found among the draws.

    Attributes:
      n_components: number of components the checked draws lie on.
      chains_per_component: for each component, how many chains have checked draws in it.
      draw_fractions: for each component, the fraction of checked draws in it (a rough weight estimate).
      chain_components: for each chain, the components its checked draws visited.
      chains_moving: chains whose checked draws visited more than one component.
      n_pairs: path tests run; n_joined: those that joined; seconds: time spent (compilation included).
      max_rhat: the screen's largest split R-hat of the inputs and their squares (``None`` when not screened); with
        ``n_pairs = 0`` the chains agreed and no path test ran.
    """

    n_components: int
    chains_per_component: list
    draw_fractions: list
    chain_components: list
    chains_moving: int
    n_pairs: int
    n_joined: int
    seconds: float
    max_rhat: Optional[float] = None

    @property
    def stuck(self) -> bool:
        """Several components occupied and no chain moved between them."""
        return self.n_components > 1 and self.chains_moving == 0

    def describe(self) -> str:
        counts = ", ".join(str(c) for c in self.chains_per_component)
        if self.n_components == 1:
            if self.n_pairs == 0 and self.max_rhat is not None:
                return f"1 component (chains agree: split R-hat of u, u^2 at most {self.max_rhat:.3f}; no path tests)"
            return f"1 component ({self.n_joined} of {self.n_pairs} path tests joined)"
        moved = "no chain moved between them" if self.chains_moving == 0 else \
            f"{self.chains_moving} chain(s) moved between them"
        return f"{self.n_components} components (chains per component: {counts}; {moved})"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Optional[dict]) -> Optional["ComponentReport"]:
        return None if data is None else cls(**data)


def _union_find(n: int, edges) -> np.ndarray:
    parent = np.arange(n)

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in edges:
        ri, rj = root(int(i)), root(int(j))
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    roots = np.array([root(i) for i in range(n)])
    _, labels = np.unique(roots, return_inverse=True)
    return labels


@functools.lru_cache(maxsize=16)
def _path_tester(model: GenerativeModel, geometry: str, tol: float, max_newton: int, steps: int, passes: int,
                 gap_tol: float):
    """``jit(vmap((a, b), x_obs) -> joined))``, cached per model and settings."""
    from dgm.methods import make_geometry

    def joined(a, b, x_obs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            geom = make_geometry(model, x_obs, geometry=geometry)

        def one_pass(carry, _):
            p, ok = carry
            delta = (b - p) / steps
            limit = 3.0 * jnp.linalg.norm(delta) + 10.0 * tol

            def step(_, carry):
                p, ok = carry
                result = geom.project_position(geom.factorise(p), p + delta, tol, max_newton)
                continuous = jnp.linalg.norm(result.position - p) <= limit
                ok = ok & result.converged & continuous
                return jnp.where(ok, result.position, p), ok

            return jax.lax.fori_loop(0, steps, step, (p, ok)), None

        (p, ok), _ = jax.lax.scan(one_pass, (a, jnp.asarray(True)), None, length=passes)
        return ok & (jnp.linalg.norm(b - p) <= gap_tol * jnp.linalg.norm(b - a) + 10.0 * tol)

    return jax.jit(jax.vmap(joined, in_axes=(0, 0, None)))


def detect_components(model: GenerativeModel, x_obs, inputs, *, jumped=None, per_chain: int = 16,
                      neighbours: int = 4, steps: int = 8, passes: int = 3, gap_tol: float = 1e-3,
                      tol: float = 1e-8, max_newton: int = 50, geometry: str = "auto") -> ComponentReport:
    """Components occupied by the draws ``inputs`` (``(chain, draw, input_dim)``, on the manifold of ``x_obs``).

    ``jumped``: optional ``(chain,)`` booleans, chains that made discontinuous moves (accepted symmetry moves): their
    consecutive draws are not assumed to share a component. The other arguments are those of the path test (module
    docstring). Run inside :func:`dgm.float64` (the driver does).
    """
    t0 = time.perf_counter()
    inputs = np.asarray(inputs, dtype=np.float64)
    n_chains, n_draws, dim = inputs.shape
    m = max(1, min(int(per_chain), n_draws))
    index = np.unique(np.linspace(0, n_draws - 1, m).round().astype(int))
    m = index.size
    points = inputs[:, index, :].reshape(n_chains * m, dim)
    chain_of = np.repeat(np.arange(n_chains), m)
    jumped = np.zeros(n_chains, bool) if jumped is None else np.asarray(jumped, bool)

    edges = [(c * m + i, c * m + i + 1) for c in range(n_chains) if not jumped[c] for i in range(m - 1)]
    pairs, seen = [], set()
    if n_chains > 1:
        distance = np.linalg.norm(points[:, None, :] - points[None, :, :], axis=-1)
        distance[chain_of[:, None] == chain_of[None, :]] = np.inf
        for i in range(points.shape[0]):
            for j in np.argsort(distance[i])[:neighbours]:
                if np.isfinite(distance[i, j]) and (int(j), i) not in seen:
                    pairs.append((i, int(j)))
                    seen.add((i, int(j)))
    for c in np.flatnonzero(jumped):  # jumped chains: test their consecutive draws too
        pairs += [(c * m + i, c * m + i + 1) for i in range(m - 1)]
    n_joined = 0
    if pairs:
        pairs_array = np.asarray(pairs)
        tester = _path_tester(model, geometry, float(tol), int(max_newton), int(steps), int(passes), float(gap_tol))
        ok = np.asarray(tester(jnp.asarray(points[pairs_array[:, 0]]), jnp.asarray(points[pairs_array[:, 1]]),
                               jnp.asarray(x_obs, jnp.float64)))
        edges += [tuple(p) for p in pairs_array[ok]]
        n_joined = int(ok.sum())
    labels = _union_find(points.shape[0], edges).reshape(n_chains, m)
    n_components = int(labels.max()) + 1
    chain_components = [sorted(set(int(v) for v in row)) for row in labels]
    chains_per_component = [int(sum(k in row for row in chain_components)) for k in range(n_components)]
    fractions = [float(np.mean(labels == k)) for k in range(n_components)]
    return ComponentReport(n_components, chains_per_component, fractions, chain_components,
                           int(sum(len(row) > 1 for row in chain_components)), len(pairs), n_joined,
                           time.perf_counter() - t0)


SCREEN_RHAT = 1.1
"""The path tests run (mode ``"auto"``) when the split R-hat of some input or its square exceeds this (Gelman and
Rubin's classic threshold), or when the model declares symmetries: chains in different components have different
laws, hence a large R-hat (infinite for a coordinate constant within each chain but not across chains)."""
SCREEN_MIN_DRAWS = 20
"""Mode ``"auto"`` checks nothing in runs of fewer draws per chain (R-hat means little there, and the path tests'
compilation would dominate a smoke run); ``detect_components=True`` checks them too."""


def split_rhat(draws) -> float:
    """Largest classic split R-hat (Gelman et al., BDA3 eq. 11.4) over the columns of ``draws`` (chain, draw, k).

    Only the screen's trigger, not a reported diagnostic (those come from ArviZ): ArviZ's rank-normalised R-hat costs
    ~0.1-0.8 s on a (4, 300, 104) array and importing ArviZ seconds, too much for every :func:`dgm.sample` call, while
    this is a few means and variances. A column constant within every chain counts as agreeing when the chains agree
    to 1e-10 (relative), else as infinitely disagreeing.
    """
    draws = np.asarray(draws, dtype=np.float64)
    n = draws.shape[1] // 2
    halves = np.concatenate([draws[:, :n], draws[:, n:2 * n]], axis=0)  # (2C, n, k)
    within = np.mean(np.var(halves, axis=1, ddof=1), axis=0)
    between = np.var(np.mean(halves, axis=1), axis=0, ddof=1)
    tiny = (1e-10 * (1.0 + np.max(np.abs(draws), axis=(0, 1)))) ** 2
    pooled = (n - 1) / n * within + between
    with np.errstate(divide="ignore", invalid="ignore"):
        rhat = np.where(within > tiny, np.sqrt(pooled / within), np.where(between > tiny, np.inf, 1.0))
    return float(np.max(rhat))


def components_after_sampling(model: GenerativeModel, x_obs, inputs, stats: dict, mode="auto", tol: float = 1e-8,
                              max_newton: int = 50, geometry: str = "auto") -> Optional[ComponentReport]:
    """What :func:`dgm.sample` runs after constrained HMC: ``mode="auto"`` screens with the split R-hat of ``u`` and
    ``u**2`` (:func:`split_rhat`, max over inputs) and runs :func:`detect_components` when it exceeds
    :data:`SCREEN_RHAT` or the model declares symmetries (runs shorter than :data:`SCREEN_MIN_DRAWS` draws:
    ``None``); ``True`` / ``"always"`` always runs it; ``False`` / ``"never"`` or one chain: ``None``.
    """
    if not any(mode is m or (isinstance(mode, str) and mode == m)
               for m in (True, False, "auto", "always", "never")):
        raise ValueError(f"detect_components must be 'auto', True/'always' or False/'never', got {mode!r}")
    if mode is False or mode == "never" or np.shape(inputs)[0] < 2:
        return None
    t0 = time.perf_counter()
    max_rhat = None
    if mode == "auto":
        if np.shape(inputs)[1] < SCREEN_MIN_DRAWS:
            return None
        inputs = np.asarray(inputs, dtype=np.float64)
        max_rhat = max(split_rhat(inputs), split_rhat(inputs**2))
        if max_rhat <= SCREEN_RHAT and not model.symmetries:
            n_chains = int(np.shape(inputs)[0])
            return ComponentReport(1, [n_chains], [1.0], [[0]] * n_chains, 0, 0, 0, time.perf_counter() - t0,
                                   max_rhat)
    jumped = None
    if "symmetry_accepted" in stats:
        jumped = np.any(np.asarray(stats["symmetry_accepted"]), axis=1)
    report = detect_components(model, x_obs, inputs, jumped=jumped, tol=tol, max_newton=max_newton,
                               geometry=geometry)
    report.max_rhat = max_rhat
    report.seconds = time.perf_counter() - t0
    return report


def warn_if_stuck(report: Optional[ComponentReport], method: str, stacklevel: int = 3) -> None:
    """``RuntimeWarning`` when several components are occupied and no chain moved between them."""
    if report is None or not report.stuck:
        return
    warnings.warn(
        f"{method}: the draws lie on {report.describe()}: no path on the manifold joined them, so they are "
        "disconnected parts of {u : g(u) = x} or modes separated by a strongly curved region (a failed join is "
        "evidence, not proof). Constrained HMC cannot cross between disconnected parts, so the pooled draws weigh "
        "them by where the chains started, not by their posterior mass. Declare the maps between the components as symmetries "
        "(GenerativeModel(..., symmetries=[...]): exact Metropolis-Hastings moves), or sample with "
        "method='chmc-tempered' (exact tempering over noise scales, which finds undeclared components); see the "
        "documentation, 'Disconnected manifolds' (docs/concepts/components.md).",
        RuntimeWarning,
        stacklevel=stacklevel,
    )
