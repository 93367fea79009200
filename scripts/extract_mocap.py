"""Extract the DeepMimic motion clips into the small joint-angle array shipped with ``dgm.models.pose``.

Run once (the output is committed; the library never imports pybullet)::

    pip download --no-deps pybullet==3.2.7          # the sdist, ~100 MB, holds pybullet_data
    python scripts/extract_mocap.py pybullet-3.2.7.tar.gz

The source may be the sdist tarball or an installed ``pybullet_data`` folder (``python -c "import pybullet_data;
print(pybullet_data.getDataPath())"``). Writes ``src/dgm/models/pose/data/deepmimic_angles.npz`` with

* ``angles`` (frames, 31) float32 radians in (-pi, pi]: per frame the root orientation and the local joint rotations
  as Euler angles (see ``dgm.models.pose.skeleton`` for the joints, axis orders and why), knees/elbows one angle;
* ``clip`` (frames,) int16 index into ``clip_names``; ``clip_names``;
* ``offsets`` (18, 3) float64 metres: the rest offset of every skeleton point from its parent point, read from the
  URDF ``humanoid/humanoid.urdf`` (joint origins, the neck link's head sphere and the ankle link's foot box centre)
  scaled by 0.25 (pybullet's DeepMimic environment loads the URDF with ``globalScaling=0.25``);
* ``source_sha256``: the sha256 of every clip file read (provenance).

Frame layout of a DeepMimic ``humanoid3d_*.txt`` clip (JSON ``{"Frames": [[...44 numbers...], ...]}``): duration,
root position (3), root rotation quaternion (w, x, y, z), then chest, neck, right hip (quaternions), right knee (1
angle), right ankle, right shoulder (quaternions), right elbow (1), left hip, (1) left knee, left ankle, left
shoulder, (1) left elbow. The quaternions are renormalised (some deviate from unit norm by up to 0.4).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
import sys
import tarfile
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

OUT = Path(__file__).resolve().parents[1] / "src" / "dgm" / "models" / "pose" / "data" / "deepmimic_angles.npz"
URDF_SCALE = 0.25

# (name, first column in a frame, kind, Euler axis order for spherical joints) -- must match skeleton.JOINTS
FRAME_LAYOUT = [
    ("root", 4, "spherical", "YXZ"),
    ("chest", 8, "spherical", "ZYX"),
    ("neck", 12, "spherical", "YXZ"),
    ("right_hip", 16, "spherical", "ZXY"),
    ("right_knee", 20, "revolute", None),
    ("right_ankle", 21, "spherical", "ZYX"),
    ("right_shoulder", 25, "spherical", "XYZ"),
    ("right_elbow", 29, "revolute", None),
    ("left_hip", 30, "spherical", "ZXY"),
    ("left_knee", 34, "revolute", None),
    ("left_ankle", 35, "spherical", "ZYX"),
    ("left_shoulder", 39, "spherical", "XYZ"),
    ("left_elbow", 43, "revolute", None),
]

# skeleton points: (name, URDF element giving the offset from the parent point)
POINT_OFFSETS = [
    ("root", None),
    ("chest", ("joint", "chest")),
    ("neck", ("joint", "neck")),
    ("head", ("link-origin", "neck")),
    ("right_hip", ("joint", "right_hip")),
    ("right_knee", ("joint", "right_knee")),
    ("right_ankle", ("joint", "right_ankle")),
    ("right_foot", ("link-origin", "right_ankle")),
    ("right_shoulder", ("joint", "right_shoulder")),
    ("right_elbow", ("joint", "right_elbow")),
    ("right_wrist", ("joint", "right_wrist")),
    ("left_hip", ("joint", "left_hip")),
    ("left_knee", ("joint", "left_knee")),
    ("left_ankle", ("joint", "left_ankle")),
    ("left_foot", ("link-origin", "left_ankle")),
    ("left_shoulder", ("joint", "left_shoulder")),
    ("left_elbow", ("joint", "left_elbow")),
    ("left_wrist", ("joint", "left_wrist")),
]


def _sources(path: Path):
    """``(clips {name: bytes}, urdf text)`` from an sdist tarball or a pybullet_data folder."""
    clips, urdf = {}, None
    if path.is_file():
        with tarfile.open(path) as tar:
            for member in tar.getmembers():
                name = member.name
                if re.search(r"pybullet_data/data/motions/humanoid3d_[a-z_]+\.txt$", name):
                    clips[Path(name).stem] = tar.extractfile(member).read()
                elif name.endswith("pybullet_data/humanoid/humanoid.urdf"):
                    urdf = tar.extractfile(member).read().decode()
    else:
        for f in sorted((path / "data" / "motions").glob("humanoid3d_*.txt")):
            clips[f.stem] = f.read_bytes()
        urdf = (path / "humanoid" / "humanoid.urdf").read_text()
    if not clips or urdf is None:
        raise SystemExit(f"{path}: no humanoid3d_*.txt clips or humanoid/humanoid.urdf found")
    return dict(sorted(clips.items())), urdf


def _xyz(text: str) -> np.ndarray:
    return np.array([float(v) for v in re.search(r'xyz\s*=\s*"([^"]+)"', text).group(1).split()])


def urdf_offsets(urdf: str) -> np.ndarray:
    """Rest offsets (metres) of the skeleton points from their parents, from the URDF."""
    joints = {m.group(1): m.group(2) for m in re.finditer(r'<joint name="([^"]+)"[^>]*>(.*?)</joint>', urdf, re.S)}
    links = {m.group(1): m.group(2) for m in re.finditer(r'<link name="([^"]+)"\s*>(.*?)</link>', urdf, re.S)}
    rows = []
    for _, source in POINT_OFFSETS:
        if source is None:
            rows.append(np.zeros(3))
            continue
        kind, name = source
        if kind == "joint":
            rows.append(_xyz(re.search(r"<origin[^>]*/>", joints[name]).group(0)))
        else:  # the first <origin> of the link's inertial/collision: the head sphere / foot box centre
            rows.append(_xyz(re.search(r"<origin[^>]*/>", links[name]).group(0)))
    return URDF_SCALE * np.array(rows)


def frame_angles(frames: np.ndarray) -> np.ndarray:
    cols = []
    for _, start, kind, order in FRAME_LAYOUT:
        if kind == "revolute":
            cols.append(frames[:, start:start + 1])
            continue
        q = frames[:, start:start + 4]
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        cols.append(Rotation.from_quat(q[:, [1, 2, 3, 0]]).as_euler(order))  # intrinsic: R = R_a R_b R_c
    angles = np.concatenate(cols, axis=1)
    return np.angle(np.exp(1j * angles))  # wrap to (-pi, pi]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="pybullet-3.2.7.tar.gz (sdist) or an installed pybullet_data folder")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    clips, urdf = _sources(args.source)
    angles, clip_ids, names, digests = [], [], [], []
    for i, (name, raw) in enumerate(clips.items()):
        frames = np.asarray(json.load(io.BytesIO(raw))["Frames"], np.float64)
        if frames.shape[1] != 44:
            raise SystemExit(f"{name}: expected 44 numbers per frame, got {frames.shape[1]}")
        angles.append(frame_angles(frames))
        clip_ids.append(np.full(len(frames), i, np.int16))
        names.append(name.removeprefix("humanoid3d_"))
        digests.append(hashlib.sha256(raw).hexdigest())
    angles = np.concatenate(angles).astype(np.float32)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, angles=angles, clip=np.concatenate(clip_ids), clip_names=np.array(names),
                        offsets=urdf_offsets(urdf), point_names=np.array([p for p, _ in POINT_OFFSETS]),
                        source_sha256=np.array(digests))
    print(f"wrote {args.out}: {angles.shape[0]} frames x {angles.shape[1]} angles from {len(names)} clips "
          f"({args.out.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
