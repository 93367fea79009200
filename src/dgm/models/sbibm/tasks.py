"""The differentiable tasks of the SBI benchmark (sbibm 1.1.0; Lueckmann et al., AISTATS 2021) as dgm generators.

Each task of sbibm is a prior ``p(theta)`` and a simulator ``x ~ p(x | theta)`` written in torch/pyro. Here each is
transcribed from sbibm's ``tasks/<task>/task.py`` -- the same parameterisation, the same noise model -- as a
:class:`dgm.GenerativeModel` ``x = g(u)`` of standard-normal inputs ``u = (u_theta, u_noise)``:

* priors through inverse CDFs: ``Uniform(a, b)``: ``theta = a + (b - a) Phi(u)``; ``Normal(0, v I)``:
  ``theta = sqrt(v) u``; ``LogNormal(m, s)``: ``theta = exp(m + s u)``;
* the simulator's noise as a differentiable function of standard normals: ``Normal(mu, sigma)``: ``mu + sigma u``;
  ``Uniform(a, b)``: ``a + (b - a) Phi(u)``; ``MultivariateNormal(m, S)``: ``m + chol(S) u``;
  ``LogNormal(log y, s)``: ``y exp(s u)``.

The reported latents are the task's parameters ``theta`` (``parameter_inputs`` = their number), so draws compare
directly with sbibm's reference posterior samples. Every task has an exact initialiser (``model.init``): parameters
from the prior (the best of :data:`INIT_CANDIDATES` prior draws by input density) and the noise that reproduces
``x_obs`` exactly, solved in closed form.

Tasks whose simulator is *not* a differentiable function of continuous noise are listed in
:data:`NOT_DIFFERENTIABLE` with the reason; they have no generator here.

Notes on fidelity (each a property of sbibm's code, reproduced or stated):

* ``gaussian_linear``: sbibm's ``prior_scale = simulator_scale = 0.1`` are *variances* (it builds
  ``precision_matrix = inverse(0.1 I)``): ``theta ~ N(0, 0.1 I_10)``, ``x ~ N(theta, 0.1 I_10)``.
* ``two_moons``: ``a ~ U(-pi/2, pi/2)``, ``r ~ N(0.1, 0.01^2)``, ``p = (r cos a + 0.25, r sin a)``,
  ``x = p + (-|z0|, z1)`` with ``z = R(-pi/4) theta``; the two crescents are the two signs of ``z0``.
* ``slcp``: ``m = theta[:2]``, ``s_i = theta_{2+i}^2``, ``rho = tanh(theta_4)``, ``S = [[s1^2, rho s1 s2],
  [rho s1 s2, s2^2]] + 1e-6 I``, four i.i.d. draws ``x_k = m + chol(S) eps_k`` flattened in the order
  ``(x_1, x_2, x_3, x_4)``; four posterior modes (the signs of ``theta_2`` and ``theta_3``).
* ``lotka_volterra``: ``theta = (alpha, beta, gamma, delta) ~ LogNormal((-0.125, -3, -0.125, -3), 0.5)``, the ODE
  ``x' = alpha x - beta x y``, ``y' = -gamma y + delta x y`` from ``(30, 1)``, states at ``t = 0, 2.1, ..., 18.9``
  (sbibm's ``saveat=0.1`` grid subsampled every 21 points), data ``LogNormal(log clamp(state, 1e-10, 1e4), 0.1)``
  ordered (10 prey, 10 predators). sbibm solves the ODE with Julia's DifferentialEquations.jl; here diffrax's
  Tsit5 with a constant step :data:`LV_STEP` (a fixed step keeps ``g`` smooth in ``u``, which the Newton projections
  need; an adaptive step's accept/reject decisions make ``g`` piecewise smooth). Its error against a tight adaptive
  solve is checked in the tests (relative error far below the 10% observation noise).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtr

from dgm.model import GenerativeModel

Array = jax.Array

INIT_CANDIDATES = 256
"""Prior draws per chain from which the exact initialiser keeps the one of highest input density."""

LV_STEP = 0.05
"""Constant Tsit5 step of the Lotka-Volterra ODE (time units; the observation grid step 2.1 is a multiple of it)."""

NOT_DIFFERENTIABLE = {
    "bernoulli_glm": "the data are Bernoulli draws (binary outputs): x is a step function of any continuous noise, "
                     "so dx/du is zero almost everywhere and {u : g(u) = x} has no manifold structure",
    "sir": "the data are Binomial counts of a subsampled ODE solution (integer outputs, a step function of the noise)",
    "gaussian_mixture": "the mixture component is a discrete choice (x = theta + sigma_k u with k in {1, 0.1} drawn "
                        "with probabilities 1/2): the generator needs a discrete input, not a smooth map of normals",
    "slcp_distractors": "92 of its 100 outputs are draws from a 20-component Student-t mixture (a discrete component "
                        "choice per draw) stored as a pickled torch distribution, not a smooth map of normals",
}
"""sbibm tasks with no differentiable generator, and why (the constrained-HMC target needs a smooth ``g``)."""


def uniform_from_normal(u: Array, low, high) -> Array:
    """``low + (high - low) Phi(u)``: ``Uniform(low, high)`` from a standard normal (inverse-CDF transform)."""
    return low + (high - low) * ndtr(u)


@dataclasses.dataclass(frozen=True)
class SbibmTask:
    """One sbibm task as a generator.

    Attributes:
      name: sbibm's task name (its folder under ``sbibm/tasks``).
      n_parameters, n_data, n_noise: sizes of ``theta``, ``x`` and the simulator's noise inputs.
      parameters: ``u_theta -> theta`` (the prior by inverse CDFs).
      simulate: ``(theta, u_noise) -> x`` (the simulator with its noise given).
      solve_noise: ``(theta, x) -> u_noise`` with ``simulate(theta, u_noise) = x`` (``nan`` where no noise
        reproduces ``x``: two moons outside the crescent's half-plane).
      multimodal: whether the posterior has several separated modes (chooses the tempered sampler).
      parameter_names: sbibm's labels.
      shared, observe: for tasks whose outputs are independent given the parameters (``x_i = observe(z, v_i, i)``
        with one noise input ``v_i`` per output and ``z = shared(u_theta)``): the declaration of
        :func:`dgm.structure.independent_structure`, so constrained HMC runs the linear-time geometry and
        differentiates the expensive shared part (the Lotka-Volterra ODE) along the ``n_parameters`` inputs only.
      symmetries: exact maps ``s`` with ``g(s(u)) = g(u)`` and ``N(s(u)) = N(u)`` that carry one posterior mode onto
        another (declared to the model only when asked: :meth:`model`).
    """

    name: str
    n_parameters: int
    n_data: int
    n_noise: int
    parameters: Callable[[Array], Array]
    simulate: Callable[[Array, Array], Array]
    solve_noise: Callable[[Array, Array], Array]
    multimodal: bool = False
    parameter_names: tuple = ()
    symmetries: tuple = ()
    shared: Callable[[Array], Array] | None = None
    observe: Callable[[Array, Array, Array], Array] | None = None

    @property
    def input_dim(self) -> int:
        return self.n_parameters + self.n_noise

    def generator(self, u: Array) -> Array:
        """``g(u) = simulate(parameters(u_theta), u_noise)``."""
        return self.simulate(self.parameters(u[: self.n_parameters]), u[self.n_parameters:])

    def latents(self, u: Array) -> Array:
        return self.parameters(u[: self.n_parameters])

    def exact_init(self, key, x_obs) -> Array:
        """Inputs on the manifold: ``INIT_CANDIDATES`` prior draws of ``u_theta``, the noise that reproduces
        ``x_obs`` for each in closed form, and the candidate of highest ``log N(u; 0, I)`` (finite noise only)."""
        x_obs = jnp.asarray(x_obs)
        u_theta = jax.random.normal(key, (INIT_CANDIDATES, self.n_parameters), x_obs.dtype)
        noise = jax.vmap(lambda ut: self.solve_noise(self.parameters(ut), x_obs))(u_theta)
        inputs = jnp.concatenate([u_theta, noise], axis=1)
        score = -0.5 * jnp.sum(inputs * inputs, axis=1)
        score = jnp.where(jnp.all(jnp.isfinite(inputs), axis=1), score, -jnp.inf)
        return inputs[jnp.argmax(score)]

    def model(self, declare_symmetries: bool = False) -> GenerativeModel:
        """The :class:`dgm.GenerativeModel` (latents = ``theta``, exact initialiser); with ``declare_symmetries``
        the task's exact symmetries are declared (:mod:`dgm.symmetry`: constrained HMC then jumps between the modes
        they connect by exact Metropolis-Hastings moves)."""
        if declare_symmetries and not self.symmetries:
            raise ValueError(f"sbibm task {self.name!r} has no symmetries to declare")
        structure = None
        if self.shared is not None:
            from dgm.structure import independent_structure

            structure = independent_structure(self.observe, self.n_data, self.shared, self.n_parameters,
                                              noise_dim=1, indexed=True)
        return GenerativeModel(
            generator=self.generator, input_dim=self.input_dim, latents=self.latents, init=self.exact_init,
            parameter_inputs=self.n_parameters, name=f"sbibm/{self.name}",
            latent_names=self.parameter_names or None, structure=structure,
            symmetries=self.symmetries if declare_symmetries else (),
        )


# -- gaussian_linear / gaussian_linear_uniform ------------------------------------------------------------------------
GAUSSIAN_LINEAR_DIM = 10
GAUSSIAN_LINEAR_PRIOR_VARIANCE = 0.1  # sbibm's "prior_scale" (a variance: precision_matrix = inverse(0.1 I))
GAUSSIAN_LINEAR_NOISE_VARIANCE = 0.1  # sbibm's "simulator_scale" (a variance, likewise)
GAUSSIAN_LINEAR_UNIFORM_BOUND = 1.0


def _gaussian_noise_simulate(theta, u_noise):
    return theta + math.sqrt(GAUSSIAN_LINEAR_NOISE_VARIANCE) * u_noise


def _gaussian_noise_solve(theta, x):
    return (x - theta) / math.sqrt(GAUSSIAN_LINEAR_NOISE_VARIANCE)


def _gaussian_noise_observe(theta, v, i):
    return theta[i][None] + math.sqrt(GAUSSIAN_LINEAR_NOISE_VARIANCE) * v


def _gaussian_linear_prior(u):
    return math.sqrt(GAUSSIAN_LINEAR_PRIOR_VARIANCE) * u


def _uniform_prior(u):
    return uniform_from_normal(u, -GAUSSIAN_LINEAR_UNIFORM_BOUND, GAUSSIAN_LINEAR_UNIFORM_BOUND)


def gaussian_linear() -> SbibmTask:
    """``theta ~ N(0, 0.1 I_10)``, ``x ~ N(theta, 0.1 I_10)`` (sbibm ``gaussian_linear``)."""
    d = GAUSSIAN_LINEAR_DIM
    return SbibmTask(
        "gaussian_linear", d, d, d,
        parameters=_gaussian_linear_prior, simulate=_gaussian_noise_simulate, solve_noise=_gaussian_noise_solve,
        parameter_names=tuple(f"theta{i + 1}" for i in range(d)),
        shared=_gaussian_linear_prior, observe=_gaussian_noise_observe,
    )


def gaussian_linear_uniform() -> SbibmTask:
    """``theta ~ U(-1, 1)^10``, ``x ~ N(theta, 0.1 I_10)`` (sbibm ``gaussian_linear_uniform``)."""
    d = GAUSSIAN_LINEAR_DIM
    return SbibmTask(
        "gaussian_linear_uniform", d, d, d,
        parameters=_uniform_prior, simulate=_gaussian_noise_simulate, solve_noise=_gaussian_noise_solve,
        parameter_names=tuple(f"theta{i + 1}" for i in range(d)),
        shared=_uniform_prior, observe=_gaussian_noise_observe,
    )


# -- two_moons --------------------------------------------------------------------------------------------------------
TWO_MOONS_A = (-math.pi / 2, math.pi / 2)
TWO_MOONS_R = (0.1, 0.01)  # loc, scale
TWO_MOONS_OFFSET = 0.25


def _two_moons_rotated(theta):
    """``(z0, z1) = R(-pi/4) theta`` as sbibm's ``_map_fun``: ``z0 = c t0 - s t1``, ``z1 = s t0 + c t1``."""
    c, s = math.cos(-math.pi / 4), math.sin(-math.pi / 4)
    return c * theta[0] - s * theta[1], s * theta[0] + c * theta[1]


