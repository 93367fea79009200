"""Runs that survive: checkpoint and resume of :func:`dgm.sample` (:mod:`dgm.runtime.checkpoint`) and draws
streamed to an on-disk Zarr store instead of memory (:mod:`dgm.runtime.draw_store`)."""
