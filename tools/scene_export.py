"""Export keyframes (images, intrinsics, poses) for downstream reconstruction: nerfstudio and COLMAP text.

``transforms.json`` follows nerfstudio's format (OpenGL camera axes: x right, y up, z back, so
``transform_matrix = T_W_C @ diag(1, -1, -1, 1)``); ``colmap/`` holds COLMAP's text model
(``cameras.txt`` with one PINHOLE/OPENCV camera, ``images.txt`` with world-to-camera quaternion and
translation, ``points3D.txt`` from the map's surface points) so Gaussian-splatting and NeRF tools can start
from depthslam's poses without re-running structure from motion.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from stream.node import Keyframe
from stream.tum_format import rotation_to_quaternion

OPENGL_FROM_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])


@dataclass(frozen=True)
class SceneExport:
    """Paths written by :func:`export_keyframes`."""

    transforms_json: Path
    colmap_dir: Path
    image_count: int


def export_keyframes(
    out_dir: Path, keyframes: Sequence[Keyframe], points_W: np.ndarray | None = None,
    point_colors: np.ndarray | None = None,
) -> SceneExport:
    """Write ``images/``, ``transforms.json`` and ``colmap/{cameras,images,points3D}.txt`` under ``out_dir``.

    points_W: optional (N, 3) surface points (world, metres) with (N, 3) uint8 colours for ``points3D.txt``.
    All keyframes must share one camera (same intrinsics); raises ValueError otherwise or when empty.
    """
    if not keyframes:
        raise ValueError("no keyframes to export")
    k = keyframes[0].intrinsics
    if any(kf.intrinsics != k for kf in keyframes):
        raise ValueError("keyframes have different intrinsics; export needs one camera")
    images = out_dir / "images"
    images.mkdir(parents=True, exist_ok=True)
    names = []
    for kf in keyframes:
        name = f"frame_{kf.frame_id:06d}.png"
        if not cv2.imwrite(str(images / name), cv2.cvtColor(kf.image, cv2.COLOR_RGB2BGR)):
            raise OSError(f"cannot write {images / name}")
        names.append(name)

    dist = list(k.distortion) + [0.0] * (4 - len(k.distortion)) if len(k.distortion) <= 4 else list(k.distortion[:4])
    transforms = {
        "camera_model": "OPENCV", "w": k.width_px, "h": k.height_px, "fl_x": k.fx, "fl_y": k.fy,
        "cx": k.cx, "cy": k.cy, "k1": dist[0], "k2": dist[1], "p1": dist[2], "p2": dist[3],
        "frames": [
            {"file_path": f"images/{name}", "transform_matrix": (kf.T_W_C @ OPENGL_FROM_OPENCV).tolist(),
             "depthslam_frame_id": kf.frame_id}
            for name, kf in zip(names, keyframes, strict=True)
        ],
    }
    transforms_path = out_dir / "transforms.json"
    transforms_path.write_text(json.dumps(transforms, indent=2))

    colmap = out_dir / "colmap"
    colmap.mkdir(exist_ok=True)
    model = "PINHOLE" if not any(k.distortion) else "OPENCV"
    params = [k.fx, k.fy, k.cx, k.cy] + ([] if model == "PINHOLE" else dist)
    (colmap / "cameras.txt").write_text(
        "# CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]\n"
        f"1 {model} {k.width_px} {k.height_px} " + " ".join(f"{p:.10g}" for p in params) + "\n"
    )
    lines = ["# IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME (world-to-camera)", "# POINTS2D (empty)"]
    for i, (name, kf) in enumerate(zip(names, keyframes, strict=True), start=1):
        T_C_W = np.linalg.inv(kf.T_W_C)
        qx, qy, qz, qw = rotation_to_quaternion(T_C_W[:3, :3])
        t = T_C_W[:3, 3]
        lines.append(f"{i} {qw:.12g} {qx:.12g} {qy:.12g} {qz:.12g} {t[0]:.12g} {t[1]:.12g} {t[2]:.12g} 1 {name}")
        lines.append("")
    (colmap / "images.txt").write_text("\n".join(lines) + "\n")
    points = ["# POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[]"]
    if points_W is not None:
        colors = point_colors if point_colors is not None else np.full((len(points_W), 3), 128, np.uint8)
        for i, (p, c) in enumerate(zip(points_W, colors, strict=True), start=1):
            points.append(f"{i} {p[0]:.6f} {p[1]:.6f} {p[2]:.6f} {int(c[0])} {int(c[1])} {int(c[2])} 0")
    (colmap / "points3D.txt").write_text("\n".join(points) + "\n")
    return SceneExport(transforms_path, colmap, len(keyframes))