def _two_moons_simulate(theta, u_noise):
    a = uniform_from_normal(u_noise[0], *TWO_MOONS_A)
    r = TWO_MOONS_R[0] + TWO_MOONS_R[1] * u_noise[1]
    z0, z1 = _two_moons_rotated(theta)
    return jnp.stack([r * jnp.cos(a) + TWO_MOONS_OFFSET - jnp.abs(z0), r * jnp.sin(a) + z1])


def _two_moons_solve(theta, x):
    z0, z1 = _two_moons_rotated(theta)
    px, py = x[0] + jnp.abs(z0) - TWO_MOONS_OFFSET, x[1] - z1  # p - (0.25, 0) = r (cos a, sin a)
    r = jnp.hypot(px, py)
    a = jnp.arctan2(py, px)
    # a must lie in (-pi/2, pi/2), i.e. px > 0; Phi^{-1}((a + pi/2) / pi) and (r - 0.1) / 0.01
    u_a = jax.scipy.special.ndtri((a - TWO_MOONS_A[0]) / (TWO_MOONS_A[1] - TWO_MOONS_A[0]))
    u_r = (r - TWO_MOONS_R[0]) / TWO_MOONS_R[1]
    return jnp.where(px > 0, jnp.stack([u_a, u_r]), jnp.nan)


