"""sbibm's observations, true parameters and reference posterior samples, read from the installed wheel.

sbibm 1.1.0 ships, for each task and observation ``k = 1..10``, ``tasks/<task>/files/num_observation_k/`` with
``observation.csv`` (one row), ``true_parameters.csv`` (one row) and ``reference_posterior_samples.csv.bz2``
(10,000 rows), each with a header line. They are read here with NumPy and ``bz2`` from where the package is
installed, found with ``importlib.util.find_spec`` *without importing it*: sbibm's own modules need torch and pyro,
which dgm does not (``pip install --no-deps sbibm==1.1.0`` installs just the files). Nothing is downloaded.
"""

from __future__ import annotations

import bz2
import importlib.util
from pathlib import Path

import numpy as np

from dgm.errors import DatasetCorruptError, DatasetNotFoundError

SBIBM_VERSION = "1.1.0"
N_OBSERVATIONS = 10
INSTALL_HINT = f"pip install --no-deps sbibm=={SBIBM_VERSION}"


def sbibm_root() -> Path:
    """The installed ``sbibm`` package's directory (``DatasetNotFoundError`` with the install command if missing)."""
    spec = importlib.util.find_spec("sbibm")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetNotFoundError(
            f"the sbibm package (its reference posteriors and observations) is not installed: run `{INSTALL_HINT}` "
            "(--no-deps: dgm reads its files only, without torch or pyro)"
        )
    return Path(list(spec.submodule_search_locations)[0])


def observation_dir(task: str, number: int) -> Path:
    """``<sbibm>/tasks/<task>/files/num_observation_<number>`` (checked to exist)."""
    if isinstance(number, bool) or not isinstance(number, (int, np.integer)) or not 1 <= number <= N_OBSERVATIONS:
        raise ValueError(f"observation number must be an integer in 1..{N_OBSERVATIONS}, got {number!r}")
    path = sbibm_root() / "tasks" / task / "files" / f"num_observation_{int(number)}"
    if not path.is_dir():
        raise DatasetNotFoundError(f"{path} does not exist: is sbibm {SBIBM_VERSION} installed ({INSTALL_HINT}), and "
                                   f"is {task!r} one of its tasks?")
    return path


def _read_csv(path: Path, columns: int, rows: int | None = None) -> np.ndarray:
    opener = bz2.open if path.suffix == ".bz2" else open
    try:
        with opener(path, "rt") as handle:
            values = np.loadtxt(handle, delimiter=",", skiprows=1, ndmin=2, dtype=np.float64)
    except FileNotFoundError:
        raise DatasetNotFoundError(f"{path} is missing from the sbibm installation ({INSTALL_HINT})") from None
    except (OSError, ValueError, EOFError) as error:
        raise DatasetCorruptError(f"{path} cannot be read as sbibm's CSV: {error}") from None
    if values.shape[1] != columns or (rows is not None and values.shape[0] != rows):
        raise DatasetCorruptError(f"{path} has shape {values.shape}, expected ({rows or 'n'}, {columns})")
    if not np.all(np.isfinite(values)):
        raise DatasetCorruptError(f"{path} contains non-finite values")
    return values


def load_observation(task: str, number: int, n_data: int) -> np.ndarray:
    """Observation ``number`` of ``task``: ``(n_data,)`` float64."""
    return _read_csv(observation_dir(task, number) / "observation.csv", n_data, 1)[0]


def load_true_parameters(task: str, number: int, n_parameters: int) -> np.ndarray:
    """The parameters that simulated observation ``number``: ``(n_parameters,)``."""
    return _read_csv(observation_dir(task, number) / "true_parameters.csv", n_parameters, 1)[0]


def load_reference_posterior(task: str, number: int, n_parameters: int) -> np.ndarray:
    """sbibm's 10,000 reference posterior samples for observation ``number``: ``(10000, n_parameters)``."""
    return _read_csv(observation_dir(task, number) / "reference_posterior_samples.csv.bz2", n_parameters, 10_000)
