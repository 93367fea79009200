"""Declaring Markov and independent generators so that conditioning runs in linear time (paper, Appendix D).

A *Markov* generator draws parameters ``z = g_z(u1)`` from ``L`` inputs ``u1`` and then states

    x_t = f(x_{t-1}, z, v_t),   t = 1..T,   x_0 = x0(z),

with per-step noise ``v_t``; the observed vector is ``x = (x_1, ..., x_T)`` flattened (``N = T D``) and the inputs are
``u = (u1, v_1, ..., v_T)`` in that order. An *independent* generator has ``x_t = h(z, v_t)`` (``f`` ignoring the
previous state). For such generators the constraint Jacobian is ``J = [A | B]`` with ``B = dx/dv`` block lower
triangular (block diagonal when independent), which :class:`dgm.geometry.structured.StructuredGeometry` exploits:
every manifold operation costs ``O(T (D^3 + L D^2) + L^3)`` instead of ``O(N^3)``.

:func:`markov_model` and :func:`independent_model` build a :class:`dgm.GenerativeModel` whose ``generator``
simulates with ``lax.scan`` (or ``vmap``) and whose ``structure`` is a :class:`MarkovStructure`;
:func:`dgm.sample` then uses the structured geometry automatically (``geometry="auto"``). To give an existing model
the structure, pass ``structure=markov_structure(...)`` (the same arguments) to :class:`dgm.GenerativeModel`; its
``generator`` must then compute the same ``x`` as :meth:`MarkovStructure.generator`.

**Per-step index.** A structure declared with ``indexed=True`` calls ``step_fn(x_prev, z, v, t)`` with the 0-based
step index ``t`` (an ``int32`` scalar), so steps may read their own slice of shared parameters: e.g. a decoder
``z = mean(h)`` computed once from ``u1 = h`` and step ``t`` emitting ``z[t] + sigma v_t``
(:func:`dgm.vae.decoder_model`). The geometry still differentiates ``parameter_transform`` once per point (``L``
JVPs), so everything the steps share is evaluated once, not once per step.

**Additive noise.** :func:`additive_noise_structure` declares ``x = m(u1) + s * v`` (one noise input per output,
fixed scales ``s``): an independent indexed structure with ``D = 1`` that also keeps ``m`` and ``s``, so that
:func:`dgm.sample` uses :class:`dgm.geometry.additive.AdditiveNoiseGeometry` (one Jacobian of ``m`` and one VJP of it
per point) instead of the generic structured geometry.

**Noise dimension.** The structured geometry needs ``df/dv_t`` square and invertible, i.e. as many noise inputs per
step as state dimensions (``noise_dim == state_dim``). A model declared with ``noise_dim != state_dim`` is still a
valid :class:`~dgm.GenerativeModel` (its ``generator`` is correct), but building the structured geometry for it
raises ``ValueError`` pointing to the dense geometry: ``dgm.sample(..., geometry="dense")``. No split of the extra
noise is attempted: moving the surplus ``(noise_dim - state_dim) T`` inputs into the global block would make the
capacitance matrix grow with ``T`` and lose the linear cost (Appendix D reaches the same conclusion).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from dgm.model import GenerativeModel

Array = jax.Array


class Trajectory(NamedTuple):
    """The generated quantities at ``u``: parameters, initial state, states fed to each step, and the states."""

    parameters: Any  # z = g_z(u1) (any pytree)
    initial_state: Array  # (D,)
    previous: Array  # (T, D): x_0 .. x_{T-1}, the generated states fed to f
    states: Array  # (T, D): x_1 .. x_T


@dataclasses.dataclass(frozen=True, eq=False)
class MarkovStructure:
    """Everything the structured geometry needs to know about a Markov (or independent) generator.

    Attributes:
      step_fn: ``f(x_prev, z, v) -> x`` with ``x_prev``, ``x`` of shape ``(state_dim,)`` and ``v`` of shape
        ``(noise_dim,)``. For independent models ``x_prev`` is ignored (a zero vector is passed).
      initial_state: ``z -> x0`` (shape ``(state_dim,)``).
      parameter_transform: ``u1 -> z`` (``u1`` of shape ``(n_parameter_inputs,)``; ``z`` any pytree of arrays).
      n_parameter_inputs: ``L``.
      n_steps: ``T`` (number of observed states / observations).
      state_dim, noise_dim: ``D`` and the number of noise inputs per step.
      independent: ``True`` when ``f`` does not depend on ``x_prev`` (``F_t = 0``, block-diagonal ``B``).
      indexed: ``True`` when ``step_fn`` takes the step index as a fourth argument, ``f(x_prev, z, v, t)``.
    """

    step_fn: Callable
    initial_state: Callable
    parameter_transform: Callable
    n_parameter_inputs: int
    n_steps: int
    state_dim: int
    noise_dim: int
    independent: bool = False
    indexed: bool = False

    def step(self, x_prev: Array, z: Any, v: Array, t: Array) -> Array:
        """``f(x_prev, z, v)`` or, for an indexed structure, ``f(x_prev, z, v, t)``."""
        return self.step_fn(x_prev, z, v, t) if self.indexed else self.step_fn(x_prev, z, v)

    def step_indices(self) -> Array:
        return jnp.arange(self.n_steps, dtype=jnp.int32)

    @property
    def input_dim(self) -> int:
        return self.n_parameter_inputs + self.n_steps * self.noise_dim

    @property
    def output_dim(self) -> int:
        return self.n_steps * self.state_dim

    @property
    def square(self) -> bool:
        """Whether ``df/dv_t`` is square (needed by the structured geometry)."""
        return self.noise_dim == self.state_dim

    def split(self, u: Array) -> tuple[Array, Array]:
        """``u -> (u1, v)`` with ``v`` of shape ``(n_steps, noise_dim)``."""
        L = self.n_parameter_inputs
        return u[:L], u[L:].reshape(self.n_steps, self.noise_dim)

    def simulate(self, u: Array) -> Trajectory:
        """Run the generator at ``u`` and keep the states fed to every step."""
        u1, v = self.split(u)
        z = self.parameter_transform(u1)
        x0 = jnp.asarray(self.initial_state(z), u.dtype)
        if self.independent:
            states = jax.vmap(lambda vt, t: self.step(x0, z, vt, t))(v, self.step_indices())
            previous = jnp.broadcast_to(x0, states.shape)
        else:

            def body(x_prev, inputs):
                vt, t = inputs
                x = self.step(x_prev, z, vt, t)
                return x, x

            _, states = jax.lax.scan(body, x0, (v, self.step_indices()))
            previous = jnp.concatenate([x0[None], states[:-1]], axis=0)
        return Trajectory(z, x0, previous, states)

    def generator(self, u: Array) -> Array:
        """``x = (x_1, ..., x_T)`` flattened."""
        return self.simulate(u).states.reshape(-1)

    def check_generator(self, generator: Callable, positions, *, name: str = "model", rtol: float = 1e-6) -> None:
        """Raise ``ValueError`` unless ``generator`` and :meth:`generator` compute the same ``x`` at ``positions``.

        The structured geometry takes ``J`` from the declaration but the constraint from the model's ``generator``; if
        the two differ the chains silently target the wrong density. Entries agree when
        ``|a - b| <= rtol (1 + |b|)`` (rounding differences of two implementations pass; a different model does not)
        or both are non-finite. The error names the largest difference: starting point, output index and both values.
        """
        declared, given = _both_generators(self, generator)(jnp.asarray(positions))
        declared, given = np.asarray(declared, np.float64), np.asarray(given, np.float64)
        if declared.shape != given.shape:
            raise ValueError(f"{name}: the generator returns shape {given.shape[1:]} but the declared structure "
                             f"returns {declared.shape[1:]} (n_steps * state_dim)")
        both_non_finite = ~np.isfinite(declared) & ~np.isfinite(given)
        with np.errstate(invalid="ignore"):
            excess = np.abs(given - declared) - rtol * (1.0 + np.abs(declared))
        excess = np.where(both_non_finite, -np.inf, np.where(np.isnan(excess), np.inf, excess))
        if np.any(excess > 0):
            point, index = np.unravel_index(np.argmax(excess), excess.shape)
            step, component = divmod(int(index), self.state_dim)
            a, b = float(given[point, index]), float(declared[point, index])
            raise ValueError(
                f"{name}: the declared structure does not compute the same x as the model's generator (the structured "
                f"geometry would target the wrong density). Largest difference at starting point {point}, output "
                f"{index} (step {step + 1}, state component {component}): generator {a!r}, structure {b!r} "
                f"(|difference| {abs(a - b):.3g}; {int(np.sum(excess > 0))} of {excess.size} entries differ). Make "
                "step_fn / initial_state / parameter_transform reproduce the generator, or sample with "
                "geometry='dense'."
            )

    def noise_for_observations(self, u1: Array, x_obs: Array, n_iterations: int = 30) -> Array:
        """Noise ``v`` with ``generator((u1, v)) == x_obs``, solved step by step (``D``-dimensional Newton per step,
        all steps in parallel since the observed previous state is known). Exact in one iteration when ``f`` is
        affine in ``v``; needs ``noise_dim == state_dim``."""
        if not self.square:
            raise ValueError("noise_for_observations needs noise_dim == state_dim")
        z = self.parameter_transform(u1)
        x = jnp.asarray(x_obs).reshape(self.n_steps, self.state_dim)
        x0 = jnp.asarray(self.initial_state(z), x.dtype)
        previous = jnp.concatenate([x0[None], x[:-1]], axis=0)

        def solve(x_prev, target, t):
            def residual(v):
                return self.step(x_prev, z, v, t) - target

            def body(_, v):
                step = jnp.linalg.solve(jax.jacfwd(residual)(v), residual(v))
                return jnp.where(jnp.all(jnp.isfinite(step)), v - step, v)

            return jax.lax.fori_loop(0, n_iterations, body, jnp.zeros(self.noise_dim, x.dtype))

        return jax.vmap(solve)(previous, x, self.step_indices())


@functools.lru_cache(maxsize=16)
def _both_generators(structure: MarkovStructure, generator: Callable):
    return jax.jit(jax.vmap(lambda u: (structure.generator(u), generator(u))))


def _shape_of(fn, *args) -> tuple[int, ...]:
    return tuple(jax.eval_shape(fn, *args).shape)


def _as_initial_state(initial_state) -> Callable:
    if callable(initial_state):
        return initial_state
    x0 = np.asarray(initial_state, dtype=np.float64)
    return lambda z: jnp.asarray(x0)


def markov_structure(
    step_fn: Callable,
    initial_state: Union[Callable, Array],
    n_steps: int,
    parameter_transform: Callable,
    n_parameter_inputs: int,
    *,
    noise_dim: Optional[int] = None,
    indexed: bool = False,
) -> MarkovStructure:
    """Validate and build a :class:`MarkovStructure` (shapes checked by abstract evaluation, no FLOPs).

    ``initial_state`` is a callable ``z -> x0`` or a fixed 1-D array. ``noise_dim`` defaults to the state dimension.
    ``indexed=True``: ``step_fn(x_prev, z, v, t)`` also receives the 0-based step index ``t``.
    """
    n_steps, L = int(n_steps), int(n_parameter_inputs)
    if n_steps < 1 or L < 1:
        raise ValueError(f"n_steps and n_parameter_inputs must be >= 1, got {n_steps}, {L}")
    init_fn = _as_initial_state(initial_state)
    u1 = jax.ShapeDtypeStruct((L,), jnp.float32)
    z = jax.eval_shape(parameter_transform, u1)
    x0_shape = _shape_of(init_fn, z)
    if len(x0_shape) != 1:
        raise ValueError(f"the initial state must be a 1-D array (state_dim,), got shape {x0_shape}")
    D = x0_shape[0]
    E = D if noise_dim is None else int(noise_dim)
    if E < 1:
        raise ValueError(f"noise_dim must be >= 1, got {noise_dim!r}")
    x_spec = jax.ShapeDtypeStruct((D,), jnp.float32)
    index = (jax.ShapeDtypeStruct((), jnp.int32),) if indexed else ()
    out = _shape_of(step_fn, x_spec, z, jax.ShapeDtypeStruct((E,), jnp.float32), *index)
    if out != (D,):
        raise ValueError(f"step_fn(x_prev, z, v) must return the next state of shape ({D},), it returns {out}")
    return MarkovStructure(step_fn, init_fn, parameter_transform, L, n_steps, D, E, independent=False,
                           indexed=bool(indexed))


def independent_structure(
    observation_fn: Callable,
    n_observations: int,
    parameter_transform: Callable,
    n_parameter_inputs: int,
    *,
    noise_dim: int,
    indexed: bool = False,
) -> MarkovStructure:
    """A :class:`MarkovStructure` with ``F_t = 0`` for ``x_i = observation_fn(z, v_i)``, ``v_i`` of ``noise_dim``
    (``observation_fn(z, v_i, i)`` with the 0-based observation index when ``indexed=True``)."""
    n_obs, L, E = int(n_observations), int(n_parameter_inputs), int(noise_dim)
    if n_obs < 1 or L < 1 or E < 1:
        raise ValueError(f"n_observations, n_parameter_inputs, noise_dim must be >= 1, got {n_obs}, {L}, {E}")
    z = jax.eval_shape(parameter_transform, jax.ShapeDtypeStruct((L,), jnp.float32))
    index = (jax.ShapeDtypeStruct((), jnp.int32),) if indexed else ()
    shape = _shape_of(observation_fn, z, jax.ShapeDtypeStruct((E,), jnp.float32), *index)
    if len(shape) != 1:
        raise ValueError(f"observation_fn(z, v) must return a 1-D array, it returns shape {shape}")
    D = shape[0]

    if indexed:

        def step_fn(x_prev, z, v, t):
            return observation_fn(z, v, t)

    else:

        def step_fn(x_prev, z, v):
            return observation_fn(z, v)

    def initial_state(z):
        return jnp.zeros((D,))

    return MarkovStructure(step_fn, initial_state, parameter_transform, L, n_obs, D, E, independent=True,
                           indexed=bool(indexed))


@dataclasses.dataclass(frozen=True, eq=False)
class AdditiveNoiseStructure(MarkovStructure):
    """An independent structure of the additive-noise form ``x = m(u1) + s * v`` (one noise input per output).

    It *is* the indexed independent structure with ``D = 1`` (observation ``i`` is ``m(u1)[i] + s_i v_i``), so the
    generic :class:`dgm.geometry.structured.StructuredGeometry` handles it unchanged; it also keeps ``mean_fn``
    (``m``) and ``noise_scale`` (``s``, a scalar or one positive value per output) for the cheaper
    :class:`dgm.geometry.additive.AdditiveNoiseGeometry`, which differentiates ``m`` alone and never the noise
    inputs. Build it with :func:`additive_noise_structure`.
    """

    mean_fn: Optional[Callable] = None
    noise_scale: Any = None

    def noise_scales(self, dtype=None) -> Array:
        """``s`` as an ``(N,)`` array."""
        return jnp.broadcast_to(jnp.asarray(self.noise_scale, dtype), (self.n_steps,))


def additive_noise_structure(mean_fn: Callable, n_parameter_inputs: int, noise_scale) -> AdditiveNoiseStructure:
    """The structure of ``x = mean_fn(u1) + noise_scale * v`` with ``u = (u1, v)``, ``len(u1) = n_parameter_inputs``
    and ``v`` one standard-normal input per output. ``noise_scale``: a positive scalar or an ``(N,)`` array of
    positive values (fixed, not inputs). Raises ``ValueError`` for a non-1-D mean or a non-positive scale."""
    L = int(n_parameter_inputs)
    if L < 1:
        raise ValueError(f"n_parameter_inputs must be >= 1, got {n_parameter_inputs!r}")
    shape = _shape_of(mean_fn, jax.ShapeDtypeStruct((L,), jnp.float32))
    if len(shape) != 1:
        raise ValueError(f"mean_fn(u1) must return a 1-D array, it returns shape {shape}")
    N = shape[0]
    scale = np.asarray(noise_scale, dtype=np.float64)
    if scale.ndim > 1 or (scale.ndim == 1 and scale.shape != (N,)):
        raise ValueError(f"noise_scale must be a scalar or have shape ({N},), got shape {scale.shape}")
    if not (np.all(np.isfinite(scale)) and np.all(scale > 0)):
        raise ValueError(f"noise_scale must be positive and finite, got {noise_scale!r}")
    per_output = scale.ndim == 1

    def step_fn(x_prev, z, v, t):  # observation t: its mean z[t] plus its own scaled noise
        s = jax.lax.dynamic_slice_in_dim(jnp.asarray(scale), t, 1) if per_output else scale
        return jax.lax.dynamic_slice_in_dim(z, t, 1) + jnp.asarray(s, v.dtype) * v

    def initial_state(z):
        return jnp.zeros((1,))

    return AdditiveNoiseStructure(step_fn, initial_state, mean_fn, L, N, 1, 1, independent=True, indexed=True,
                                  mean_fn=mean_fn, noise_scale=scale if per_output else float(scale))


def _model_from_structure(structure: MarkovStructure, *, latents, log_input_density, init, name) -> GenerativeModel:
    L = structure.n_parameter_inputs
    if latents is None:

        def latents(u):
            return structure.parameter_transform(u[:L])

    if init is None and structure.square:

        def init(key, x_obs):
            # Prior draw of u1, then the noise that reproduces x_obs step by step (dgm's initialiser polishes and
            # checks the result; pass your own init for models where prior parameters make the noise huge).
            dtype = jnp.result_type(jnp.asarray(x_obs).dtype, jnp.float32)
            u1 = jax.random.normal(key, (L,), dtype)
            v = structure.noise_for_observations(u1, jnp.asarray(x_obs, dtype))
            return jnp.concatenate([u1, v.reshape(-1)])

    return GenerativeModel(
        generator=structure.generator,
        input_dim=structure.input_dim,
        latents=latents,
        log_input_density=log_input_density,
        init=init,
        parameter_inputs=L,
        structure=structure,
        name=name,
    )


def markov_model(
    step_fn: Callable,
    initial_state: Union[Callable, Array],
    n_steps: int,
    parameter_transform: Callable,
    n_parameter_inputs: int,
    *,
    noise_dim: Optional[int] = None,
    indexed: bool = False,
    latents: Optional[Callable] = None,
    log_input_density: Optional[Callable] = None,
    init: Optional[Callable] = None,
    name: str = "markov-model",
) -> GenerativeModel:
    """A :class:`dgm.GenerativeModel` for ``x_t = step_fn(x_{t-1}, z, v_t)``, ``z = parameter_transform(u1)``.

    Args:
      step_fn: ``(x_prev, z, v) -> x``, 1-D states of ``state_dim`` entries, ``v`` of ``noise_dim`` entries.
      initial_state: ``z -> x0`` or a fixed 1-D array ``x0`` (not observed).
      n_steps: ``T``; the generator returns ``(x_1, ..., x_T)`` flattened (length ``T * state_dim``).
      parameter_transform: ``u1 -> z``; ``n_parameter_inputs`` is ``L = len(u1)``.
      noise_dim: noise inputs per step (default ``state_dim``; the structured geometry needs them equal, see the
        module docstring).
      indexed: ``step_fn(x_prev, z, v, t)`` also receives the 0-based step index ``t`` (module docstring).
      latents: ``u -> reported quantities``; default ``parameter_transform(u[:L])``.
      log_input_density: ``log rho(u)``; default standard normal.
      init: exact initialiser ``(key, x_obs) -> u``; default: ``u1`` from ``N(0, I)`` and the noise solved step by
        step (:meth:`MarkovStructure.noise_for_observations`).

    Inputs are ordered ``u = (u1, v_1, ..., v_T)``; ``parameter_inputs = L``; ``structure`` is a
    :class:`MarkovStructure`, so :func:`dgm.sample` uses the linear-time geometry.
    """
    structure = markov_structure(step_fn, initial_state, n_steps, parameter_transform, n_parameter_inputs,
                                 noise_dim=noise_dim, indexed=indexed)
    return _model_from_structure(structure, latents=latents, log_input_density=log_input_density, init=init,
                                 name=name)


def independent_model(
    observation_fn: Callable,
    n_observations: int,
    parameter_transform: Callable,
    n_parameter_inputs: int,
    *,
    noise_dim: int,
    indexed: bool = False,
    latents: Optional[Callable] = None,
    log_input_density: Optional[Callable] = None,
    init: Optional[Callable] = None,
    name: str = "independent-model",
) -> GenerativeModel:
    """A :class:`dgm.GenerativeModel` for independent observations ``x_i = observation_fn(z, v_i)``.

    ``noise_dim`` is the number of noise inputs per observation (the observation dimension is found by abstract
    evaluation; the structured geometry needs them equal). Inputs ``u = (u1, v_1, ..., v_n)``; other arguments as
    in :func:`markov_model`.
    """
    structure = independent_structure(observation_fn, n_observations, parameter_transform, n_parameter_inputs,
                                      noise_dim=noise_dim, indexed=indexed)
    return _model_from_structure(structure, latents=latents, log_input_density=log_input_density, init=init,
                                 name=name)