def two_moons_reflection(u: Array) -> Array:
    """The exact symmetry ``u -> (-u_1, -u_0, u_2, u_3)`` of the two-moons generator: ``theta -> (-theta_1,
    -theta_0)`` flips ``z0`` and keeps ``z1``, so ``g`` and ``N(u; 0, I)`` are unchanged (it maps one crescent of the
    posterior onto the other). An involution, usable as a declared symmetry (:mod:`dgm.symmetry`)."""
    return jnp.concatenate([jnp.stack([-u[1], -u[0]]), u[2:]])


def two_moons() -> SbibmTask:
    """``theta ~ U(-1, 1)^2``; ``a ~ U(-pi/2, pi/2)``, ``r ~ N(0.1, 0.01^2)`` (sbibm ``two_moons``)."""
    return SbibmTask(
        "two_moons", 2, 2, 2,
        parameters=lambda u: uniform_from_normal(u, -1.0, 1.0),
        simulate=_two_moons_simulate, solve_noise=_two_moons_solve, multimodal=True,
        parameter_names=("theta1", "theta2"), symmetries=(two_moons_reflection,),
    )


# -- slcp -------------------------------------------------------------------------------------------------------------
SLCP_BOUND = 3.0
SLCP_DRAWS = 4
SLCP_EPS = 1e-6


