"""Checks at the Python boundary of the fusion kernels: bad input raises a clear error here, never in numba."""

from __future__ import annotations

import math

import numpy as np

from stream.messages import Intrinsics

RIGID_TOLERANCE = 2e-3
"""Largest accepted |R^T R - I| entry and |det R - 1| of a pose's rotation (real ground truth is ~4e-4)."""


def check_pose(T: object, name: str = "T_W_C", max_abs_translation_m: float = math.inf) -> np.ndarray:
    """Return ``T`` as a C-contiguous (4, 4) float64 rigid transform, or raise ValueError/TypeError.

    Rigid means: finite, last row ``[0, 0, 0, 1]``, rotation orthonormal with determinant +1 (within
    :data:`RIGID_TOLERANCE`), translation within ``max_abs_translation_m`` of the origin on every axis.
    """
    if not isinstance(T, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(T).__name__}")
    if T.shape != (4, 4):
        raise ValueError(f"{name} must have shape (4, 4), got {T.shape}")
    if T.dtype.kind != "f":
        raise TypeError(f"{name} must be a float array (float64 by convention), got {T.dtype}")
    T = np.ascontiguousarray(T, dtype=np.float64)
    # plain Python floats: this runs once per frame per kernel call, and 16 numbers are cheaper to check
    # without numpy's per-call overhead (a cold LAPACK determinant alone cost ~0.1 ms)
    rows = T.tolist()
    if not all(math.isfinite(x) for row in rows for x in row):
        raise ValueError(f"{name} has non-finite entries")
    if abs(rows[3][0]) > 1e-9 or abs(rows[3][1]) > 1e-9 or abs(rows[3][2]) > 1e-9 or abs(rows[3][3] - 1.0) > 1e-9:
        raise ValueError(f"{name} last row must be [0, 0, 0, 1], got {rows[3]}")
    (r00, r01, r02, _), (r10, r11, r12, _), (r20, r21, r22, _) = rows[0], rows[1], rows[2]
    cols = ((r00, r10, r20), (r01, r11, r21), (r02, r12, r22))
    ortho_err = max(
        abs(sum(a * b for a, b in zip(cols[i], cols[j], strict=True)) - (1.0 if i == j else 0.0))
        for i in range(3)
        for j in range(3)
    )
    det = r00 * (r11 * r22 - r12 * r21) - r01 * (r10 * r22 - r12 * r20) + r02 * (r10 * r21 - r11 * r20)
    if ortho_err > RIGID_TOLERANCE or abs(det - 1.0) > RIGID_TOLERANCE:
        raise ValueError(
            f"{name} is not a rigid transform: |R^T R - I| = {ortho_err:.2e}, det R = {det:.4f} "
            f"(tolerance {RIGID_TOLERANCE})"
        )
    translation = [rows[0][3], rows[1][3], rows[2][3]]
    if max(abs(x) for x in translation) > max_abs_translation_m:
        raise ValueError(
            f"{name} translation {translation} is beyond the map's range of +-{max_abs_translation_m:.0f} m"
        )
    return T


def check_intrinsics(intrinsics: object) -> Intrinsics:
    """Return ``intrinsics`` if it is an undistorted :class:`stream.messages.Intrinsics`, else raise."""
    if not isinstance(intrinsics, Intrinsics):
        raise TypeError(f"intrinsics must be stream.messages.Intrinsics, got {type(intrinsics).__name__}")
    if any(d != 0.0 for d in intrinsics.distortion):
        raise ValueError(
            f"intrinsics carry distortion {intrinsics.distortion}; undistort the images first "
            "(the fusion kernels use the pinhole model only)"
        )
    for name in ("cx", "cy"):
        if not math.isfinite(getattr(intrinsics, name)):
            raise ValueError(f"intrinsics.{name} must be finite")
    return intrinsics


def check_depth(depth_m: object, intrinsics: Intrinsics) -> np.ndarray:
    """Return ``depth_m`` as C-contiguous (H, W) float32 matching the intrinsics' image size, or raise.

    Values are not checked: 0, negative, NaN and inf pixels are invalid and ignored by the kernels.
    """
    if not isinstance(depth_m, np.ndarray):
        raise TypeError(f"depth_m must be a numpy array, got {type(depth_m).__name__}")
    if depth_m.dtype != np.float32:
        raise TypeError(
            f"depth_m must be float32 metres, got {depth_m.dtype} (convert e.g. uint16 millimetres with "
            "depth.astype(np.float32) / 1000)"
        )
    if depth_m.ndim != 2:
        raise ValueError(f"depth_m must be 2-D (H, W), got shape {depth_m.shape}")
    want = (intrinsics.height_px, intrinsics.width_px)
    if depth_m.shape != want:
        raise ValueError(f"depth_m shape {depth_m.shape} does not match the intrinsics' image size (H, W) = {want}")
    return np.ascontiguousarray(depth_m)


def check_color(color: object, shape_hw: tuple[int, int]) -> np.ndarray | None:
    """Return ``color`` as C-contiguous (H, W, 3) uint8 RGB of the depth image's size, ``None`` for none."""
    if color is None:
        return None
    if not isinstance(color, np.ndarray):
        raise TypeError(f"color must be a numpy array or None, got {type(color).__name__}")
    if color.dtype != np.uint8:
        raise TypeError(f"color must be uint8 RGB, got {color.dtype}")
    if color.shape != (*shape_hw, 3):
        raise ValueError(f"color must have shape {(*shape_hw, 3)} (depth size, RGB), got {color.shape}")
    return np.ascontiguousarray(color)


def check_positive(value: object, name: str, *, allow_zero: bool = False) -> None:
    """Raise ValueError unless ``value`` is a finite real number > 0 (>= 0 with ``allow_zero``)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
