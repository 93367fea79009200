"""Running samplers at scale: chains over devices and hosts (:mod:`dgm.runtime.sharding`,
:mod:`dgm.runtime.distributed`) and many observations at once (:mod:`dgm.runtime.batch`)."""
