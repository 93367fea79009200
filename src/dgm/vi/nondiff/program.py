"""Programs with ``if`` branches on affine conditions: piecewise-smooth log joints (Lee, Yu & Yang 2018).

Source: W. Lee, H. Yu, H. Yang, "Reparameterization Gradient for Non-differentiable Models", NeurIPS 2018
(slides: ``/work/shared/papers/lee-yu-yang-2018-reparam-gradient-nondifferentiable-models-slides.txt``).

A probabilistic program whose ``if`` tests compare an affine function of the latent variables with zero,

    (let [z (sample (normal 0 1))]
      (if (> z 0) (observe (normal 3 1) 0) (observe (normal -2 1) 0)))

has a joint density that is smooth *inside* each region of a partition of latent space and jumps across the region
boundaries: ``p(z, x=0) = [z > 0] r_1(z) + [z <= 0] r_2(z)`` (slides). Here a model is written out explicitly as

* ``K`` hyperplanes ``H_k = {z : a_k . z + b_k = 0}`` (rows of ``normals`` and entries of ``offsets``), one per
  ``if`` test, and
* a function ``log_joint_given_signs(z, s)`` that, for a fixed sign vector ``s in {False, True}^K`` with
  ``s_k = [a_k . z + b_k > 0]``, returns the log joint of the branch the program takes; it must be smooth in ``z``
  for fixed ``s`` (use ``jnp.where(s[k], then, else)`` for an ``if``).

A region is therefore an intersection of half-spaces and the piece is chosen by a sign pattern. Nested and
sequential ``if``\\ s are covered as long as every hyperplane is fixed in advance (a test that only runs inside
another branch is listed globally; outside that branch its sign is simply ignored, so the log joint does not jump
across it there). The log joint of the program is ``log_joint(z) = log_joint_given_signs(z, signs(z))``.

The jump of the integrand across ``H_k`` at ``z in H_k`` is

    Delta_k(z) = log_joint_given_signs(z, s with s_k = True) - log_joint_given_signs(z, s with s_k = False),

i.e. (value on the side ``a_k . z + b_k > 0``) minus (value on the other side); the boundary term of the gradient
(:mod:`dgm.vi.nondiff.boundary`) integrates it over ``H_k``.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Callable, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
Pattern = Union[str, Sequence[int]]

__all__ = ["PiecewiseModel", "from_pieces", "parse_pattern"]


@dataclasses.dataclass(frozen=True, eq=False)
class PiecewiseModel:
    """Log joint ``log p(x_obs, z)`` that is smooth on each cell of an arrangement of affine hyperplanes.

    Args:
        normals: ``(K, d)`` array, row ``k`` is ``a_k`` (non-zero).
        offsets: ``(K,)`` array of ``b_k``. Branch ``k`` is "taken" (``s_k = True``) where ``a_k . z + b_k > 0``.
        log_joint_given_signs: ``(z, s) -> scalar``, smooth in ``z`` for every fixed boolean ``s`` of shape ``(K,)``.
        name: label used in benchmarks.
        latent_names: optional names of the ``d`` latent coordinates.

    Instances hash by identity, so they can be closed over or passed as static arguments of jitted functions.
    """

    normals: np.ndarray
    offsets: np.ndarray
    log_joint_given_signs: Callable[[Array, Array], Array]
    name: str = "model"
    latent_names: Optional[tuple[str, ...]] = None

    def __post_init__(self):
        normals = np.asarray(self.normals, dtype=np.float64)
        offsets = np.asarray(self.offsets, dtype=np.float64).reshape(-1)
        if normals.ndim == 1:
            normals = normals.reshape(1, -1) if offsets.size == 1 else normals.reshape(0, -1)
        if normals.ndim != 2 or normals.shape[0] != offsets.shape[0]:
            raise ValueError(f"normals must be (K, d) and offsets (K,), got {normals.shape} and {offsets.shape}")
        if normals.shape[0] and np.any(np.linalg.norm(normals, axis=1) == 0):
            raise ValueError("every hyperplane normal a_k must be non-zero")
        if not callable(self.log_joint_given_signs):
            raise TypeError("log_joint_given_signs must be a callable (z, signs) -> scalar")
        object.__setattr__(self, "normals", normals)
        object.__setattr__(self, "offsets", offsets)
        if self.latent_names is not None and len(self.latent_names) != normals.shape[1]:
            raise ValueError("latent_names must have one entry per latent dimension")

    # -- sizes -------------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        """Latent dimension ``d``."""
        return int(self.normals.shape[1])

    @property
    def num_boundaries(self) -> int:
        """Number ``K`` of hyperplanes (branch conditions)."""
        return int(self.normals.shape[0])

    # -- geometry ----------------------------------------------------------------------------------
    def unit_hyperplanes(self, dtype=None) -> tuple[Array, Array]:
        """``(n, c)`` with ``n_k = a_k / |a_k|`` (unit normal pointing into ``s_k = True``) and ``c_k = -b_k/|a_k|``,
        so that ``H_k = {z : n_k . z = c_k}``."""
        norm = np.linalg.norm(self.normals, axis=1)
        n = self.normals / norm[:, None]
        c = -self.offsets / norm
        return jnp.asarray(n, dtype=dtype), jnp.asarray(c, dtype=dtype)

    def conditions(self, z: Array) -> Array:
        """``a_k . z + b_k`` for all ``k`` (shape ``(K,)``)."""
        z = jnp.asarray(z)
        a = jnp.asarray(self.normals, dtype=z.dtype)
        b = jnp.asarray(self.offsets, dtype=z.dtype)
        return a @ z + b

    def signs(self, z: Array) -> Array:
        """Boolean branch pattern ``s_k = [a_k . z + b_k > 0]``; carries no gradient."""
        return self.conditions(jax.lax.stop_gradient(z)) > 0

    # -- densities ---------------------------------------------------------------------------------
    def log_joint(self, z: Array) -> Array:
        """``log p(x_obs, z)``: the piece selected by ``signs(z)``. Its ``jax.grad`` is the *within-piece* gradient
        (the jumps are invisible to autodiff), which is what the plain reparameterisation estimator uses."""
        return self.log_joint_given_signs(z, self.signs(z))

    def jump(self, z: Array, k) -> Array:
        """``Delta_k(z)``: log joint with ``s_k`` forced True minus with ``s_k`` forced False (other signs from ``z``)."""
        s = self.signs(z)
        return self.log_joint_given_signs(z, s.at[k].set(True)) - self.log_joint_given_signs(z, s.at[k].set(False))

    def jumps(self, z: Array) -> Array:
        """``(Delta_1(z), ..., Delta_K(z))``, each evaluated at the same ``z`` (shape ``(K,)``)."""
        return jax.vmap(lambda k: self.jump(z, k))(jnp.arange(self.num_boundaries))


def parse_pattern(pattern: Pattern, num_boundaries: int) -> np.ndarray:
    """Sign pattern as an int array in ``{+1, -1, 0}``: ``+1`` needs ``s_k``, ``-1`` needs ``not s_k``, ``0`` is
    "don't care". Strings use ``'+'``, ``'-'`` and ``'.'`` (or ``'*'``), e.g. ``"+."``."""
    if isinstance(pattern, str):
        table = {"+": 1, "-": -1, ".": 0, "*": 0}
        try:
            out = np.array([table[ch] for ch in pattern], dtype=np.int64)
        except KeyError as err:
            raise ValueError(f"pattern {pattern!r} may only contain '+', '-', '.', '*'") from err
    else:
        out = np.asarray(pattern, dtype=np.int64)
    if out.shape != (num_boundaries,) or not np.all(np.isin(out, (-1, 0, 1))):
        raise ValueError(f"pattern {pattern!r} must have {num_boundaries} entries in {{+1, -1, 0}}")
    return out


def from_pieces(
    normals,
    offsets,
    pieces: Sequence[tuple[Pattern, Callable[[Array], Array]]],
    *,
    name: str = "model",
    latent_names: Optional[tuple[str, ...]] = None,
    check_coverage: bool = True,
) -> PiecewiseModel:
    """Build a :class:`PiecewiseModel` from a list of ``(sign pattern, smooth log joint z -> scalar)``.

    The first piece whose pattern matches ``signs(z)`` is used (like an ``if / elif / else`` chain). E.g. the slides'
    program is ``from_pieces([[1.0]], [0.0], [("+", r1), ("-", r2)])`` with ``r_i`` the log of the branch densities.
    With ``check_coverage`` (and ``K <= 16``) every one of the ``2^K`` sign patterns must match some piece.
    """
    normals = np.atleast_2d(np.asarray(normals, dtype=np.float64))
    num_boundaries = normals.shape[0]
    parsed = [(parse_pattern(p, num_boundaries), fn) for p, fn in pieces]
    if not parsed:
        raise ValueError("need at least one piece")
    if check_coverage and num_boundaries <= 16:
        for combo in itertools.product((-1, 1), repeat=num_boundaries):
            c = np.array(combo)
            if not any(np.all((p == 0) | (p == c)) for p, _ in parsed):
                raise ValueError(f"no piece covers sign pattern {''.join('+' if v > 0 else '-' for v in c)}")
    patterns = np.stack([p for p, _ in parsed])  # (P, K)
    fns = tuple(fn for _, fn in parsed)

    def log_joint_given_signs(z, s):
        sv = jnp.where(s, 1, -1)
        pat = jnp.asarray(patterns)
        match = jnp.all((pat == 0) | (pat == sv[None, :]), axis=1)  # (P,)
        first = jnp.argmax(match)
        value = jax.lax.switch(first, fns, z)
        return jnp.where(jnp.any(match), value, jnp.nan)

    return PiecewiseModel(normals, offsets, log_joint_given_signs, name=name, latent_names=latent_names)
