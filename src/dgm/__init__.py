"""dgm: asymptotically exact inference in differentiable generative models."""

from dgm.model import GenerativeModel

__all__ = ["GenerativeModel"]
__version__ = "0.1.0"
