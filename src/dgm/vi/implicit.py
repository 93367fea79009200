r"""Implicit reparameterisation gradients (Figurnov, Mohamed & Mnih, NeurIPS 2018).

The classic reparameterisation trick writes ``z = g(eps, phi)`` with ``eps`` parameter-free and differentiates through
``g``; it needs a tractable inverse CDF.  Implicit reparameterisation needs only a *standardisation function*
``S_phi(z) = eps`` whose distribution does not depend on ``phi``.  Differentiating ``S_phi(z) = eps`` at fixed ``eps``
(paper, eq. 5)

.. math::   \nabla_\phi z = -(\nabla_z S_\phi(z))^{-1}\, \nabla_\phi S_\phi(z).

For a univariate distribution the CDF is a standardisation function (``eps ~ U(0, 1)``) and ``nabla_z F = q``, so
(paper, eq. 6)

.. math::   \nabla_\phi z = -\frac{\nabla_\phi F(z \mid \phi)}{q_\phi(z)} .

Neither formula needs the inverse of ``S``: the sample ``z`` may come from any exact sampler (rejection sampling,
a sampler built on other distributions, ...).  The sampler is run *without* gradients; the gradient is attached to
its output through a :func:`jax.custom_jvp` whose tangent rule is the formula above.  Because the tangent is linear in
the parameter tangent, reverse mode (``jax.grad``) works by JAX's automatic transposition of that rule.

Two forms are provided:

* :func:`implicit_attach` / :func:`implicit_reparam` (univariate, eq. 6).  The CDF must be *elementwise*: ``cdf(z,
  params)`` evaluates each entry of ``z`` under the parameters broadcast against it.  The derivative of ``F`` with
  respect to each parameter leaf is then obtained by one forward-mode JVP with an all-ones tangent, giving per-sample
  coefficients ``dz/dphi_leaf = -(dF/dphi_leaf)/q`` of the shape of ``z``; the tangent is
  ``sum_leaf coef_leaf * dphi_leaf``.  Consequently the CDF may contain ``while_loop`` (only forward mode is
  applied to it) and reverse mode stores one array per leaf instead of the CDF's intermediate values.
* :func:`standardised_attach` / :func:`implicit_reparam_multivariate` (general case, eq. 5) for an event dimension:
  ``standardise(z, params)`` maps ``z`` of shape ``batch + (d,)`` to ``eps`` of the same shape, acting
  independently on each event; ``nabla_z S`` is formed by ``d`` forward JVPs and the ``d x d`` system solved per event.

The sample's own tangent (``z`` as an input) is ignored: ``z`` is treated as drawn at fixed ``eps``.  Pass samples
that do not depend on the parameters (the ``rsample`` helpers wrap the sampler in :func:`jax.lax.stop_gradient`).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array
PyTree = Any

__all__ = [
    "implicit_attach",
    "implicit_derivatives",
    "implicit_reparam",
    "standardised_attach",
    "implicit_reparam_multivariate",
]


def _is_float(x) -> bool:
    return jnp.issubdtype(jnp.result_type(x), jnp.inexact)


def _density(cdf, log_prob, z, params):
    """``q(z | params)``: ``exp(log_prob)`` when given, else ``dF/dz`` by a forward JVP of the CDF in ``z``."""
    if log_prob is not None:
        return jnp.exp(log_prob(z, params))
    _, q = jax.jvp(lambda zz: cdf(zz, params), (z,), (jnp.ones_like(z),))
    return q


def implicit_derivatives(cdf: Callable, z: Array, params: PyTree, log_prob: Optional[Callable] = None) -> PyTree:
    r"""Per-sample implicit derivatives ``dz/dphi = -(dF(z|phi)/dphi) / q(z|phi)`` (paper, eq. 6).

    Returns a pytree with the structure of ``params``; each float leaf is replaced by an array of the shape of ``z``
    holding ``dz_i / d(leaf broadcast to z)_i`` (non-float leaves give ``None``).  ``cdf(z, params)`` must be
    elementwise in the broadcasting sense (see the module docstring).  ``log_prob`` defaults to ``log dF/dz``.
    """
    z = jnp.asarray(z)
    leaves, treedef = jax.tree_util.tree_flatten(params)
    q = _density(cdf, log_prob, z, params)
    out = []
    for i, leaf in enumerate(leaves):
        if not _is_float(leaf):
            out.append(None)
            continue

        def f_leaf(v, i=i):
            new = list(leaves)
            new[i] = v
            return cdf(z, jax.tree_util.tree_unflatten(treedef, new))

        leaf = jnp.asarray(leaf)
        _, dF = jax.jvp(f_leaf, (leaf,), (jnp.ones_like(leaf),))
        out.append(-jnp.broadcast_to(dF, z.shape) / q)
    return jax.tree_util.tree_unflatten(treedef, out)


def implicit_attach(cdf: Callable, log_prob: Optional[Callable] = None) -> Callable[[Array, PyTree], Array]:
    r"""Build ``attach(z, params) -> z`` whose derivative in ``params`` is the implicit rule (paper, eq. 6).

    ``attach`` returns ``z`` unchanged; under ``jax.jvp``/``jax.grad`` its tangent is
    ``sum_leaf (-(dF/dleaf)/q) * dleaf`` with the coefficients of :func:`implicit_derivatives`.

    Args:
      cdf: ``cdf(z, params) -> F`` of the shape of ``z``, differentiable (forward mode) in ``params`` and
        elementwise: entry ``i`` depends on the parameters broadcast to ``z``'s shape at ``i`` only.
      log_prob: optional ``log_prob(z, params) -> log q``; by default ``q = dF/dz`` by forward-mode autodiff.
    """

    @jax.custom_jvp
    def attach(z, params):
        return z

    @attach.defjvp
    def _attach_jvp(primals, tangents):
        z, params = primals
        _, dparams = tangents
        coef = implicit_derivatives(cdf, z, params, log_prob)
        dz = jnp.zeros_like(z)
        for c, dp in zip(jax.tree_util.tree_leaves(coef, is_leaf=lambda x: x is None),
                         jax.tree_util.tree_leaves(dparams, is_leaf=lambda x: x is None)):
            if c is None or dp is None or not _is_float(dp) or jnp.result_type(dp) == jax.dtypes.float0:
                continue
            dz = dz + c * jnp.broadcast_to(dp, z.shape)
        return z, dz

    return attach


def implicit_reparam(sampler: Callable, cdf: Callable, log_prob: Optional[Callable] = None) -> Callable:
    r"""Turn a gradient-free sampler into a reparameterised one with implicit gradients (paper, eq. 6).

    Args:
      sampler: ``sampler(key, params, sample_shape) -> z`` drawing exactly from ``q(. | params)``; it is run on
        ``stop_gradient(params)`` and may use rejection (``while_loop``) or anything else.
      cdf: differentiable, elementwise ``cdf(z, params)`` of the same distribution.
      log_prob: optional ``log_prob(z, params)`` (default: ``log dF/dz``).

    Returns:
      ``rsample(key, params, sample_shape=()) -> z`` with ``dz/dparams = -(dF/dparams)/q``.
    """
    attach = implicit_attach(cdf, log_prob)

    def rsample(key, params, sample_shape=()):
        z = sampler(key, lax.stop_gradient(params), tuple(sample_shape))
        return attach(lax.stop_gradient(z), params)

    return rsample


def _event_jacobian(standardise, z, params) -> Array:
    """``J[..., i, k] = dS_i/dz_k`` for an event-wise standardisation, by ``d`` forward JVPs."""
    d = z.shape[-1]
    cols = []
    for k in range(d):
        e = jnp.zeros_like(z).at[..., k].set(1.0)
        _, col = jax.jvp(lambda zz: standardise(zz, params), (z,), (e,))
        cols.append(col)
    return jnp.stack(cols, axis=-1)


def standardised_attach(standardise: Callable) -> Callable[[Array, PyTree], Array]:
    r"""Multivariate implicit rule (paper, eq. 5): ``dz = -(nabla_z S)^{-1} (nabla_phi S . dphi)``.

    Args:
      standardise: ``standardise(z, params) -> eps`` with ``z, eps`` of shape ``batch + (d,)``, invertible in ``z``
        for each event, acting independently on each event, and such that the law of ``eps`` does not depend on
        ``params``.  Examples: ``L^{-1}(z - mu)`` for a Gaussian, or the distributional transform
        ``(F_1(z_1), F_2(z_2 | z_1), ...)`` of successive conditional CDFs.

    Returns:
      ``attach(z, params) -> z`` with that tangent.  The parameter JVP of ``standardise`` is linear in the tangent,
      so reverse mode works when ``standardise`` is reverse-differentiable.
    """

    @jax.custom_jvp
    def attach(z, params):
        return z

    @attach.defjvp
    def _attach_jvp(primals, tangents):
        z, params = primals
        _, dparams = tangents
        jac = _event_jacobian(standardise, z, params)
        _, dS = jax.jvp(lambda p: standardise(z, p), (params,), (dparams,))
        dz = -jnp.linalg.solve(jac, dS[..., None])[..., 0]
        return z, dz

    return attach


def implicit_reparam_multivariate(sampler: Callable, standardise: Callable) -> Callable:
    """``rsample(key, params, sample_shape=())`` from a gradient-free ``sampler(key, params, sample_shape)`` and a
    standardisation function, with gradients by the multivariate implicit rule (paper, eq. 5)."""
    attach = standardised_attach(standardise)

    def rsample(key, params, sample_shape=()):
        z = sampler(key, lax.stop_gradient(params), tuple(sample_shape))
        return attach(lax.stop_gradient(z), params)

    return rsample
