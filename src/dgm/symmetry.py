"""Declared symmetries of a generator: maps ``s`` with ``g(s(u)) = g(u)``.

A manifold ``{u : g(u) = x}`` with several connected components (a squared or absolute-valued parameter, a sign
symmetry of a scale parameter ...) cannot be crossed by constrained HMC, whose moves are continuous. When the user
knows maps that carry the manifold onto itself and permute its components, they declare them on the model,
``GenerativeModel(..., symmetries=[...])``, and the constrained HMC methods interleave exact Metropolis–Hastings moves
``u -> s(u)`` with their transitions (:mod:`dgm.kernels.symmetry`, which derives the acceptance ratio).

What may be declared (each entry of ``symmetries``):

* a callable ``s(u) -> u'`` (same shape): an **involution**, ``s(s(u)) = u`` (a sign flip, a swap, a reflection);
* ``Symmetry(s, inverse=t)``: a map with its inverse ``t = s^{-1}``; the move proposes ``s`` or ``t`` with
  probability 1/2 each. Declaring the generators of a finite group this way (each with its inverse) gives a chain
  that reaches every component in the group orbit; declaring *every* element of a finite group as an entry (the
  uniform choice below then picks a uniformly random group element, and ``g`` and ``g^{-1}`` equally often) works
  too;
* ``Symmetry(s, order=k)``: ``s^k = id`` (a rotation by ``2 pi / k`` ...), so ``s^{-1} = s^{k-1}`` (applied
  ``k - 1`` times).

Each move picks one declared entry uniformly, then (unless it is an involution) the direction. The maps must be
differentiable (their Jacobian restricted to the manifold enters the acceptance ratio), jittable, and preserve ``g``
at least on the manifold. :func:`check_symmetries` validates them at the chains' starting points: a map that moves
``g`` by more than the tolerance, or whose declared inverse does not undo it, is a ``ValueError``.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


@dataclasses.dataclass(frozen=True, eq=False)
class Symmetry:
    """A map ``s`` with ``g(s(u)) = g(u)``: an involution (default), or with its ``inverse``, or of finite ``order``.

    Attributes:
      map: ``u -> s(u)`` (jittable, differentiable, shape-preserving).
      inverse: ``u -> s^{-1}(u)``; ``None`` with ``order=None`` means ``s`` is an involution.
      order: ``k >= 2`` with ``s^k = id`` (the inverse is ``s`` applied ``k - 1`` times); not with ``inverse``.
      name: label in tables (default ``"s<index>"``).
    """

    map: Callable[[Array], Array]
    inverse: Optional[Callable[[Array], Array]] = None
    order: Optional[int] = None
    name: Optional[str] = None

    def __post_init__(self):
        if not callable(self.map):
            raise TypeError(f"a symmetry must be a callable u -> s(u), got {self.map!r}")
        if self.inverse is not None and not callable(self.inverse):
            raise TypeError(f"Symmetry.inverse must be a callable, got {self.inverse!r}")
        if self.order is not None:
            if self.inverse is not None:
                raise ValueError("give a Symmetry either its inverse or its order, not both")
            if isinstance(self.order, bool) or not isinstance(self.order, (int, np.integer)) or self.order < 2:
                raise ValueError(f"Symmetry.order must be an integer >= 2 (s^order = id), got {self.order!r}")
            object.__setattr__(self, "order", int(self.order))

    @property
    def involution(self) -> bool:
        return self.inverse is None and self.order in (None, 2)

    def apply_inverse(self, u: Array) -> Array:
        if self.inverse is not None:
            return self.inverse(u)
        for _ in range((self.order or 2) - 1):
            u = self.map(u)
        return u


def as_symmetries(declared) -> tuple:
    """Normalise ``GenerativeModel.symmetries``: ``None`` / a callable / a :class:`Symmetry` / a sequence of them
    -> tuple of :class:`Symmetry` with names."""
    if declared is None:
        return ()
    if callable(declared) or isinstance(declared, Symmetry):
        declared = [declared]
    try:
        items = list(declared)
    except TypeError:
        raise TypeError(f"symmetries must be a sequence of maps u -> s(u) or dgm.Symmetry, got {declared!r}") from None
    out = []
    for index, item in enumerate(items):
        symmetry = item if isinstance(item, Symmetry) else Symmetry(item)
        if symmetry.name is None:
            symmetry = dataclasses.replace(symmetry, name=f"s{index}")
        out.append(symmetry)
    return tuple(out)


def check_symmetries(symmetries, generator, positions, *, tol: float = 1e-8, inverse_tol: float = 1e-4,
                     name: str = "model") -> None:
    """Raise ``ValueError`` unless every declared map preserves ``g`` and is undone by its inverse at ``positions``.

    Checks, at each ``(n, input_dim)`` starting point ``u``: ``s(u)`` has the input shape and is finite;
    ``|g(s(u)) - g(u)|_inf <= tol * max(1, |g(u)|_inf)`` (``tol``: the Newton tolerance, so that ``s(u)`` lies on
    the manifold as closely as ``u``); ``|s^{-1}(s(u)) - u|_inf <= inverse_tol`` (the reversibility check of the
    integrator, ``sqrt(tol)``), ``s^{-1} = s`` for an involution.
    """
    if not symmetries:
        return
    u = jnp.asarray(positions, jnp.float64)
    for symmetry in symmetries:
        label = f"{name}: symmetry {symmetry.name!r}"
        shape = jax.eval_shape(symmetry.map, u[0]).shape
        if shape != u[0].shape:
            raise ValueError(f"{label} maps inputs of shape {u[0].shape} to shape {shape}; it must keep the shape")
        moved = jax.vmap(symmetry.map)(u)
        if not bool(jnp.all(jnp.isfinite(moved))):
            raise ValueError(f"{label} returns non-finite values at the starting points")
        g_u, g_s = jax.vmap(generator)(u), jax.vmap(generator)(moved)
        change = np.asarray(jnp.max(jnp.abs(g_s - g_u), axis=-1))
        scale = np.maximum(1.0, np.asarray(jnp.max(jnp.abs(g_u), axis=-1)))
        bad = np.flatnonzero(~(change <= tol * scale))
        if bad.size:
            raise ValueError(
                f"{label} does not preserve the generator: |g(s(u)) - g(u)|_inf = {change[bad[0]]:.3g} > tol = "
                f"{tol:g} at starting point {int(bad[0])} (a declared symmetry must satisfy g(s(u)) = g(u) on the "
                "manifold)")
        back = jax.vmap(symmetry.apply_inverse)(moved)
        error = np.asarray(jnp.max(jnp.abs(back - u), axis=-1))
        bad = np.flatnonzero(~(error <= inverse_tol))
        if bad.size:
            what = "s(s(u)) != u: it is not an involution" if symmetry.involution else "its inverse does not undo it"
            raise ValueError(
                f"{label}: {what} (|s^-1(s(u)) - u|_inf = {error[bad[0]]:.3g} > {inverse_tol:g} at starting point "
                f"{int(bad[0])}); declare Symmetry(map, inverse=...) or Symmetry(map, order=k) for a map that is not "
                "its own inverse")
