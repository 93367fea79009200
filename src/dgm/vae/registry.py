r"""The registry of VAE training objectives compared by ``dgm vae-benchmark`` (:mod:`dgm.experiments.vae_benchmark`).

Every row of the benchmark table is one *objective*: a lower bound on ``log p(x)`` that trains the shared VAE
(same :class:`~dgm.vae.VAEConfig` encoder/decoder, epochs, optimiser and data for all rows), possibly together with
extra trainable parameters of its own (flow step sizes, temperatures, ...).  An :class:`Objective` carries

* ``extra``: a pytree of the extra parameters (``None`` when there are none), trained with the VAE by the same
  optimiser;
* ``bound(vae, extra, x, key) -> (n,)``: per-example lower-bound estimates for a minibatch ``x`` of shape
  ``(n, data_dim)`` -- training maximises their mean;
* ``log_weights(vae, extra, x, key, k) -> (k,)``: ``k`` importance log-weights for one example ``x`` of shape
  ``(data_dim,)`` with ``E[exp(log w)] = p(x)`` -- the test log-likelihood is ``log mean_j w_j`` over many draws
  (:func:`dgm.vae.objectives.log_likelihood`).  Both must be pure JAX functions of their arguments (they are
  jitted; make them module-level functions or closures created once per objective).

Registering a new method (e.g. from ``dgm/vae/mcvae.py``)::

    from dgm.vae.registry import Objective, register_objective

    def _make_lmcvae(groups, config, key):          # groups: the named groups of the pattern's match
        k = int(groups["k"])
        extra = MyKernelParams(config.latent_dim, k, key=key)
        return Objective(f"lmcvae{k}", extra, bound=my_bound, log_weights=my_log_weights,
                         description=f"L-MCVAE, K={k} Langevin steps")

    register_objective(r"lmcvae(?P<k>\d+)", _make_lmcvae, example="lmcvae5", help="Langevin MCVAE with K steps")

and import that module from :mod:`dgm.experiments.vae_benchmark.experiment` (the one line
``import dgm.vae.mcvae  # registers ...``) so that ``dgm vae-benchmark --models vae,lmcvae5`` finds it;
``dgm vae-benchmark --help`` lists every registered pattern with its help text.  Patterns must match the whole
model name; a name matching two patterns is an error.

Built in here: ``vae`` (ELBO, one draw; Kingma & Welling 2014) and ``iwaeK`` (the K-sample IWAE bound, Burda et al.
2016); :mod:`dgm.vae.hvae` registers ``hvaeK``, ``hvaeK-t`` and ``hvaeK-free``.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable, NamedTuple

import jax
from jax.scipy.special import logsumexp

from dgm.vae.objectives import log_weights as _encoder_log_weights

__all__ = ["Objective", "register_objective", "make_objective", "check_model_name", "registered",
           "encoder_log_weights"]


class Objective(NamedTuple):
    """One benchmark row (module docstring)."""

    name: str
    extra: Any
    bound: Callable
    log_weights: Callable
    description: str = ""


class _Entry(NamedTuple):
    pattern: re.Pattern
    factory: Callable
    example: str
    help: str


_REGISTRY: list = []


def register_objective(pattern: str, factory: Callable, *, example: str, help: str = "") -> None:
    """Register ``factory(groups: dict, config: VAEConfig, key) -> Objective`` for model names fully matching the
    regular expression ``pattern`` (``example`` is one such name, shown in ``--help`` and checked here)."""
    compiled = re.compile(pattern)
    if not compiled.fullmatch(example):
        raise ValueError(f"register_objective: the example {example!r} does not match the pattern {pattern!r}")
    global _REGISTRY
    _REGISTRY = [e for e in _REGISTRY if e.pattern.pattern != pattern] + [_Entry(compiled, factory, example, help)]


def registered() -> list:
    """``[(pattern, example, help), ...]`` of every registered objective, in registration order."""
    return [(e.pattern.pattern, e.example, e.help) for e in _REGISTRY]


def _lookup(name: str):
    if not isinstance(name, str) or not name:
        raise ValueError(f"a model name must be a non-empty string, got {name!r}")
    hits = [(e, m) for e in _REGISTRY if (m := e.pattern.fullmatch(name))]
    if not hits:
        known = ", ".join(f"{e.example} ({e.pattern.pattern})" for e in _REGISTRY)
        raise ValueError(f"unknown model {name!r}; registered: {known}")
    if len(hits) > 1:
        raise ValueError(f"model {name!r} matches several registered patterns: "
                         f"{[e.pattern.pattern for e, _ in hits]}")
    return hits[0]


def check_model_name(name: str) -> None:
    """Raise the ``ValueError`` of :func:`make_objective` for an unknown or ambiguous name, without building
    anything (so a typo is refused before any data is loaded)."""
    _lookup(name)


def make_objective(name: str, config, key) -> Objective:
    """The :class:`Objective` for model name ``name`` (e.g. ``"iwae5"``), built for ``config`` with ``key`` (for
    any extra parameters).  Unknown or ambiguous names raise ``ValueError`` listing what is known."""
    entry, match = _lookup(name)
    objective = entry.factory(match.groupdict(), config, key)
    if not isinstance(objective, Objective):
        raise TypeError(f"the factory for {entry.pattern.pattern!r} returned {type(objective).__name__}, "
                        "not an Objective")
    return objective._replace(name=name)


# -- built-in rows: the VAE (ELBO) and the IWAE bound --------------------------------------------------------------
def encoder_log_weights(vae, extra, x, key, k):
    """``k`` importance log-weights from the encoder ``q(z | x)`` (:func:`dgm.vae.objectives.log_weights`)."""
    return _encoder_log_weights(vae, x, key, k)


def _elbo_bound(vae, extra, x, key):
    keys = jax.random.split(key, x.shape[0])
    return jax.vmap(lambda xi, ki: _encoder_log_weights(vae, xi, ki, 1)[0])(x, keys)


def _iwae_bound_fn(k: int):
    def bound(vae, extra, x, key):
        keys = jax.random.split(key, x.shape[0])
        return jax.vmap(lambda xi, ki: logsumexp(_encoder_log_weights(vae, xi, ki, k)) - math.log(k))(x, keys)

    return bound


def _make_vae(groups, config, key):
    return Objective("vae", None, _elbo_bound, encoder_log_weights, "VAE: ELBO, one draw of q(z|x)")


_IWAE_BOUNDS: dict = {}


def _make_iwae(groups, config, key):
    k = int(groups["k"])
    if k < 1:
        raise ValueError(f"IWAE needs K >= 1 samples, got {k}")
    bound = _IWAE_BOUNDS.setdefault(k, _iwae_bound_fn(k))  # one function per K: jit caches stay warm
    return Objective(f"iwae{k}", None, bound, encoder_log_weights, f"IWAE: the {k}-sample bound")


register_objective(r"vae", _make_vae, example="vae", help="the ELBO with one draw of q(z|x) (Kingma & Welling 2014)")
register_objective(r"iwae(?P<k>\d+)", _make_iwae, example="iwae5",
                   help="the K-sample importance-weighted bound (Burda, Grosse & Salakhutdinov 2016)")
