"""The public exceptions of dgm, in one place (every module raises these; none defines its own).

Each is a subclass of the built-in a caller would already catch (``ValueError`` for bad input or a bad file,
``FileNotFoundError`` for a missing data package), so ``except ValueError`` keeps working. The command line maps
every one of them to a one-line message and exit status 2 (a user mistake, not a bug).
"""

from __future__ import annotations

__all__ = [
    "DgmError",
    "CheckpointError",
    "DatasetNotFoundError",
    "DatasetCorruptError",
    "ManifoldInitialisationError",
    "USER_ERRORS",
]


class DgmError(Exception):
    """Base class of dgm's own exceptions."""


class CheckpointError(DgmError, ValueError):
    """A checkpoint (a sampling run's directory or a trained VAE's files) is missing, not a checkpoint, corrupt
    beyond recovery, or of another run / model than the one asked for."""


class DatasetNotFoundError(DgmError, FileNotFoundError):
    """The package or file that carries a data set is not installed (the message says how to install it)."""


class DatasetCorruptError(DgmError, ValueError):
    """A data file's checksum, shapes or value ranges are not what they should be."""


class ManifoldInitialisationError(DgmError, ValueError):
    """No point within the tolerance of the manifold was found."""


USER_ERRORS = (ValueError, TypeError, FileNotFoundError, FileExistsError, PermissionError, NotADirectoryError,
               IsADirectoryError)
"""What the command line treats as a user mistake (one line on stderr, exit status 2); anything else is a bug and
keeps its traceback."""
