"""Sampling results: draws, per-iteration statistics, timings, diagnostics (ArviZ), saving and loading.

Diagnostics (bulk/tail ESS, R-hat, Monte-Carlo standard errors) come from ArviZ; nothing here re-implements them.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from typing import Any, Optional

import numpy as np

from dgm.integrator import FAILURE_NAMES


def _arviz():
    """Import ArviZ without its import-time FutureWarning about the 1.0 refactor (noise for dgm's users)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import arviz

    return arviz


@dataclasses.dataclass
class Result:
    """Draws of one sampling run.

    Attributes:
      latents: ``(chain, draw, *latent_shape)`` reported quantities ``z = latents(u)``.
      inputs: ``(chain, draw, input_dim)`` generator inputs ``u``.
      stats: per-draw statistics, each ``(chain, draw)``: ``acceptance_rate``, ``is_accepted``, ``step_size`` (methods
        with one) and method-specific ones (constrained HMC: ``failure`` code, ``newton_iterations``,
        ``num_integration_steps``, ``energy``).
      step_size: ``(chain,)`` step size used after warm-up (NaN when the method has none).
      wall_time: seconds spent running warm-up and sampling, compilation excluded.
      compile_time: seconds spent tracing and compiling.
      max_residual: ``max |g(u) - x_obs|_inf`` over all draws (the constraint error; ABC methods: their mismatch).
      warmup_stats: the same statistics for the warm-up iterations (``step_size`` shows the adaptation).
      failure_counts: failed trajectories by reason over *every* sampling iteration run (with ``thin > 1`` also the
        unrecorded ones between kept draws); a plain ``{reason: int}`` dict, empty for methods without failures.
      kernel: what ``epsilon`` means: ``"uniform ball"`` (a radius), ``"Gaussian"`` (a per-output noise standard
        deviation) or ``"exact"`` (see :class:`dgm.kernels.base.Method`).
    """

    latents: np.ndarray
    inputs: np.ndarray
    stats: dict
    step_size: np.ndarray
    wall_time: float
    compile_time: float
    method: str
    max_residual: float
    x_obs: Optional[np.ndarray] = None
    epsilon: Optional[float] = None
    settings: dict = dataclasses.field(default_factory=dict)
    warmup_stats: dict = dataclasses.field(default_factory=dict)
    latent_names: Optional[list] = None
    failure_counts: dict = dataclasses.field(default_factory=dict)
    kernel: Optional[str] = None

    @property
    def n_chains(self) -> int:
        return int(self.inputs.shape[0])

    @property
    def n_draws(self) -> int:
        return int(self.inputs.shape[1])

    @property
    def acceptance_rate(self) -> float:
        return float(np.mean(self.stats["acceptance_rate"]))

    def rejection_counts(self, warmup: bool = False) -> dict:
        """Counts of failed trajectories by reason (constrained HMC) over every iteration run in the sampling phase
        (``warmup=True``: the warm-up phase); empty for methods without failures."""
        if not warmup and self.failure_counts:
            return {name: int(count) for name, count in self.failure_counts.items()}
        stats = self.warmup_stats if warmup else self.stats
        if "failure" not in stats:
            return {}
        failure = np.asarray(stats["failure"])
        return {name: int(np.sum(failure == code)) for code, name in FAILURE_NAMES.items()}

    # -- ArviZ ------------------------------------------------------------------------------------------
    def to_arviz(self):
        """An ``arviz.InferenceData`` with ``posterior`` (``z``, ``u``), ``sample_stats`` and ``observed_data``."""
        az = _arviz()

        dims = {"z": ["z_dim"] if self.latents.ndim == 3 else [], "u": ["u_dim"]}
        coords = {}
        if self.latent_names is not None and self.latents.ndim == 3:
            coords["z_dim"] = list(self.latent_names)
        sample_stats = {k: np.asarray(v) for k, v in self.stats.items()}
        idata = az.from_dict(
            posterior={"z": self.latents, "u": self.inputs},
            sample_stats=sample_stats,
            observed_data={"x": self.x_obs} if self.x_obs is not None else None,
            dims=dims,
            coords=coords or None,
        )
        idata.posterior.attrs.update(self._attrs())
        return idata

    def _attrs(self) -> dict:
        return {
            "dgm_method": self.method,
            "dgm_wall_time": float(self.wall_time),
            "dgm_compile_time": float(self.compile_time),
            "dgm_max_residual": float(self.max_residual),
            "dgm_epsilon": float("nan") if self.epsilon is None else float(self.epsilon),
            "dgm_step_size": json.dumps(np.asarray(self.step_size, dtype=float).tolist()),
            "dgm_settings": json.dumps(self.settings, default=str),
            "dgm_latent_names": json.dumps(self.latent_names),
            "dgm_failure_counts": json.dumps(self.failure_counts),
            "dgm_kernel": json.dumps(self.kernel),
        }

    # -- summaries --------------------------------------------------------------------------------------------
    def summary(self, var: str = "z"):
        """``pandas.DataFrame``: mean, sd, bulk/tail ESS, R-hat (ArviZ), ESS per second, max constraint residual.

        ESS per second divides bulk ESS by :attr:`wall_time` (warm-up + sampling, compilation excluded).
        """
        az = _arviz()

        idata = self.to_arviz()
        table = az.summary(idata, var_names=[var], kind="all", round_to="none")
        table = table[["mean", "sd", "mcse_mean", "ess_bulk", "ess_tail", "r_hat"]].copy()
        table["ess_per_sec"] = table["ess_bulk"] / max(self.wall_time, 1e-12)
        table["max_residual"] = self.max_residual
        return table

    def __repr__(self) -> str:
        counts = self.rejection_counts()
        failures = ", ".join(f"{k}={v}" for k, v in counts.items()) if counts else "n/a"
        return (
            f"Result(method={self.method!r}, chains={self.n_chains}, draws={self.n_draws}, "
            f"acceptance={self.acceptance_rate:.3f}, failures: {failures}, wall_time={self.wall_time:.2f}s, "
            f"compile_time={self.compile_time:.2f}s, max_residual={self.max_residual:.2e})"
        )

    # -- persistence ----------------------------------------------------------------------------------------
    def save(self, path) -> None:
        """Write an ArviZ NetCDF file (readable by ``arviz.from_netcdf`` and :func:`load`)."""
        idata = self.to_arviz()
        if self.warmup_stats:
            import xarray as xr

            idata.add_groups(
                warmup_sample_stats=xr.Dataset(
                    {k: (("chain", "draw"), np.asarray(v)) for k, v in self.warmup_stats.items()}
                )
            )
        idata.to_netcdf(str(path), engine="h5netcdf")


def load(path) -> Result:
    """Read a :class:`Result` written by :meth:`Result.save`."""
    az = _arviz()

    idata = az.from_netcdf(str(path), engine="h5netcdf")
    attrs = idata.posterior.attrs
    stats = {k: np.asarray(v) for k, v in idata.sample_stats.data_vars.items()}
    warmup = {}
    if "warmup_sample_stats" in idata.groups():
        warmup = {k: np.asarray(v) for k, v in idata.warmup_sample_stats.data_vars.items()}
    epsilon = float(attrs["dgm_epsilon"])
    return Result(
        latents=np.asarray(idata.posterior["z"]),
        inputs=np.asarray(idata.posterior["u"]),
        stats=stats,
        step_size=np.asarray(json.loads(attrs["dgm_step_size"])),
        wall_time=float(attrs["dgm_wall_time"]),
        compile_time=float(attrs["dgm_compile_time"]),
        method=str(attrs["dgm_method"]),
        max_residual=float(attrs["dgm_max_residual"]),
        x_obs=np.asarray(idata.observed_data["x"]) if "observed_data" in idata.groups() else None,
        epsilon=None if np.isnan(epsilon) else epsilon,
        settings=json.loads(attrs["dgm_settings"]),
        warmup_stats=warmup,
        latent_names=json.loads(attrs.get("dgm_latent_names", "null")),
        failure_counts=json.loads(attrs.get("dgm_failure_counts", "{}")),
        kernel=json.loads(attrs.get("dgm_kernel", "null")),
    )
