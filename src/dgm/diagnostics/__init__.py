"""Diagnostics of samplers beyond ArviZ's per-run ones: simulation-based calibration (:func:`sbc`)."""

from dgm.diagnostics.sbc import SBCResult, sbc

__all__ = ["sbc", "SBCResult"]
