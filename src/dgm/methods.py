"""Named sampling methods for :func:`dgm.sample`: each name builds a :class:`dgm.kernels.base.Method`.

* ``"chmc"``: constrained HMC on the manifold (Algorithm 1), dense or structured geometry;
* ``"chmc-dynamic"``: the same with dynamic integration time (NUTS-style tree doubling, :mod:`dgm.kernels.chmc_dynamic`);
* ``"hmc"`` / ``"nuts"``: BlackJAX HMC / NUTS on the noisy relaxation with Gaussian output noise ``noise_scale``;
* the ABC baselines (registered by :mod:`dgm.kernels.abc` and :mod:`dgm.kernels.pm_slice` builders).
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
import warnings
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from dgm.geometry.dense import DenseGeometry
from dgm.geometry.jacobian_choice import check_jacobian_mode, resolve_jacobian_mode
from dgm.initialise import ManifoldInitialisationError, find_points_on_manifold
from dgm.integrator import IntegratorSettings
from dgm.kernels import chmc, chmc_dynamic, hmc
from dgm.kernels.symmetry import DEFAULT_SYMMETRY_PROBABILITY
from dgm.kernels.abc import abc_mcmc_method
from dgm.kernels.pm_slice import pm_slice_method
from dgm.kernels.tempered import tempered_method
from dgm.kernels.base import Method
from dgm.kernels.metric import METRICS, check_inverse_mass, scaled_model_parts, with_diagonal_metric
from dgm.model import GenerativeModel
from dgm.structure import AdditiveNoiseStructure


GEOMETRIES = ("auto", "dense", "structured", "additive")


def geometry_kind(model: GenerativeModel, geometry: str = "auto") -> str:
    """Which geometry ``geometry="auto"`` (or the one asked for) means for ``model``, by cost per point:

    * ``"additive"`` for a model declared with :func:`dgm.structure.additive_noise_structure` (one Jacobian of the
      mean ``m``, one VJP of it, ``O(N L min(N, L))``: never dearer than the others);
    * ``"structured"`` for another declared (square) Markov or independent structure when its ``L x L``
      capacitance is smaller than the ``N x N`` Gram matrix (``L < N``), ``"dense"`` when ``L >= N`` (then the
      dense factorisation is no larger, and one Jacobian beats ``T`` per-step Jacobians plus the second-order pass);
    * ``"dense"`` otherwise.
    """
    if geometry not in GEOMETRIES:
        raise ValueError(f"geometry must be one of {GEOMETRIES}, got {geometry!r}")
    structure = model.structure
    if geometry != "auto":
        if geometry in ("structured", "additive") and structure is None:
            raise ValueError(f"geometry={geometry!r} needs a model declared with structure (dgm.structure)")
        if geometry == "additive" and not isinstance(structure, AdditiveNoiseStructure):
            raise ValueError("geometry='additive' needs a model declared with dgm.structure.additive_noise_structure")
        return geometry
    if structure is None:
        return "dense"
    if isinstance(structure, AdditiveNoiseStructure):
        return "additive"
    if not getattr(structure, "square", True):
        warnings.warn(
            f"{model.name}: more noise inputs per step than state entries, so the linear-time geometry does not "
            "apply; using the dense geometry (pass geometry='dense' to silence this warning)",
            stacklevel=4,
        )
        return "dense"
    return "structured" if structure.n_parameter_inputs < structure.output_dim else "dense"


def make_geometry(model: GenerativeModel, x_obs, *, projection="quasi-newton", log_det_gradient="vjp",
                  geometry="auto", jacobian_mode="auto", max_refreshes=0):
    """The manifold geometry for ``model`` (:func:`geometry_kind`): ``jacobian_mode`` (``"auto"``, ``"forward"``,
    ``"reverse"``; :mod:`dgm.geometry.jacobian_choice`) applies to the dense and additive geometries,
    ``max_refreshes`` (Newton refreshes of a stalled projection) to all."""
    check_jacobian_mode(jacobian_mode)
    kind = geometry_kind(model, geometry)
    if kind == "structured":
        from dgm.geometry.structured import StructuredGeometry

        return StructuredGeometry(model, x_obs, projection=projection, max_refreshes=max_refreshes)
    if kind == "additive":
        from dgm.geometry.additive import AdditiveNoiseGeometry

        return AdditiveNoiseGeometry(model, x_obs, projection=projection, jacobian_mode=jacobian_mode,
                                     max_refreshes=max_refreshes)
    if jacobian_mode == "auto":
        n_outputs = model.output_shape()[0]
        jacobian_mode = resolve_jacobian_mode("auto", n_inputs=model.input_dim, n_outputs=n_outputs)
    return DenseGeometry(
        model.generator, x_obs, model.log_input_density, projection=projection, log_det_gradient=log_det_gradient,
        jacobian_mode=jacobian_mode, max_refreshes=max_refreshes,
    )


def chmc_method(model, x_obs, *, step_size=None, n_steps=(4, 8), n_inner=1, tol=1e-8, max_newton=50,
                reverse_check_tol=None, projection="quasi-newton", log_det_gradient="vjp", geometry="auto",
                target_acceptance=0.8, init_max_iterations=100,
                metric="identity", inverse_mass=None, adapt_metric=True,
                symmetry_probability=DEFAULT_SYMMETRY_PROBABILITY,
                jacobian_mode="auto", max_refreshes=2) -> Method:
    """Constrained HMC (Algorithm 1). ``geometry``: ``"auto"`` (by cost, :func:`geometry_kind`), ``"dense"``,
    ``"structured"`` or ``"additive"``; ``jacobian_mode``: ``"auto"`` / ``"forward"`` / ``"reverse"``;
    ``max_refreshes``: Newton refreshes of the Jacobian when a quasi-Newton projection stalls (0: the paper's
    iteration alone); ``tol`` is relative to the observation scale, ``tol * max(1, |x_obs|_inf)``."""
    max_refreshes = _positive_int("max_refreshes", max_refreshes, minimum=0)
    geom = make_geometry(model, x_obs, projection=projection, log_det_gradient=log_det_gradient, geometry=geometry,
                         jacobian_mode=jacobian_mode, max_refreshes=max_refreshes)
    if reverse_check_tol is None:
        reverse_check_tol = float(tol) ** 0.5  # Algorithm 1's sqrt(eps)
    settings = IntegratorSettings(int(n_inner), float(tol), int(max_newton), float(reverse_check_tol), max_refreshes)
    if settings.n_inner < 1:
        raise ValueError(f"n_inner must be >= 1, got {n_inner!r}")
    kernel = chmc.build_kernel(geom, settings, n_steps)

    structured = not isinstance(geom, DenseGeometry)  # linear-time Gauss-Newton and rank check when structured

    def initial_positions(key, n_chains):
        return find_points_on_manifold(model, x_obs, key, n_chains, tol=tol, max_iterations=init_max_iterations,
                                       structured=structured)

    method = Method(
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
        kernel="exact",
        log_density=lambda state: -state.point.potential,  # log rho(u) - 1/2 log|J J^T| (eq. 16)
        relocate=lambda state, u: chmc.init(u, geom),
    )
    method = apply_metric(method, model, x_obs, lambda g: chmc.build_kernel(g, settings, n_steps), metric=metric,
                          inverse_mass=inverse_mass, adapt_metric=adapt_metric, projection=projection,
                          log_det_gradient=log_det_gradient, geometry=geometry)
    return with_declared_symmetries(method, model, x_obs, symmetry_probability, settings)


def with_declared_symmetries(method: Method, model, x_obs, probability, settings: IntegratorSettings) -> Method:
    """``method`` with the exact symmetry moves of :mod:`dgm.kernels.symmetry` after each transition (with
    probability ``probability``) when ``model`` declares symmetries; unchanged otherwise or when ``probability``
    is 0."""
    if not model.symmetries or probability == 0:
        return method
    from dgm.kernels.symmetry import with_symmetry_moves

    return with_symmetry_moves(method, model.generator, x_obs, model.symmetries, probability=probability,
                               tol=settings.tol, reverse_check_tol=settings.reverse_check_tol)


def apply_metric(method: Method, model, x_obs, kernel_for, *, metric, inverse_mass, adapt_metric, projection,
                 log_det_gradient, geometry) -> Method:
    """``method`` with the diagonal metric of :mod:`dgm.kernels.metric` when ``metric="diagonal"`` (adapted during
    warm-up unless ``adapt_metric=False``, starting from ``inverse_mass`` or the identity); unchanged otherwise."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r} (a dense metric is not supported on the "
                         "manifold: the covariance of draws on it is singular in the normal directions)")
    if metric == "identity":
        if inverse_mass is not None:
            raise ValueError("inverse_mass needs metric='diagonal'")
        return method
    with warnings.catch_warnings():  # the geometry choice has been warned about already
        warnings.simplefilter("ignore")
        structured = geometry_kind(model, geometry) != "dense"
    if structured:
        raise ValueError(
            f"metric={metric!r} is not supported by the structured (linear-time) geometry, whose per-step Jacobians "
            "come from the model's declared transition and cannot absorb per-input scales; pass geometry='dense' "
            "to use a diagonal metric (cost O(N^2 M) per point instead of linear)")
    inverse_mass = check_inverse_mass(inverse_mass, model.input_dim)

    def geometry_for(scale):
        generator, density = scaled_model_parts(model.generator, model.log_input_density, scale)
        return DenseGeometry(generator, x_obs, density, projection=projection, log_det_gradient=log_det_gradient)

    method = with_diagonal_metric(method, geometry_for, kernel_for, inverse_mass)
    return method if adapt_metric else method._replace(set_inverse_mass=None)


