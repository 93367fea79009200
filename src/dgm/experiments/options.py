"""Checks of command-line values shared by the experiments: each failure is a ``ValueError`` naming the option as the
user typed it, which :mod:`dgm.cli` prints as one line with exit status 2."""

from __future__ import annotations

import argparse

__all__ = ["flag", "require_at_least", "integer_list", "name_list"]


def flag(dest: str) -> str:
    """``"abc_thin"`` -> ``"--abc-thin"``."""
    return "--" + dest.replace("_", "-")


def require_at_least(args: argparse.Namespace, minimum: int, *dests: str) -> None:
    """Raise ``ValueError("--NAME must be >= minimum, got v")`` for the first option in ``dests`` below ``minimum``."""
    for dest in dests:
        value = getattr(args, dest)
        if value < minimum:
            raise ValueError(f"{flag(dest)} must be >= {minimum}, got {value}")


def integer_list(text: str, option: str) -> list[int]:
    """``"200,200"`` -> ``[200, 200]``; a ValueError naming ``option`` for anything else."""
    try:
        values = [int(t) for t in str(text).split(",") if t.strip()]
    except ValueError:
        raise ValueError(f"{option} must be comma-separated integers, got {text!r}") from None
    return values


def name_list(text: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``."""
    return [t.strip() for t in str(text).split(",") if t.strip()]
