r"""Pin-hole cameras and their prior (Appendix E's CAMERAMATRIX / PROJECT, Algorithm 2's ``z_c``).

**Geometry.** Scene frame as in :mod:`dgm.models.pose.skeleton` (root at the origin, Y up, the character facing
``-Z`` at zero heading). A camera has a fixed orientation (optical axis ``+Z``, image x along ``X``, image y along
``Y``: the paper fixes the orientation because the root joint's rotation already carries the relative
camera-skeleton orientation) and sits at ``(c_x, c_y, -d)`` with depth ``d > 0``. A point ``p`` projects to

    x_img = f (p_X - c_x) / (p_Z + d),    y_img = f (p_Y - c_y) / (p_Z + d)

(normalised image coordinates, focal length ``f``; the homogeneous form is ``C = [f I_2 | -f c_{xy}; 0 0 1 | d]``
applied to ``(p, 1)``). The *binocular* rig is two such cameras at ``c_x -+ b/2`` (known baseline ``b``, same
``c_y`` and ``d``); the observation is both cameras' projections concatenated, camera 1 first, each flattened
point by point as ``(x_1, y_1, x_2, y_2, ...)``.

**Prior** (Algorithm 2): ``c_x = mu_x + s_x u_0``, ``c_y = mu_y + s_y u_1``, ``d = exp(mu_d + s_d u_2)`` (log-normal
depth, positive) with ``u_c ~ N(0, I_3)``. The paper's text gives no values; the defaults are those of the authors'
binocular-pose notebook (``matt-graham/differentiable-generative-models``, ``Pose inference (binocular).ipynb``):
``c_x, c_y ~ N(0, 0.1^2)`` m, ``log d ~ N(1.5, 0.5^2)`` (median depth ``e^1.5 = 4.5`` m), focal length ``f = e^2 =
7.39`` and a stereo baseline ``b = 0.5`` m. At the median depth one image unit is ``d / f = 0.61`` m at the person,
so the model's observation noise ``sigma = 0.001`` (:data:`dgm.models.pose.model.NOISE_SCALE`, the notebook's
``output_noise_std``) is 0.6 mm there, and the stereo depth resolution ``d^2 sqrt(2) sigma / (f b)`` is about 8 mm
per point.

A point at or behind a camera's plane (``p_Z + d <= 0``) has no projection: :func:`check_in_front` refuses such
scenes with a clear error, and inside a chain the generator returns NaN there (a counted rejection).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

MIN_DEPTH = 1e-3
"""Depth (m) below which a point counts as behind the camera."""


@dataclasses.dataclass(frozen=True)
class CameraPrior:
    """Prior of the camera position and the fixed intrinsics (module docstring)."""

    x_mean: float = 0.0
    x_sd: float = 0.1
    y_mean: float = 0.0
    y_sd: float = 0.1
    log_depth_mean: float = 1.5
    log_depth_sd: float = 0.5
    focal: float = math.exp(2.0)
    baseline: float = 0.5

    def __post_init__(self):
        for name in ("x_sd", "y_sd", "log_depth_sd", "focal", "baseline"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v > 0):
                raise ValueError(f"CameraPrior.{name} must be positive and finite, got {v!r}")

    def position(self, u_c: Array) -> Array:
        """``(c_x, c_y, d)`` from the three standard-normal camera inputs (Algorithm 2's ``z_c``)."""
        return jnp.stack([self.x_mean + self.x_sd * u_c[0], self.y_mean + self.y_sd * u_c[1],
                          jnp.exp(self.log_depth_mean + self.log_depth_sd * u_c[2])])

    def offsets(self, binocular: bool) -> tuple:
        """Horizontal offsets of the cameras from ``c_x``: ``(-b/2, +b/2)`` or ``(0,)``."""
        return (-0.5 * self.baseline, 0.5 * self.baseline) if binocular else (0.0,)


def project(points: Array, camera: Array, *, focal: float, offset: float = 0.0) -> Array:
    """Image coordinates ``(n, 2)`` of ``points`` ``(n, 3)`` seen by the camera at ``(c_x + offset, c_y, -d)``.

    Points with depth ``<= MIN_DEPTH`` give NaN (no projection; a chain counts it as a rejection)."""
    depth = points[:, 2] + camera[2]
    ok = depth > MIN_DEPTH
    safe = jnp.where(ok, depth, 1.0)
    xy = focal * (points[:, :2] - jnp.stack([camera[0] + offset, camera[1]])) / safe[:, None]
    return jnp.where(ok[:, None], xy, jnp.nan)


def project_all(points: Array, camera: Array, prior: CameraPrior, binocular: bool) -> Array:
    """The observation without noise: every camera's projections, flattened (module docstring for the order)."""
    return jnp.concatenate([project(points, camera, focal=prior.focal, offset=o).reshape(-1)
                            for o in prior.offsets(binocular)])


def check_in_front(points, camera, prior: CameraPrior, binocular: bool) -> None:
    """Raise ``ValueError`` when a point is at or behind a camera (depth ``<= MIN_DEPTH``) or not finite."""
    points, camera = np.asarray(points, float), np.asarray(camera, float)
    if not (np.all(np.isfinite(points)) and np.all(np.isfinite(camera))):
        raise ValueError("the scene has non-finite joint or camera coordinates (NaN/inf)")
    depth = points[:, 2] + camera[2]
    bad = np.flatnonzero(depth <= MIN_DEPTH)
    if bad.size:
        raise ValueError(f"{bad.size} joint(s) are at or behind the camera plane (depth <= {MIN_DEPTH} m), e.g. "
                         f"point {int(bad[0])} at depth {depth[bad[0]]:.3g} m: it has no projection")
