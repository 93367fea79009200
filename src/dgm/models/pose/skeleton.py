r"""The humanoid skeleton and its forward kinematics (Appendix E's JOINTPOSITIONS), in JAX.

**Skeleton.** The DeepMimic humanoid (``humanoid.urdf`` of ``pybullet_data``, scaled by 0.25 as pybullet's DeepMimic
environment loads it; the clips in ``data/deepmimic_angles.npz`` drive exactly this skeleton). 13 rotating joints,
31 angles, 18 reported points (joint centres plus the head centre and the foot centres, which make the neck and
ankle rotations visible)::

    point            parent point     rotated by joint   bone (length, m)
    root (pelvis)    -                -                  -
    chest            root             root               spine      0.236
    neck             chest            chest              neck       0.224
    head             neck             neck               head       0.175
    {r,l}_hip        root             root               hip        0.085   (pelvis half-width)
    {r,l}_knee       hip              hip                thigh      0.422
    {r,l}_ankle      knee             knee               shin       0.410
    {r,l}_foot       ankle            ankle              foot       0.050   (ankle to foot-box centre)
    {r,l}_shoulder   chest            chest              clavicle   0.306
    {r,l}_elbow      shoulder         shoulder           upper_arm  0.275
    {r,l}_wrist      elbow            elbow              forearm    0.259

    joint      kind        angles  Euler order        joint      kind        angles  Euler order
    root       spherical   3       YXZ (heading 1st)  r/l hip    spherical   3+3     ZXY
    chest      spherical   3       ZYX                r/l knee   revolute z  1+1     -
    neck       spherical   3       YXZ                r/l ankle  spherical   3+3     ZYX
    r/l shoulder spherical 3+3     XYZ                r/l elbow  revolute z  1+1     -

Angles are ordered as the table's joints in DeepMimic's order: root, chest, neck, right hip, right knee, right ankle,
right shoulder, right elbow, left hip, left knee, left ankle, left shoulder, left elbow (31 in all).

**Why Euler angles.** The prior models every angle as a point on the circle (a (cos, sin) pair, paper Appendix E),
so a spherical joint needs *angles*: three intrinsic Tait-Bryan angles, ``R = R_a(t1) R_b(t2) R_c(t3)`` for the axis
order ``abc``. Their only defect is gimbal lock at ``|t2| = pi/2``; the order of every joint was chosen (in
``scripts/extract_mocap.py``) to keep ``|t2|`` of the mocap data far from it: the largest ``|t2|`` over the 1,620
frames is 25 deg (chest), 38 (neck), 51-56 (hips), 49-54 (ankles), 65 (root) and 75-80 deg (shoulders, the widest
joints). Quaternions or rotation vectors would avoid gimbal lock but are not products of circles, and a
unit-quaternion prior would need a different VAE output (the paper's choice is followed).

**Forward kinematics.** World rotation of a joint ``W_j = W_parent(j) E_j(angles)`` (``E`` the Euler or revolute
rotation; the root's parent is the fixed ``SCENE_FROM_BODY``), and the position of a point
``p_i = p_parent(i) + W_frame(i) (l_bone(i) / l0_bone(i)) o_i`` with ``o_i`` the rest offset: a bone's length scales
its rest offset vector, so ``|p_i - p_parent(i)| = l_bone(i)`` for any angles (a tested invariant).

**Frames.** DeepMimic's body frame is y up, x forward (the character faces +x), z to its right. Positions are
returned in the *scene* frame of :mod:`dgm.models.pose.camera`: ``X = z_body``, ``Y = y_body``, ``Z = -x_body``, so
that at zero heading the character faces the cameras, which sit at ``Z = -depth`` looking along ``+Z``. The root
(pelvis) is the scene origin.
"""

from __future__ import annotations

import dataclasses
import functools
from importlib import resources
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

SCENE_FROM_BODY = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
"""Rows: scene X, Y, Z in body coordinates (a proper rotation, det +1)."""

DATA_FILE = "deepmimic_angles.npz"


@dataclasses.dataclass(frozen=True)
class Joint:
    name: str
    parent: int  # index of the parent joint, -1 for the root
    kind: str  # "spherical" (3 Euler angles) or "revolute" (1 angle about the local z axis)
    order: Optional[str] = None  # Euler axis order of a spherical joint, e.g. "ZYX"

    @property
    def n_angles(self) -> int:
        return 3 if self.kind == "spherical" else 1


@dataclasses.dataclass(frozen=True)
class Point:
    name: str
    parent: int  # parent point (-1 for the root point, which sits at the origin)
    frame: int  # the joint whose world rotation turns the rest offset (-1: the fixed scene rotation)
    bone: int  # index into Skeleton.bone_names (-1 for the root point)
    offset: tuple  # rest offset from the parent point, body frame, metres


