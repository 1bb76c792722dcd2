"""The tracker's map data: keyframes and anchored landmarks (plain data + vectorised queries).

A landmark is created in one keyframe (its *anchor*) at a feature pixel with a valid raw depth value; its
world position is ``T_W_anchor @ (ray * depth(raw; anchor params))``, so it follows the anchor's refined
pose and depth parameters (see :mod:`fusion.window`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fusion.alignment import depth_from_raw
from fusion.features import OrbFeatures
from fusion.se3 import transform_points
from stream.messages import DepthKind


@dataclass(eq=False)
class Keyframe:
    """A keyframe: pose, depth parameters, feature observations and its relocalisation data."""

    kf_id: int
    """Keyframe number (0, 1, ...)."""
    frame_id: int
    """The frame it was made from."""
    T_W_C: np.ndarray
    """(4, 4) float64 camera-to-world pose (refined by the window)."""
    params: np.ndarray
    """(P,) float64 depth-model parameters of its depth image (refined by the window)."""
    obs_ids: np.ndarray
    """(K,) int64 landmark ids observed here."""
    obs_raw_px: np.ndarray
    """(K, 2) float32 raw pixel positions of the observations."""
    obs_uv: np.ndarray
    """(K, 2) float64 undistorted pixel positions of the observations."""
    obs_raw: np.ndarray
    """(K,) float64 raw depth values at the observations (0 = none)."""
    orb: OrbFeatures
    """ORB features with a valid depth (for relocalisation)."""
    orb_uv: np.ndarray
    """(M, 2) float64 undistorted positions of the ORB features."""
    orb_raw: np.ndarray
    """(M,) float64 raw depth values at the ORB features (all valid)."""
    thumbnail: np.ndarray
    """(D,) float32 unit-norm tiny image (place retrieval)."""
    median_inv_depth: float
    """Median inverse depth of its observations in map units (scales shift priors)."""


class LandmarkTable:
    """Growing struct-of-arrays of anchored landmarks: anchor keyframe id, anchor ray, anchor raw depth."""

    def __init__(self) -> None:
        self._anchor = np.zeros(0, np.int64)
        self._ray = np.zeros((0, 3))
        self._raw = np.zeros(0)
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def add(self, anchor_kf: int, rays: np.ndarray, raw: np.ndarray) -> np.ndarray:
        """Append landmarks with rays (n, 3) and raw depths (n,) anchored in ``anchor_kf``; returns (n,) int64 ids."""
        n = rays.shape[0]
        need = self._n + n
        if need > self._anchor.shape[0]:
            cap = max(need, 2 * self._anchor.shape[0], 1024)
            self._anchor = np.resize(self._anchor, cap)
            ray = np.zeros((cap, 3))
            ray[: self._n] = self._ray[: self._n]
            self._ray = ray
            self._raw = np.resize(self._raw, cap)
        ids = np.arange(self._n, need, dtype=np.int64)
        self._anchor[ids] = anchor_kf
        self._ray[ids] = rays
        self._raw[ids] = raw
        self._n = need
        return ids

    def anchors(self, ids: np.ndarray) -> np.ndarray:
        """(n,) int64 anchor keyframe ids of landmarks ``ids``."""
        return self._anchor[ids]

    def rays(self, ids: np.ndarray) -> np.ndarray:
        """(n, 3) float64 anchor rays."""
        return self._ray[ids]

    def raw(self, ids: np.ndarray) -> np.ndarray:
        """(n,) float64 anchor raw depth values."""
        return self._raw[ids]

    def world_points(
        self, ids: np.ndarray, keyframes: dict[int, Keyframe], kind: DepthKind, max_depth: float
    ) -> np.ndarray:
        """(n, 3) float64 world positions of landmarks ``ids`` (NaN where the anchor depth became invalid)."""
        out = np.full((ids.shape[0], 3), np.nan)
        anchors = self._anchor[ids]
        for a in np.unique(anchors).tolist():
            sel = anchors == a
            kf = keyframes[a]
            z = depth_from_raw(kind, kf.params, self._raw[ids[sel]], max_depth)
            p = transform_points(kf.T_W_C, self._ray[ids[sel]] * z[:, None])
            p[z <= 0] = np.nan
            out[sel] = p
        return out
