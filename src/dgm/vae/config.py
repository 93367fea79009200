"""Hyper-parameters of a VAE: one frozen dataclass, checked on construction, with a JSON round trip.

The config is everything needed to rebuild a VAE's *shape* (a checkpoint stores it beside the weights, see
:mod:`dgm.vae.checkpoint`); training settings (epochs, learning rate, ...) are arguments of :func:`dgm.vae.train`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Optional, Tuple

ACTIVATIONS = ("tanh", "relu", "softplus", "elu", "gelu", "sigmoid", "silu")
LIKELIHOODS = ("gaussian", "bernoulli")
LATENTS = ("gaussian", "von_mises", "gamma", "dirichlet")
OUTPUT_ACTIVATIONS = ("identity", "sigmoid")

__all__ = ["VAEConfig", "ACTIVATIONS", "LIKELIHOODS", "LATENTS", "OUTPUT_ACTIVATIONS"]


@dataclasses.dataclass(frozen=True)
class VAEConfig:
    """Architecture of a VAE ``p(z) p(x | z)`` with encoder ``q(z | x)``.

    * ``data_dim``, ``latent_dim``: sizes of ``x`` and ``z`` (for ``latent="dirichlet"``, ``z`` lives on the
      ``latent_dim - 1`` simplex; for ``"von_mises"`` on the torus ``[-pi, pi)^latent_dim``).
    * ``hidden``: encoder hidden widths; ``decoder_hidden``: decoder hidden widths (``None``: ``hidden`` reversed;
      ``()``: a linear decoder ``mean(z) = W z + b``).
    * ``activation``: hidden-layer nonlinearity, one of :data:`ACTIVATIONS`.
    * ``likelihood``: ``"gaussian"`` (``x | z ~ N(mean(z), sigma^2 I)``) or ``"bernoulli"`` (``x | z ~
      Bernoulli(sigmoid(logits(z)))``, data in ``[0, 1]``).
    * ``sigma``: the Gaussian output noise standard deviation, fixed (``learn_sigma=False``) or the initial value of a
      learnt scalar (``learn_sigma=True``).
    * ``output_activation``: Gaussian mean ``"identity"`` or ``"sigmoid"`` (pixel intensities in ``(0, 1)``).
    * ``latent``: latent family, one of :data:`LATENTS` (priors: standard normal; uniform on the torus; ``Gamma(
      prior_concentration, prior_rate)`` per coordinate; symmetric ``Dirichlet(prior_concentration)``).
    * ``min_scale``: floor added to encoder scales/concentrations/rates (numerical safety).
    """

    data_dim: int
    latent_dim: int
    hidden: Tuple[int, ...] = (200, 200)
    decoder_hidden: Optional[Tuple[int, ...]] = None
    activation: str = "tanh"
    likelihood: str = "gaussian"
    sigma: float = 0.1
    learn_sigma: bool = False
    output_activation: str = "sigmoid"
    latent: str = "gaussian"
    prior_concentration: float = 1.0
    prior_rate: float = 1.0
    min_scale: float = 1e-4

    def __post_init__(self):
        # normalise sequences to tuples (JSON gives lists) before validating
        object.__setattr__(self, "hidden", _widths("hidden", self.hidden))
        if self.decoder_hidden is not None:
            object.__setattr__(self, "decoder_hidden", _widths("decoder_hidden", self.decoder_hidden))
        for name in ("data_dim", "latent_dim"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"VAEConfig.{name} must be a positive integer, got {v!r}")
        _choice("activation", self.activation, ACTIVATIONS)
        _choice("likelihood", self.likelihood, LIKELIHOODS)
        _choice("latent", self.latent, LATENTS)
        _choice("output_activation", self.output_activation, OUTPUT_ACTIVATIONS)
        for name in ("sigma", "prior_concentration", "prior_rate", "min_scale"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"VAEConfig.{name} must be a finite positive number, got {v!r}")
            object.__setattr__(self, name, float(v))
        if not isinstance(self.learn_sigma, bool):
            raise ValueError(f"VAEConfig.learn_sigma must be True or False, got {self.learn_sigma!r}")
        if self.latent == "dirichlet" and self.latent_dim < 2:
            raise ValueError("a Dirichlet latent needs latent_dim >= 2 (a point on the (latent_dim - 1)-simplex)")

    @property
    def decoder_widths(self) -> Tuple[int, ...]:
        return tuple(reversed(self.hidden)) if self.decoder_hidden is None else self.decoder_hidden

    # -- JSON round trip --------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
        d["decoder_hidden"] = None if self.decoder_hidden is None else list(self.decoder_hidden)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "VAEConfig":
        if not isinstance(d, dict):
            raise ValueError(f"a VAEConfig needs a dict of hyper-parameters, got {type(d).__name__}")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - fields)
        if unknown:
            raise ValueError(f"unknown VAEConfig hyper-parameter(s) {unknown}; known: {sorted(fields)}")
        missing = sorted(n for n in ("data_dim", "latent_dim") if n not in d)
        if missing:
            raise ValueError(f"VAEConfig hyper-parameter(s) {missing} missing")
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "VAEConfig":
        return cls.from_dict(json.loads(text))

    def differences(self, other: "VAEConfig") -> dict:
        """``{name: (self value, other value)}`` for every hyper-parameter that differs."""
        a, b = self.to_dict(), other.to_dict()
        return {k: (a[k], b[k]) for k in a if a[k] != b[k]}


def _widths(name, value) -> Tuple[int, ...]:
    try:
        widths = tuple(value)
    except TypeError:
        raise ValueError(f"VAEConfig.{name} must be a sequence of positive integers, got {value!r}") from None
    for w in widths:
        if isinstance(w, bool) or not isinstance(w, int) or w < 1:
            raise ValueError(f"VAEConfig.{name} must be a sequence of positive integers, got {value!r}")
    return widths


def _choice(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"VAEConfig.{name} must be one of {allowed}, got {value!r}")
