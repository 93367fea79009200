"""Differentiable generative models: x = g(u), u ~ rho (paper, section 1 and eq. 4).

A :class:`GenerativeModel` bundles

* ``generator(u) -> x``: the differentiable map from the random inputs ``u`` (1-D, length ``input_dim``) to the
  observed quantities ``x`` (1-D);
* ``latents(u) -> z``: the quantities reported to the user (the paper's ``g_z``); default ``u`` itself;
* ``log_input_density(u)``: ``log rho(u)`` up to a constant; default standard normal;
* ``init(key, x_obs) -> u``: optional exact initialiser returning inputs with ``generator(u) == x_obs``;
* ``parameter_inputs``: how many leading entries of ``u`` (the paper's ``u_1``) generate the latent parameters ``z``;
  the rest (``u_2``) are per-observation noise. Used by the ABC baselines (random walk / slice updates of ``u_1`` with
  fresh ``u_2``). Default: all inputs;
* ``latent_names``: optional names of the entries of ``z`` for tables and ArviZ coordinates;
* ``structure``: optional declaration of Markov / independent structure (see :mod:`dgm.structure`), used by
  :func:`dgm.sample` to pick the linear-time geometry;
* ``latent_sites`` / ``observed_sites``: optional ``((name, shape), ...)`` blocks of ``latents(u)`` / ``generator(u)``
  (flattened, concatenated in this order), as a probabilistic program's sites (:func:`dgm.from_numpyro`): the
  observation may then be a ``{name: value}`` dict and ``Result.to_arviz()`` has one posterior variable per site;
* ``symmetries``: optional maps ``s(u)`` with ``g(s(u)) = g(u)`` (involutions, or :class:`dgm.Symmetry` with an
  inverse or an order), used by the constrained HMC methods as exact Metropolis–Hastings moves between the connected
  components of the manifold (:mod:`dgm.symmetry`, :mod:`dgm.kernels.symmetry`).

Conditioning on ``x = x_obs`` restricts ``u`` to the manifold ``{u : g(u) = x_obs}``; the constrained-HMC target on
it is ``rho(u) |J J^T|^{-1/2}`` with ``J = dg/du`` (eq. 16).
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Mapping
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def standard_normal_log_density(u: Array) -> Array:
    """``log N(u; 0, I)`` without the constant ``-M/2 log 2 pi`` (irrelevant for MCMC)."""
    return -0.5 * jnp.sum(u * u)


def _identity(u: Array) -> Array:
    return u


_PRECISION_CHECKED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
"""Models whose generator's precision was checked (:meth:`GenerativeModel.check_precision`), with what was found."""


