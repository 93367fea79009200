"""Reparameterisation gradients for non-differentiable (``if``-branching) models: Lee, Yu & Yang, NeurIPS 2018.

* :mod:`~dgm.vi.nondiff.program`: piecewise-smooth log joints with affine branch conditions (:class:`PiecewiseModel`);
* :mod:`~dgm.vi.nondiff.families`: Gaussian variational families (mean-field, full-rank) ``z = mu + L eps``;
* :mod:`~dgm.vi.nondiff.boundary`: the boundary (surface-integral) term, sampled on the hyperplanes;
* :mod:`~dgm.vi.nondiff.estimators`: score-function, plain reparameterisation (biased) and reparameterisation +
  boundary (unbiased) ELBO-gradient estimators behind one interface;
* :mod:`~dgm.vi.nondiff.optimise`: Adam ascent on the ELBO under ``jit`` + ``lax.scan``;
* :mod:`~dgm.vi.nondiff.examples`: the slides' example, a tilted 2-D model, the SMS change-point and thermostat models.
"""

from dgm.vi.nondiff.boundary import (
    boundary_contribution,
    boundary_term_samples,
    hyperplane_masses,
    log_hyperplane_masses,
    normal_velocity,
    project_to_hyperplane,
)
from dgm.vi.nondiff.estimators import (
    ESTIMATORS,
    GradientEstimate,
    Reparameterisation,
    ReparameterisationBoundary,
    ScoreFunction,
    elbo_estimate,
)
from dgm.vi.nondiff.families import FullRankGaussian, MeanFieldGaussian
from dgm.vi.nondiff.optimise import FitResult, fit
from dgm.vi.nondiff.program import PiecewiseModel, from_pieces

__all__ = [
    "PiecewiseModel",
    "from_pieces",
    "MeanFieldGaussian",
    "FullRankGaussian",
    "GradientEstimate",
    "ScoreFunction",
    "Reparameterisation",
    "ReparameterisationBoundary",
    "ESTIMATORS",
    "elbo_estimate",
    "boundary_contribution",
    "boundary_term_samples",
    "hyperplane_masses",
    "log_hyperplane_masses",
    "normal_velocity",
    "project_to_hyperplane",
    "FitResult",
    "fit",
]
