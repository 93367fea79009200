"""Runs that survive and scale: checkpoint and resume of :func:`dgm.sample` (:mod:`dgm.runtime.checkpoint`), draws
streamed to an on-disk Zarr store instead of memory (:mod:`dgm.runtime.draw_store`), chains over devices and hosts
(:mod:`dgm.runtime.sharding`, :mod:`dgm.runtime.distributed`) and many observations at once
(:mod:`dgm.runtime.batch`)."""
