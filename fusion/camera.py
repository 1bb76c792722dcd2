"""The camera model: OpenCV pinhole + optional distortion, working in undistorted pixels.

For the tracker, images (and the depth registered to them) stay distorted; feature positions are measured in
raw image pixels and converted once to *undistorted pixels* (the pinhole image of the same ray with the same
``K``), where projection is the plain ``u = fx x / z + cx``. The map's kernels are pinhole only, so the
mapper resamples whole frames to that pinhole image (:class:`ImageUndistorter`). Without distortion both are
the same.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from stream.messages import Intrinsics


@dataclass(frozen=True, eq=False)
class PinholeCamera:
    """Camera matrix and distortion of one image size."""

    intrinsics: Intrinsics
    """The frame's intrinsics (size, focal lengths, principal point, OpenCV distortion)."""

    @property
    def camera_matrix(self) -> np.ndarray:
        """(3, 3) float64 camera matrix."""
        k = self.intrinsics
        return np.array([[k.fx, 0.0, k.cx], [0.0, k.fy, k.cy], [0.0, 0.0, 1.0]])

    @property
    def has_distortion(self) -> bool:
        """True when any distortion coefficient is non-zero."""
        return any(d != 0.0 for d in self.intrinsics.distortion)

    @property
    def dist(self) -> np.ndarray | None:
        """(D,) float64 OpenCV distortion coefficients, or None without distortion."""
        return np.asarray(self.intrinsics.distortion, dtype=np.float64) if self.has_distortion else None

    def undistort_px(self, raw_px: np.ndarray) -> np.ndarray:
        """Raw image pixels (N, 2) -> undistorted pixels (N, 2) float64 (same ``K``)."""
        pts = np.asarray(raw_px, dtype=np.float64).reshape(-1, 2)
        if not self.has_distortion or pts.shape[0] == 0:
            return pts.copy()
        out = cv2.undistortPoints(pts.reshape(-1, 1, 2), self.camera_matrix, self.dist, P=self.camera_matrix)
        return out.reshape(-1, 2)

    def distort_px(self, undist_px: np.ndarray) -> np.ndarray:
        """Undistorted pixels (N, 2) -> raw image pixels (N, 2) float64 (inverse of :meth:`undistort_px`)."""
        pts = np.asarray(undist_px, dtype=np.float64).reshape(-1, 2)
        if not self.has_distortion or pts.shape[0] == 0:
            return pts.copy()
        rays = self.rays(pts)
        out, _ = cv2.projectPoints(rays.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), self.camera_matrix, self.dist)
        return out.reshape(-1, 2)

    def rays(self, undist_px: np.ndarray) -> np.ndarray:
        """Rays (N, 3) float64 with z = 1 through undistorted pixels (N, 2): a point at depth z is ``z * ray``."""
        k = self.intrinsics
        pts = np.asarray(undist_px, dtype=np.float64).reshape(-1, 2)
        out = np.ones((pts.shape[0], 3))
        out[:, 0] = (pts[:, 0] - k.cx) / k.fx
        out[:, 1] = (pts[:, 1] - k.cy) / k.fy
        return out

    def project(self, p_C: np.ndarray) -> np.ndarray:
        """Camera points (N, 3) -> undistorted pixels (N, 2) float64 (no check of z > 0)."""
        k = self.intrinsics
        z = p_C[:, 2]
        out = np.empty((p_C.shape[0], 2))
        out[:, 0] = k.fx * p_C[:, 0] / z + k.cx
        out[:, 1] = k.fy * p_C[:, 1] / z + k.cy
        return out

    def in_image(self, raw_px: np.ndarray, margin_px: float = 0.0) -> np.ndarray:
        """(N,) bool: raw pixels (N, 2) at least ``margin_px`` inside the image."""
        k = self.intrinsics
        x, y = raw_px[:, 0], raw_px[:, 1]
        return (
            (x >= margin_px) & (y >= margin_px)
            & (x <= k.width_px - 1 - margin_px) & (y <= k.height_px - 1 - margin_px)
        )


@dataclass(frozen=True)
class UndistortedImages:
    """A frame resampled to the pinhole image of the same camera matrix."""

    depth_m: np.ndarray
    """(H, W) float32 metres, 0 = invalid (also where the pinhole pixel's ray falls outside the raw image)."""
    image: np.ndarray | None
    """(H, W, 3) uint8 RGB, or None when there was none."""
    intrinsics: Intrinsics
    """The same size and ``K`` without distortion."""


class ImageUndistorter:
    """Dense undistortion for the map: depth (nearest raw pixel, so depths are never blended across edges) and
    colour (bilinear). The remap tables are built once per intrinsics."""

    def __init__(self) -> None:
        self._intrinsics: Intrinsics | None = None
        self._maps: tuple[np.ndarray, np.ndarray] | None = None

    def undistort(self, depth_m: np.ndarray, image: np.ndarray | None, intrinsics: Intrinsics) -> UndistortedImages:
        """``depth_m`` (H, W) float32 and ``image`` (H, W, 3) uint8 (or None) of a camera with ``intrinsics``."""
        k = intrinsics
        pinhole = Intrinsics(k.width_px, k.height_px, k.fx, k.fy, k.cx, k.cy)
        camera = PinholeCamera(k)
        if not camera.has_distortion:
            return UndistortedImages(depth_m, image, pinhole)
        if self._maps is None or self._intrinsics != k:
            self._maps = cv2.initUndistortRectifyMap(
                camera.camera_matrix, camera.dist, None, camera.camera_matrix, (k.width_px, k.height_px),
                cv2.CV_32FC1,
            )
            self._intrinsics = k
        map_x, map_y = self._maps
        depth = cv2.remap(depth_m, map_x, map_y, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        rgb = None
        if image is not None:
            rgb = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        return UndistortedImages(depth, rgb, pinhole)
