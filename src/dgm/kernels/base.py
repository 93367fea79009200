"""The contract between a sampling method and the chain driver (:mod:`dgm.driver`).

Every method (constrained HMC, HMC/NUTS on a noisy model, ABC-MCMC, pseudo-marginal slice sampling, ...) is described
by a :class:`Method`: BlackJAX-style pure functions ``init(position) -> state`` and
``step(key, state, step_size) -> (state, info)``, plus how to read the position, the acceptance probability used for
step-size adaptation, and the per-iteration statistics recorded in :class:`dgm.Result`. The driver ``vmap``s ``init``
and ``step`` over chains and runs them in ``lax.scan``; it never looks inside a state.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax

Array = jax.Array


class Method(NamedTuple):
    """A sampling method as the driver sees it.

    Attributes:
      name: short name shown in tables (``"chmc"``, ``"abc-slice"`` ...).
      initial_positions: host-level ``(key, n_chains) -> (n_chains, input_dim)`` array; may raise a clear error
        (for instance when no point on the manifold can be found).
      init: ``u -> state`` (pure, jittable, for one chain).
      step: ``(key, state, step_size) -> (state, info)`` (pure, jittable, for one chain). Methods without a step size
        ignore the third argument.
      position: ``state -> u``.
      acceptance: ``info -> scalar`` in [0, 1] used for step-size adaptation (never NaN).
      stats: ``info -> dict[str, scalar]`` recorded per draw (``acceptance_rate``, ``is_accepted`` and any
        method-specific counters, e.g. ``failure`` codes, ``newton_iterations``).
      initial_step_size: starting step size for dual averaging; ``None`` when the method has no step size.
      target_acceptance: the acceptance rate dual averaging aims for.
      epsilon: the ABC tolerance (``0.0`` for exact methods, ``None`` when not applicable), shown in tables.
      kernel: what ``epsilon`` means, shown beside it in tables: ``"uniform ball"`` (accept ``|g(u) - x| < epsilon``:
        a radius), ``"Gaussian"`` (output noise of standard deviation ``epsilon`` per output), ``"exact"``
        (``g(u) = x`` within the Newton tolerance); ``None`` when not applicable.
      log_density: optional ``state -> scalar``, the log target density at the state (recorded as ``lp``).
      set_inverse_mass: ``(state, inverse_mass) -> state`` for methods with an adaptable diagonal metric
        (:mod:`dgm.kernels.metric`): the driver's warm-up then adapts ``M^{-1}`` too (:mod:`dgm.adaptation`).
      settings: optional settings the method chose itself (e.g. a default ladder of noise scales), recorded in
        ``Result.settings``.
      relocate: optional ``(state, u) -> state``, the state at another point ``u`` of the manifold keeping the rest of
        the state (the metric): what the symmetry moves of :mod:`dgm.kernels.symmetry` need.
      warmup_hook: optional ``(states, key) -> states`` over all chains' states (chain axis first, jittable): the
        method's own adaptation across chains, which the driver calls after every warm-up chunk (e.g. the tempered
        ladder, :mod:`dgm.kernels.tempered`); the method decides from the states what to do (it knows the warm-up
        length). The driver's keys depend only on (seed, chunk index), so the draws do not depend on the layout.
      describe_states: optional ``states -> dict`` (host arrays, chain axis first): settings the method chose during
        the run (e.g. the adapted ladder), recorded in ``Result.settings`` from the final states.
    """

    name: str
    initial_positions: Callable[[Array, int], Any]
    init: Callable[[Array], Any]
    step: Callable[[Array, Any, Array], tuple[Any, Any]]
    position: Callable[[Any], Array]
    acceptance: Callable[[Any], Array]
    stats: Callable[[Any], dict]
    initial_step_size: Optional[float] = None
    target_acceptance: float = 0.8
    epsilon: Optional[float] = None
    kernel: Optional[str] = None
    log_density: Optional[Callable[[Any], Array]] = None
    set_inverse_mass: Optional[Callable[[Any, Array], Any]] = None
    settings: Optional[dict] = None
    relocate: Optional[Callable[[Any, Array], Any]] = None
    warmup_hook: Optional[Callable[[Any, Array], Any]] = None
    describe_states: Optional[Callable[[Any], dict]] = None


KERNEL_LABELS = {"uniform": "uniform ball", "gaussian": "Gaussian"}
"""Table labels of the ABC kernels named ``"uniform"`` / ``"gaussian"`` in the builders."""
