import numpy as np

from conftest import mcse


def assert_mean_within(draws: np.ndarray, exact: float, n_se: float = 4.0, label: str = ""):
    """Assert that the chain average of ``draws`` (chain, draw) is within ``n_se`` Monte-Carlo standard errors."""
    estimate = float(np.mean(draws))
    se = mcse(draws)
    assert abs(estimate - exact) <= n_se * se, f"{label}: estimate {estimate:.5f} vs exact {exact:.5f} (MCSE {se:.2g})"
