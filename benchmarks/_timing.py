"""Shared benchmark plumbing: a robust timer (thread configuration: :mod:`dgm.threads`)."""

from __future__ import annotations

import time


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
