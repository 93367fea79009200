"""How runs are executed. :mod:`dgm.runtime.engine` is the one sampling engine (plan, compiled chunk program and its
cache, host loop, assembling the :class:`dgm.Result`); the entry points are thin layers over it: one observation
(:func:`dgm.sample`, :mod:`dgm.driver`), many at once (:func:`dgm.sample_many`, :mod:`dgm.runtime.batch`),
checkpoint and resume (:mod:`dgm.runtime.checkpoint`, draws streamed to an on-disk Zarr store,
:mod:`dgm.runtime.draw_store`, settings pinned by :mod:`dgm.runtime.fingerprint`) and chains over devices and hosts
(:mod:`dgm.runtime.sharding`, which takes the engine's chunk function as an argument, and
:mod:`dgm.runtime.distributed`)."""
