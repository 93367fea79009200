"""A griffe extension for the documentation site: Sphinx roles in dgm's docstrings as inline code.

dgm's docstrings name other objects with Sphinx roles (``:func:`dgm.sample```, ``:mod:`dgm.structure```), which
Markdown would show verbatim. mkdocstrings (through griffe) calls :meth:`SphinxRoles.on_instance` for every object
it loads; the role prefix is dropped and the target kept as inline code. Nothing in griffe or mkdocstrings-python
does this (they parse Google/NumPy/Sphinx *sections*, not inline roles), hence these few lines.
Used from ``mkdocs.yml``: ``extensions: [scripts/griffe_sphinx_roles.py:SphinxRoles]``.
"""

from __future__ import annotations

import re

import griffe

ROLE = re.compile(r":(?:py:)?(?:class|func|mod|meth|attr|data|obj|exc|const):`~?([^`]+)`")


def strip_roles(text: str) -> str:
    """``:func:`dgm.sample``` -> ```dgm.sample```; ``:class:`~dgm.result.Result``` -> ```dgm.result.Result```."""
    return ROLE.sub(lambda match: f"`{match.group(1)}`", text)


class SphinxRoles(griffe.Extension):
    """Rewrite the Sphinx roles of every loaded docstring into Markdown inline code."""

    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = strip_roles(obj.docstring.value)
