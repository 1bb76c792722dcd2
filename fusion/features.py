"""Image features for the tracker (OpenCV): corners, pyramidal KLT, depth sampling, ORB and thumbnails.

All pixel arrays here are raw image pixels (``(N, 2)``, ``x`` = column, ``y`` = row) unless a name says
otherwise. Grey images are (H, W) uint8.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


def to_gray(image_rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W) uint8 grey."""
    return cv2.cvtColor(image_rgb, cv2.COLOR_RGB2GRAY)


def detect_corners(
    gray: np.ndarray, max_count: int, quality: float, min_distance_px: float, occupied_px: np.ndarray,
    border_px: int,
) -> np.ndarray:
    """Shi-Tomasi corners away from ``occupied_px`` (K, 2) points and the image border.

    Returns (N, 2) float32 raw pixels, N <= ``max_count`` (N may be 0).
    """
    if max_count <= 0:
        return np.zeros((0, 2), np.float32)
    h, w = gray.shape
    mask = np.zeros((h, w), np.uint8)
    mask[border_px : h - border_px, border_px : w - border_px] = 255
    radius = max(1, round(min_distance_px))
    for x, y in np.round(occupied_px).astype(np.int32).tolist():
        cv2.circle(mask, (x, y), radius, 0, -1)
    corners = cv2.goodFeaturesToTrack(
        gray, maxCorners=max_count, qualityLevel=quality, minDistance=min_distance_px, mask=mask, blockSize=5,
    )
    if corners is None:
        return np.zeros((0, 2), np.float32)
    corners = corners.reshape(-1, 2)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.01)
    corners = cv2.cornerSubPix(gray, np.ascontiguousarray(corners), (3, 3), (-1, -1), criteria)
    return corners.astype(np.float32)


@dataclass(frozen=True, eq=False)
class KltResult:
    """Outcome of tracking points from a reference image into the current image."""

    points: np.ndarray
    """(N, 2) float32 tracked positions in the current image (raw pixels)."""
    ok: np.ndarray
    """(N,) bool: tracked, inside the image and (when checked) forward-backward consistent."""


def track_klt(
    ref_gray: np.ndarray, cur_gray: np.ndarray, ref_points: np.ndarray,
    guess_points: np.ndarray, window_px: int, levels: int, fb_max_px: float,
) -> KltResult:
    """Pyramidal Lucas-Kanade from ``ref_points`` (N, 2) in the grey reference image into the current one.

    (OpenCV builds the pyramids per call: its Python binding of 5.x no longer takes prebuilt pyramids.)

    ``guess_points`` (N, 2) start the search (e.g. last positions or a pose prediction). A positive
    ``fb_max_px`` tracks the result back to the reference image and rejects points that return more than
    that many pixels from where they started.
    """
    n = ref_points.shape[0]
    if n == 0:
        return KltResult(np.zeros((0, 2), np.float32), np.zeros(0, bool))
    ref = np.ascontiguousarray(ref_points, dtype=np.float32).reshape(-1, 1, 2)
    guess = np.ascontiguousarray(guess_points, dtype=np.float32).reshape(-1, 1, 2)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01)
    cur, status, _ = cv2.calcOpticalFlowPyrLK(
        ref_gray, cur_gray, ref, guess.copy(), winSize=(window_px, window_px), maxLevel=levels,
        criteria=criteria, flags=cv2.OPTFLOW_USE_INITIAL_FLOW,
    )
    ok = status.reshape(-1).astype(bool)
    if fb_max_px > 0.0 and np.any(ok):
        back, status_b, _ = cv2.calcOpticalFlowPyrLK(
            cur_gray, ref_gray, cur, ref.copy(), winSize=(window_px, window_px), maxLevel=levels,
            criteria=criteria, flags=cv2.OPTFLOW_USE_INITIAL_FLOW,
        )
        fb = np.linalg.norm((back - ref).reshape(-1, 2), axis=1)
        ok &= status_b.reshape(-1).astype(bool) & (fb <= fb_max_px)
    pts = cur.reshape(-1, 2)
    h, w = cur_gray.shape[:2]
    ok &= np.all(np.isfinite(pts), axis=1)
    ok &= (pts[:, 0] >= 0) & (pts[:, 1] >= 0) & (pts[:, 0] <= w - 1) & (pts[:, 1] <= h - 1)
    return KltResult(pts.astype(np.float32), ok)


