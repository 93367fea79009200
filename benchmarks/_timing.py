"""Shared benchmark plumbing: thread configuration (set before JAX/NumPy import) and a robust timer."""

from __future__ import annotations

import os
import time

THREADS = {
    # One thread for XLA's CPU runtime and for BLAS: the machines have 2 cores and the pools fight over them
    # otherwise; every peer in a comparison runs under the same setting.
    "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


def configure_threads() -> dict:
    for key, value in THREADS.items():
        os.environ.setdefault(key, value)
    return {key: os.environ[key] for key in THREADS}


def best_time(fn, *args, repeats: int = 15, min_seconds: float = 0.3) -> float:
    """Best (minimum) seconds per call over ``repeats`` runs of a loop lasting at least ``min_seconds``."""
    import jax

    jax.block_until_ready(fn(*args))  # compile + warm
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    once = max(time.perf_counter() - start, 1e-7)
    loops = max(1, int(min_seconds / once))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(loops):
            out = fn(*args)
        jax.block_until_ready(out)
        best = min(best, (time.perf_counter() - start) / loops)
    return best