@dataclasses.dataclass(frozen=True, eq=False)
class GenerativeModel:
    """A differentiable generative model ``x = generator(u)`` with inputs ``u ~ rho``.

    Instances hash by identity so they can be used as static arguments of jitted functions.
    """

    generator: Callable[[Array], Array]
    input_dim: int
    latents: Optional[Callable[[Array], Array]] = None
    log_input_density: Optional[Callable[[Array], Array]] = None
    init: Optional[Callable[[Array, Array], Array]] = None
    parameter_inputs: Optional[int] = None
    structure: Any = None
    name: str = "model"
    latent_names: Optional[tuple] = None
    symmetries: Any = ()
    latent_sites: Optional[tuple] = None
    observed_sites: Optional[tuple] = None

    def __post_init__(self):
        if not callable(self.generator):
            raise TypeError("generator must be a callable u -> x")
        if not isinstance(self.input_dim, (int, np.integer)) or self.input_dim < 1:
            raise ValueError(f"input_dim must be a positive integer, got {self.input_dim!r}")
        object.__setattr__(self, "input_dim", int(self.input_dim))
        if self.parameter_inputs is None:
            object.__setattr__(self, "parameter_inputs", self.input_dim)
        if not 0 < int(self.parameter_inputs) <= self.input_dim:
            raise ValueError(f"parameter_inputs must be in 1..input_dim, got {self.parameter_inputs!r}")
        object.__setattr__(self, "parameter_inputs", int(self.parameter_inputs))
        if self.latents is None:
            object.__setattr__(self, "latents", _identity)
        if self.log_input_density is None:
            object.__setattr__(self, "log_input_density", standard_normal_log_density)
        for field in ("latent_sites", "observed_sites"):
            value = getattr(self, field)
            if value is not None:
                object.__setattr__(self, field, tuple((str(n), tuple(int(k) for k in shape)) for n, shape in value))
        from dgm.symmetry import as_symmetries

        object.__setattr__(self, "symmetries", as_symmetries(self.symmetries))

    def check_precision(self) -> list:
        """Warn (once per model, with the remedy) when the generator computes with float32 values although dgm
        samples in float64 -- arrays closed over that were built before 64-bit mode was on
        (:func:`dgm.precision.warn_if_low_precision`, which inspects the traced program). Returns what was found."""
        found = _PRECISION_CHECKED.get(self)
        if found is None:
            from dgm.precision import warn_if_low_precision

            found = warn_if_low_precision(self.generator, self.input_dim, name=f"the generator of {self.name!r}",
                                          stacklevel=5)
            _PRECISION_CHECKED[self] = found
        return found

    def site_layout(self) -> Optional[dict]:
        """``{"latent": [[name, shape], ...], "observed": [...]}`` (JSON-ready) when the model names its sites."""
        if self.latent_sites is None and self.observed_sites is None:
            return None
        return {"latent": [[n, list(s)] for n, s in self.latent_sites or ()],
                "observed": [[n, list(s)] for n, s in self.observed_sites or ()]}

    # -- shape information -------------------------------------------------------------------------
    def _abstract_input(self):
        # float64 where 64-bit arrays are enabled (inside dgm.float64()), else JAX's default float: no dtype warning
        return jax.ShapeDtypeStruct((self.input_dim,), jnp.result_type(float))

    def output_shape(self) -> tuple[int, ...]:
        """Shape of ``generator(u)``, found by abstract evaluation (no FLOPs)."""
        out = jax.eval_shape(self.generator, self._abstract_input())
        return tuple(out.shape)

    def latent_shape(self) -> tuple[int, ...]:
        out = jax.eval_shape(self.latents, self._abstract_input())
        return tuple(out.shape)

    def validate_observation(self, x_obs, *, manifold: bool = True) -> np.ndarray:
        """Check ``x_obs`` against the generator's output and return it as a float64 NumPy array.

        A model with ``observed_sites`` also takes a ``{site name: value}`` dict (every site, each of its shape).
        Raises ``ValueError`` for a wrong shape, non-finite values, or a generator whose output is not 1-D or (with
        ``manifold=True``, the exact methods) has at least as many entries as there are inputs (the manifold would
        be empty or a point). Methods on a noisy relaxation (``manifold=False``) need no such condition.
        """
        if isinstance(x_obs, Mapping):
            x_obs = self._flatten_observed_sites(x_obs)
        x = np.asarray(x_obs, dtype=np.float64)
        self.check_precision()
        out_shape = self.output_shape()
        if len(out_shape) != 1:
            raise ValueError(f"generator must return a 1-D array, it returns shape {out_shape}")
        if x.shape != out_shape:
            raise ValueError(
                f"observation has shape {x.shape} but the generator of {self.name!r} returns shape {out_shape}"
            )
        if not np.all(np.isfinite(x)):
            bad = np.flatnonzero(~np.isfinite(x))
            raise ValueError(f"observation contains non-finite values (NaN/inf) at indices {bad[:10].tolist()}")
        if manifold and out_shape[0] >= self.input_dim:
            raise ValueError(
                f"the generator has {out_shape[0]} outputs but only {self.input_dim} inputs: conditioning needs "
                "fewer observed outputs than inputs (the manifold dimension is input_dim - output_dim > 0)"
            )
        return x

    def _flatten_observed_sites(self, values: Mapping) -> np.ndarray:
        if self.observed_sites is None:
            raise ValueError(f"{self.name!r} does not name its observed sites: pass the observation as an array")
        names = [n for n, _ in self.observed_sites]
        if set(values) != set(names):
            raise ValueError(f"the observation names sites {sorted(values)} but {self.name!r} observes {names}")
        parts = []
        for name, shape in self.observed_sites:
            value = np.asarray(values[name], dtype=np.float64)
            if value.shape != shape:
                raise ValueError(f"observed site {name!r} has shape {value.shape}, the model's has shape {shape}")
            parts.append(value.ravel())
        return np.concatenate(parts)
