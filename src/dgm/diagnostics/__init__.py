"""Diagnostics of samplers beyond ArviZ's per-run ones: simulation-based calibration (:func:`sbc`) and mode mixing
across chains (:func:`mode_mixing`)."""

from dgm.mixing import MixingReport, mode_mixing, warn_if_not_mixing
from dgm.diagnostics.sbc import SBCResult, sbc

__all__ = ["sbc", "SBCResult", "mode_mixing", "MixingReport", "warn_if_not_mixing"]
