"""The science of ``dgm sbibm``: sample each task x observation x seed with the task's method and score the draws
against sbibm's reference posterior with its C2ST and MMD (:mod:`dgm.diagnostics.two_sample`).

The method per task is the command's choice (:data:`METHODS`): ``chmc-tempered`` for the multimodal posteriors
(``two_moons``: two crescents; ``slcp``: four modes), ``chmc`` elsewhere. C2ST compares the reference posterior's
10,000 draws with as many sampler draws, taken evenly from all chains' draws (as sbibm thins MCMC output).
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from pathlib import Path

import numpy as np

METHODS = {
    "gaussian_linear": "chmc",
    "gaussian_linear_uniform": "chmc",
    "two_moons": "chmc-tempered",
    "slcp": "chmc-tempered",
    "lotka_volterra": "chmc",
}
"""The method the command runs on each task (tempered constrained HMC where the posterior has separated modes)."""

TARGET_C2ST = 0.55
"""C2ST at or below which a run counts as a success (issue 23's target)."""
REFERENCE_DRAWS = 10_000


def parse_tasks(text: str) -> list[str]:
    from dgm.models.sbibm import NOT_DIFFERENTIABLE, TASKS

    names = list(TASKS) if text.strip() == "all" else [t.strip() for t in text.split(",") if t.strip()]
    for name in names:
        if name in NOT_DIFFERENTIABLE:
            raise ValueError(f"--tasks: {name!r} has no differentiable generator ({NOT_DIFFERENTIABLE[name]})")
        if name not in TASKS:
            raise ValueError(f"--tasks: unknown task {name!r}; choose from {', '.join(TASKS)} or 'all'")
    if not names:
        raise ValueError("--tasks: no task given")
    return names


def parse_observations(text: str) -> list[int]:
    from dgm.models.sbibm import N_OBSERVATIONS

    numbers = []
    for token in [t.strip() for t in str(text).split(",") if t.strip()]:
        low, _, high = token.partition("-")
        try:
            span = range(int(low), int(high or low) + 1)
        except ValueError:
            raise ValueError(f"--observations: {token!r} is not a number or a range a-b") from None
        numbers.extend(span)
    if not numbers or any(not 1 <= k <= N_OBSERVATIONS for k in numbers):
        raise ValueError(f"--observations must name numbers in 1..{N_OBSERVATIONS}, got {text!r}")
    return sorted(set(numbers))


SYMMETRIES_SUFFIX = "+symmetries"
"""``METHOD+symmetries``: the task's exact symmetries declared to the model (two_moons, slcp; :mod:`dgm.symmetry`)."""
SYMMETRY_PROBABILITY = 0.5
"""Probability of a symmetry move after each transition. dgm's default 1.0 flips an involution accepted with
probability 1 (two_moons' reflection) after *every* transition: the chain alternates between the modes and a run
thinned by 2 records one mode only (measured: crescent weight 0.0 instead of 0.5, C2ST 0.750)."""


def parse_methods(pairs) -> dict:
    """``["two_moons=chmc+symmetries", ...]`` over :data:`METHODS` (clear errors for unknown tasks or methods)."""
    from dgm.methods import METHODS as AVAILABLE
    from dgm.models.sbibm import get_task

    methods = dict(METHODS)
    for pair in pairs or []:
        task, _, method = pair.partition("=")
        if task not in METHODS or not method:
            raise ValueError(f"--method {pair!r}: expected TASK=METHOD with TASK one of {', '.join(METHODS)}")
        base = method.removesuffix(SYMMETRIES_SUFFIX)
        if base not in AVAILABLE:
            raise ValueError(f"--method {pair!r}: unknown method; choose from {', '.join(AVAILABLE)}")
        if base != method and not get_task(task).symmetries:
            raise ValueError(f"--method {pair!r}: {task} has no symmetries to declare (two_moons and slcp have)")
        methods[task] = method
    return methods


def thin_evenly(draws: np.ndarray, n: int) -> np.ndarray:
    """``n`` draws taken at evenly spaced positions of ``draws`` (``(N, d)``, ``N >= n``), as sbibm thins MCMC
    output to its 10,000 posterior samples."""
    if len(draws) < n:
        raise ValueError(f"{len(draws)} draws cannot give the {n} C2ST draws: raise --chains x --samples or lower "
                         "--c2st-draws")
    return draws[np.linspace(0, len(draws) - 1, n).round().astype(int)]


@dataclasses.dataclass
class Run:
    """One task x observation x seed: its scores, times and what dgm warned about."""

    task: str
    observation: int
    seed: int
    method: str
    c2st: float
    mmd: float | None
    setup_time: float
    compile_time: float
    sampling_time: float
    total_time: float
    metric_time: float
    acceptance: float
    max_rhat: float
    warnings: list
    settings: dict


def _split_rhat(latents: np.ndarray) -> float:
    """Largest split R-hat over the parameters (ArviZ), ``(chain, draw, d)`` draws."""
    import arviz as az

    values = az.rhat(az.from_dict({"posterior": {"z": latents}}))["z"]
    return float(np.nanmax(np.asarray(values)))


def _short(message: str, limit: int = 300) -> str:
    message = " ".join(str(message).split())
    return message if len(message) <= limit else message[: limit - 1] + "…"


def run_one(task_name: str, observation: int, seed: int, method: str, *, chains: int, warmup: int, samples: int,
            thin: int, c2st_draws: int, with_mmd: bool, progress: bool, draws_dir: Path | None = None) -> Run:
    """Sample the task's posterior for one observation and score it against sbibm's reference draws."""
    import dgm
    from dgm.diagnostics.two_sample import c2st, mmd
    from dgm.models.sbibm import get_task, load_observation, load_reference_posterior

    if chains * samples < c2st_draws:
        raise ValueError(f"--chains x --samples = {chains * samples} draws, fewer than the {c2st_draws} C2ST draws")
    task = get_task(task_name)
    x_obs = load_observation(task_name, observation, task.n_data)
    reference = load_reference_posterior(task_name, observation, task.n_parameters)
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        declared = method.endswith(SYMMETRIES_SUFFIX)
        # a flip accepted with probability 1 after every transition makes the chain periodic, and an even --thin
        # then records one mode only: flip with probability 1/2 (an aperiodic mixture with the identity)
        options = {"symmetry_probability": SYMMETRY_PROBABILITY} if declared else {}
        result = dgm.sample(task.model(declare_symmetries=declared), x_obs,
                            method=method.removesuffix(SYMMETRIES_SUFFIX), n_chains=chains, n_warmup=warmup,
                            n_samples=samples, thin=thin, seed=seed, progress=progress, **options)
    total = time.perf_counter() - start
    for w in caught:  # still shown to the user, once, as well as recorded
        warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    latents = np.asarray(result.latents, dtype=np.float64)
    flat = latents.reshape(-1, latents.shape[-1])
    ours = thin_evenly(flat, c2st_draws)
    theirs = thin_evenly(reference, c2st_draws)
    if draws_dir is not None:
        draws_dir.mkdir(parents=True, exist_ok=True)
        np.save(draws_dir / f"{task_name}_obs{observation}_seed{seed}.npy", ours)
    t0 = time.perf_counter()
    score = c2st(theirs, ours) if np.all(np.isfinite(ours)) else float("nan")
    distance = mmd(theirs, ours) if with_mmd and np.all(np.isfinite(ours)) else None
    metric_time = time.perf_counter() - t0
    settings = {k: v for k, v in result.settings.items() if isinstance(v, (int, float, str, bool, list)) or v is None}
    return Run(task_name, observation, seed, method, float(score), distance, float(result.setup_time),
               float(result.compile_time), float(result.wall_time), total, metric_time,
               float(result.acceptance_rate), _split_rhat(latents),
               [f"{w.category.__name__}: {_short(w.message)}" for w in caught], settings)


def summarise(runs: list[Run]) -> dict:
    """Per task (and method, when a task ran with several): C2ST mean, sd (``ddof=1``; 0 for one run), min, max,
    runs, runs above the target."""
    summary = {}
    groups = list(dict.fromkeys((r.task, r.method) for r in runs))
    several = len(groups) > len({task for task, _ in groups})
    for task, method in groups:
        scores = np.array([r.c2st for r in runs if (r.task, r.method) == (task, method)], dtype=float)
        summary[f"{task} [{method}]" if several else task] = {
            "task": task,
            "method": method,
            "runs": int(scores.size),
            "c2st_mean": float(np.mean(scores)),
            "c2st_sd": float(np.std(scores, ddof=1)) if scores.size > 1 else 0.0,
            "c2st_min": float(np.min(scores)),
            "c2st_max": float(np.max(scores)),
            "above_target": int(np.sum(~(scores <= TARGET_C2ST))),
        }
    return summary