def chmc_dynamic_method(model, x_obs, *, step_size=None, n_inner=1, tol=1e-8, max_newton=50, reverse_check_tol=None,
                        projection="quasi-newton", log_det_gradient="vjp", geometry="auto", target_acceptance=0.8,
                        max_tree_depth=10, max_delta_energy=1000.0, init_max_iterations=100,
                        metric="identity", inverse_mass=None, adapt_metric=True,
                        symmetry_probability=DEFAULT_SYMMETRY_PROBABILITY,
                        jacobian_mode="auto", max_refreshes=2) -> Method:
    """Constrained HMC with dynamic integration time: ``chmc_method``'s geometry, checks and initialisation, with the
    tree-doubling kernel of :mod:`dgm.kernels.chmc_dynamic` (``n_steps`` does not apply: the trajectory length is
    chosen by the no-U-turn criterion, capped at ``2**max_tree_depth - 1`` steps)."""
    static = chmc_method(model, x_obs, step_size=step_size, n_inner=n_inner, tol=tol, max_newton=max_newton,
                         reverse_check_tol=reverse_check_tol, projection=projection, log_det_gradient=log_det_gradient,
                         geometry=geometry, target_acceptance=target_acceptance,
                         init_max_iterations=init_max_iterations, symmetry_probability=0.0,
                         jacobian_mode=jacobian_mode, max_refreshes=max_refreshes)
    with warnings.catch_warnings():  # chmc_method has already warned about the geometry choice
        warnings.simplefilter("ignore")
        geom = make_geometry(model, x_obs, projection=projection, log_det_gradient=log_det_gradient,
                             geometry=geometry, jacobian_mode=jacobian_mode, max_refreshes=max_refreshes)
    if reverse_check_tol is None:
        reverse_check_tol = float(tol) ** 0.5
    settings = IntegratorSettings(int(n_inner), float(tol), int(max_newton), float(reverse_check_tol),
                                  int(max_refreshes))

    def kernel_for(g):
        return chmc_dynamic.build_kernel(g, settings, max_tree_depth=int(max_tree_depth),
                                         max_delta_energy=float(max_delta_energy))

    method = static._replace(name="chmc-dynamic", init=lambda u: chmc_dynamic.init(u, geom), step=kernel_for(geom))
    method = apply_metric(method, model, x_obs, kernel_for, metric=metric, inverse_mass=inverse_mass,
                          adapt_metric=adapt_metric, projection=projection, log_det_gradient=log_det_gradient,
                          geometry=geometry)
    return with_declared_symmetries(method, model, x_obs, symmetry_probability, settings)


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
        kernel="Gaussian",  # the noisy relaxation: Gaussian output noise of scale noise_scale
        log_density=lambda state: state.logdensity,
    )


