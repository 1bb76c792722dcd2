"""Pre- and postprocessing shared by every network backend (one implementation, numpy + OpenCV only).

Preprocessing: RGB uint8 frame -> float in [0, 1] -> bicubic resize to the policy's network size (a
multiple of 14 on each side, aspect kept) -> ImageNet normalisation -> (1, 3, h, w) float32.

Postprocessing: raw network output -> bilinear resize back to the frame size -> invalid pixels set to 0
(non-finite, <= 0, and for metric models outside the configured depth range) -> float32 depth typed as
:class:`DepthKind.METRIC` (metres) or :class:`DepthKind.INVERSE_RELATIVE`.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from engines.config import InputSizePolicy, NetworkSize
from engines.errors import EngineInputError
from stream.messages import ColorFrame, DepthFrame, DepthKind

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
"""Per-channel RGB mean of the ImageNet normalisation."""
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
"""Per-channel RGB standard deviation of the ImageNet normalisation."""


@dataclass(frozen=True)
class NetworkInput:
    """A preprocessed frame."""

    pixel_values: np.ndarray
    """(1, 3, h, w) float32, C-contiguous, ImageNet-normalised RGB."""
    size: NetworkSize
    """Network input size (w, h)."""
    frame_width_px: int
    """Width of the frame it came from."""
    frame_height_px: int
    """Height of the frame it came from."""


@dataclass(frozen=True)
class DepthRange:
    """Valid range of metric depth, metres: ``min_m < d <= max_m`` is kept, everything else becomes 0."""

    min_m: float = 0.0
    max_m: float = float("inf")

    def __post_init__(self) -> None:
        if self.min_m < 0 or not self.max_m > self.min_m:
            raise ValueError(f"DepthRange needs 0 <= min_m < max_m, got {self.min_m}, {self.max_m}")


def check_image(image: object, policy: InputSizePolicy) -> np.ndarray:
    """Validate an RGB frame: (H, W, 3) uint8 numpy array within the policy's size limits.

    Raises :class:`EngineInputError` naming what is wrong (grey image, dtype, empty, too large).
    """
    if not isinstance(image, np.ndarray):
        raise EngineInputError(f"depth engines take a numpy RGB image, got {type(image).__name__}")
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 2, 4)):
        raise EngineInputError(
            f"depth engines take an RGB image of shape (H, W, 3); got shape {image.shape} "
            "(grey, grey+alpha or RGBA): convert it to 3-channel RGB first"
        )
    if image.ndim != 3 or image.shape[2] != 3:
        raise EngineInputError(f"depth engines take an RGB image of shape (H, W, 3), got shape {image.shape}")
    if image.dtype != np.uint8:
        raise EngineInputError(
            f"depth engines take uint8 RGB (0..255), got dtype {image.dtype}: scale and convert it first"
        )
    height, width = image.shape[:2]
    if height == 0 or width == 0:
        raise EngineInputError(f"image is empty ({width}x{height} px)")
    policy.network_size(width, height)  # raises for oversized frames and extreme aspect ratios
    return image


def preprocess(image: np.ndarray, policy: InputSizePolicy) -> NetworkInput:
    """(H, W, 3) uint8 RGB -> :class:`NetworkInput` with (1, 3, h, w) float32 pixel values."""
    check_image(image, policy)
    height, width = image.shape[:2]
    size = policy.network_size(width, height)
    scaled = image.astype(np.float32) * np.float32(1.0 / 255.0)
    if (size.width_px, size.height_px) != (width, height):
        scaled = cv2.resize(scaled, (size.width_px, size.height_px), interpolation=cv2.INTER_CUBIC)
    scaled -= IMAGENET_MEAN
    scaled *= np.float32(1.0) / IMAGENET_STD
    pixel_values = np.ascontiguousarray(scaled.transpose(2, 0, 1)[np.newaxis])
    return NetworkInput(pixel_values, size, width, height)


def postprocess(
    raw: np.ndarray, frame_width_px: int, frame_height_px: int, kind: DepthKind, depth_range: DepthRange,
) -> np.ndarray:
    """Raw network output -> (frame_height_px, frame_width_px) float32 depth, 0 = invalid.

    ``raw`` is (h, w), (1, h, w) or (1, 1, h, w) of any float dtype. For ``METRIC`` the values are metres and
    ``depth_range`` applies; for ``INVERSE_RELATIVE`` only non-positive and non-finite values are invalid.
    """
    out = np.asarray(raw)
    while out.ndim > 2 and out.shape[0] == 1:
        out = out[0]
    if out.ndim != 2 or out.size == 0:
        raise ValueError(f"network output must be one (h, w) map, got shape {np.shape(raw)}")
    out = out.astype(np.float32, copy=False)
    if out.shape != (frame_height_px, frame_width_px):
        out = cv2.resize(out, (frame_width_px, frame_height_px), interpolation=cv2.INTER_LINEAR)
    else:
        out = out.copy()
    invalid = ~np.isfinite(out) | (out <= 0.0)
    if kind is DepthKind.METRIC:
        invalid |= (out <= depth_range.min_m) | (out > depth_range.max_m)
    out[invalid] = 0.0
    return out


def depth_frame(frame: ColorFrame, depth: np.ndarray, kind: DepthKind, model: str) -> DepthFrame:
    """Wrap ``depth`` (H, W) float32 for ``frame``: carries its image, intrinsics and pose as ``T_W_C_gt``."""
    return DepthFrame(
        frame_id=frame.frame_id, stamp_ns=frame.stamp_ns, depth=depth, kind=kind, intrinsics=frame.intrinsics,
        image=frame.image, confidence=None, T_W_C_gt=frame.T_W_C, model=model,
    )
