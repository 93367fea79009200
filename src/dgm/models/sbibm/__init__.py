"""The SBI benchmark's differentiable tasks as dgm generators (:mod:`.tasks`) and its files (:mod:`.files`)."""

from dgm.models.sbibm.files import (
    INSTALL_HINT, N_OBSERVATIONS, load_observation, load_reference_posterior, load_true_parameters, sbibm_root,
)
from dgm.models.sbibm.tasks import NOT_DIFFERENTIABLE, TASKS, SbibmTask, get_task

__all__ = [
    "TASKS", "NOT_DIFFERENTIABLE", "SbibmTask", "get_task", "load_observation", "load_reference_posterior",
    "load_true_parameters", "sbibm_root", "N_OBSERVATIONS", "INSTALL_HINT",
]