def _slcp_mean_cholesky(theta):
    m = theta[:2]
    s1, s2 = theta[2] ** 2, theta[3] ** 2
    rho = jnp.tanh(theta[4])
    s00, s01, s11 = s1 ** 2 + SLCP_EPS, rho * s1 * s2, s2 ** 2 + SLCP_EPS
    l00 = jnp.sqrt(s00)
    l10 = s01 / l00
    l11 = jnp.sqrt(s11 - l10 ** 2)
    return m, jnp.array([[l00, 0.0], [l10, l11]], dtype=jnp.result_type(theta))


def _slcp_simulate(theta, u_noise):
    m, chol = _slcp_mean_cholesky(theta)
    eps = u_noise.reshape(SLCP_DRAWS, 2)
    return (m[None, :] + eps @ chol.T).reshape(-1)


def _slcp_solve(theta, x):
    m, chol = _slcp_mean_cholesky(theta)
    centred = x.reshape(SLCP_DRAWS, 2) - m[None, :]
    return jax.scipy.linalg.solve_triangular(chol, centred.T, lower=True).T.reshape(-1)


def slcp_sign_flip(index: int) -> Callable[[Array], Array]:
    """``u -> u`` with ``u_index`` negated, ``index`` in {2, 3}: ``theta_index -> -theta_index`` leaves
    ``s = theta_index^2`` and so ``g`` unchanged (an exact involution of the slcp generator)."""
    if index not in (2, 3):
        raise ValueError(f"slcp's sign symmetries act on inputs 2 and 3, got {index!r}")
    def flip(u: Array) -> Array:
        return u.at[index].multiply(-1.0)

    flip.__name__ = f"slcp_flip_theta{index + 1}"
    return flip


