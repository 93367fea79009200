"""Chains (or observations) laid out over a 1-D device mesh with ``jax.sharding``; the same code on one host or many.

``dgm.sample(..., chain_method="sharded")`` runs the engine's compiled chunk program
(:func:`dgm.runtime.engine.chunk_program`, passed in as an argument: nothing here imports the engine) under
``jax.shard_map`` over a one-axis :class:`jax.sharding.Mesh`: every per-chain array (states, dual-averaging state,
metric state, step sizes) has its leading chain axis split over the devices (``NamedSharding(mesh, P(axis))``), the
observation, keys and flags are replicated, and each device ``vmap``s its own ``n_chains / n_devices`` chains.
Nothing is communicated between devices inside the program (chains are independent); the recorded draws are brought
to the host after each chunk (:func:`to_host`: an all-gather across processes when the mesh spans hosts).


**Same draws on any layout.** The single-device program gives chain ``c`` the transition key
``random.split(key, n_chains)[c]``; the sharded one computes the same global split on every device and takes its
slice (``axis_index * n_local``), and every other random choice is made on the host from the seed alone, so a run
with the same seed makes the same random choices on 1, 2 or 4 devices and on one process or several. The draws are
bit-identical whenever the per-device programs round alike: always between layouts with the same chains per device
(two processes x 1 device = one process with a mesh of 2, tested bit for bit), and on CPU between a one-device
``vmap`` of ``n`` chains and ``k`` devices of ``n / k`` chains when ``n / k >= 4``; with fewer chains per device,
XLA's scalar remainder loops round differently from its 4-wide SIMD loops (measured: 5e-16 after one transition,
1e-9 after 50 warm-up iterations; ``XLA_FLAGS=--xla_cpu_prefer_vector_width=64`` removes the difference at a large
compile-time cost). ``tests/test_sharding.py`` compares layouts to 1e-9 (a layout-dependent key split differs by
order 1).

:func:`sharded_program` is the general piece (``jit`` of ``shard_map`` with explicit in/out shardings, arguments
placed as global arrays with :func:`jax.make_array_from_callback`, which works unchanged when the mesh spans several
processes); :func:`dgm.sample_many` uses it to shard observations instead of chains.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = ["chain_mesh", "check_chain_layout", "sharded_program", "sharded_chain_programs", "to_host", "place"]


def chain_mesh(devices: Sequence | None = None, axis_name: str = "chains") -> Mesh:
    """A one-axis mesh over ``devices`` (default ``jax.devices()``: every device of every process, in process order,
    so on several hosts process ``p`` holds a contiguous block of chains)."""
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("chain_mesh needs at least one device")
    return Mesh(np.asarray(devices, dtype=object), (axis_name,))


def _axis(mesh) -> str:
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}")
    if len(mesh.axis_names) != 1:
        raise ValueError(f"the chain mesh must have one axis, got axes {mesh.axis_names} (shape {dict(mesh.shape)})")
    return mesh.axis_names[0]


def check_chain_layout(n: int, mesh: Mesh, what: str = "n_chains") -> int:
    """``n // mesh.size`` (items per device); ``ValueError`` when the mesh's size does not divide ``n``."""
    _axis(mesh)
    size = int(mesh.devices.size)
    if n % size:
        raise ValueError(
            f"{what}={n} cannot be laid out over a mesh of {size} devices: the number of devices must divide "
            f"{what} (use a multiple of {size}, e.g. {size * max(1, -(-n // size))}, or a mesh of fewer devices)")
    return n // size


def to_host(tree):
    """Every leaf as a NumPy array holding the *global* value: arrays with shards on other processes are gathered
    (``multihost_utils.process_allgather``, a collective: every process must call it)."""
    from jax.experimental import multihost_utils

    def one(leaf):
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
        return np.asarray(leaf)

    return jax.tree_util.tree_map(one, tree)


def place(tree, sharding: NamedSharding):
    """Every leaf as a global ``jax.Array`` with ``sharding``. Leaves already laid out so pass through; others are
    built from their (global) host value with :func:`jax.make_array_from_callback`, each process supplying its
    devices' slices (so every process must hold the same global value, as the driver's host code guarantees: it is
    computed from the seed alone)."""

    def one(leaf):
        if isinstance(leaf, jax.Array) and leaf.sharding.is_equivalent_to(sharding, leaf.ndim):
            return leaf
        host = to_host(leaf) if isinstance(leaf, jax.Array) else np.asarray(leaf)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree_util.tree_map(one, tree)


