"""TUM RGB-D trajectory format and the pose helpers around it (shared by sources, tracker output and evaluation).

A TUM trajectory file holds one pose per line::

    # timestamp tx ty tz qx qy qz qw
    1305031229.4832 1.3018 0.6884 1.5777 -0.6742 -0.5430 -0.0067 0.5005

``timestamp`` in seconds, ``t`` the camera centre in world coordinates (metres) and ``q`` the unit quaternion
(Hamilton, scalar last) of the camera-to-world rotation, so together they give ``T_W_C``. Blank lines and
lines starting with ``#`` are ignored.

Quaternions here are ``(4,)`` float64 arrays in TUM order ``(qx, qy, qz, qw)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

import numpy as np

#: Largest tolerated | |q| - 1 | of a quaternion read from a file (closer ones are normalised).
QUATERNION_NORM_TOLERANCE = 1e-2

#: Largest tolerated ``max |R^T R - I|`` of a rotation before it is refused as not a rotation.
ORTHONORMAL_TOLERANCE = 1e-2


class TumFormatError(ValueError):
    """A TUM text file is malformed; the message names the file and the line number."""


# ----------------------------------------------------------------------------------------------------
# quaternions and poses
# ----------------------------------------------------------------------------------------------------


def quaternion_to_rotation(q_xyzw: np.ndarray) -> np.ndarray:
    """Rotation matrix of a quaternion.

    q_xyzw: (4,) ``(qx, qy, qz, qw)``, any non-zero norm (it is normalised). Returns (3, 3) float64.
    """
    q = np.asarray(q_xyzw, dtype=np.float64)
    if q.shape != (4,):
        raise ValueError(f"quaternion must have shape (4,), got {q.shape}")
    norm = float(np.linalg.norm(q))
    if not math.isfinite(norm) or norm < 1e-12:
        raise ValueError(f"quaternion {q.tolist()} has zero or non-finite norm")
    x, y, z, w = q / norm
    return np.array(
        [
            [1.0 - 2.0 * (y * y + z * z), 2.0 * (x * y - z * w), 2.0 * (x * z + y * w)],
            [2.0 * (x * y + z * w), 1.0 - 2.0 * (x * x + z * z), 2.0 * (y * z - x * w)],
            [2.0 * (x * z - y * w), 2.0 * (y * z + x * w), 1.0 - 2.0 * (x * x + y * y)],
        ]
    )


def check_rotation(R: np.ndarray, tolerance: float = ORTHONORMAL_TOLERANCE) -> None:
    """Raise ValueError unless R (3, 3) is finite, orthonormal to ``tolerance`` and has determinant +1."""
    R = np.asarray(R, dtype=np.float64)
    if R.shape != (3, 3):
        raise ValueError(f"rotation must be 3x3, got {R.shape}")
    if not np.all(np.isfinite(R)):
        raise ValueError("rotation has non-finite entries")
    err = float(np.max(np.abs(R.T @ R - np.eye(3))))
    if err > tolerance:
        raise ValueError(f"matrix is not orthonormal (max |R^T R - I| = {err:.3g} > {tolerance})")
    if np.linalg.det(R) < 0:
        raise ValueError("matrix is a reflection (determinant -1), not a rotation")


def rotation_to_quaternion(R: np.ndarray) -> np.ndarray:
    """Unit quaternion ``(qx, qy, qz, qw)`` with ``qw >= 0`` of a rotation matrix.

    R: (3, 3), orthonormal to :data:`ORTHONORMAL_TOLERANCE` (else ValueError). Returns (4,) float64.
    """
    R = np.asarray(R, dtype=np.float64)
    check_rotation(R)
    trace = R[0, 0] + R[1, 1] + R[2, 2]
    # Shepperd: pick the largest of (w, x, y, z) to divide by, for numerical stability.
    if trace > max(R[0, 0], R[1, 1], R[2, 2]):
        s = 2.0 * math.sqrt(max(1.0 + trace, 0.0))
        q = np.array([(R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s, 0.25 * s])
    elif R[0, 0] >= R[1, 1] and R[0, 0] >= R[2, 2]:
        s = 2.0 * math.sqrt(max(1.0 + R[0, 0] - R[1, 1] - R[2, 2], 0.0))
        q = np.array([0.25 * s, (R[0, 1] + R[1, 0]) / s, (R[0, 2] + R[2, 0]) / s, (R[2, 1] - R[1, 2]) / s])
    elif R[1, 1] >= R[2, 2]:
        s = 2.0 * math.sqrt(max(1.0 - R[0, 0] + R[1, 1] - R[2, 2], 0.0))
        q = np.array([(R[0, 1] + R[1, 0]) / s, 0.25 * s, (R[1, 2] + R[2, 1]) / s, (R[0, 2] - R[2, 0]) / s])
    else:
        s = 2.0 * math.sqrt(max(1.0 - R[0, 0] - R[1, 1] + R[2, 2], 0.0))
        q = np.array([(R[0, 2] + R[2, 0]) / s, (R[1, 2] + R[2, 1]) / s, 0.25 * s, (R[1, 0] - R[0, 1]) / s])
    q /= np.linalg.norm(q)
    return -q if q[3] < 0 else q


def quaternion_slerp(q0: np.ndarray, q1: np.ndarray, alpha: float) -> np.ndarray:
    """Spherical linear interpolation along the shorter arc; ``alpha`` 0 gives q0, 1 gives q1 (up to sign).

    q0, q1: (4,) ``(qx, qy, qz, qw)``, normalised here. Returns a (4,) float64 unit quaternion.
    """
    a = np.asarray(q0, dtype=np.float64)
    b = np.asarray(q1, dtype=np.float64)
    a = a / np.linalg.norm(a)
    b = b / np.linalg.norm(b)
    dot = float(np.dot(a, b))
    if dot < 0.0:  # q and -q are the same rotation: take the short way round
        b, dot = -b, -dot
    if dot > 0.9995:  # nearly parallel: normalised lerp is exact to float precision here
        q = a + alpha * (b - a)
        return q / np.linalg.norm(q)
    theta = math.acos(min(dot, 1.0))
    sin_theta = math.sin(theta)
    q = (math.sin((1.0 - alpha) * theta) * a + math.sin(alpha * theta) * b) / sin_theta
    return q / np.linalg.norm(q)


def pose_from_tum(t_xyz: np.ndarray, q_xyzw: np.ndarray) -> np.ndarray:
    """4x4 float64 ``T_W_C`` from a TUM translation (3,) and quaternion (4,) ``(qx, qy, qz, qw)``."""
    T = np.eye(4)
    T[:3, :3] = quaternion_to_rotation(q_xyzw)
    T[:3, 3] = np.asarray(t_xyz, dtype=np.float64)
    return T


def check_poses(T: np.ndarray, name: str = "T_W_C") -> np.ndarray:
    """Validate (N, 4, 4) or (4, 4) homogeneous rigid transforms; returns them as float64 (ValueError if not)."""
    arr = np.asarray(T, dtype=np.float64)
    stack = arr[None] if arr.ndim == 2 else arr
    if stack.ndim != 3 or stack.shape[1:] != (4, 4):
        raise ValueError(f"{name} must have shape (4, 4) or (N, 4, 4), got {arr.shape}")
    if not np.all(np.isfinite(stack)):
        raise ValueError(f"{name} has non-finite entries")
    for i, pose in enumerate(stack):
        if not np.allclose(pose[3], (0.0, 0.0, 0.0, 1.0)):
            raise ValueError(f"{name}[{i}]: last row must be [0, 0, 0, 1], got {pose[3].tolist()}")
        try:
            check_rotation(pose[:3, :3])
        except ValueError as exc:
            raise ValueError(f"{name}[{i}]: rotation block: {exc}") from exc
    return arr


def interpolate_pose(T0: np.ndarray, T1: np.ndarray, alpha: float) -> np.ndarray:
    """Pose between two poses: linear in translation, slerp in rotation; ``alpha`` in [0, 1]. (4, 4) float64."""
    q = quaternion_slerp(rotation_to_quaternion(T0[:3, :3]), rotation_to_quaternion(T1[:3, :3]), alpha)
    t = (1.0 - alpha) * T0[:3, 3] + alpha * T1[:3, 3]
    return pose_from_tum(t, q)


# ----------------------------------------------------------------------------------------------------
# trajectories
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class TumTrajectory:
    """A timed sequence of camera poses.

    stamps_s: (N,) float64 seconds, strictly increasing. T_W_C: (N, 4, 4) float64 camera-to-world.
    """

    stamps_s: np.ndarray
    T_W_C: np.ndarray

    def __post_init__(self) -> None:
        stamps = self.stamps_s
        if not isinstance(stamps, np.ndarray) or stamps.dtype != np.float64 or stamps.ndim != 1:
            raise ValueError("TumTrajectory.stamps_s must be a 1-D float64 array")
        poses = self.T_W_C
        if not isinstance(poses, np.ndarray) or poses.dtype != np.float64 or poses.shape != (len(stamps), 4, 4):
            raise ValueError(f"TumTrajectory.T_W_C must be ({len(stamps)}, 4, 4) float64, got "
                             f"{getattr(poses, 'shape', None)} {getattr(poses, 'dtype', None)}")
        if not np.all(np.isfinite(stamps)):
            raise ValueError("TumTrajectory.stamps_s has non-finite entries")
        if len(stamps) > 1 and not np.all(np.diff(stamps) > 0):
            i = int(np.argmin(np.diff(stamps) > 0))
            raise ValueError(f"TumTrajectory.stamps_s must be strictly increasing: [{i}]={stamps[i]!r}, "
                             f"[{i + 1}]={stamps[i + 1]!r}")

    def __len__(self) -> int:
        return len(self.stamps_s)

    def pose_at(self, stamp_s: float, max_gap_s: float) -> np.ndarray | None:
        """Pose at ``stamp_s`` interpolated between the two bracketing samples (linear translation, slerp).

        Returns (4, 4) float64, or ``None`` when ``stamp_s`` lies outside the sampled range or the bracketing
        samples are more than ``max_gap_s`` apart. A stamp equal to a sample's returns that sample.
        """
        stamps = self.stamps_s
        if len(stamps) == 0 or not stamps[0] <= stamp_s <= stamps[-1]:
            return None
        i = int(np.searchsorted(stamps, stamp_s, side="right")) - 1  # stamps[i] <= stamp_s
        if stamps[i] == stamp_s:
            return self.T_W_C[i].copy()
        t0, t1 = stamps[i], stamps[i + 1]
        if t1 - t0 > max_gap_s:
            return None
        return interpolate_pose(self.T_W_C[i], self.T_W_C[i + 1], float((stamp_s - t0) / (t1 - t0)))


def parse_stamp_ns(text: str) -> int:
    """Exact nanoseconds of a decimal seconds string (``"1305031229.528748"`` -> 1305031229528748000).

    Avoids float rounding of large epoch stamps; raises ValueError for anything that is not a finite number.
    """
    try:
        value = Decimal(text)
    except InvalidOperation as exc:
        raise ValueError(f"not a number: {text!r}") from exc
    if not value.is_finite():
        raise ValueError(f"not a finite number: {text!r}")
    return int((value * 1_000_000_000).to_integral_value())


def _float_token(token: str, path: Path, line_no: int, what: str) -> float:
    try:
        value = float(token)
    except ValueError as exc:
        raise TumFormatError(f"{path}:{line_no}: {what} {token!r} is not a number") from exc
    if not math.isfinite(value):
        raise TumFormatError(f"{path}:{line_no}: {what} {token!r} is not finite")
    return value


def read_tum_trajectory(path: str | Path) -> TumTrajectory:
    """Read a TUM trajectory file (``timestamp tx ty tz qx qy qz qw`` per line, ``#`` comments).

    Raises :class:`TumFormatError` naming the file and line for missing files, wrong field counts,
    non-numbers, zero quaternions and timestamps that do not strictly increase.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TumFormatError(f"cannot read trajectory file {path}: {exc}") from exc
    stamps: list[float] = []
    poses: list[np.ndarray] = []
    last_line = 0
    for line_no, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        tokens = line.replace(",", " ").split()
        if len(tokens) != 8:
            raise TumFormatError(
                f"{path}:{line_no}: expected 8 fields 'timestamp tx ty tz qx qy qz qw', got {len(tokens)}"
            )
        values = [_float_token(tok, path, line_no, "field") for tok in tokens]
        if stamps and values[0] <= stamps[-1]:
            raise TumFormatError(
                f"{path}:{line_no}: timestamp {tokens[0]} does not increase (previous at line {last_line})"
            )
        q_norm = float(np.linalg.norm(values[4:8]))
        if q_norm > 0.0 and abs(q_norm - 1.0) > QUATERNION_NORM_TOLERANCE:
            raise TumFormatError(
                f"{path}:{line_no}: quaternion norm {q_norm:.6g} is not 1 (tolerance {QUATERNION_NORM_TOLERANCE})"
            )
        try:
            poses.append(pose_from_tum(np.array(values[1:4]), np.array(values[4:8])))
        except ValueError as exc:
            raise TumFormatError(f"{path}:{line_no}: {exc}") from exc
        stamps.append(values[0])
        last_line = line_no
    return TumTrajectory(np.array(stamps, dtype=np.float64), np.array(poses, dtype=np.float64).reshape(-1, 4, 4))


def write_tum_trajectory(path: str | Path, stamps_s: np.ndarray, T_W_C: np.ndarray) -> None:
    """Write poses as a TUM trajectory file.

    stamps_s: (N,) seconds, strictly increasing. T_W_C: (N, 4, 4) camera-to-world rigid transforms.
    Raises ValueError for mismatched shapes, non-rigid poses or non-increasing stamps.
    """
    stamps = np.asarray(stamps_s, dtype=np.float64)
    poses = check_poses(T_W_C)
    if poses.ndim != 3:
        raise ValueError(f"T_W_C must have shape (N, 4, 4), got {poses.shape}")
    if stamps.ndim != 1 or len(stamps) != len(poses):
        raise ValueError(f"stamps_s must have shape ({len(poses)},), got {stamps.shape}")
    TumTrajectory(stamps, poses)  # validates stamps (finite, strictly increasing)
    lines = ["# timestamp tx ty tz qx qy qz qw"]
    for stamp, pose in zip(stamps, poses, strict=True):
        t = pose[:3, 3]
        q = rotation_to_quaternion(pose[:3, :3])
        lines.append(
            f"{stamp:.9f} {t[0]:.9f} {t[1]:.9f} {t[2]:.9f} {q[0]:.9f} {q[1]:.9f} {q[2]:.9f} {q[3]:.9f}"
        )
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")
