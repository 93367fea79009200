"""Pytest plugin: how close does every ``np.testing.assert_allclose`` come to its tolerance?

A tolerance met with a margin of 1.5x is one compiler release from failing. Run

    python -m pytest -p scripts.tolerance_margins tests/...     (from the repository root)

and the plugin prints, at the end, every call whose worst element used more than ``DGM_MARGIN_REPORT`` (default 0.1)
of its allowance ``atol + rtol |desired|``, largest first, with the test and line that made it.
"""

from __future__ import annotations

import os
import traceback

import numpy as np
import pytest

_RECORDS: list[tuple[float, str, str]] = []
_original = np.testing.assert_allclose


def _recording_assert_allclose(actual, desired, rtol=1e-7, atol=0, equal_nan=True, err_msg="", verbose=True, **kw):
    try:
        a = np.asarray(actual, dtype=np.float64)
        d = np.asarray(desired, dtype=np.float64)
        allowance = atol + rtol * np.abs(d)
        err = np.abs(a - d)
        finite = np.isfinite(err)
        with np.errstate(divide="ignore", invalid="ignore"):
            used = np.where(allowance > 0, err / allowance, np.where(err > 0, np.inf, 0.0))
        worst = float(np.max(used[finite])) if finite.any() else 0.0
        frame = next((f for f in reversed(traceback.extract_stack()[:-1]) if "/tests/" in f.filename), None)
        where = f"{os.path.basename(frame.filename)}:{frame.lineno}" if frame else "?"
        _RECORDS.append((worst, where, os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0]))
    except (TypeError, ValueError):
        pass
    return _original(actual, desired, rtol=rtol, atol=atol, equal_nan=equal_nan, err_msg=err_msg, verbose=verbose, **kw)


np.testing.assert_allclose = _recording_assert_allclose


def pytest_terminal_summary(terminalreporter):
    threshold = float(os.environ.get("DGM_MARGIN_REPORT", "0.1"))
    close = sorted({r for r in _RECORDS if r[0] > threshold}, reverse=True)
    terminalreporter.section(f"assert_allclose calls using > {threshold:.0%} of their tolerance ({len(_RECORDS)} calls)")
    for used, where, test in close:
        terminalreporter.write_line(f"{used:8.3f}  {where:40s} {test}")