def _abstract(tree, sharding):
    return jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(np.shape(a), a.dtype, sharding=sharding), tree)


def sharded_program(fn: Callable, mesh: Mesh, sharded: Sequence[bool], out_specs, example_args,
                    host_outputs: Sequence[int] = ()):
    """Compile ``fn`` as ``jit(shard_map(fn))`` over the one-axis ``mesh`` and return a callable running it.

    ``sharded[i]``: whether argument ``i`` has its leading axis split over the devices (each device's ``fn`` sees its
    block; others are replicated). ``out_specs``: ``shard_map`` partition specs of the outputs (a tuple, one prefix
    per output). ``example_args``: arrays or ``ShapeDtypeStruct`` s of the *global* shapes, used to compile ahead of
    the first call. The callable places its arguments (:func:`place`) and returns the outputs as global arrays,
    except those whose positions are in ``host_outputs``, returned as NumPy (:func:`to_host`).
    """
    axis = _axis(mesh)
    split, whole = NamedSharding(mesh, PartitionSpec(axis)), NamedSharding(mesh, PartitionSpec())
    in_specs = tuple(PartitionSpec(axis) if s else PartitionSpec() for s in sharded)
    in_shardings = tuple(split if s else whole for s in sharded)
    out_shardings = jax.tree_util.tree_map(lambda spec: NamedSharding(mesh, spec), out_specs,
                                           is_leaf=lambda x: isinstance(x, PartitionSpec))
    # check_vma=False: the per-device program carries loop state that starts replicated (zeros) and becomes
    # per-device; nothing in it communicates, so there is no replication to check
    mapped = jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)
    compiled = jax.jit(mapped, in_shardings=in_shardings, out_shardings=out_shardings).lower(
        *(_abstract(a, s) for a, s in zip(example_args, in_shardings))).compile()
    host_outputs = frozenset(host_outputs)

    def run(*args):
        outputs = compiled(*(place(a, s) for a, s in zip(args, in_shardings)))
        if not host_outputs:
            return outputs
        return tuple(to_host(o) if i in host_outputs else o for i, o in enumerate(outputs))

    run.compiled = compiled
    return run


def sharded_chain_programs(chunk_program: Callable, method_at, model, n_chains: int, chunk_size: int, mesh: Mesh,
                           da_like, x, mm_like):
    """The engine's ``(init, chunk)`` programs with the chains split over ``mesh`` (see the module docstring).

    ``chunk_program(method_at, model, n_chains, chunk_size, chain_method, chain_keys=...)`` builds the per-device
    chunk function (:func:`dgm.runtime.engine.chunk_program`); here it gets this device's ``n_chains / n_devices``
    chains and their slice of the global key split.

    ``init(positions, x_obs) -> states`` and ``chunk(states, da_state, mm_state, step_sizes, key, x_obs, adapt,
    n_active, n_sub, schedule) -> (states, da_state, mm_state, outputs)`` take and return the same global shapes as
    the single-device programs of :func:`dgm.runtime.engine.compile_programs`; ``outputs`` come back as NumPy
    arrays.
    """
    axis = _axis(mesh)
    n_local = check_chain_layout(n_chains, mesh)

    def chain_keys(key):  # the single-device program's keys for all chains; this device's block of them
        keys = jax.random.split(key, n_chains)
        return jax.lax.dynamic_slice_in_dim(keys, jax.lax.axis_index(axis) * n_local, n_local)

    def init_fn(positions, x_obs):
        return jax.vmap(method_at(x_obs).init)(positions)

    positions_like = jax.ShapeDtypeStruct((n_chains, model.input_dim), jnp.float64)
    states_like = jax.eval_shape(init_fn, positions_like, x)
    chains, whole = PartitionSpec(axis), PartitionSpec()
    init = sharded_program(init_fn, mesh, (True, False), chains, (positions_like, x))
    run = chunk_program(method_at, model, n_local, chunk_size, "sharded", chain_keys=chain_keys)
    scalar_int = jax.ShapeDtypeStruct((), jnp.int32)
    example = (states_like, da_like, mm_like, jax.ShapeDtypeStruct((n_chains,), jnp.float64),
               jax.ShapeDtypeStruct((2,), jnp.uint32), x, jax.ShapeDtypeStruct((), jnp.bool_), scalar_int,
               scalar_int, jax.ShapeDtypeStruct((chunk_size, 2), jnp.bool_))
    chunk = sharded_program(run, mesh, (True, True, True, True, False, False, False, False, False, False),
                            (chains, chains, chains, PartitionSpec(None, axis)), example, host_outputs=(3,))
    return init, chunk

