"""Subprocess side of ``tests/test_sharding.py`` (JAX must start with several CPU devices / processes, which the test
process, already initialised, cannot). Run as ``python sharding_worker.py MODE OUT.npz``:

* ``layouts``: 4 CPU host devices; the same run vectorized on one device and sharded over meshes of 1, 2 and 4
  devices; ``sample_many`` of 3 observations unsharded and sharded over 2 devices (one padded observation); issue
  21's warm-up case (8 inputs, 3 outputs, seed 7, ``n_warmup=50``, step size adapted) with 4 and 16 chains (1 and 4
  per device), vectorized and sharded over 4 devices;
* ``distributed``: one of two processes (``DGM_*`` variables set by the test), each with one CPU device, running the
  sharded sample; every process writes the gathered result (its reference: ``layouts``' mesh of 2 devices, the same
  per-device program).
"""

import sys

import numpy as np

MODE, OUT = sys.argv[1], sys.argv[2]
if MODE == "distributed":
    import dgm.runtime.distributed

    info = dgm.runtime.distributed.initialize(timeout=120)
import jax  # noqa: E402

if MODE != "distributed":
    jax.config.update("jax_num_cpu_devices", 4)
import jax.numpy as jnp  # noqa: E402

import dgm  # noqa: E402
from dgm.runtime.sharding import chain_mesh  # noqa: E402

SETTINGS = dict(n_chains=8, n_warmup=20, n_samples=15, seed=3, progress=False, chunk_size=16)


def generator(u):
    return jnp.array([u[0] + u[1] ** 2 + 0.5 * u[2]])


MODEL = dgm.GenerativeModel(generator, 3, name="curved")


W = np.random.default_rng(0).normal(size=(3, 8))


def wide_generator(u):  # 8 inputs, 3 outputs, transcendental (tanh: XLA's SIMD and scalar loops round it apart)
    return jnp.asarray(W) @ jnp.tanh(u) + 0.1 * u[:3] ** 2


WIDE = dgm.GenerativeModel(wide_generator, 8, name="wide")
WIDE_X = np.asarray(wide_generator(jnp.asarray(np.random.default_rng(1).normal(size=8))))
ADAPTED = dict(n_warmup=50, n_samples=5, seed=7, progress=False, chunk_size=50)


def arrays(prefix, result):
    return {f"{prefix}_inputs": result.inputs, f"{prefix}_steps": result.step_size,
            f"{prefix}_acceptance": result.stats["acceptance_rate"]}


out = {}
with dgm.float64():
    if MODE == "layouts":
        out.update(arrays("vectorized", dgm.sample(MODEL, [0.7], chain_method="vectorized", **SETTINGS)))
        for n in (2, 4):
            result = dgm.sample(MODEL, [0.7], chain_method="sharded", mesh=chain_mesh(jax.devices()[:n]), **SETTINGS)
            out.update(arrays(f"sharded{n}", result))
        try:
            dgm.sample(MODEL, [0.7], chain_method="sharded", **dict(SETTINGS, n_chains=6))
        except ValueError as error:
            out["indivisible_error"] = np.asarray(str(error))
        xs = np.array([[0.7], [0.1], [-0.5]])
        many = dict(SETTINGS, n_chains=4, chain_method="sequential")
        whole = dgm.sample_many(MODEL, xs, **many)
        spread = dgm.sample_many(MODEL, xs, sharded=True, mesh=chain_mesh(jax.devices()[:2]), **many)
        for n_chains in (4, 16):  # adaptation on: 1 and 4 chains per device
            for layout, extra in (("vectorized", {}), ("sharded", dict(mesh=chain_mesh()))):
                result = dgm.sample(WIDE, WIDE_X, n_chains=n_chains, chain_method=layout, **extra, **ADAPTED)
                out.update(arrays(f"adapted{n_chains}_{layout}", result))
                out[f"adapted{n_chains}_{layout}_warmup_steps"] = result.warmup_stats["step_size"]
        out["many_whole"] = np.stack([r.inputs for r in whole])
        out["many_sharded"] = np.stack([r.inputs for r in spread])
    else:
        result = dgm.sample(MODEL, [0.7], chain_method="sharded", **SETTINGS)
        out.update(arrays("run", result))
        out["devices"] = np.asarray([jax.device_count(), jax.local_device_count(), jax.process_count()])
        try:  # a second initialisation that disagrees on the process count
            dgm.runtime.distributed.initialize(num_processes=3)
        except RuntimeError as error:
            out["mismatch_error"] = np.asarray(str(error))
        OUT = OUT.replace(".npz", f"_{info['process_id']}.npz")
np.savez(OUT, **out)