@dataclasses.dataclass(frozen=True, eq=False)
class Skeleton:
    """Joints (parents before children), points (parents before children) and the distinct bones.

    ``bone_log_sd``: the log-normal spread of every bone length (the median is the rest length)."""

    joints: tuple
    points: tuple
    bone_names: tuple
    bone_log_sd: tuple

    def __post_init__(self):
        for i, j in enumerate(self.joints):
            if j.kind not in ("spherical", "revolute"):
                raise ValueError(f"joint {j.name!r}: kind must be 'spherical' or 'revolute', got {j.kind!r}")
            if j.kind == "spherical" and (j.order is None or sorted(j.order) != ["X", "Y", "Z"]):
                raise ValueError(f"joint {j.name!r}: a spherical joint needs an Euler order such as 'ZYX'")
            if not -1 <= j.parent < i:
                raise ValueError(f"joint {j.name!r}: its parent must come before it")
        for i, p in enumerate(self.points):
            if not -1 <= p.parent < i or not -1 <= p.frame < len(self.joints):
                raise ValueError(f"point {p.name!r}: bad parent or frame index")
            if (p.parent == -1) != (p.bone == -1):
                raise ValueError(f"point {p.name!r}: exactly the root point has no parent and no bone")
        if len(self.bone_log_sd) != len(self.bone_names):
            raise ValueError("one log-normal spread per bone is needed")
        lengths = self.rest_bone_lengths  # checks that symmetric bones agree
        if np.any(lengths <= 0):
            raise ValueError("every bone needs a positive rest length")

    # -- sizes -----------------------------------------------------------------------------------------------------
    @property
    def n_angles(self) -> int:
        return sum(j.n_angles for j in self.joints)

    @property
    def n_points(self) -> int:
        return len(self.points)

    @property
    def n_bones(self) -> int:
        return len(self.bone_names)

    @property
    def angle_names(self) -> tuple:
        names = []
        for j in self.joints:
            names += [f"{j.name}_{a.lower()}" for a in j.order] if j.kind == "spherical" else [j.name]
        return tuple(names)

    @property
    def point_names(self) -> tuple:
        return tuple(p.name for p in self.points)

    @functools.cached_property
    def rest_bone_lengths(self) -> np.ndarray:
        lengths = np.full(self.n_bones, np.nan)
        for p in self.points:
            if p.bone < 0:
                continue
            length = float(np.linalg.norm(p.offset))
            if np.isnan(lengths[p.bone]):
                lengths[p.bone] = length
            elif not np.isclose(lengths[p.bone], length, rtol=1e-6):
                raise ValueError(f"bone {self.bone_names[p.bone]!r}: symmetric offsets differ in length")
        if np.any(np.isnan(lengths)):
            raise ValueError("a bone is used by no point")
        return lengths

    @property
    def segments(self) -> list[tuple[int, int]]:
        """``(parent point, point)`` pairs: the line segments drawn in figures."""
        return [(p.parent, i) for i, p in enumerate(self.points) if p.parent >= 0]

    # -- kinematics ------------------------------------------------------------------------------------------------
    def joint_rotations(self, angles: Array) -> list:
        """World rotation matrices ``W_j`` (scene frame) of every joint for ``angles`` of shape ``(n_angles,)``."""
        angles = jnp.asarray(angles)
        if angles.shape != (self.n_angles,):
            raise ValueError(f"angles must have shape ({self.n_angles},), got {angles.shape}")
        world, k = [], 0
        base = jnp.asarray(SCENE_FROM_BODY, angles.dtype)
        for j in self.joints:
            if j.kind == "spherical":
                local = euler_matrix(angles[k:k + 3], j.order)
            else:
                local = axis_rotation("Z", angles[k])
            k += j.n_angles
            world.append((base if j.parent < 0 else world[j.parent]) @ local)
        return world

    def forward_kinematics(self, angles: Array, bone_lengths: Optional[Array] = None) -> Array:
        """Point positions ``(n_points, 3)`` in the scene frame (metres; root at the origin).

        ``bone_lengths``: ``(n_bones,)`` (default: the rest lengths)."""
        world = self.joint_rotations(angles)
        dtype = world[0].dtype
        rest = jnp.asarray(self.rest_bone_lengths, dtype)
        if bone_lengths is None:
            scale = jnp.ones_like(rest)
        else:
            bone_lengths = jnp.asarray(bone_lengths, dtype)
            if bone_lengths.shape != (self.n_bones,):
                raise ValueError(f"bone_lengths must have shape ({self.n_bones},), got {bone_lengths.shape}")
            scale = bone_lengths / rest
        base = jnp.asarray(SCENE_FROM_BODY, dtype)
        positions = []
        for p in self.points:
            if p.parent < 0:
                positions.append(jnp.zeros(3, dtype))
                continue
            frame = base if p.frame < 0 else world[p.frame]
            positions.append(positions[p.parent] + scale[p.bone] * (frame @ jnp.asarray(p.offset, dtype)))
        return jnp.stack(positions)

    def bone_lengths_of(self, positions) -> np.ndarray:
        """Every point's distance to its parent, ``(n_points - 1,)`` (root excluded), for checks."""
        positions = np.asarray(positions)
        return np.array([np.linalg.norm(positions[i] - positions[p]) for p, i in self.segments])


