"""dgm: asymptotically exact inference in differentiable generative models.

Public face: :class:`GenerativeModel`, :func:`sample`, :func:`sample_many`, :class:`Result`, :func:`load`,
:func:`float64`, :class:`Symmetry`.

The names are imported on first use (PEP 562), so ``import dgm.threads`` can configure CPU threads before NumPy and
JAX are loaded (see :mod:`dgm.threads`).
"""

import importlib

_PUBLIC = {
    "sample": "dgm.driver",
    "sample_many": "dgm.runtime.batch",
    "GenerativeModel": "dgm.model",
    "float64": "dgm.precision",
    "Result": "dgm.result",
    "load": "dgm.result",
    "Symmetry": "dgm.symmetry",
    "from_numpyro": "dgm.interop.numpyro",
}

__all__ = ["GenerativeModel", "sample", "sample_many", "Result", "load", "float64", "Symmetry"]
__version__ = "0.1.0"


def __getattr__(name):
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    try:  # a submodule used as an attribute, e.g. ``dgm.initialise`` after ``import dgm``
        return importlib.import_module(f"dgm.{name}")
    except ModuleNotFoundError as error:
        if error.name != f"dgm.{name}":
            raise
    raise AttributeError(f"module 'dgm' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
