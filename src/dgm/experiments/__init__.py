"""The paper's experiments, one ``dgm`` sub-command each, on a floor above the library (the library never imports
them).

Each experiment is a sub-package ``dgm.experiments.<name>`` whose ``__init__`` holds the command-line interface and
whose ``experiment`` module holds the science (``report`` its tables and figures where it has them):

* ``NAME``: the sub-command (``dgm NAME``); ``HELP``: one line for ``dgm --help``; ``DESCRIPTION``: the sub-command's
  ``--help`` text (what it runs, what it writes, how to scale it);
* ``PRESETS``: ``{"quick": {...}, "default": {...}[, "paper": {...}]}``, option name -> value: ``default`` gives the
  options' defaults, ``--quick`` (about a minute, used by the tests) and ``--paper`` (the paper's size, where there
  is one) replace the values of the options the user did not set;
* ``add_arguments(parser)``: the experiment's own options (the shared ``--out``, ``--seed``, ``--quick``,
  ``--paper``, ``--no-progress`` are added by :mod:`dgm.cli`);
* ``run(args) -> int``: runs it and returns the exit status; ``args.command_line`` is the command as typed (for the
  report), ``args.size`` the preset in force (``"quick"``, ``"default"`` or ``"paper"``).  A user mistake is raised
  as ``ValueError`` (or another of :data:`dgm.errors.USER_ERRORS`); :mod:`dgm.cli` turns it into one line on stderr
  and exit status 2.
"""

from __future__ import annotations

import importlib

__all__ = ["MODULES", "load_all"]

MODULES = ("lotka_volterra", "mnist_inpaint", "pose", "vae_benchmark", "hvae_gaussian", "sbibm")
"""The experiments, in the order ``dgm --help`` lists them."""


def load_all() -> list:
    """The experiment packages of :data:`MODULES`, imported."""
    return [importlib.import_module(f"dgm.experiments.{name}") for name in MODULES]
