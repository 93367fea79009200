"""CPU thread configuration for dgm's command line and benchmarks: the one place it is defined.

Small float64 linear algebra on a few cores runs several times slower when XLA's and BLAS's thread pools fight over
the cores than with one thread each (measured: 4.5x on the Lotka-Volterra chains), and benchmark ratios are only
comparable under one stated setting. :func:`configure_cpu_threads` sets single-threaded defaults for XLA's CPU
runtime and for OpenMP / OpenBLAS / MKL / BLIS. It must run before NumPy and JAX are imported (BLAS reads its variables when
it is loaded, XLA when its backend starts), so this module imports neither, and ``import dgm.threads`` does not import
the rest of dgm. A user's own settings win: a variable already set is left alone, and an XLA flag already named in
``XLA_FLAGS`` is not added again.

Only real XLA flags are used: ``--xla_cpu_multi_thread_eigen=false`` (XLA's list of CPU flags has no intra-op thread
count; ``intra_op_parallelism_threads=1``, once advised here, is a TensorFlow session option, not a flag). XLA stops
parsing ``XLA_FLAGS`` at the first token that is not a ``--flag``, which silently drops every flag after it (and makes
JAX abort at start-up when it comes first), so :func:`configure_cpu_threads` removes such stray tokens with a warning.
"""

from __future__ import annotations

import os
import warnings

XLA_THREAD_FLAGS = ("--xla_cpu_multi_thread_eigen=false",)
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")


def configure_cpu_threads() -> dict:
    """Set single-threaded XLA / BLAS defaults in ``os.environ`` without overriding the user's; return the
    resulting values of ``XLA_FLAGS`` and the ``*_NUM_THREADS`` variables (benchmarks print them)."""
    tokens = os.environ.get("XLA_FLAGS", "").split()
    flags = [token for token in tokens if token.startswith("--")]
    stray = [token for token in tokens if not token.startswith("--")]
    if stray:
        warnings.warn(f"XLA_FLAGS: removed {' '.join(stray)!r}, which is not an XLA flag (XLA stops reading flags at it, "
                      "dropping the ones after it); write each flag as --name=value", RuntimeWarning, stacklevel=2)
    for flag in XLA_THREAD_FLAGS:
        name = flag.lstrip("-").split("=")[0]
        if not any(existing.lstrip("-").split("=")[0] == name for existing in flags):
            flags.append(flag)
    os.environ["XLA_FLAGS"] = " ".join(flags)
    for variable in THREAD_VARIABLES:
        os.environ.setdefault(variable, "1")
    return {key: os.environ[key] for key in ("XLA_FLAGS",) + THREAD_VARIABLES}
