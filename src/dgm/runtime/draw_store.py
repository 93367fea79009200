"""Draws on disk: each chunk's draws and statistics appended to a Zarr store that ArviZ reads as a ``DataTree``.

Layout (Zarr format 3, one group per ArviZ group, the dimension names :meth:`dgm.Result.to_arviz` uses)::

    posterior/z            (chain, draw, z_dim)      latents z = latents(u)
    posterior/u            (chain, draw, u_dim)      generator inputs
    sample_stats/<name>    (chain, draw)             per-draw statistics (ArviZ schema names)
    warmup_sample_stats/<name>                       the same for the warm-up
    observed_data/x        (x_dim,)
    root attributes        the ``dgm_*`` metadata of :meth:`dgm.Result.to_arviz`, written when the run finishes

The arrays are allocated at their final size when the run starts, with Zarr chunks of whole driver chunks (about
``CHUNK_BYTES`` each: per-draw statistics take few files); each flush writes at known offsets (no resize, no metadata
rewrite), zarr-python writes each chunk file atomically (a partly written chunk is read, updated and replaced), and a
resumed run simply writes again what its checkpoint does not account for. The store is read with
``xarray.open_datatree(path, engine="zarr")`` — ArviZ's own reader — lazily; :func:`open_result` wraps it as a
:class:`dgm.Result` whose arrays load on first use (:class:`LazyArray`), so a run larger than memory can still be
summarised one variable at a time. Written by hand
(zarr-python does the storage): only the write-per-chunk bookkeeping; xarray's ``to_zarr(append_dim=...)`` re-reads
and rewrites the store's metadata on every append, several times slower per checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from numpy.lib.mixins import NDArrayOperatorsMixin

from dgm.result import open_store_tree, result_from_attributes

CHUNK_BYTES = 1 << 20
"""Target size of a Zarr chunk (at least one driver chunk of draws)."""

def _dims(group: str, name: str, ndim: int) -> list[str]:
    extra = ndim - 2
    if group == "posterior" and extra == 1:
        return ["chain", "draw", f"{name}_dim"]
    return ["chain", "draw"] + [f"{name}_dim_{i}" for i in range(extra)]


class DrawStore:
    """A Zarr store of one run's draws, its arrays allocated at their final size and filled chunk by chunk (see the
    module docstring for the layout)."""

    def __init__(self, path, chunk_size: int):
        import zarr

        self.path = Path(path)
        self.chunk_size = int(chunk_size)
        self.root = zarr.open_group(str(self.path), mode="a", zarr_format=3)
        self.sizes = json.loads(self.root.attrs.get("dgm_draw_store_sizes", "{}"))
        self._arrays: dict = {}
        self._groups: dict = {}

    @classmethod
    def create(cls, path, chunk_size: int, x_obs, sizes: dict) -> "DrawStore":
        """A new store for ``sizes[group]`` draws per group (``warmup_sample_stats``: the warm-up iterations,
        ``posterior`` and ``sample_stats``: the kept draws)."""
        import zarr

        root = zarr.open_group(str(path), mode="w", zarr_format=3)
        x = np.asarray(x_obs, dtype=np.float64)
        observed = root.create_group("observed_data")
        observed.create_array("x", shape=x.shape, dtype=x.dtype, dimension_names=["x_dim"])[...] = x
        root.attrs["dgm_draw_store_sizes"] = json.dumps({k: int(v) for k, v in sizes.items()})  # a string: NetCDF
        # attributes cannot hold a dict, and Result.save writes these to NetCDF
        return cls(path, chunk_size)

    def _array(self, group: str, name: str, like: np.ndarray):
        key = (group, name)
        if key not in self._arrays:
            if group not in self._groups:  # the group, and the arrays already there (a resumed run), listed once
                target = self.root.require_group(group)
                self._groups[group] = (target, dict(target.arrays()))
            target, existing = self._groups[group]
            if name in existing:
                self._arrays[key] = existing[name]
            else:
                total = max(1, int(self.sizes[group]))
                per_draw = max(1, like.nbytes // max(1, like.shape[1]))
                draws = min(total, self.chunk_size * max(1, CHUNK_BYTES // (per_draw * self.chunk_size)))
                self._arrays[key] = target.create_array(
                    name, shape=(like.shape[0], total) + like.shape[2:], dtype=like.dtype,
                    chunks=(like.shape[0], draws) + like.shape[2:], dimension_names=_dims(group, name, like.ndim))
        return self._arrays[key]

    def write(self, group: str, start: int, arrays: dict) -> None:
        """Write ``(chain, draw, ...)`` arrays at draws ``start, start + 1, ...`` of ``group``'s variables (created
        on first use)."""
        for name, value in arrays.items():
            value = np.asarray(value)
            self._array(group, name, value)[:, start:start + value.shape[1]] = value

    @property
    def open_groups(self) -> set:
        """The groups with arrays this store object has open (written by this process)."""
        return {group for group, _ in self._arrays}

    def arrays_of(self, group: str) -> dict:
        """``{name: zarr array}`` of ``group``'s arrays this store object has open."""
        return {name: array for (g, name), array in self._arrays.items() if g == group}

    def set_attrs(self, attrs: dict) -> None:
        self.root.update_attributes(attrs)  # one metadata write


class LazyArray(NDArrayOperatorsMixin):
    """A read-only array on disk (a Zarr array) that loads when used: ``shape``/``dtype``/``ndim`` without reading,
    ``a[...]`` reads the selection only, ``np.asarray(a)``, arithmetic, and any other ndarray attribute
    (``a.reshape``, ``a.mean``) read the whole array."""

    def __init__(self, array):
        self._array = array

    shape = property(lambda self: tuple(self._array.shape))
    dtype = property(lambda self: np.dtype(self._array.dtype))
    ndim = property(lambda self: len(self._array.shape))
    size = property(lambda self: int(np.prod(self._array.shape)))

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, index):
        return np.asarray(self._array[index])

    def __array__(self, dtype=None, copy=None):
        out = np.asarray(self._array[...])
        return out if dtype is None else out.astype(dtype)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        inputs = tuple(np.asarray(a) if isinstance(a, LazyArray) else a for a in inputs)
        return getattr(ufunc, method)(*inputs, **kwargs)

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(np.asarray(self), name)

    def __repr__(self):
        return f"LazyArray(shape={self.shape}, dtype={self.dtype}, store={self._array.store_path})"


def open_result(path, store: "DrawStore | None" = None):
    """The :class:`dgm.Result` of a finished run stored at ``path`` (a draw store), its arrays read lazily (from
    ``store``'s open arrays when given: the run that just wrote them).

    ``result.to_arviz()`` opens the store with xarray (lazily); ``dgm.load(path)`` reads it into memory instead."""
    import zarr

    root = zarr.open_group(str(path), mode="r", zarr_format=3) if store is None else store.root
    attrs = dict(root.attrs)
    if "dgm_method" not in attrs:
        raise ValueError(f"draw store {str(path)!r} holds no finished run (no dgm_* metadata)")

    def group(name):
        if store is not None:
            return {key: LazyArray(array) for key, array in store.arrays_of(name).items()}
        if name not in root.group_keys():
            return {}
        return {key: LazyArray(array) for key, array in root[name].arrays()}

    posterior = group("posterior")
    return result_from_attributes(attrs, latents=posterior["z"], inputs=posterior["u"], stats=group("sample_stats"),
                                  warmup_stats=group("warmup_sample_stats"),
                                  x_obs=np.asarray(root["observed_data"]["x"][...]), store=str(path))


open_tree = open_store_tree  # the store as a lazily opened ArviZ DataTree (dgm.result.open_store_tree)