def abc_hmc_method(model, x_obs, *, epsilon, step_size=None, n_steps=(4, 8), tol=1e-8, target_acceptance=0.8) -> Method:
    """ABC-HMC: BlackJAX HMC on ``u`` with a Gaussian ABC kernel of scale ``epsilon`` (the noisy relaxation)."""
    return hmc_method(model, x_obs, algorithm="hmc", noise_scale=epsilon, name="abc-hmc", step_size=step_size,
                      n_steps=n_steps, tol=tol, target_acceptance=target_acceptance)


METHODS: dict[str, Callable[..., Method]] = {
    "chmc": chmc_method,
    "chmc-dynamic": chmc_dynamic_method,
    "chmc-tempered": tempered_method,  # moves between the components of a disconnected manifold
    "abc-mcmc": abc_mcmc_method,
    "abc-slice": functools.partial(pm_slice_method, kernel="uniform"),
    "abc-slice-gaussian": functools.partial(pm_slice_method, kernel="gaussian"),
    "abc-hmc": abc_hmc_method,
    "hmc": functools.partial(hmc_method, algorithm="hmc"),
    "nuts": functools.partial(hmc_method, algorithm="nuts"),
}


# ---------------------------------------------------------------------------------------------------------------------
# options: validation and the one place a method name becomes a Method
# ---------------------------------------------------------------------------------------------------------------------
SAMPLER_DEFAULTS = {"step_size": None, "n_steps": (4, 8), "n_inner": 1, "tol": 1e-8, "max_newton": 50}
"""The integrator options :func:`dgm.sample` takes itself and passes to the methods that use them."""


