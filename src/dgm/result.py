"""Sampling results: draws, per-iteration statistics, timings, diagnostics (ArviZ), saving and loading.

Diagnostics (bulk/tail ESS, R-hat, Monte-Carlo standard errors) come from ArviZ; nothing here re-implements them.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Optional

import numpy as np

from dgm.components import ComponentReport
from dgm.integrator import FAILURE_NAMES


# ArviZ's sample-statistics schema names for what dgm's kernels call otherwise (files written before the move to
# ArviZ 1.x used the kernels' names; :func:`schema_stats` maps them on load too).
_SCHEMA_NAMES = {"num_integration_steps": "n_steps", "is_divergent": "diverging"}


def schema_stats(stats: dict) -> dict:
    """Per-draw statistics under ArviZ's schema names (``n_steps``, ``diverging`` ...), NumPy arrays.

    Methods with failure codes (constrained HMC) get ``diverging = failure != 0``: a failed trajectory (Newton
    non-convergence, non-reversible step, non-finite energy) plays the role of a divergence in ArviZ's plots.
    """
    out = {_SCHEMA_NAMES.get(k, k): np.asarray(v) for k, v in stats.items()}
    if "failure" in out and "diverging" not in out:
        out["diverging"] = out["failure"] != 0
    return out


@dataclasses.dataclass
class Result:
    """Draws of one sampling run.

    Attributes:
      latents: ``(chain, draw, *latent_shape)`` reported quantities ``z = latents(u)``.
      inputs: ``(chain, draw, input_dim)`` generator inputs ``u``.
      stats: per-draw statistics, each ``(chain, draw)``, under ArviZ's schema names where one exists:
        ``acceptance_rate``, ``is_accepted``, ``step_size`` and ``n_steps`` (methods with them), ``lp`` (log target
        density of the draw), ``diverging``, ``constraint_residual`` (``|g(u) - x_obs|_inf``), and method-specific
        ones (constrained HMC: ``failure`` code, ``newton_iterations``, ``energy``).
      step_size: ``(chain,)`` step size used after warm-up (NaN when the method has none).
      wall_time: seconds spent running warm-up and sampling, compilation excluded.
      compile_time: seconds spent tracing and compiling (0 when the compiled programs were reused from an earlier
        call with the same model, method, options and shapes).
      setup_time: seconds spent before compiling: checking the inputs, building the method, finding starting points
        on the manifold (initialisation) and checking them.
      max_residual: ``max |g(u) - x_obs|_inf`` over all draws (the constraint error; ABC methods: their mismatch).
      warmup_stats: the same statistics for the warm-up iterations (``step_size`` shows the adaptation).
      unrecorded_failures: failed trajectories by reason among the sampling transitions that thinning did not keep
        (``thin > 1``); :meth:`rejection_counts` adds them to the recorded ones.
      kernel: what ``epsilon`` means: ``"uniform ball"`` (a radius), ``"Gaussian"`` (a per-output noise standard
        deviation) or ``"exact"`` (see :class:`dgm.kernels.base.Method`).
      components: the connected components of the manifold the chains occupy (constrained HMC with several chains,
        :class:`dgm.components.ComponentReport`: number, chains per component, which chains moved between them);
        ``None`` when not checked. With declared symmetries ``stats`` also holds ``symmetry_proposed``,
        ``symmetry_accepted``, ``symmetry_acceptance_rate``, ``symmetry_index`` and ``symmetry_failure``
        (:mod:`dgm.kernels.symmetry`); :meth:`symmetry_counts` sums them.
      mixing: the mode-mixing check across chains (:class:`dgm.mixing.MixingReport`: split R-hat and ESS
        of a basin indicator, tempered round trips), set by :func:`dgm.sample`; ``None`` when not checked (one
        chain, short runs) and not saved.
      sites: for a model that names its sites (:func:`dgm.from_numpyro`), ``{"latent": [[name, shape], ...],
        "observed": [...]}``: the blocks of ``latents`` and ``x_obs`` (:meth:`dgm.GenerativeModel.site_layout`).
      store: the on-disk draw store (Zarr) the arrays are read from, lazily, when the run streamed its draws to disk
        (``dgm.sample(..., checkpoint=DIR)``, :mod:`dgm.runtime.draw_store`); ``None`` for draws in memory.
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
    setup_time: float = 0.0
    unrecorded_failures: dict = dataclasses.field(default_factory=dict)
    kernel: Optional[str] = None
    components: Optional[ComponentReport] = None
    mixing: Optional[object] = None
    store: Optional[str] = None
    sites: Optional[dict] = None

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
        """Counts of failed trajectories by reason over every transition run (constrained HMC), thinned-away ones
        included; ``warmup=True``: those of the warm-up. Empty for methods without failure codes."""
        stats = self.warmup_stats if warmup else self.stats
        if "failure" not in stats:
            return {}
        failure = np.asarray(stats["failure"])
        extra = {} if warmup else self.unrecorded_failures
        return {name: int(np.sum(failure == code)) + int(extra.get(name, 0)) for code, name in FAILURE_NAMES.items()}

    def symmetry_counts(self) -> dict:
        """``{symmetry index: {"proposed", "accepted", "failed"}}`` over the recorded draws (empty without symmetry
        moves); the names of the declared symmetries are in ``settings["symmetries"]``."""
        if "symmetry_proposed" not in self.stats:
            return {}
        index = np.asarray(self.stats["symmetry_index"])
        proposed = np.asarray(self.stats["symmetry_proposed"], bool)
        accepted = np.asarray(self.stats["symmetry_accepted"], bool)
        failed = np.asarray(self.stats["symmetry_failure"]) != 0
        return {int(k): {"proposed": int(np.sum(proposed & (index == k))),
                         "accepted": int(np.sum(accepted & (index == k))),
                         "failed": int(np.sum(failed & (index == k)))}
                for k in np.unique(index[proposed])}

    def symmetry_summary_line(self) -> str:
        """One line on the symmetry moves and the components occupied, for the closing report ('' if neither)."""
        parts = []
        names = self.settings.get("symmetries") or []
        for k, c in self.symmetry_counts().items():
            name = names[k] if k < len(names) else f"s{k}"
            rate = c["accepted"] / max(c["proposed"], 1)
            parts.append(f"symmetry {name}: {c['accepted']}/{c['proposed']} accepted ({rate:.2f})"
                         + (f", {c['failed']} failed" if c["failed"] else ""))
        if self.components is not None:
            parts.append(f"manifold components occupied: {self.components.describe()}")
        return "; ".join(parts)

    def tempering_summary_line(self) -> str:
        """One line on a tempered run's ladder (``"chmc-tempered"``: levels, top scale, barrier, round trips), for the
        closing report ('' for other methods)."""
        trips = self.settings.get("round_trips")
        scales = self.settings.get("noise_scales")
        if trips is None or not scales:
            return ""
        barrier = self.settings.get("barrier")
        adapted = "adapted" if self.settings.get("adapt_ladder") else "fixed"
        return (f"tempering ({adapted} ladder): {len(scales)} noisy levels, sigma {scales[0]:.3g} .. {scales[-1]:.3g}; "
                f"barrier Lambda {barrier:.2f}; round trips per chain {trips} (sampling phase)")

    # -- ArviZ ------------------------------------------------------------------------------------------
    def to_arviz(self):
        """An ArviZ 1.x ``xarray.DataTree``: ``posterior`` (``z``, ``u``), ``sample_stats``, ``observed_data`` (``x``)
        and, when there was a warm-up, ``warmup_sample_stats``.

        ``sample_stats`` uses ArviZ's schema names — ``acceptance_rate``, ``step_size``, ``n_steps``, ``energy``,
        ``lp``, ``diverging`` (a failed trajectory) — plus dgm's own ``failure`` (code, see
        :data:`dgm.integrator.FAILURE_NAMES`), ``newton_iterations`` and ``constraint_residual``
        (``|g(u) - x_obs|_inf`` of each draw); which of them exist depends on the method. Run metadata (method,
        timings, settings, step sizes) is in the root's ``attrs`` (``dgm_*`` keys).
        """
        import arviz as az

        if self.store is not None:  # draws streamed to disk (dgm.runtime.draw_store): open them lazily
            tree = open_store_tree(self.store, self.latent_names)
            # the store's own bookkeeping (a dict: no NetCDF attribute type) gives way to the run's metadata
            tree.attrs = {**{k: v for k, v in tree.attrs.items() if not k.startswith("dgm_draw_store")},
                          **self.attributes()}
            return tree
        groups = {"posterior": {"z": self.latents, "u": self.inputs}, "sample_stats": schema_stats(self.stats)}
        dims = {"z": ["z_dim"] if self.latents.ndim == 3 else [], "u": ["u_dim"], "x": ["x_dim"]}
        coords = {}
        if self.latent_names is not None and self.latents.ndim == 3:
            coords["z_dim"] = list(self.latent_names)
        if self.x_obs is not None:
            groups["observed_data"] = {"x": np.asarray(self.x_obs)}
        if self.warmup_stats:
            groups["warmup_sample_stats"] = schema_stats(self.warmup_stats)
        if self.sites is not None:  # one variable per site, shaped as the program's; u as the unconstrained draws
            groups["posterior"] = _split_sites(np.asarray(self.latents), self.sites["latent"], lead=2)
            groups["unconstrained_posterior"] = {"u": self.inputs}
            if self.x_obs is not None:
                groups["observed_data"] = _split_sites(np.asarray(self.x_obs), self.sites["observed"], lead=0)
            dims = {"u": ["u_dim"]}
        tree = az.from_dict(groups, dims=dims, coords=coords or None, save_warmup=True)
        tree.attrs.update(self.attributes())
        return tree

    def attributes(self) -> dict:
        """The run's metadata as ``dgm_*`` attributes (JSON strings and floats: NetCDF and Zarr can store them);
        :func:`result_from_attributes` reads them back."""
        return {
            "dgm_method": self.method,
            "dgm_wall_time": float(self.wall_time),
            "dgm_compile_time": float(self.compile_time),
            "dgm_setup_time": float(self.setup_time),
            "dgm_unrecorded_failures": json.dumps(self.unrecorded_failures),
            "dgm_kernel": json.dumps(self.kernel),
            "dgm_max_residual": float(self.max_residual),
            "dgm_epsilon": float("nan") if self.epsilon is None else float(self.epsilon),
            "dgm_step_size": json.dumps(np.asarray(self.step_size, dtype=float).tolist()),
            "dgm_settings": json.dumps(self.settings, default=str),
            "dgm_latent_names": json.dumps(self.latent_names),
            "dgm_components": json.dumps(None if self.components is None else self.components.to_dict()),
            "dgm_sites": json.dumps(self.sites),
        }

    # -- summaries --------------------------------------------------------------------------------------------
    def summary(self, var=None):
        """``pandas.DataFrame``: mean, sd, MCSE, bulk/tail ESS, R-hat (arviz-stats), ESS per second, max residual.

        ``var``: a posterior variable or a list of them; default ``"z"``, or every site of a model that names them.

        ESS per second divides bulk ESS by :attr:`wall_time` (warm-up + sampling, compilation excluded).
        """
        import arviz as az

        if var is None:
            var = [n for n, _ in self.sites["latent"]] if self.sites is not None else "z"
        var_names = [var] if isinstance(var, str) else list(var)
        table = az.summary(self.to_arviz(), var_names=var_names, kind="all", round_to="none")
        table = table[["mean", "sd", "mcse_mean", "ess_bulk", "ess_tail", "r_hat"]].astype(float)
        table["ess_per_sec"] = table["ess_bulk"] / max(self.wall_time, 1e-12)
        table["max_residual"] = self.max_residual
        if self.components is not None:  # per-component chain counts (dgm.components)
            table.attrs["components"] = self.components.to_dict()
            table.attrs["components_text"] = self.components.describe()
        return table

    def component_table(self):
        """``pandas.DataFrame``, one row per manifold component occupied: chains with draws in it and the share of
        the checked draws (``None`` when components were not checked)."""
        import pandas as pd

        if self.components is None:
            return None
        c = self.components
        return pd.DataFrame({"chains": c.chains_per_component, "draw_fraction": c.draw_fractions},
                            index=pd.Index(range(c.n_components), name="component"))

    def __repr__(self) -> str:
        counts = self.rejection_counts()
        failures = ", ".join(f"{k}={v}" for k, v in counts.items()) if counts else "n/a"
        return (
            f"Result(method={self.method!r}, chains={self.n_chains}, draws={self.n_draws}, "
            f"acceptance={self.acceptance_rate:.3f}, failures: {failures}, wall_time={self.wall_time:.2f}s, "
            f"compile_time={self.compile_time:.2f}s, max_residual={self.max_residual:.2e}"
            + ("" if self.components is None else f", components: {self.components.describe()}") + ")"
        )

    # -- persistence ----------------------------------------------------------------------------------------
    def save(self, path) -> None:
        """Write the :meth:`to_arviz` tree: NetCDF (h5netcdf) unless ``path`` ends in ``.zarr`` (a Zarr store).

        Both load with :func:`dgm.load` and with ``arviz.from_netcdf`` / ``arviz.from_zarr``.
        """
        tree = self.to_arviz()
        if _is_zarr(path):
            tree.to_zarr(str(path), mode="w", consolidated=False)
        else:
            tree.to_netcdf(str(path), engine="h5netcdf")


