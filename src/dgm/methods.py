"""Named sampling methods for :func:`dgm.sample`: each name builds a :class:`dgm.kernels.base.Method`.

* ``"chmc"``: constrained HMC on the manifold (Algorithm 1), dense or structured geometry;
* ``"hmc"`` / ``"nuts"``: BlackJAX HMC / NUTS on the noisy relaxation with Gaussian output noise ``noise_scale``;
* the ABC baselines (registered by :mod:`dgm.kernels.abc` and :mod:`dgm.kernels.pm_slice` builders).
"""

from __future__ import annotations

import functools
import warnings
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from dgm.geometry.dense import DenseGeometry
from dgm.initialise import ManifoldInitialisationError, find_points_on_manifold
from dgm.integrator import IntegratorSettings
from dgm.kernels import chmc, hmc
from dgm.kernels.abc import abc_mcmc_method
from dgm.kernels.pm_slice import pm_slice_method
from dgm.kernels.base import Method
from dgm.model import GenerativeModel


def make_geometry(model: GenerativeModel, x_obs, *, projection="quasi-newton", log_det_gradient="vjp",
                  geometry="auto"):
    """The manifold geometry for ``model``: structured (linear time) when the model declares structure."""
    if geometry not in ("auto", "dense", "structured"):
        raise ValueError(f"geometry must be 'auto', 'dense' or 'structured', got {geometry!r}")
    use_structured = geometry == "structured" or (geometry == "auto" and model.structure is not None)
    if use_structured and geometry == "auto" and not getattr(model.structure, "square", True):
        warnings.warn(
            f"{model.name}: more noise inputs per step than state entries, so the linear-time geometry does not "
            "apply; using the dense geometry (pass geometry='dense' to silence this warning)",
            stacklevel=3,
        )
        use_structured = False
    if use_structured:
        if model.structure is None:
            raise ValueError("geometry='structured' needs a model declared with structure (dgm.structure)")
        from dgm.geometry.structured import StructuredGeometry

        return StructuredGeometry(model, x_obs, projection=projection)
    return DenseGeometry(
        model.generator, x_obs, model.log_input_density, projection=projection, log_det_gradient=log_det_gradient
    )


def chmc_method(model, x_obs, *, step_size=None, n_steps=(4, 8), n_inner=1, tol=1e-8, max_newton=50,
                reverse_check_tol=None, projection="quasi-newton", log_det_gradient="vjp", geometry="auto",
                target_acceptance=0.8, init_max_iterations=100) -> Method:
    geom = make_geometry(model, x_obs, projection=projection, log_det_gradient=log_det_gradient, geometry=geometry)
    if reverse_check_tol is None:
        reverse_check_tol = float(tol) ** 0.5  # Algorithm 1's sqrt(eps)
    settings = IntegratorSettings(int(n_inner), float(tol), int(max_newton), float(reverse_check_tol))
    if settings.n_inner < 1:
        raise ValueError(f"n_inner must be >= 1, got {n_inner!r}")
    kernel = chmc.build_kernel(geom, settings, n_steps)

    structured = not isinstance(geom, DenseGeometry)  # linear-time Gauss-Newton and rank check when structured

    def initial_positions(key, n_chains):
        return find_points_on_manifold(model, x_obs, key, n_chains, tol=tol, max_iterations=init_max_iterations,
                                       structured=structured)

    return Method(
        name="chmc",
        initial_positions=initial_positions,
        init=lambda u: chmc.init(u, geom),
        step=kernel,
        position=lambda state: state.position,
        acceptance=lambda info: info.acceptance_rate,
        stats=lambda info: info._asdict(),  # every CHMCInfo field is a per-draw statistic
        initial_step_size=0.1 if step_size is None else float(step_size),
        target_acceptance=target_acceptance,
        epsilon=0.0,
        log_density=lambda state: -state.point.potential,  # log rho(u) - 1/2 log|J J^T| (eq. 16)
    )


def hmc_method(model, x_obs, *, algorithm="hmc", noise_scale=None, step_size=None, n_steps=(4, 8), tol=1e-8,
               target_acceptance=0.8, max_num_doublings=10, name=None) -> Method:
    if noise_scale is None:
        raise ValueError(
            f"method {algorithm!r} samples the noisy relaxation of the model: pass noise_scale=sigma (the Gaussian "
            "output-noise scale, the ABC tolerance of a Gaussian kernel)"
        )
    log_density = hmc.noisy_log_density(model, jnp.asarray(x_obs), float(noise_scale))
    step = hmc.build_step(log_density, algorithm=algorithm, n_steps=n_steps, max_num_doublings=max_num_doublings)

    def initial_positions(key, n_chains):
        # Points on the manifold are modes of the noisy model's likelihood: a good start for every chain. The noisy
        # density is positive everywhere, so when no such point is found prior draws will do.
        try:
            return find_points_on_manifold(model, x_obs, key, n_chains, tol=max(tol, 1e-8))
        except ManifoldInitialisationError as error:
            warnings.warn(f"{error}; starting {algorithm} from standard-normal draws instead", stacklevel=2)
            return np.asarray(jax.random.normal(key, (n_chains, model.input_dim), jnp.float64))

    return Method(
        name=name or algorithm,
        initial_positions=initial_positions,
        init=lambda u: hmc.init(u, log_density),
        step=step,
        position=lambda state: state.position,
        acceptance=lambda info: jnp.nan_to_num(info.acceptance_rate, nan=0.0),
        stats=hmc.stats,
        initial_step_size=0.1 if step_size is None else float(step_size),
        target_acceptance=target_acceptance,
        epsilon=float(noise_scale),
        log_density=lambda state: state.logdensity,
    )


def abc_hmc_method(model, x_obs, *, epsilon, step_size=None, n_steps=(4, 8), tol=1e-8, target_acceptance=0.8) -> Method:
    """ABC-HMC: BlackJAX HMC on ``u`` with a Gaussian ABC kernel of scale ``epsilon`` (the noisy relaxation)."""
    return hmc_method(model, x_obs, algorithm="hmc", noise_scale=epsilon, name="abc-hmc", step_size=step_size,
                      n_steps=n_steps, tol=tol, target_acceptance=target_acceptance)


METHODS: dict[str, Callable[..., Method]] = {
    "chmc": chmc_method,
    "abc-mcmc": abc_mcmc_method,
    "abc-slice": functools.partial(pm_slice_method, kernel="uniform"),
    "abc-slice-gaussian": functools.partial(pm_slice_method, kernel="gaussian"),
    "abc-hmc": abc_hmc_method,
    "hmc": functools.partial(hmc_method, algorithm="hmc"),
    "nuts": functools.partial(hmc_method, algorithm="nuts"),
}
