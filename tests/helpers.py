import numpy as np

from conftest import mcse


def assert_mean_within(draws: np.ndarray, exact: float, n_se: float = 4.0, label: str = ""):
    """Assert that the chain average of ``draws`` (chain, draw) is within ``n_se`` Monte-Carlo standard errors."""
    estimate = float(np.mean(draws))
    se = mcse(draws)
    assert abs(estimate - exact) <= n_se * se, f"{label}: estimate {estimate:.5f} vs exact {exact:.5f} (MCSE {se:.2g})"


def mcse_distances(statistics: dict) -> dict:
    """``{name: |chain average - exact| / MCSE}`` for ``{name: (draws (chain, draw), exact)}``: how many Monte-Carlo
    standard errors each estimate is from its exact value (the test statistic of the exactness checks)."""
    return {name: abs(float(np.mean(draws)) - exact) / mcse(draws) for name, (draws, exact) in statistics.items()}