def _is_zarr(path) -> bool:
    return str(path).rstrip("/").endswith(".zarr")


def load(path) -> Result:
    """Read a :class:`Result` written by :meth:`Result.save` (NetCDF or Zarr).

    ``path`` may also be a checkpoint directory of ``dgm.sample(..., checkpoint=DIR)`` (its ``draws.zarr`` is read;
    :func:`dgm.runtime.draw_store.open_result` opens it lazily instead). Files written before dgm moved to ArviZ 1.x (an ``InferenceData`` NetCDF with the run's metadata on the
    ``posterior`` group and the kernels' statistic names) load too.
    """
    import xarray as xr

    from pathlib import Path

    if not Path(path).exists():
        raise FileNotFoundError(f"no dgm result at {str(path)!r}")
    if Path(path).is_dir() and (Path(path) / "draws.zarr").is_dir():  # a checkpoint directory: its draw store
        path = Path(path) / "draws.zarr"
    try:
        options = {"engine": "zarr", "consolidated": False} if _is_zarr(path) else {"engine": "h5netcdf"}
        tree = xr.open_datatree(str(path), **options).load()
    except Exception as error:  # noqa: BLE001 - any reader failure means the file is not a dgm result
        raise ValueError(f"{str(path)!r} is not a readable NetCDF/Zarr file: {error}") from error
    groups = {name.strip("/") for name in tree.groups}
    attrs = dict(tree.attrs) if "dgm_method" in tree.attrs else dict(tree["posterior"].attrs)
    if "posterior" not in groups or "dgm_method" not in attrs:
        raise ValueError(f"{str(path)!r} was not written by dgm (no posterior group with dgm_* metadata)")

    def group_arrays(name):
        return schema_stats({k: v.values for k, v in tree[name].data_vars.items()}) if name in groups else {}

    sites = json.loads(attrs.get("dgm_sites", "null"))
    if sites is not None:  # a model that names its sites (to_arviz: one variable per site, u apart)
        latents = _join_sites(tree["posterior"], sites["latent"], lead=2)
        inputs = tree["unconstrained_posterior"]["u"].values
        x_obs = _join_sites(tree["observed_data"], sites["observed"], lead=0) if "observed_data" in groups else None
    else:
        latents, inputs = tree["posterior"]["z"].values, tree["posterior"]["u"].values
        x_obs = tree["observed_data"]["x"].values if "observed_data" in groups else None
    return result_from_attributes(attrs, latents=latents, inputs=inputs, stats=group_arrays("sample_stats"),
                                  warmup_stats=group_arrays("warmup_sample_stats"), x_obs=x_obs)


