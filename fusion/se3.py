"""Small rigid-transform helpers shared by the tracker modules (numpy only).

Poses are 4x4 float64 homogeneous matrices; ``T_A_B`` maps points from frame B to frame A.
OpenCV's ``rvec``/``tvec`` pairs describe ``T_C_W`` (world to camera).
"""

from __future__ import annotations

import math

import cv2
import numpy as np


def invert(T: np.ndarray) -> np.ndarray:
    """Inverse of a (4, 4) rigid transform (rotation transposed); returns (4, 4) float64."""
    out = np.eye(4)
    R = T[:3, :3]
    out[:3, :3] = R.T
    out[:3, 3] = -R.T @ T[:3, 3]
    return out


def from_rvec_tvec(rvec: np.ndarray, tvec: np.ndarray) -> np.ndarray:
    """(4, 4) float64 ``T_C_W`` from OpenCV's Rodrigues vector (3,) or (3, 1) and translation."""
    R, _ = cv2.Rodrigues(np.asarray(rvec, dtype=np.float64).reshape(3, 1))
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = np.asarray(tvec, dtype=np.float64).reshape(3)
    return T


def to_rvec_tvec(T_C_W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV ``(rvec, tvec)`` ((3, 1) float64 each) of a world-to-camera transform."""
    rvec, _ = cv2.Rodrigues(np.ascontiguousarray(T_C_W[:3, :3]))
    return rvec.reshape(3, 1), T_C_W[:3, 3].reshape(3, 1).copy()


def rotation_angle_deg(R: np.ndarray) -> float:
    """Rotation angle in degrees (0..180) of a (3, 3) rotation matrix."""
    cos_part = (float(np.trace(R)) - 1.0) / 2.0
    axis = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])
    return math.degrees(math.atan2(float(np.linalg.norm(axis)) / 2.0, cos_part))


def skew(v: np.ndarray) -> np.ndarray:
    """Cross-product matrices of (N, 3) vectors; returns (N, 3, 3) with ``skew(v)[i] @ w = v[i] x w``."""
    out = np.zeros((v.shape[0], 3, 3))
    out[:, 0, 1] = -v[:, 2]
    out[:, 0, 2] = v[:, 1]
    out[:, 1, 0] = v[:, 2]
    out[:, 1, 2] = -v[:, 0]
    out[:, 2, 0] = -v[:, 1]
    out[:, 2, 1] = v[:, 0]
    return out


def transform_points(T: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a (4, 4) transform to (N, 3) points; returns (N, 3) float64."""
    return points @ T[:3, :3].T + T[:3, 3]


def orthonormalize(T: np.ndarray) -> np.ndarray:
    """The nearest rigid transform to ``T`` (rotation block re-orthonormalised by SVD); (4, 4) float64."""
    out = np.array(T, dtype=np.float64, copy=True)
    u, _, vt = np.linalg.svd(out[:3, :3])
    R = u @ vt
    if np.linalg.det(R) < 0:
        u[:, 2] *= -1.0
        R = u @ vt
    out[:3, :3] = R
    out[3] = (0.0, 0.0, 0.0, 1.0)
    return out