def sample_depth(depth: np.ndarray, raw_px: np.ndarray, max_spread: float) -> np.ndarray:
    """Depth values (N,) float32 bilinearly interpolated at points (N, 2); 0 where invalid or at an edge.

    ``depth`` (H, W) float32 (metric depth or relative inverse depth; 0 = invalid); pixel ``(x, y)`` is the
    centre of column x, row y. A sample counts as invalid when any value of the 3x3 neighbourhood of its
    nearest pixel is invalid or that neighbourhood's max/min ratio exceeds ``1 + max_spread`` (a depth
    discontinuity: the feature may belong to either side).
    """
    h, w = depth.shape
    n = raw_px.shape[0]
    if n == 0:
        return np.zeros(0, np.float32)
    px = np.asarray(raw_px, dtype=np.float64)
    xs = np.clip(np.rint(px[:, 0]).astype(np.int64), 1, w - 2)
    ys = np.clip(np.rint(px[:, 1]).astype(np.int64), 1, h - 2)
    offsets = np.array([-1, 0, 1])
    patch = depth[(ys[:, None, None] + offsets[None, :, None]), (xs[:, None, None] + offsets[None, None, :])]
    patch = patch.reshape(n, 9).astype(np.float64)
    lo = patch.min(axis=1)
    hi = patch.max(axis=1)
    good = np.isfinite(lo) & np.isfinite(hi) & (lo > 0) & (hi <= lo * (1.0 + max_spread))
    # bilinear weights inside the 3x3 patch (the 2x2 cell holding the point lies within it)
    fx = np.clip(px[:, 0] - xs, -1.0, 1.0)
    fy = np.clip(px[:, 1] - ys, -1.0, 1.0)
    x0 = np.where(fx < 0, 0, 1)  # patch column of the cell's left pixel
    y0 = np.where(fy < 0, 0, 1)
    ax = fx - (x0 - 1)  # in [0, 1]: position inside the cell
    ay = fy - (y0 - 1)
    rows = np.arange(n)

    def at(r: np.ndarray, c: np.ndarray) -> np.ndarray:
        return patch[rows, 3 * r + c]

    value = ((1 - ay) * ((1 - ax) * at(y0, x0) + ax * at(y0, x0 + 1))
             + ay * ((1 - ax) * at(y0 + 1, x0) + ax * at(y0 + 1, x0 + 1)))
    return np.where(good, value, 0.0).astype(np.float32)


@dataclass(frozen=True, eq=False)
class OrbFeatures:
    """ORB keypoints and descriptors of one image."""

    raw_px: np.ndarray
    """(N, 2) float32 keypoint positions, raw pixels."""
    descriptors: np.ndarray
    """(N, 32) uint8 binary descriptors."""


def detect_orb(orb: cv2.ORB, gray: np.ndarray) -> OrbFeatures:
    """ORB keypoints + descriptors of a grey image (N may be 0)."""
    keypoints, descriptors = orb.detectAndCompute(gray, None)
    if descriptors is None or not keypoints:
        return OrbFeatures(np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8))
    pts = np.array([kp.pt for kp in keypoints], np.float32).reshape(-1, 2)
    return OrbFeatures(pts, descriptors)


def match_descriptors(
    matcher: cv2.DescriptorMatcher, query: np.ndarray, train: np.ndarray, ratio: float
) -> np.ndarray:
    """Lowe-ratio-tested nearest-neighbour matches; returns (M, 2) int64 ``(query index, train index)``."""
    if query.shape[0] < 2 or train.shape[0] < 2:
        return np.zeros((0, 2), np.int64)
    pairs = matcher.knnMatch(query, train, k=2)
    out = [(m[0].queryIdx, m[0].trainIdx) for m in pairs if len(m) == 2 and m[0].distance < ratio * m[1].distance]
    if not out:
        return np.zeros((0, 2), np.int64)
    matches = np.asarray(out, np.int64)
    # one query per train descriptor: keep the first (knnMatch returns them query-ordered)
    _, first = np.unique(matches[:, 1], return_index=True)
    return matches[np.sort(first)]


def thumbnail(gray: np.ndarray, size: tuple[int, int] = (40, 30)) -> np.ndarray:
    """A tiny, blurred, zero-mean unit-norm grey image as a (w*h,) float32 vector (for place retrieval)."""
    small = cv2.resize(gray, size, interpolation=cv2.INTER_AREA).astype(np.float32)
    small = cv2.GaussianBlur(small, (3, 3), 0)
    v = small.reshape(-1) - small.mean()
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 1e-6 else v