def _positive_int(name, value, minimum=1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _positive_float(name, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def check_sampler_options(step_size=None, n_steps=(4, 8), n_inner=1, tol=1e-8, max_newton=50) -> dict:
    """Validate the integrator options; returns them normalised (``n_steps`` as ``(lo, hi)`` ints, an int ``n``
    meaning ``(n, n)``).  Raises ``ValueError`` naming the option."""
    if isinstance(n_steps, numbers.Integral) and not isinstance(n_steps, bool):
        n_steps = (n_steps, n_steps)
    try:
        lo, hi = n_steps
    except (TypeError, ValueError):
        raise ValueError(f"n_steps must be an integer or a pair (lo, hi), got {n_steps!r}") from None
    lo, hi = _positive_int("n_steps[0]", lo), _positive_int("n_steps[1]", hi)
    if lo > hi:
        raise ValueError(f"n_steps = (lo, hi) needs lo <= hi, got {n_steps!r}")
    return {
        "step_size": None if step_size is None else _positive_float("step_size", step_size),
        "n_steps": (lo, hi),
        "n_inner": _positive_int("n_inner", n_inner),
        "tol": _positive_float("tol", tol),
        "max_newton": _positive_int("max_newton", max_newton),
    }


def accepted_options(name: str) -> list[str]:
    """The keyword options the builder of method ``name`` accepts (those fixed by the registry excluded)."""
    builder = _builder(name)
    bound = builder.keywords if isinstance(builder, functools.partial) else {}
    return [p.name for p in inspect.signature(builder).parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in bound]


def _builder(name: str):
    builder = METHODS.get(name)
    if builder is None:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(sorted(METHODS))}")
    return builder


def build_method(name: str, model, x_obs, common: dict, options: dict, given: set = frozenset()) -> tuple:
    """Build the :class:`Method` ``name`` from the driver's ``common`` integrator options and the method ``options``.

    An option the method does not accept is an error, not silently dropped: every key of ``options`` must be
    accepted, and so must every key of ``common`` the user set (``given``); the ``ValueError`` names the method and
    the options it accepts.  Returns ``(method, applied)`` with ``applied`` the common options the method used.
    """
    builder = _builder(name)
    accepted = accepted_options(name)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in inspect.signature(builder).parameters.values()):
        accepted = accepted + [k for k in list(common) + list(options) if k not in accepted]  # takes **kwargs
    refused = [k for k in options if k not in accepted] + [k for k in common if k in given and k not in accepted]
    if refused:
        shown = ", ".join(f"{k}={options[k] if k in options else common[k]!r}" for k in refused)
        raise ValueError(f"method {name!r} does not accept {shown}; the options it accepts are: "
                         f"{', '.join(accepted)}")
    signature = inspect.signature(builder).parameters
    missing = [k for k in accepted_options(name)
               if signature[k].default is inspect.Parameter.empty and k not in options]
    if missing:
        raise ValueError(f"method {name!r} needs {', '.join(f'{k}=...' for k in missing)}")
    applied = {k: v for k, v in common.items() if k in accepted}
    return builder(model, x_obs, **applied, **options), applied
