"""Robust Gauss-Newton refinement of one camera pose from 2D-3D matches plus the frame's own depth.

Residuals per match ``i`` (world point ``p_i``, undistorted pixel ``uv_i``, measured depth ``d_i`` or 0):

* reprojection ``(project(T^-1 p_i) - uv_i) / sigma_px`` (2 values);
* depth ``(log z_i - log d_i) / sigma_log_depth`` where ``z_i`` is the point's depth in the camera
  (1 value, only where ``d_i > 0``): an RGB-D frame's depth pins the translation along the optical axis,
  which reprojection alone constrains weakly.

Cauchy weights (IRLS, scale ``robust_k`` sigmas); perturbation ``T Exp(xi)``, ``xi = (omega, v)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from fusion.se3 import orthonormalize, skew
from stream.messages import Intrinsics


@dataclass(frozen=True, eq=False)
class RefinedPose:
    """Result of :func:`refine_pose`."""

    T_W_C: np.ndarray
    """(4, 4) float64 refined camera-to-world pose."""
    reprojection_px: np.ndarray
    """(N,) float64 reprojection error of every match at the refined pose, pixels (inf behind the camera)."""
    iterations: int
    """Gauss-Newton iterations run."""


def cauchy_weight(residual: np.ndarray, k: float) -> np.ndarray:
    """IRLS weight ``1 / (1 + (r / k)^2)`` of the Cauchy kernel for (N,) whitened residual norms."""
    return 1.0 / (1.0 + (residual / k) ** 2)


def _exp_se3(xi: np.ndarray) -> np.ndarray:
    """4x4 transform ``Exp(xi)`` for ``xi = (omega, v)`` (rotation by Rodrigues, translation to first order
    in the coupling, which is exact enough for the tiny steps of a converging Gauss-Newton)."""
    T = np.eye(4)
    T[:3, :3] = cv2.Rodrigues(xi[:3].reshape(3, 1))[0]
    T[:3, 3] = xi[3:]
    return T


def refine_pose(
    T_W_C: np.ndarray, world: np.ndarray, uv: np.ndarray, depth: np.ndarray, intrinsics: Intrinsics,
    sigma_px: float, sigma_log_depth: float, robust_k: float, iterations: int = 5,
) -> RefinedPose:
    """Refine ``T_W_C`` ((4, 4)) from (N, 3) world points, (N, 2) undistorted pixels and (N,) depths (0 = none)."""
    T = np.array(T_W_C, dtype=np.float64, copy=True)
    fx, fy, cx, cy = intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy
    has_d = depth > 0
    log_d = np.log(np.where(has_d, depth, 1.0))
    n = world.shape[0]
    it = 0
    for it in range(1, iterations + 1):  # noqa: B007 - the count is returned
        R, t = T[:3, :3], T[:3, 3]
        p = (world - t) @ R
        z = p[:, 2]
        front = z > 1e-6
        inv_z = 1.0 / np.where(front, z, 1.0)
        e = np.zeros((n, 3))
        e[:, 0] = (fx * p[:, 0] * inv_z + cx - uv[:, 0]) / sigma_px
        e[:, 1] = (fy * p[:, 1] * inv_z + cy - uv[:, 1]) / sigma_px
        use_d = has_d & front
        e[:, 2] = np.where(use_d, (np.log(np.where(front, z, 1.0)) - log_d) / sigma_log_depth, 0.0)
        w = np.zeros((n, 3))
        w[:, :2] = (cauchy_weight(np.linalg.norm(e[:, :2], axis=1), robust_k) * front)[:, None]
        w[:, 2] = cauchy_weight(np.abs(e[:, 2]), robust_k) * use_d
        J = np.zeros((n, 3, 3))
        J[:, 0, 0] = fx * inv_z / sigma_px
        J[:, 0, 2] = -fx * p[:, 0] * inv_z * inv_z / sigma_px
        J[:, 1, 1] = fy * inv_z / sigma_px
        J[:, 1, 2] = -fy * p[:, 1] * inv_z * inv_z / sigma_px
        J[:, 2, 2] = inv_z / sigma_log_depth
        dp = np.concatenate([skew(p), np.broadcast_to(-np.eye(3), (n, 3, 3))], axis=2)
        A = J @ dp  # (n, 3, 6)
        Aw = A * w[:, :, None]
        H = np.einsum("nri,nrj->ij", Aw, A)
        g = np.einsum("nri,nr->i", Aw, e)
        try:
            step = -np.linalg.solve(H + 1e-9 * np.eye(6), g)
        except np.linalg.LinAlgError:
            break
        T = orthonormalize(T @ _exp_se3(step))
        if np.linalg.norm(step) < 1e-8:
            break
    R, t = T[:3, :3], T[:3, 3]
    p = (world - t) @ R
    z = p[:, 2]
    front = z > 1e-6
    inv_z = 1.0 / np.where(front, z, 1.0)
    du = fx * p[:, 0] * inv_z + cx - uv[:, 0]
    dv = fy * p[:, 1] * inv_z + cy - uv[:, 1]
    err = np.where(front, np.hypot(du, dv), np.inf)
    return RefinedPose(T, err, it)