def _split_sites(flat: np.ndarray, sites, lead: int) -> dict:
    """``{name: array}`` from the last axis of ``flat`` cut into the ``[[name, shape], ...]`` blocks."""
    out, start = {}, 0
    for name, shape in sites:
        size = int(np.prod(shape, dtype=int))
        out[name] = flat[..., start:start + size].reshape(flat.shape[:lead] + tuple(shape))
        start += size
    return out


def _join_sites(group, sites, lead: int) -> np.ndarray:
    """The inverse of :func:`_split_sites` on an xarray group."""
    parts = [np.asarray(group[name].values).reshape(group[name].shape[:lead] + (-1,)) for name, _ in sites]
    return np.concatenate(parts, axis=-1)


def result_from_attributes(attrs: dict, *, latents, inputs, stats: dict, warmup_stats: dict, x_obs,
                           store: Optional[str] = None) -> Result:
    """The one way a :class:`Result` is rebuilt from stored metadata (the ``dgm_*`` attributes of
    :meth:`Result.attributes`) and its arrays: :func:`load` (in memory) and
    :func:`dgm.runtime.draw_store.open_result` (lazily, ``store`` naming the draw store). Attributes that files of
    earlier releases lack take their defaults."""
    epsilon = float(attrs["dgm_epsilon"])
    return Result(
        latents=latents,
        inputs=inputs,
        stats=stats,
        step_size=np.asarray(json.loads(attrs["dgm_step_size"])),
        wall_time=float(attrs["dgm_wall_time"]),
        compile_time=float(attrs["dgm_compile_time"]),
        method=str(attrs["dgm_method"]),
        max_residual=float(attrs["dgm_max_residual"]),
        x_obs=x_obs,
        epsilon=None if np.isnan(epsilon) else epsilon,
        settings=json.loads(attrs["dgm_settings"]),
        warmup_stats=warmup_stats,
        latent_names=json.loads(attrs.get("dgm_latent_names", "null")),
        setup_time=float(attrs.get("dgm_setup_time", 0.0)),
        unrecorded_failures=json.loads(attrs.get("dgm_unrecorded_failures", "{}")),
        kernel=json.loads(attrs.get("dgm_kernel", "null")),
        components=ComponentReport.from_dict(json.loads(attrs.get("dgm_components", "null"))),
        store=store,
        # a draw store keeps z and u (to_arviz opens it as written); in memory, one variable per named site
        sites=json.loads(attrs.get("dgm_sites", "null")) if store is None else None,
    )


def open_store_tree(path, latent_names=None):
    """A draw store (:mod:`dgm.runtime.draw_store`) as an ArviZ ``xarray.DataTree``, opened lazily (nothing is read
    until used)."""
    import xarray as xr

    tree = xr.open_datatree(str(path), engine="zarr", consolidated=False)
    if latent_names is not None and "posterior" in tree.children and "z_dim" in tree["posterior"].dims:
        tree["posterior"] = tree["posterior"].to_dataset().assign_coords(z_dim=list(latent_names))
    return tree
