"""CPU thread configuration for dgm's command line and benchmarks: the one place it is defined.

Small float64 linear algebra on a few cores runs several times slower when XLA's and BLAS's thread pools fight over
the cores than with one thread each (measured: 4.5x on the Lotka-Volterra chains), and benchmark ratios are only
comparable under one stated setting. :func:`configure_cpu_threads` sets single-threaded defaults for XLA's CPU
runtime and for OpenMP / OpenBLAS / MKL / BLIS. It must run before NumPy and JAX are imported (BLAS reads its variables when
it is loaded, XLA when its backend starts), so this module imports neither, and ``import dgm.threads`` does not import
the rest of dgm. A user's own settings win: a variable already set is left alone, and an XLA flag already named in
``XLA_FLAGS`` is not added again.
"""

from __future__ import annotations

import os

XLA_THREAD_FLAGS = ("--xla_cpu_multi_thread_eigen=false", "intra_op_parallelism_threads=1")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")


def configure_cpu_threads() -> dict:
    """Set single-threaded XLA / BLAS defaults in ``os.environ`` without overriding the user's; return the
    resulting values of ``XLA_FLAGS`` and the ``*_NUM_THREADS`` variables (benchmarks print them)."""
    flags = os.environ.get("XLA_FLAGS", "").split()
    for flag in XLA_THREAD_FLAGS:
        name = flag.lstrip("-").split("=")[0]
        if not any(existing.lstrip("-").split("=")[0] == name for existing in flags):
            flags.append(flag)
    os.environ["XLA_FLAGS"] = " ".join(flags)
    for variable in THREAD_VARIABLES:
        os.environ.setdefault(variable, "1")
    return {key: os.environ[key] for key in ("XLA_FLAGS",) + THREAD_VARIABLES}
