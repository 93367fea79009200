"""``dgm.sample``: one observation, through the sampling engine (:mod:`dgm.runtime.engine`).

The engine plans the run (method, options, starting points, step-size and metric adaptation), compiles its chunk
program once per configuration (cached across calls: the observation is an argument), runs warm-up and sampling in
chunks and assembles the :class:`dgm.Result`; this module adds what one observation needs on top: a checkpointed or
resumed run (:mod:`dgm.runtime.checkpoint`) and chains laid out over devices (:mod:`dgm.runtime.sharding`).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from dgm.compilation_cache import enable as enable_compilation_cache
from dgm.model import GenerativeModel
from dgm.precision import float64
from dgm.result import Result
from dgm.runtime import checkpoint as checkpointing
from dgm.runtime import engine
from dgm.runtime.engine import FAILURE_WARNING_RATE, Progress as _Progress  # noqa: F401  (documented; patched in tests)
from dgm.runtime.sharding import chain_mesh, check_chain_layout


def sample(
    model: GenerativeModel,
    x_obs,
    *,
    method: str = "chmc",
    n_chains: int = 4,
    n_warmup: int = 500,
    n_samples: int = 500,
    seed: int = 0,
    step_size=None,
    n_steps=(4, 8),
    n_inner: int = 1,
    tol: float = 1e-8,
    max_newton: int = 50,
    progress: bool = True,
    adapt_step_size=None,
    chain_method: str = "auto",
    mesh=None,
    thin: int = 1,
    initial_positions=None,
    chunk_size: int = 100,
    compilation_cache: bool = True,
    detect_components="auto",
    checkpoint=None,
    checkpoint_every=None,
    resume=None,
    **options,
) -> Result:
    """Sample the inputs of ``model`` conditioned on ``generator(u) = x_obs``.

    Args:
      model: the :class:`dgm.GenerativeModel`.
      x_obs: observed values, shape ``model.output_shape()``; checked for shape and finiteness.
      method: ``"chmc"`` (constrained HMC), ``"chmc-dynamic"`` (constrained HMC with dynamic integration time,
        NUTS-style; ``max_tree_depth``, ``max_delta_energy``), ``"chmc-tempered"`` (constrained HMC tempered over
        a ladder of noise scales ``noise_scales``, moving exactly between the components of a disconnected
        manifold; :mod:`dgm.kernels.tempered`), ``"hmc"``/``"nuts"`` (BlackJAX on the noisy
        relaxation: pass ``noise_scale``), or an ABC baseline (see ``dgm.methods.METHODS``).
      n_chains, n_warmup, n_samples, seed: chains run in parallel (``vmap``); warm-up draws are discarded. ``seed``
        is an integer or a JAX PRNG key (e.g. ``jax.random.fold_in(jax.random.PRNGKey(s), i)``, the key
        :func:`dgm.sample_many` gives observation ``i``).
      step_size: integrator step size (``> 0``); ``None`` adapts it: by dual averaging during warm-up or, with
        ``n_warmup=0``, by BlackJAX's ``find_reasonable_step_size`` heuristic at the starting point (as NumPyro and
        BlackJAX's window adaptation begin). A number fixes it (unless ``adapt_step_size=True``, which uses it as
        the starting value). ``result.settings`` records the step size that ran (``step_size``; a list when the
        chains differ), the one asked for (``step_size_requested``), ``adapt_step_size`` and
        ``step_size_adaptation``: ``"dual-averaging"``, ``"find-reasonable-step-size"``, ``"fixed"`` or ``"none"``
        (the method has no step size).
      n_steps: ``(lo, hi)`` with ``1 <= lo <= hi``: the number of leapfrog steps is drawn uniformly from ``lo..hi``
        each iteration (an integer ``n`` means ``(n, n)``).
      n_inner: geodesic sub-steps per leapfrog step (Algorithm 1's ``N_g``), ``>= 1``.
      tol: Newton convergence tolerance on ``|g(u) - x_obs|_inf``, ``> 0``.
      max_newton: Newton iterations before a projection counts as not converged (Algorithm 1's ``M``), ``>= 1``.
      chain_method: how chains share the machine inside the scan: ``"vectorized"`` (``vmap``: one batched step),
        ``"sequential"`` (``lax.map``: one chain after another within each iteration), ``"sharded"`` (the chains laid
        out over the devices of ``mesh``, each device ``vmap``ping its share; the same keys, so the draws of
        ``"vectorized"`` for the same seed, up to XLA rounding a smaller batch differently (see
        :mod:`dgm.runtime.sharding`); across hosts after :func:`dgm.runtime.distributed.initialize`) or
        ``"auto"``: sequential on CPU, where batched small linear algebra and lock-stepped while-loops cost more than
        they save, vectorized on accelerators.
      mesh: for ``chain_method="sharded"``: a 1-D ``jax.sharding.Mesh`` (default: every device of every process,
        :func:`dgm.runtime.sharding.chain_mesh`); its size must divide ``n_chains``.
      thin: keep every ``thin``-th draw of the sampling phase (``n_samples`` draws are kept, ``n_samples * thin``
        iterations run; per-draw statistics are those of the kept iterations, while
        ``result.rejection_counts()`` counts the failures of every iteration run).
      initial_positions: optional ``(n_chains, input_dim)`` starting inputs (for constrained HMC they must lie on
        the manifold within ``tol``); default: the method's own initialisation (``model.init`` or a solver).
      progress: show a progress bar and a closing line with acceptance and rejection counts.
      chunk_size: iterations per call of the compiled program (the progress bar advances after each chunk). The
        programs are cached: a repeated call with the same model, method, options and shapes — observed values may
        differ — neither traces nor compiles again.
      compilation_cache: use JAX's persistent compilation cache (on disk, shared between processes; see
        :mod:`dgm.compilation_cache` for its location and the ``DGM_COMPILATION_CACHE=0`` opt-out).
      detect_components: for the exact (manifold) methods with several chains, find the connected components of the
        manifold the chains occupy (:mod:`dgm.components`; ``result.components``) and warn when several are occupied
        and no chain moved between them. ``"auto"``: path tests when the chains disagree (split R-hat of ``u`` or
        ``u**2`` above 1.1) or the model declares symmetries, in runs of at least 20 draws per chain; ``True``:
        always; ``False``: never.
      checkpoint: a directory to write the run to as it goes (it must not exist or be empty): the complete state
        (chain states with their cached geometry, step-size and metric adaptation, step sizes, PRNG keys, phase and
        iteration, the settings) every ``checkpoint_every`` iterations, atomically with a checksum, and the draws to
        an on-disk Zarr store instead of memory: the returned :class:`Result` reads them lazily
        (:mod:`dgm.runtime.checkpoint`, :mod:`dgm.runtime.draw_store`).
      checkpoint_every: iterations (warm-up and sampling counted together) between checkpoints, rounded to the
        nearest whole number of chunks (at least one); default ``10 * chunk_size``. The run's draws do not depend
        on it.
      resume: a checkpoint directory to continue: the same call with ``resume=DIR`` (same model, observation and
        settings — a difference is a ``ValueError`` naming it) goes on from the last good checkpoint and gives draws
        bit-identical to an uninterrupted run; on a finished run it returns the stored result. ``checkpoint=DIR,
        resume=DIR`` continues the run in ``DIR`` if there is one and starts it otherwise.
      **options: method options, e.g. ``projection="newton"``, ``log_det_gradient="autodiff"``, ``geometry="dense"``
        (``"auto"``, ``"dense"``, ``"structured"``, ``"additive"``: chosen by cost when ``"auto"``,
        :func:`dgm.methods.geometry_kind`), ``jacobian_mode`` (``"auto"``, ``"forward"``, ``"reverse"``),
        ``max_refreshes`` (Newton refreshes of a stalled projection, default 2; ``tol`` is relative to the
        observation scale, ``tol * max(1, |x_obs|_inf)``),
        ``reverse_check_tol``, ``target_acceptance``, ``noise_scale``, ``epsilon``; for the constrained HMC methods
        ``metric="diagonal"`` (a diagonal mass matrix adapted in windows during warm-up, dense geometry;
        ``inverse_mass`` its start, ``adapt_metric=False`` to keep it fixed; :mod:`dgm.kernels.metric`). An option
        the method does not accept (a typo, or ``step_size`` for a method without one) is a ``ValueError`` naming
        the options it accepts.

    Returns:
      :class:`dgm.Result`.

    Warns:
      RuntimeWarning: when more than ``FAILURE_WARNING_RATE`` of the warm-up or of the sampling iterations failed
        numerically (with the counts by reason).
      RuntimeWarning: when the draws lie on several disconnected components of the manifold and no chain moved
        between them (see ``detect_components``).
    """
    n_chains, n_warmup, n_samples, thin, chunk_size = engine.check_run_lengths(
        n_chains=n_chains, n_warmup=n_warmup, n_samples=n_samples, thin=thin, chunk_size=chunk_size)
    chain_method = engine.resolve_chain_method(chain_method)
    if chain_method == "sharded":
        mesh = chain_mesh() if mesh is None else mesh
        check_chain_layout(n_chains, mesh)
    elif mesh is not None:
        raise ValueError(f"mesh is only used by chain_method='sharded' (got chain_method={chain_method!r})")
    if compilation_cache:
        enable_compilation_cache()
    t_setup = time.perf_counter()
    with float64():
        x = jnp.asarray(model.validate_observation(x_obs, manifold=False))
        run = engine.plan(model, x, method=method, n_chains=n_chains, n_warmup=n_warmup, n_samples=n_samples,
                          thin=thin, chunk_size=chunk_size, chain_method=chain_method, step_size=step_size,
                          n_steps=n_steps, n_inner=n_inner, tol=tol, max_newton=max_newton,
                          adapt_step_size=adapt_step_size, **options)
        key_init, key_warmup, key_sample = engine.phase_keys(seed)
        stored = checkpointing.open_run(
            checkpoint=checkpoint, resume=resume, checkpoint_every=checkpoint_every, chunk_size=run.chunk_size,
            x_obs=x, fingerprint=checkpointing.fingerprint(
                model, x, method=method, common=run.common, options=run.options, n_chains=run.n_chains,
                n_warmup=run.n_warmup, n_samples=run.n_samples, thin=run.thin, seed=engine.seed_setting(seed),
                chunk_size=run.chunk_size, chain_method=chain_method, step_size_adaptation=run.how,
                initial_positions=initial_positions))
        if stored is not None and stored.finished:
            return stored.result()
        positions = (np.zeros((run.n_chains, model.input_dim)) if stored is not None and stored.resumed
                     else engine.starting_points(run, run.algorithm, key_init, x, initial_positions))
        start = engine.adaptation_start(run)
        setup_time = time.perf_counter() - t_setup
        programs = engine.compile_programs(run, x, start, mesh)
        bar = engine.Progress(run.n_warmup + run.n_samples, f"{run.algorithm.name} ({run.n_chains} chains)", progress)
        try:
            states, start, compile_time = engine.start_chains(run, programs, positions, x, start, key_warmup,
                                                              compile_ahead=chain_method != "sharded",
                                                              checkpoint=stored)
            outcome = engine.execute(run, programs.chunk, states, start, key_warmup, key_sample, x, bar, stored,
                                     hook=programs.hook)
        finally:
            bar.close()
            if stored is not None:
                stored.close()  # the state file being written is finished, also after an error
        settings = engine.run_settings(run, run.algorithm, seed, outcome.step_sizes, described=outcome.described)
        meta = engine.run_metadata(run, run.algorithm, outcome.step_sizes, x, settings, wall_time=outcome.wall_time,
                                   compile_time=compile_time, setup_time=setup_time)
        result = (engine.assemble(meta, outcome.sampling, outcome.warmup) if stored is None
                  else stored.finish(meta, outcome.carry, key_sample))  # draws on disk: the result reads them lazily
        return engine.conclude(run, result, x, detect_components, progress)
