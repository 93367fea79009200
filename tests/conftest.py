import os

from dgm.threads import configure_cpu_threads  # noqa: E402  (imports neither NumPy nor JAX)

# Tests must be reproducible and gentle on a 2-core machine: single-threaded XLA / BLAS, set before JAX starts.
configure_cpu_threads()
# No persistent compilation cache in the test run (test_compile_once.py turns it on in subprocesses of its own): the
# runs stay independent of what an earlier run left on disk.
os.environ.setdefault("DGM_COMPILATION_CACHE", "0")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

# Property tests draw the same examples on every run (a flaky test is a bug); no wall-clock deadline on a shared
# machine where JAX compiles inside the first examples.
settings.register_profile("dgm", derandomize=True, deadline=None, print_blob=True)
settings.load_profile("dgm")


def mcse(draws: np.ndarray) -> float:
    """Monte-Carlo standard error of the mean of ``draws`` (chain, draw), from ArviZ (accounts for autocorrelation)."""
    import arviz as az

    return float(az.mcse(np.asarray(draws, dtype=float)))


@pytest.fixture
def x64():
    import jax

    with jax.enable_x64(True):
        yield
