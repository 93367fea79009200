"""dgm: asymptotically exact inference in differentiable generative models.

Public face: :class:`GenerativeModel`, :func:`sample`, :class:`Result`, :func:`load`, :func:`float64`.
"""

from dgm.driver import sample
from dgm.model import GenerativeModel
from dgm.precision import float64
from dgm.result import Result, load

__all__ = ["GenerativeModel", "sample", "Result", "load", "float64"]
__version__ = "0.1.0"