def slcp() -> SbibmTask:
    """``theta ~ U(-3, 3)^5``, four draws of ``N(m, S(theta))`` (sbibm ``slcp``, simple likelihood complex
    posterior)."""
    return SbibmTask(
        "slcp", 5, 2 * SLCP_DRAWS, 2 * SLCP_DRAWS,
        parameters=lambda u: uniform_from_normal(u, -SLCP_BOUND, SLCP_BOUND),
        simulate=_slcp_simulate, solve_noise=_slcp_solve, multimodal=True,
        parameter_names=tuple(f"theta{i + 1}" for i in range(5)), symmetries=(slcp_sign_flip(2), slcp_sign_flip(3)),
    )


# -- lotka_volterra ---------------------------------------------------------------------------------------------------
LV_PRIOR_LOC = (-0.125, -3.0, -0.125, -3.0)
LV_PRIOR_SCALE = 0.5
LV_INITIAL = (30.0, 1.0)
LV_SAVE_TIMES = tuple(round(2.1 * k, 10) for k in range(10))  # sbibm: saveat 0.1 on [0, 20], every 21st point
LV_NOISE = 0.1
LV_CLAMP = (1e-10, 1e4)


def lotka_volterra_states(theta: Array, step: float = LV_STEP) -> Array:
    """Prey and predator at :data:`LV_SAVE_TIMES`, ``(2, 10)``, by diffrax's Tsit5 with constant step ``step``."""
    import diffrax

    def field(t, y, p):
        alpha, beta, gamma, delta = p[0], p[1], p[2], p[3]
        return jnp.stack([alpha * y[0] - beta * y[0] * y[1], -gamma * y[1] + delta * y[0] * y[1]])

    t1 = LV_SAVE_TIMES[-1]
    n_steps = int(round(t1 / step))
    y0 = jnp.asarray(LV_INITIAL, dtype=jnp.result_type(theta))
    solution = diffrax.diffeqsolve(
        diffrax.ODETerm(field), diffrax.Tsit5(), t0=0.0, t1=t1, dt0=t1 / n_steps, y0=y0, args=theta,
        saveat=diffrax.SaveAt(ts=jnp.asarray(LV_SAVE_TIMES)), stepsize_controller=diffrax.ConstantStepSize(),
        max_steps=n_steps + 1, adjoint=diffrax.DirectAdjoint(),
    )
    return solution.ys.T


def _lv_parameters(u):
    return jnp.exp(jnp.asarray(LV_PRIOR_LOC, dtype=jnp.result_type(u)) + LV_PRIOR_SCALE * u)


def _lv_clamped_states(u_theta):
    """The 20 noiseless outputs (prey then predators, clamped as sbibm) from the parameter inputs."""
    return jnp.clip(lotka_volterra_states(_lv_parameters(u_theta)).reshape(-1), *LV_CLAMP)


def _lv_observe(states, v, i):
    return states[i][None] * jnp.exp(LV_NOISE * v)


def _lv_simulate(theta, u_noise):
    states = jnp.clip(lotka_volterra_states(theta).reshape(-1), *LV_CLAMP)
    return states * jnp.exp(LV_NOISE * u_noise)


def _lv_solve(theta, x):
    states = jnp.clip(lotka_volterra_states(theta).reshape(-1), *LV_CLAMP)
    return jnp.log(x / states) / LV_NOISE


def lotka_volterra() -> SbibmTask:
    """sbibm's ODE Lotka-Volterra with log-normal observation noise (20 outputs, 4 parameters)."""
    return SbibmTask(
        "lotka_volterra", 4, 20, 20,
        parameters=_lv_parameters, simulate=_lv_simulate, solve_noise=_lv_solve,
        parameter_names=("alpha", "beta", "gamma", "delta"), shared=_lv_clamped_states, observe=_lv_observe,
    )


TASKS = {
    "gaussian_linear": gaussian_linear,
    "gaussian_linear_uniform": gaussian_linear_uniform,
    "two_moons": two_moons,
    "slcp": slcp,
    "lotka_volterra": lotka_volterra,
}
"""The differentiable sbibm tasks: name -> builder of its :class:`SbibmTask`."""


def get_task(name: str) -> SbibmTask:
    """The :class:`SbibmTask` called ``name`` (a ``ValueError`` naming the choices, or the reason a
    non-differentiable task has no generator)."""
    if name in NOT_DIFFERENTIABLE:
        raise ValueError(f"sbibm task {name!r} has no differentiable generator: {NOT_DIFFERENTIABLE[name]}")
    if name not in TASKS:
        raise ValueError(f"unknown sbibm task {name!r}; choose from {', '.join(TASKS)}")
    return TASKS[name]()