def axis_rotation(axis: str, angle: Array) -> Array:
    """The 3x3 rotation by ``angle`` (radians, right-handed) about the coordinate axis ``"X"``, ``"Y"`` or ``"Z"``."""
    c, s = jnp.cos(angle), jnp.sin(angle)
    o, i = jnp.zeros_like(c), jnp.ones_like(c)
    rows = {"X": [[i, o, o], [o, c, -s], [o, s, c]],
            "Y": [[c, o, s], [o, i, o], [-s, o, c]],
            "Z": [[c, -s, o], [s, c, o], [o, o, i]]}[axis]
    return jnp.stack([jnp.stack(r) for r in rows])


def euler_matrix(angles: Array, order: str) -> Array:
    """Intrinsic Tait-Bryan rotation ``R = R_a(t1) R_b(t2) R_c(t3)`` for ``order = "abc"`` (as SciPy's
    ``Rotation.from_euler(order.upper(), angles)``)."""
    a, b, c = order.upper()
    return axis_rotation(a, angles[0]) @ axis_rotation(b, angles[1]) @ axis_rotation(c, angles[2])


# -- the DeepMimic humanoid -----------------------------------------------------------------------------------------
_JOINTS = (
    Joint("root", -1, "spherical", "YXZ"),
    Joint("chest", 0, "spherical", "ZYX"),
    Joint("neck", 1, "spherical", "YXZ"),
    Joint("right_hip", 0, "spherical", "ZXY"),
    Joint("right_knee", 3, "revolute"),
    Joint("right_ankle", 4, "spherical", "ZYX"),
    Joint("right_shoulder", 1, "spherical", "XYZ"),
    Joint("right_elbow", 6, "revolute"),
    Joint("left_hip", 0, "spherical", "ZXY"),
    Joint("left_knee", 8, "revolute"),
    Joint("left_ankle", 9, "spherical", "ZYX"),
    Joint("left_shoulder", 1, "spherical", "XYZ"),
    Joint("left_elbow", 11, "revolute"),
)
BONES = ("spine", "neck", "head", "hip", "thigh", "shin", "foot", "clavicle", "upper_arm", "forearm")
BONE_LOG_SD = (0.06, 0.06, 0.06, 0.08, 0.05, 0.05, 0.08, 0.08, 0.05, 0.05)
"""Log-normal spreads of the bone lengths (module docstring of :mod:`dgm.models.pose.model` gives the basis)."""
# (point, parent point, frame joint, bone)
_POINTS = (
    ("root", -1, -1, -1), ("chest", 0, 0, 0), ("neck", 1, 1, 1), ("head", 2, 2, 2),
    ("right_hip", 0, 0, 3), ("right_knee", 4, 3, 4), ("right_ankle", 5, 4, 5), ("right_foot", 6, 5, 6),
    ("right_shoulder", 1, 1, 7), ("right_elbow", 8, 6, 8), ("right_wrist", 9, 7, 9),
    ("left_hip", 0, 0, 3), ("left_knee", 11, 8, 4), ("left_ankle", 12, 9, 5), ("left_foot", 13, 10, 6),
    ("left_shoulder", 1, 1, 7), ("left_elbow", 15, 11, 8), ("left_wrist", 16, 12, 9),
)


def load_motion_data() -> dict:
    """The shipped DeepMimic data (``data/deepmimic_angles.npz``, see its README): angles, clips, offsets."""
    with resources.files("dgm.models.pose").joinpath("data", DATA_FILE).open("rb") as f:
        with np.load(f) as data:
            return {k: data[k] for k in data.files}


@functools.lru_cache(maxsize=1)
def deepmimic_skeleton() -> Skeleton:
    """The DeepMimic humanoid with the URDF's rest offsets (module docstring)."""
    data = load_motion_data()
    names = tuple(str(n) for n in data["point_names"])
    if names != tuple(p[0] for p in _POINTS):
        raise ValueError(f"{DATA_FILE}: unexpected point names {names}")
    points = tuple(Point(n, parent, frame, bone, tuple(float(v) for v in data["offsets"][i]))
                   for i, (n, parent, frame, bone) in enumerate(_POINTS))
    return Skeleton(_JOINTS, points, BONES, BONE_LOG_SD)
